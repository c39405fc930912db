"""``model.keras`` without importing Keras: a Keras-written file of the same network, new head.

A run whose head trained in NumPy (:mod:`mtl.training.headfit`) changes only the
head's weights; the network (preprocessing, views, MobileNet, head layout) is the
same for every run of the same settings, up to the number of classes. So the
first such run on a machine saves its model with Keras, as any run does, and
keeps a copy of that file here as a *skeleton*, with the places of the head's
weights in its ``model.weights.h5``. A later run of the same architecture copies
the skeleton and puts its own head weights in those places (h5py, a tenth of a
second), instead of importing TensorFlow and rebuilding the model (about 6 s on
two cores). Another class count changes the head's last layer and the shapes
after it, in known places of ``config.json`` (:func:`with_classes`, which
refuses a config where they are not exactly where expected). The file is what
Keras writes, apart from those, the weights and the save date;
``tests/test_skeleton.py`` loads one with Keras and checks its outputs against
the Keras-built model's, for the same and for another class count.

The skeleton's name hashes everything else the network depends on (:func:`arch`),
the Keras version included, so a skeleton is never used for another network.
Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mtl import files
from mtl.assets.cache import cache_root
from mtl.errors import MtlError
from mtl.model.int8keras import FORMAT as INT8_FORMAT
from mtl.model.modelio import FIT_LAYER

# 2: one skeleton for every class count; 3: the fit layer (any photo in); 4: the int8 base's
# layers (mtl.model.int8keras, whose own FORMAT is part of an int8 skeleton's name)
FORMAT = 4
ENTRY = "mtl_skeleton.json"  # inside a skeleton only: where the head's weights are
WEIGHTS = "model.weights.h5"
KERAS_ENTRIES = ("metadata.json", "config.json", WEIGHTS)  # in the order Keras writes them


def arch(
    base_spec: str, views: list[str], head: list[int], dropout: float, *, skip: bool = False
) -> str:
    """Everything the saved network's structure depends on but the class count, as text
    (``skip``: the head's last layer also reads the features, :mod:`mtl.training.prior`)."""
    values: dict[str, Any] = {
        "format": FORMAT,
        **({"int8keras": INT8_FORMAT} if "int8" in base_spec else {}),
        "base": base_spec,
        "views": list(views),
        "head": list(head),
        "dropout": float(dropout),
    }
    if skip:
        values["skip"] = True
    return json.dumps(values, sort_keys=True)


OUTPUTS = "probabilities"  # the head's last layer (mtl.model.classifier.build_head)
AFTER_HEAD = ("head", "views_average")  # layers whose outputs have one value per class


def with_classes(config: dict[str, Any], classes: int, views: int) -> dict[str, Any] | None:
    """``config`` (a saved ``config.json``) for ``classes`` outputs, or None when it is not
    laid out as :func:`mtl.model.classifier.assemble` builds it."""
    config = json.loads(json.dumps(config))  # a copy
    changed = {"units": 0, "shapes": 0, "build": 0}

    def tensors(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("class_name") == "__keras_tensor__":
                cfg = node["config"]
                if cfg["keras_history"][0] in AFTER_HEAD and len(cfg["shape"]) == 2:
                    cfg["shape"][1] = classes
                    changed["shapes"] += 1
                return
            for value in node.values():
                tensors(value)
        elif isinstance(node, list):
            for value in node:
                tensors(value)

    try:
        for layer in config["config"]["layers"]:
            if layer["name"] == "head":
                for inner in layer["config"]["layers"]:
                    if inner["name"] == OUTPUTS:
                        inner["config"]["units"] = classes
                        changed["units"] += 1
            if layer["name"] == "views_average":
                shapes = layer["build_config"]["input_shape"]
                for shape in shapes:
                    shape[1] = classes
                changed["build"] += len(shapes)
            tensors(layer.get("inbound_nodes", []))
    except (KeyError, TypeError, IndexError):
        return None
    # One Dense, and each view's head output into the average (or the one output itself).
    expected_shapes = views + 1 if views > 1 else 1
    if changed != {"units": 1, "shapes": expected_shapes, "build": views if views > 1 else 0}:
        return None
    return config


def with_fit(config: dict[str, Any], fit: str) -> dict[str, Any] | None:
    """``config`` with its fit layer cropping the central square (``center``) or not
    (``squash``), as :func:`mtl.model.classifier.fit_layer` builds it; None when there is
    not exactly one such layer."""
    config = json.loads(json.dumps(config))  # a copy
    try:
        found = [
            layer
            for layer in config["config"]["layers"]
            if layer.get("name") == FIT_LAYER and layer.get("class_name") == "Resizing"
        ]
        if len(found) != 1:
            return None
        found[0]["config"]["crop_to_aspect_ratio"] = fit == "center"
    except (KeyError, TypeError, AttributeError):
        return None
    return config


def path(architecture: str) -> Path:
    digest = hashlib.sha256(architecture.encode()).hexdigest()[:32]
    return cache_root() / "skeletons" / f"{digest}.keras"


def store(model_file: Path, head_weights: list[np.ndarray], architecture: str) -> Path | None:
    """Keep ``model_file`` (just written by Keras) as the skeleton of ``architecture``
    (its class count: the length of the last bias).

    The head's weights are found in its h5 by value (each array must match exactly
    one dataset); None when they cannot be, or the cache folder is not writable:
    later runs then write with Keras, as this one did.
    """
    import h5py

    try:
        with zipfile.ZipFile(model_file) as z:
            entries = {name: z.read(name) for name in KERAS_ENTRIES}
        with h5py.File(io.BytesIO(entries[WEIGHTS]), "r") as h5:
            places = [_find(h5, w) for w in head_weights]
        if any(p is None for p in places) or len(set(places)) != len(places):
            return None
        sidecar = {
            "architecture": architecture,
            "head": places,
            "classes": int(head_weights[-1].shape[0]),
        }
        return files.write_with(
            path(architecture), lambda tmp: _zip(tmp, entries, {ENTRY: sidecar}), force=True
        )
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, MtlError):
        return None  # MtlError: mtl.files found the cache folder unusable


def _find(h5: Any, value: np.ndarray) -> str | None:
    import h5py

    found: list[str] = []

    def visit(name: str, node: Any) -> None:
        if (
            isinstance(node, h5py.Dataset)
            and node.shape == value.shape
            and np.array_equal(node[()], value)
        ):
            found.append(name)

    h5.visititems(visit)
    return found[0] if len(found) == 1 else None


def write(
    architecture: str,
    dest: Path,
    head_weights: list[np.ndarray],
    meta: dict[str, Any],
    views: int,
) -> bool:
    """Write ``dest`` from the skeleton of ``architecture``; False when there is none
    (or it is unusable), and nothing was written. ``views``: the model's view count."""
    import h5py

    source = path(architecture)
    try:
        with zipfile.ZipFile(source) as z:
            sidecar = files.loads_json(z.read(ENTRY))
            entries = {name: z.read(name) for name in KERAS_ENTRIES}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False
    places = sidecar.get("head")
    if sidecar.get("architecture") != architecture or len(places or []) != len(head_weights):
        return False
    classes = int(head_weights[-1].shape[0])
    config = files.loads_json(entries["config.json"])
    if classes != sidecar.get("classes"):
        config = with_classes(config, classes, views)
        if config is None:
            return False
    # The skeleton of a center-cropping model serves a squashing one (the fit layer's flag).
    config = with_fit(config, str(meta.get("info", {}).get("fit", "center")))
    if config is None:
        return False
    entries["config.json"] = json.dumps(config).encode()
    buffer = io.BytesIO(entries[WEIGHTS])
    with h5py.File(buffer, "r+") as h5:
        for place, value in zip(places, head_weights, strict=True):
            dataset = h5.get(place)
            if dataset is None or dataset.ndim != value.ndim:
                return False
            if dataset.shape == value.shape:
                dataset[...] = value.astype(dataset.dtype)
            else:  # the last layer of another class count
                dtype = dataset.dtype
                del h5[place]
                h5.create_dataset(place, data=value.astype(dtype))
    entries[WEIGHTS] = buffer.getvalue()
    metadata = files.loads_json(entries["metadata.json"])
    metadata["date_saved"] = time.strftime("%Y-%m-%d@%H:%M:%S")
    entries["metadata.json"] = json.dumps(metadata).encode()
    from mtl.model.modelio import META_ENTRY, with_info

    # Where the head's weights are: what a reader without Keras needs to run the head.
    meta = with_info(meta, head_weights=tuple(places))
    files.write_with(dest, lambda tmp: _zip(tmp, entries, {META_ENTRY: meta}), force=True)
    return True


def _zip(target: Path, entries: dict[str, bytes], extra: dict[str, Any]) -> None:
    """Keras' layout: stored (uncompressed) entries, as ``keras.saving`` writes them."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for name, value in extra.items():
            z.writestr(name, json.dumps(value, ensure_ascii=False, indent=1))
    os.chmod(target, 0o644)

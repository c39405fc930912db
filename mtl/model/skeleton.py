"""``model.keras`` without importing Keras: a Keras-written file of the same network, new head.

A run whose head trained in NumPy (:mod:`mtl.training.headfit`) changes only the
head's weights; the network (preprocessing, views, MobileNet, head layout) is the
same for every run of the same settings and class count. So the first such run
on a machine saves its model with Keras, as any run does, and keeps a copy of
that file here as a *skeleton*, with the places of the head's weights in its
``model.weights.h5``. A later run of the same architecture copies the skeleton
and puts its own head weights in those places (h5py, a tenth of a second),
instead of importing TensorFlow and rebuilding the model (about 6 s on two
cores). The file is byte for byte what Keras writes, apart from the weights and
the save date; ``tests/test_skeleton.py`` loads one with Keras and checks its
outputs against the Keras-built model's.

The skeleton's name hashes everything the network depends on (:func:`arch`),
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

FORMAT = 1
ENTRY = "mtl_skeleton.json"  # inside a skeleton only: where the head's weights are
WEIGHTS = "model.weights.h5"
KERAS_ENTRIES = ("metadata.json", "config.json", WEIGHTS)  # in the order Keras writes them


def arch(base_spec: str, views: list[str], head: list[int], dropout: float, classes: int) -> str:
    """Everything the saved network's structure depends on, as text."""
    return json.dumps(
        {
            "format": FORMAT,
            "base": base_spec,
            "views": list(views),
            "head": list(head),
            "dropout": float(dropout),
            "classes": int(classes),
        },  # fmt: skip
        sort_keys=True,
    )


def path(architecture: str) -> Path:
    digest = hashlib.sha256(architecture.encode()).hexdigest()[:32]
    return cache_root() / "skeletons" / f"{digest}.keras"


def store(model_file: Path, head_weights: list[np.ndarray], architecture: str) -> Path | None:
    """Keep ``model_file`` (just written by Keras) as the skeleton of ``architecture``.

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
        sidecar = {"architecture": architecture, "head": places}
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
    architecture: str, dest: Path, head_weights: list[np.ndarray], meta: dict[str, Any]
) -> bool:
    """Write ``dest`` from the skeleton of ``architecture``; False when there is none
    (or it is unusable), and nothing was written."""
    import h5py

    source = path(architecture)
    try:
        with zipfile.ZipFile(source) as z:
            sidecar = json.loads(z.read(ENTRY))
            entries = {name: z.read(name) for name in KERAS_ENTRIES}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False
    places = sidecar.get("head")
    if sidecar.get("architecture") != architecture or len(places or []) != len(head_weights):
        return False
    buffer = io.BytesIO(entries[WEIGHTS])
    with h5py.File(buffer, "r+") as h5:
        for place, value in zip(places, head_weights, strict=True):
            dataset = h5.get(place)
            if dataset is None or dataset.shape != value.shape:
                return False
            dataset[...] = value.astype(dataset.dtype)
    entries[WEIGHTS] = buffer.getvalue()
    metadata = json.loads(entries["metadata.json"])
    metadata["date_saved"] = time.strftime("%Y-%m-%d@%H:%M:%S")
    entries["metadata.json"] = json.dumps(metadata).encode()
    from mtl.model.modelio import META_ENTRY

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

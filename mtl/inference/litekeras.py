"""mtl's own ``model.keras`` run without Keras: the frozen base on LiteRT, the head in NumPy.

Loading a ``.keras`` file takes TensorFlow (about 5 s to import on two cores) for
what is, in a model `mtl train` made with the whole base frozen, the ImageNet
MobileNet plus a small dense head. Such a file says so in its ``mtl.json``: the
base's spec (the key of the LiteRT conversion training ran and keeps in mtl's
cache) and where the head's weights are inside the file. When that conversion is
on this machine, prediction runs it (the very features training computed, within
1e-4 of Keras') and the head from the file's own weights, averaging probabilities
over the views as the Keras model does. ``tests/test_predict_lite.py`` checks the
outputs against Keras' on real photos.

A model trained on the int8 base (``--base-precision int8``) always runs on it: when
it is not in the cache it is converted here first (TensorFlow, once), so predict never
disagrees with training; ``MTL_PREDICT_ENGINE=keras`` runs the float32 Keras model.

Anything else (a float32 model from another machine whose base was never converted here,
fine-tuned or partly frozen models, files from other tools, a damaged entry) gets
None, and the caller loads the file with Keras as before. ``MTL_PREDICT_ENGINE=keras``
forces that. Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl.errors import ModelFileError, MtlError
from mtl.model import backbones
from mtl.model.head import Head
from mtl.model.litebase import LiteExtractor

ENGINE_VARIABLE = "MTL_PREDICT_ENGINE"  # "auto" (default) or "keras"
# MobileNet's largest weights (v2, alpha 1.4) are 25 MB; a zip bomb inflates to gigabytes.
MAX_WEIGHTS_BYTES = 512 << 20
# Photos per LiteRT invocation: predict decodes the next batch of 32 in threads meanwhile,
# and whole batches amortise that best (the default model on 245 photos: 90 photos/s at
# 32, 77 at 16, 65 at 8).
PREDICT_BATCH = 32


class BaseUnavailable(ModelFileError):
    """The model's int8 base cannot be made here (its weights differ or are missing)."""


@dataclass
class LiteKerasModel:
    """An mtl ``model.keras`` run without Keras, as :mod:`mtl.inference.tflite`'s and
    :mod:`mtl.inference.onnx`'s models are: uint8 pixels in, probabilities out."""

    class_names: list[str]
    image_size: int
    fit: str
    extractor: LiteExtractor
    head: Head

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        step = PREDICT_BATCH
        out = [self._probs(pixels[i : i + step]) for i in range(0, len(pixels), step)]
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)

    def _probs(self, pixels: np.ndarray) -> np.ndarray:
        features = self.extractor(pixels)
        n, dim = len(pixels), features.shape[-1]
        classes = self.head.biases[-1].shape[0]
        per_view = self.head.probs(features.reshape(-1, dim)).reshape(n, -1, classes)
        return np.asarray(per_view.mean(axis=1), np.float32)  # the model's views_average


def open_lite(path: Path) -> LiteKerasModel | None:
    """``path`` ready to run without Keras, or None (the caller loads it with Keras)."""
    if os.environ.get(ENGINE_VARIABLE, "auto").strip().lower() == "keras":
        return None
    try:
        return _open(path)
    except BaseUnavailable:
        raise  # Keras would predict on another base than training's
    except (MtlError, OSError, ValueError, RuntimeError, KeyError, TypeError, zipfile.BadZipFile):
        return None  # the Keras loader reads it, or reports what is wrong with it


def _open(path: Path) -> LiteKerasModel | None:
    from mtl.model.modelio import MODEL_FORMAT, ModelInfo, check_model_file, read_meta

    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        return None
    check_model_file(path)
    meta = read_meta(path)
    if meta is None or int(meta["model_format"]) > MODEL_FORMAT:
        return None
    info = ModelInfo.from_json(meta["info"], str(path))
    spec, places = info.frozen_base, info.head_weights
    if spec is None or spec.freeze is not None or places is None:
        return None
    backbones.check(spec.model, spec.alpha, spec.size)  # also keeps the base's file name plain
    base_file = spec.path()
    if not base_file.is_file() and spec.precision != "float32":
        # Keras would run the float32 base this head never trained on: convert it here,
        # as training did (mtl.model.int8base, the same calibration images).
        from mtl.model.int8base import convert_for_predict

        try:
            base_file = convert_for_predict(spec)
        except MtlError as exc:
            raise BaseUnavailable(str(exc)) from None
    if not base_file.is_file():
        return None  # never converted on this machine: Keras runs the file
    names = [str(c) for c in meta["class_names"]]
    kernels, biases = _head(path, places)
    skip = _layout(kernels, biases, len(names))
    if skip is None:
        return None
    # batch 0: no padding, so one photo is one pass (a short last batch reallocates once)
    extractor = LiteExtractor(base_file, spec.text(), batch=0)
    head = Head(kernels, biases, skip=skip)
    lite = extractor.model
    side = spec.input_side
    if tuple(int(s) for s in lite.input["shape"][1:]) != (side, side, 3):
        return None
    if tuple(int(s) for s in lite.output["shape"][1:]) not in (
        (kernels[0].shape[0],),
        (len(spec.views), kernels[0].shape[0]),
    ):
        return None

    return LiteKerasModel(names, side, info.fit, extractor, head)


def _head(path: Path, places: Sequence[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The head's (kernel, bias) pairs from the file's ``model.weights.h5``."""
    import h5py

    if len(places) % 2 or not places:
        raise ValueError("head_weights: expected kernel, bias pairs")
    with zipfile.ZipFile(path) as z:
        entry = z.getinfo("model.weights.h5")
        if entry.file_size > MAX_WEIGHTS_BYTES:  # zipfile never inflates past this size
            raise ValueError("model.weights.h5 too large")
        weights = z.read(entry)
    with h5py.File(io.BytesIO(weights), "r") as h5:
        arrays = []
        for place in places:
            node = h5.get(place)
            if not isinstance(node, h5py.Dataset):
                raise KeyError(place)
            arrays.append(np.asarray(node[()], np.float32))
    return arrays[0::2], arrays[1::2]


def _layout(kernels: list[np.ndarray], biases: list[np.ndarray], classes: int) -> bool | None:
    """Whether the last layer also reads the features (the ImageNet prior's skip,
    :mod:`mtl.training.prior`); None when the layers do not fit one another or do not
    end in one output per class name."""
    for i, (k, b) in enumerate(zip(kernels, biases, strict=True)):
        if k.ndim != 2 or b.shape != (k.shape[1],):
            return None
        if 0 < i < len(kernels) - 1 and kernels[i - 1].shape[1] != k.shape[0]:
            return None
    if kernels[-1].shape[1] != classes:
        return None
    if len(kernels) == 1:
        return False
    rows, hidden, features = kernels[-1].shape[0], kernels[-2].shape[1], kernels[0].shape[0]
    if rows == hidden:
        return False
    return True if rows == hidden + features else None

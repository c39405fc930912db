"""ImageNet top-k classification with a pretrained MobileNet."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtl import runtime
from mtl.assets import weights
from mtl.data.images import Source, check_fit, expand_inputs, iter_batches
from mtl.errors import UsageError
from mtl.inference.results import ImageResult, ImageResults, top_k
from mtl.model import backbones
from mtl.model.classifier import CROP
from mtl.model.imagenet import load_class_index
from mtl.progress import ProgressFn

# fit "center" is ImageNet's evaluation crop, with which MobileNet's accuracy is reported:
# the short side resized to 256, the central 224x224 (classifier.CROP, as train's crop
# view). On the 245 ants/bees photos (bench/classify_fit.py) it ranks the true ImageNet
# class first on 82.0% of photos, against 75.5% squashed.


def input_side(size: int, fit: str) -> int:
    """The side photos are loaded at: larger than ``size`` by 1/CROP for ``center``."""
    return round(size / CROP) if check_fit(fit) == "center" else size


def central(pixels: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` pixels of a (n, side, side, 3) batch."""
    top = (pixels.shape[1] - size) // 2
    left = (pixels.shape[2] - size) // 2
    return pixels[:, top : top + size, left : left + size]


def pretrained_classifier(model: str, alpha: float, weights_file: Path, size: int) -> object:
    """Raw RGB 0-255 in, 1000 ImageNet probabilities out."""
    keras = runtime.keras()

    net = backbones.build(model, alpha, include_top=True, weights=weights_file, size=size)
    inputs = keras.Input((size, size, 3), name="image")
    pre = backbones.preprocessing(model)
    return keras.Model(inputs, net(pre(inputs) if pre else inputs), name=f"{model}_imagenet")


def classify(
    inputs: Sequence[str | os.PathLike[str] | Any],
    *,
    model: str = backbones.DEFAULT_MODEL,
    alpha: float = backbones.DEFAULT_ALPHA,
    top_k_count: int = 5,
    batch_size: int = 32,
    fit: str = "center",
    weights_dir: str | os.PathLike[str] | None = None,
    on_download: weights.DownloadProgress | None = None,
    on_progress: ProgressFn | None = None,
) -> ImageResults:
    """Classify every image in ``inputs`` (files, folders, globs, or PIL images and uint8
    arrays in memory); unreadable files become error results.

    ``fit``: ``center`` crops as ImageNet's evaluation does (:func:`input_side`); ``squash``
    resizes the whole photo to the model's square, ignoring its aspect."""
    if top_k_count < 1 or top_k_count > 1000:
        raise UsageError(f"--top-k must be between 1 and 1000. Received top_k={top_k_count}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1. Received batch_size={batch_size}")
    size = backbones.DEFAULT_SIZE
    backbones.check(model, alpha, size)
    side = input_side(size, fit)
    paths = expand_inputs(inputs)
    if not paths:
        raise UsageError("no images given")
    index = load_class_index(
        weights.resolve(weights.class_index_file(), weights_dir, progress=on_download)
    )
    wfile = weights.resolve(
        backbones.weights_file(model, alpha, include_top=True, size=size),
        weights_dir,
        progress=on_download,
    )
    net = pretrained_classifier(model, alpha, wfile, size)
    by_path: dict[Source, ImageResult] = {}
    done = 0
    for batch in iter_batches(paths, side, batch_size, fit=fit):
        for path, reason in batch.failures:
            by_path[path] = ImageResult(file=str(path), error=reason)
        if len(batch.paths):
            pixels = central(batch.pixels, size).astype("float32")
            probs = net.predict_on_batch(pixels)  # type: ignore[attr-defined]
            for path, row in zip(batch.paths, probs, strict=True):
                preds = top_k(row, index.labels, top_k_count, index.wnids)
                by_path[path] = ImageResult(file=str(path), predictions=preds)
        done += len(batch.paths) + len(batch.failures)
        if on_progress:
            on_progress(done, len(paths))
    return ImageResults(by_path[p] for p in paths)

"""Pooled base features for every photo of a dataset, through the path `mtl train` takes.

The same scan (:func:`mtl.data.dataset.scan`), the same base pass
(:meth:`mtl.pipeline.basepass.BasePass.fill_pooled`: LiteRT on a CPU, started before
TensorFlow imports), the same model parts and the same :class:`FeatureCache`
keys, so a review costs one base pass, and a shared ``--cache-dir`` makes the
`mtl train` that follows it (or preceded it) reuse every feature.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtl import runtime
from mtl.assets import weights
from mtl.data import dataset, features
from mtl.errors import DataError
from mtl.model import backbones
from mtl.pipeline.basepass import BasePass, build_parts, cpu_devices, head_engine
from mtl.pipeline.config import TrainConfig, validate
from mtl.progress import StageProgressFn

STAGE = "checking images + computing features"


@dataclass
class Pooled:
    """One row of features per readable photo, its given class, and what was left out."""

    root: Path
    classes: list[str]
    paths: list[Path]
    labels: np.ndarray  # (n,) int
    x: np.ndarray  # (n, d) float32, the pooled base features train caches
    skipped: list[tuple[str, str]]
    warnings: list[str]
    engine: str
    seconds: dict[str, float] = field(default_factory=dict)
    # Per row, the feature cache's key: derived from the file's bytes, so equal keys are
    # identical files (the exact half of the duplicate search).
    keys: list[str] = field(default_factory=list)
    # Every photo the scan listed, readable or not: the folder state a decisions file
    # is bound to (mtl.review.actions.folder_state).
    listed: list[Path] = field(default_factory=list)


def pooled_features(
    data: str | os.PathLike[str],
    cfg: TrainConfig,
    *,
    weights_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    on_download: weights.DownloadProgress | None = None,
    on_progress: StageProgressFn | None = None,
) -> Pooled:
    """Scan ``data`` as `mtl train` does (``_``-folders such as ``_review/`` left out) and
    return the frozen base's pooled features for every readable photo.

    Raises :class:`~mtl.errors.DataError` for what train refuses (no class folders,
    one class, no readable photo in a class) and for a class of fewer than two
    readable photos (out-of-fold predictions need two).
    """
    cfg = validate(cfg)
    t0 = time.perf_counter()
    # val_split 0: every photo is scored; the k folds are made later, from the seed.
    ds = dataset.scan(Path(data), val_split=0.0, seed=cfg.seed)
    wfile = weights.resolve(
        backbones.weights_file(cfg.model, cfg.alpha, include_top=False, size=cfg.image_size),
        weights_dir,
        progress=on_download,
    )
    cache = features.FeatureCache(
        folder=Path(cache_dir) if cache_dir is not None else None,
        memory_bytes=cfg.cache_memory_mb << 20,
        persistent=cache_dir is not None,
    )
    paths = [it.path for it in ds.items]
    # Where train's head would train in NumPy, its pass needs no TensorFlow: nor does this.
    plain_cpu = head_engine(cfg, callbacks=False, resuming=False, photos=len(paths)) == "numpy"
    # The base train would run (int8 there by default), so `--cache-dir` serves both.
    base = BasePass(cfg, wfile, auto_int8=plain_cpu)
    base.start_early(paths, cache, importing=not plain_cpu)
    seconds: dict[str, float] = {}
    report = (lambda d, t: on_progress(STAGE, d, t)) if on_progress else None
    try:
        devices = None if plain_cpu else runtime.setup_training(cfg.precision)
        seconds["setup"] = time.perf_counter() - t0
        t1 = time.perf_counter()

        def parts() -> Any:  # the Keras model, only if Keras must convert or run the base
            return build_parts(cfg, ds.classes, devices or cpu_devices(), None, weights=wfile)

        feats = base.fill_pooled(paths, cache, parts, devices, report)
        seconds["features"] = time.perf_counter() - t1
    finally:
        base.stop_early()
    key_of = dict(zip(feats.paths, feats.keys, strict=True))
    listed = [it.path for it in ds.items]
    ds.drop(feats.failures)
    dataset.check_usable(ds)
    check_reviewable(ds)
    # Held once (released from the cache as copied, float16 as cached), then float32 for
    # the k-fold heads: the views' mean straight from float16, no float32 copy of all views.
    x = features.stack(cache, [key_of[it.path] for it in ds.items], release=True)
    if x.ndim == 3:  # (photos, views, features), as train caches them: their mean
        x = x.mean(axis=1, dtype=np.float32)
    x = x.astype(np.float32, copy=False)
    return Pooled(
        root=Path(data),
        classes=ds.classes,
        paths=[it.path for it in ds.items],
        labels=np.array([it.label for it in ds.items], dtype=np.int64),
        x=x.reshape(len(x), -1),
        skipped=list(ds.skipped),
        warnings=[*ds.warnings, *base.warnings],
        engine=base.engine,
        seconds=seconds,
        keys=[key_of[it.path] for it in ds.items],
        listed=listed,
    )


def check_reviewable(ds: dataset.Dataset) -> None:
    """Out-of-fold predictions hold each photo out of the head that scores it: every class
    needs a second readable photo to train that head on."""
    counts = [0] * len(ds.classes)
    for it in ds.items:
        counts[it.label] += 1
    for c, n in zip(ds.classes, counts, strict=True):
        if n < 2:
            raise DataError(
                f"class {c!r} has only {n} readable photo; review scores each photo with a head "
                "trained on the others, so every class needs at least 2 (10+ work well)"
            )

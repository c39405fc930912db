"""What a training run reports, whichever engine trains its head: the shared vocabulary.

- :class:`TrainStart`: what is known before the first epoch (the ``on_start`` hook);
- :class:`TrainResult`: a finished run;
- :class:`Hooks`: how a caller follows a run;
- :func:`val_scores`, :func:`view_mean`, :func:`sample_weights`: the numbers both
  engines compute the same way (validation scores, the views' average, class weights).

Below the orchestration (:mod:`mtl.training.trainer`) and both engines
(:mod:`mtl.training.kerashead`, :mod:`mtl.training.headrun`); nothing here imports Keras.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtl.data import dataset
from mtl.progress import StageProgressFn
from mtl.report import metrics
from mtl.training import display, rundir
from mtl.training.tracking import EpochLog

FIRST_PASS = "checking images + computing features"


@dataclass
class TrainStart:
    """What is known once every file has been checked, before the first epoch."""

    run_dir: Path
    device: str
    classes: list[str]
    train_counts: list[int]
    val_counts: list[int]
    layout: str
    cached: str  # what the feature cache holds
    skipped: list[tuple[str, str]]
    warnings: list[str]


@dataclass(frozen=True)
class TrainResult(rundir.RunSummary):
    """A finished run: what its folder holds (:class:`~mtl.training.rundir.RunSummary`),
    where, and how long each step took. ``warnings`` holds all of them, those already
    reported by ``on_start`` included."""

    run_dir: Path
    model_path: Path
    train_counts: list[int]
    val_counts: list[int]
    seconds: dict[str, float]
    files: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "model": str(self.model_path),
            "classes": self.classes,
            "train_count": dict(zip(self.classes, self.train_counts, strict=True)),
            "val_count": dict(zip(self.classes, self.val_counts, strict=True)),
            "kept_epoch": self.kept_epoch,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "notes": self.notes,
            "prior": self.prior,
            "train": _brief(self.train_metrics),
            "val": _brief(self.val_metrics) if self.val_metrics else None,
            "test": _brief(self.test_metrics) if self.test_metrics else None,
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
            "warnings": self.warnings,
            "device": self.device,
            "cache": self.cache,
            "seconds": self.seconds,
            "files": self.files,
        }

    def __repr__(self) -> str:
        return display.run_repr(self)

    def _repr_html_(self) -> str:
        return display.run_html(self)


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    return {"accuracy": m["accuracy"], "loss": m["loss"], "count": m["count"]}


@dataclass
class Hooks:
    """How a caller follows a run: progress, the start summary, each epoch, and Keras
    callbacks of its own (run after mtl's at every epoch, e.g. to log or to stop)."""

    on_progress: StageProgressFn | None = None
    on_start: Callable[[TrainStart], None] | None = None
    on_epoch: Callable[[EpochLog], None] | None = None
    callbacks: Sequence[Any] = ()


def val_scores(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Validation loss and accuracy, computed as ``metrics.json``'s are."""
    if not len(labels):
        return float("nan"), float("nan")
    return metrics.cross_entropy(probs, labels), float((probs.argmax(axis=1) == labels).mean())


def view_mean(row_probs: np.ndarray, photos: int) -> np.ndarray:
    """Per-photo probabilities from one row per view (photo-major), averaged over the
    views, as the saved model computes them."""
    return np.asarray(row_probs.reshape(photos, -1, row_probs.shape[-1]).mean(axis=1))


def sample_weights(
    class_weight: str, ds: dataset.Dataset, subsets: tuple[str, ...], labels: np.ndarray
) -> np.ndarray | None:
    """Per-photo weights for ``labels`` (the photos of ``subsets``, float64) that balance
    the classes of those subsets with ``class_weight = "auto"``; None: every photo weighs 1."""
    if class_weight != "auto":
        return None
    counts = np.sum([ds.counts(s) for s in subsets], axis=0)
    cw = dataset.class_weights([int(n) for n in counts])
    return np.array([cw[int(y)] for y in labels], np.float64)

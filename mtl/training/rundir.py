"""Run folders (``runs/train``, ``runs/train2``, ...) and the files a finished run leaves.

A run folder holds ``model.keras``, ``labels.txt``, ``config.json``,
``split.csv``, ``history.csv``, ``metrics.json`` and two PNG plots; every file
is written atomically (:mod:`mtl.files`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtl import files, runtime
from mtl._version import __version__
from mtl.data.dataset import Dataset
from mtl.errors import UsageError
from mtl.pipeline.config import TrainConfig
from mtl.report import events, metrics
from mtl.report.metrics import MAX_MATRIX_CLASSES
from mtl.training import checkpoint
from mtl.training.tracking import EpochLog

MODEL_FILE = "model.keras"
# What a run writes (model.keras last: its presence means the run finished).
RUN_FILES = (
    "labels.txt",
    "config.json",
    "split.csv",
    "history.csv",
    "metrics.json",
    "learning_curves.png",
    "confusion_matrix.png",
    MODEL_FILE,
)
EVENTS_FOLDER = events.FOLDER  # tensorboard --logdir runs/
RUN_FOLDERS = ("checkpoint", "cache", EVENTS_FOLDER)


def next_run_dir(base: str | Path = "runs", name: str = "train") -> Path:
    """The first free ``base/name``, ``base/name2``, ``base/name3``... (as ultralytics does)."""
    base = Path(base)
    taken: set[int] = set()
    if base.is_dir():
        pattern = re.compile(rf"^{re.escape(name)}(\d*)$")
        for p in base.iterdir():
            m = pattern.match(p.name)
            if m:
                taken.add(int(m.group(1) or 1))
    n = 1
    while n in taken:
        n += 1
    return base / (name if n == 1 else f"{name}{n}")


def prepare(out: str | os.PathLike[str] | None, *, force: bool = False) -> Path:
    """Claim the run folder: a new numbered one, or ``out`` (refused when it holds
    someone's work, unless ``force``; the caller clears the old run under the lock)."""
    if out is None:
        return _claim_numbered()
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} exists and is not a folder")
    refuse_existing(path, force)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = files.write_text(path / ".mtl-write-check", "", force=True)
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to run folder {path}: {exc.strerror or exc}") from None
    return path


def _claim_numbered(base: Path = Path("runs"), name: str = "train") -> Path:
    """``mkdir`` without ``exist_ok`` is atomic: two runs started together never share one."""
    for _ in range(1000):
        path = next_run_dir(base, name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()
        except FileExistsError:
            continue  # taken between the listing and the mkdir: the next number
        except OSError as exc:
            raise UsageError(f"cannot create run folder {path}: {exc.strerror or exc}") from None
        return path
    raise UsageError(f"no free run folder name under {base}")


def clear_run(path: Path) -> None:
    """Remove a previous run's files, the model first, so that an interrupted rerun can
    never look finished with the old model."""
    refuse_links(path)
    for name in RUN_FILES[::-1]:
        files.remove(path / name)
    for name in RUN_FOLDERS:
        files.remove(path / name)


def refuse_links(path: Path) -> None:
    """Every file and folder a run writes or deletes in ``path`` must not be a link (exit
    2 naming it), checked under the run's lock before anything is written: a linked
    ``checkpoint/`` would take ``run.json`` and the epochs' ``*.npz`` (and their deletion)
    to its target. ``path`` itself may be the user's link."""
    for name in (*RUN_FILES, *RUN_FOLDERS):
        files.refuse_link(path / name)
    for name in (checkpoint.RUN_FILE, checkpoint.STATE_FILE):
        files.refuse_link(path / checkpoint.FOLDER / name)


def refuse_existing(path: Path, force: bool) -> None:
    """A run folder that exists with files in it is someone's work: never overwrite it silently."""
    if force or not path.is_dir() or not any(path.iterdir()):
        return
    if (path / MODEL_FILE).exists():
        what = "already holds a trained model"
    else:
        what = "exists and is not empty (an interrupted run? continue it with --resume)"
    raise UsageError(f"{path} {what}; choose another --out or pass --force")


@dataclass(frozen=True)
class RunSummary:
    """What a finished run writes besides its model."""

    classes: list[str]
    history: list[EpochLog]
    kept_epoch: int  # whose weights the model holds
    best_epoch: int | None  # lowest validation loss (the "*" of the epoch log); None: no val
    stopped_early: bool
    train_metrics: dict[str, Any]
    val_metrics: dict[str, Any] | None  # None: no validation split
    notes: list[str]  # how the kept model was chosen, in words
    skipped: list[tuple[str, str]]
    warnings: list[str]
    cache: dict[str, Any]
    config: TrainConfig
    device: str
    # The ImageNet prior in the saved model (mtl.training.prior): its share ("weight") and
    # the two factors of softmax(head * head_factor + prior * prior_factor); None: not used.
    prior: dict[str, float] | None
    # DATA/test/'s scores (mtl.data.dataset.TEST_FOLDER), added once the model is written
    # (:func:`mtl.inference.heldout.score_test`); None: no test folder.
    test_metrics: dict[str, Any] | None = field(default=None, kw_only=True)


HISTORY_COLUMNS = (
    "epoch",
    "phase",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "seconds",
)


def write_run(
    run_dir: Path, save: Callable[[Path, dict[str, Any]], Any], ds: Dataset, run: RunSummary
) -> tuple[list[str], list[str]]:
    """Write the run folder's files, ``model.keras`` last (the commit point: a run
    folder holding it is complete; ``save(path, meta)`` writes it atomically); returns
    their names and any warnings."""
    from mtl.model.modelio import ModelInfo, model_meta

    written = ["labels.txt", "config.json", "split.csv", "history.csv", "metrics.json"]
    files.write_text(run_dir / "labels.txt", "".join(c + "\n" for c in run.classes), force=True)
    files.write_json(
        run_dir / "config.json",
        {
            "config": run.config.to_dict(),
            "data": stored_path(ds.root, run_dir),
            "data_absolute": str(ds.root.resolve()),
            "layout": ds.layout,
            "backend": runtime.backend_name(),
            "device": run.device,
            # What the "auto" settings became in this run.
            "ran": {
                "base_engine": run.cache.get("base_engine"),
                "base_precision": run.cache.get("base_precision"),
                "head_engine": run.cache.get("head_engine"),
                "prior_weight": run.prior.get("weight") if run.prior else 0.0,
                "refit": any(h.phase == "refit" for h in run.history),
                "views": list(run.config.run_views),
            },
            "mtl_version": __version__,
        },
        force=True,
    )
    files.write_csv(
        run_dir / "split.csv",
        ["file", "class", "subset"],
        [
            [stored_path(it.path, run_dir), ds.classes[it.label], it.subset]
            for it in [*ds.items, *ds.test]
        ],
        force=True,
    )
    files.write_csv(run_dir / "history.csv", HISTORY_COLUMNS, _history_rows(run), force=True)
    # With DATA/test/ the run's numbers are complete only once the model is scored on it.
    state = metrics.SCORING_TEST if ds.test else metrics.COMPLETE
    files.write_json(
        run_dir / "metrics.json", {**_metrics_json(run), metrics.STATE: state}, force=True
    )
    written += _write_plots(run_dir, run)
    warnings = []
    if len(run.classes) > MAX_MATRIX_CLASSES:
        warnings.append(
            f"{len(run.classes)} classes: the confusion matrix is left out of metrics.json "
            f"and the plots (shown up to {MAX_MATRIX_CLASSES} classes)"
        )
    c = run.config
    info = ModelInfo(
        model=c.model,
        alpha=c.alpha,
        image_size=c.image_size,
        fit=c.fit,
        views=tuple(c.run_views),
        refit=any(h.phase == "refit" for h in run.history),
    )
    save(run_dir / MODEL_FILE, model_meta(run.classes, info))
    return [*written, MODEL_FILE], warnings


def stored_path(path: Path, run_dir: Path) -> str:
    """``path`` as a run folder's files keep it: relative to the run folder (so a run read
    from any working folder, or moved together with its data, still finds its photos),
    absolute where no relative path exists (another drive)."""
    target = path.resolve()
    try:
        return Path(os.path.relpath(target, run_dir.resolve())).as_posix()
    except ValueError:
        return str(target)


def _history_rows(run: RunSummary) -> list[list[Any]]:
    return [
        [
            h.epoch,
            h.phase,
            f"{h.loss:.6f}",
            f"{h.accuracy:.6f}",
            f"{h.val_loss:.6f}",
            f"{h.val_accuracy:.6f}",
            f"{h.learning_rate:.3g}",
            f"{h.seconds:.3f}",
        ]
        for h in run.history
    ]


def _without_matrix(m: dict[str, Any] | None) -> dict[str, Any] | None:
    if m is None or len(m["per_class"]) <= MAX_MATRIX_CLASSES:
        return m
    return {**m, "confusion_matrix": None}


def _metrics_json(run: RunSummary) -> dict[str, Any]:
    return {
        "train": _without_matrix(run.train_metrics),
        "val": _without_matrix(run.val_metrics),
        "test": _without_matrix(run.test_metrics),
        "classes": run.classes,
        "kept_epoch": run.kept_epoch,
        "best_epoch": run.best_epoch,
        "stopped_early": run.stopped_early,
        "notes": run.notes,
        "prior": run.prior,
        "epochs_run": len(run.history),
        "skipped": [{"file": f, "reason": r} for f, r in run.skipped],
        "warnings": run.warnings,
        "cache": run.cache,
    }


def _write_plots(run_dir: Path, run: RunSummary) -> list[str]:
    from mtl.report import plots

    history = [h.to_json() for h in run.history]
    plots.learning_curves(history, run_dir / "learning_curves.png", kept_epoch=run.kept_epoch)
    if len(run.classes) > MAX_MATRIX_CLASSES:
        return ["learning_curves.png"]
    scored, what = (
        (run.val_metrics, "validation") if run.val_metrics else (run.train_metrics, "training")
    )
    cm = scored["confusion_matrix"]["matrix"]
    title = f"{what}: accuracy {scored['accuracy']:.1%} on {scored['count']} images"
    plots.confusion_matrix(cm, run.classes, run_dir / "confusion_matrix.png", title=title)
    return ["learning_curves.png", "confusion_matrix.png"]

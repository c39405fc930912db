"""Scoring a finished run on its held-out ``DATA/test/`` photos.

``mtl train`` never trains, validates or picks epochs on ``test/``
(:data:`mtl.data.dataset.TEST_FOLDER`): its photos are listed in the run's
``split.csv`` as subset ``test``, and once ``model.keras`` is written they are
predicted by that very file, as ``mtl evaluate RUN --split test`` would, and the
scores join ``metrics.json`` and the result.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from mtl import files
from mtl.errors import DataError, TrainingInterrupted, interrupt_exit_code
from mtl.progress import ProgressFn
from mtl.report import metrics

SUBSET = "test"


class FinishedRun(Protocol):
    """What scoring needs of a finished run (training's ``TrainResult``, a dataclass
    with ``test_metrics``): inference reads the run folder, it does not import training."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def run_dir(self) -> Path: ...
    @property
    def model_path(self) -> Path: ...
    @property
    def classes(self) -> list[str]: ...
    @property
    def warnings(self) -> list[str]: ...


Result = TypeVar("Result", bound=FinishedRun)


def lists_test(run_dir: Path) -> bool:
    """Whether the run's ``split.csv`` holds held-out (``test``) photos."""
    import csv

    from mtl.inference.evaluate import SPLIT_FILE

    try:
        with (run_dir / SPLIT_FILE).open(encoding="utf-8", newline="") as fh:
            return any(len(row) == 3 and row[2] == SUBSET for row in csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def score_test(result: Result, on_progress: ProgressFn | None = None) -> Result:
    """``result`` with its test scores (in ``metrics.json`` too); as it is without test/."""
    if not lists_test(result.run_dir):
        return result
    summary, bad = finish_test(result.run_dir, on_progress)
    warnings = list(result.warnings)
    if bad:
        warnings.append(f"{bad} test photo(s) could not be read and are not scored")
    return dataclasses.replace(result, test_metrics=summary, warnings=warnings)


def needs_test(run_dir: Path) -> bool:
    """Whether a finished run's test/ photos are still to be scored: its ``metrics.json``
    says so (Ctrl-C, SIGTERM or a kill during the scoring)."""
    if not (lists_test(run_dir) and (run_dir / "metrics.json").is_file()):
        return False
    saved = _read_metrics(run_dir)
    return saved.get(metrics.STATE, metrics.COMPLETE) != metrics.COMPLETE


def finish_test(run_dir: Path, on_progress: ProgressFn | None = None) -> tuple[dict[str, Any], int]:
    """Score the run's test/ photos with its ``model.keras`` and record them in
    ``metrics.json`` (its state then ``complete``); the scores and how many photos could
    not be read. Interrupted (Ctrl-C, SIGTERM), the file says so, and the
    :class:`~mtl.errors.TrainingInterrupted` raised says how to finish."""
    from mtl.inference.evaluate import evaluate
    from mtl.inference.predict import MODEL_FILE

    try:
        report = evaluate(run_dir / MODEL_FILE, split=SUBSET, on_progress=on_progress)
    except KeyboardInterrupt as exc:
        saved = _read_metrics(run_dir)
        files.write_json(
            run_dir / "metrics.json", {**saved, metrics.STATE: metrics.INTERRUPTED}, force=True
        )
        raise TrainingInterrupted(
            f"interrupted while scoring the test/ photos ({run_dir / MODEL_FILE} is "
            f"complete): finish with mtl train --resume {shlex.quote(str(run_dir))}",
            exit_code=interrupt_exit_code(exc),
        ) from None
    saved = _read_metrics(run_dir)
    summary = report.summary
    shown = (
        summary
        if len(saved.get("classes") or summary["per_class"]) <= metrics.MAX_MATRIX_CLASSES
        else {**summary, "confusion_matrix": None}
    )
    files.write_json(
        run_dir / "metrics.json",
        {**saved, "test": shown, metrics.STATE: metrics.COMPLETE},
        force=True,
    )
    from mtl.report import events

    kept = saved.get("kept_epoch")
    step = kept if isinstance(kept, int) else 0
    scores = {k: summary[k] for k in ("accuracy", "loss") if isinstance(summary.get(k), float)}
    events.log_test_scores(run_dir / events.FOLDER, step, scores)
    return summary, len(report.bad_files)


def _read_metrics(run_dir: Path) -> dict[str, Any]:
    metrics_file = run_dir / "metrics.json"
    try:
        saved = files.loads_json(
            files.read_text_limited(metrics_file, files.RECORD_LIMIT, "metrics")
        )
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {metrics_file}: {exc}") from None
    if not isinstance(saved, dict):
        raise DataError(f"cannot read {metrics_file}: not a JSON object")
    return saved

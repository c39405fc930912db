"""Scoring a finished run on its held-out ``DATA/test/`` photos.

``mtl train`` never trains, validates or picks epochs on ``test/``
(:data:`mtl.data.dataset.TEST_FOLDER`): its photos are listed in the run's
``split.csv`` as subset ``test``, and once ``model.keras`` is written they are
predicted by that very file, as ``mtl evaluate RUN --split test`` would, and the
scores join ``metrics.json`` and the result.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from mtl import files
from mtl.errors import DataError
from mtl.progress import ProgressFn

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
    from mtl.inference.evaluate import evaluate

    run_dir = result.run_dir
    if not lists_test(run_dir):
        return result
    report = evaluate(result.model_path, split=SUBSET, on_progress=on_progress)
    warnings = list(result.warnings)
    if report.bad_files:
        warnings.append(
            f"{len(report.bad_files)} test photo(s) could not be read and are not scored"
        )
    metrics_file = run_dir / "metrics.json"
    try:
        saved = files.loads_json(
            files.read_text_limited(metrics_file, files.RECORD_LIMIT, "metrics")
        )
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {metrics_file}: {exc}") from None
    from mtl.report.metrics import MAX_MATRIX_CLASSES

    summary = report.summary
    shown = (
        summary
        if len(result.classes) <= MAX_MATRIX_CLASSES
        else {**summary, "confusion_matrix": None}
    )
    files.write_json(metrics_file, {**saved, "test": shown}, force=True)
    return dataclasses.replace(result, test_metrics=summary, warnings=warnings)

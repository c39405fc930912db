"""Judging a trained model on a folder-per-class test set.

The numbers come from :mod:`mtl.report.metrics` (the same as ``metrics.json``
of a training run, in the same JSON shape). Unreadable files are counted
apart, never as wrong answers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtl import files, reprs
from mtl.data.dataset import class_folders, split_layout
from mtl.data.images import list_images
from mtl.errors import DataError, ModelFileError, UsageError
from mtl.progress import ProgressFn
from mtl.report import metrics


@dataclass(frozen=True)
class ClassMetrics:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Misclassified:
    file: str
    true_label: str
    predicted_label: str
    probability: float  # of the predicted label
    true_probability: float


@dataclass
class EvaluationReport:
    model: str
    data: str
    class_names: list[str]  # the model's classes: rows and columns of the matrix
    files: list[str]  # readable images, in order
    y_true: list[int]
    y_pred: list[int]
    probabilities: np.ndarray  # (n, classes)
    accuracy: float
    per_class: list[ClassMetrics]
    macro_f1: float
    confusion: np.ndarray
    misclassified: list[Misclassified]
    bad_files: list[tuple[str, str]]
    summary: dict[str, Any]  # :func:`mtl.report.metrics.summary`: the JSON shape train uses
    warnings: list[str] = field(default_factory=list)
    plot_file: Path | None = None

    @property
    def images(self) -> int:
        return len(self.files)

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.data,
            "classes": self.class_names,
            "images": self.images,
            "correct": self.correct,
            **self.summary,
            "misclassified": [
                {
                    "file": m.file,
                    "true": m.true_label,
                    "predicted": m.predicted_label,
                    "probability": round(m.probability, 6),
                    "true_probability": round(m.true_probability, 6),
                }
                for m in self.misclassified
            ],
            "bad_files": [{"file": f, "error": e} for f, e in self.bad_files],
            "warnings": self.warnings,
            "plot": str(self.plot_file) if self.plot_file else None,
        }

    def __repr__(self) -> str:
        return reprs.short_repr(
            "EvaluationReport",
            {
                "model": self.model,
                "data": self.data,
                "images": self.images,
                "accuracy": self.accuracy,
                "macro_f1": self.macro_f1,
                "misclassified": len(self.misclassified),
            },
        )

    def _repr_html_(self) -> str:
        rows = [[c.label, c.precision, c.recall, c.f1, c.support] for c in self.per_class]
        caption = (
            f"{Path(self.model).name} on {self.data}: accuracy {self.accuracy:.4f} "
            f"({self.correct} of {self.images}), macro F1 {self.macro_f1:.4f}"
        )
        columns = ["class", "precision", "recall", "F1", "images"]
        return reprs.html_table(caption, columns, rows, self.warnings)


def scan_test_set(data_dir: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """Class folder name -> its image files (recursively), for non-empty class folders.

    A dataset of split folders (:data:`mtl.data.dataset.SPLIT_NAMES`: ``train/``, ``test/``,
    any case) is read as train reads it: its ``test/`` is the test set; split folders are
    never classes."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"no test set folder at {root}")
    splits = split_layout(root)
    if splits is not None:
        if "test" not in splits:
            raise DataError(
                f"{root} holds split folders ({', '.join(p.name + '/' for p in splits.values())}) "
                "and no test folder: give a folder of class folders, or the run folder with "
                "--split val"
            )
        root = splits["test"]
    classes: dict[str, list[Path]] = {}
    for sub in class_folders(root):
        images = list_images(sub)
        if images:
            classes[sub.name] = images
    if not classes:
        raise DataError(
            f"{root} has no class folders with images; expected one folder per class, "
            "e.g. test/ants/*.jpg and test/bees/*.jpg"
        )
    return classes


SPLIT_FILE = "split.csv"  # file,class,subset: written by mtl train in its run folder
SUBSETS = ("train", "val", "test")  # test: DATA/test/, held out (mtl.data.dataset)


def run_folder_of(model_path: str | os.PathLike[str]) -> Path:
    """The run folder a model was given by: the folder itself, or the folder of its model.keras."""
    path = Path(model_path)
    return path if path.is_dir() else path.parent


def was_refit(run_dir: Path) -> bool:
    """Whether the run's saved model was refit on every photo: its ``mtl.json`` record
    says so; a model from before that record, its ``metrics.json`` notes."""

    from mtl.inference.predict import MODEL_FILE
    from mtl.model.modelio import read_info

    try:
        info = read_info(run_dir / MODEL_FILE)
    except ModelFileError:
        info = None  # reported when the model itself is opened
    if info is not None and info.refit is not None:
        return info.refit
    try:
        text = files.read_text_limited(run_dir / "metrics.json", files.RECORD_LIMIT, "metrics")
        notes = files.loads_json(text).get("notes")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(notes, list) and any("refit on all" in str(n) for n in notes)


def read_split(run_dir: str | os.PathLike[str], subset: str) -> dict[str, list[Path]]:
    """Class -> files of ``subset`` ("val": the run's held-out photos) from ``RUN/split.csv``.

    Every row is checked before anything is read: three columns, a known subset, a
    path without control characters that names an existing regular file (a FIFO, a
    folder or a missing photo is refused, naming the line). Relative paths are taken
    from the run folder, as ``mtl train`` writes them, so any working folder reads them
    (:func:`_split_path` also reads the older runs').
    """
    # Every row read back from split.csv is checked before use: a path in a file is data.
    import csv

    from mtl.data.images import not_regular

    if subset not in SUBSETS:
        raise UsageError(f"--split must be one of {', '.join(SUBSETS)}. Received split={subset!r}")
    run = Path(run_dir)
    table = run / SPLIT_FILE
    if not table.is_file():
        raise DataError(
            f"no {SPLIT_FILE} in {run}: --split needs the run folder of mtl train "
            "(or give a test folder instead)"
        )
    data_root = _recorded_data(run)
    by_class: dict[str, list[Path]] = {}
    seen: set[str] = set()
    try:
        with table.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header != ["file", "class", "subset"]:
                raise DataError(f"{table} line 1: expected the header file,class,subset")
            for row in reader:
                where = f"{table} line {reader.line_num}"
                if len(row) != 3:
                    raise DataError(f"{where}: expected 3 columns (file,class,subset)")
                name, label, side = map(files.csv_value, row)  # as mtl train wrote them
                if side not in SUBSETS:
                    raise DataError(
                        f"{where}: unknown subset {side!r} (expected {', '.join(SUBSETS)})"
                    )
                if not label or any(ord(c) < 32 or ord(c) == 127 for c in label):
                    raise DataError(f"{where}: bad class name {label!r}")
                if not name or any(ord(c) < 32 or ord(c) == 127 for c in name):
                    raise DataError(f"{where}: bad file name {name!r}")
                if name in seen:
                    raise DataError(f"{where}: {name} is listed twice")
                seen.add(name)
                if side != subset:
                    continue
                path = _split_path(name, run, data_root)
                if not path.exists():
                    raise DataError(f"{where}: {name} does not exist (moved since training?)")
                why = not_regular(path)
                if why:
                    raise DataError(f"{where}: {name} {why}")
                by_class.setdefault(label, []).append(path)
    except UnicodeDecodeError:
        raise DataError(f"{table} is not UTF-8 text") from None
    except csv.Error as exc:
        raise DataError(f"{table}: not a readable CSV file ({exc})") from None
    if not by_class:
        raise DataError(f"{table} lists no {subset!r} photos (was the run trained without them?)")
    return by_class


def _recorded_data(run: Path) -> Path | None:
    """The run's data folder from its ``config.json``: relative to the run folder (or
    absolute); None when unreadable."""
    try:
        recorded = files.loads_json(
            files.read_text_limited(run / "config.json", files.RECORD_LIMIT, "settings")
        )
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict):
        return None
    for key in ("data", "data_absolute"):
        value = recorded.get(key)
        if isinstance(value, str) and value and not any(ord(c) < 32 for c in value):
            path = value if Path(value).is_absolute() else run / value
            if Path(path).is_dir():
                return Path(path)
    return None


def _split_path(name: str, run: Path, data_root: Path | None) -> Path:
    """A ``split.csv`` row's file: absolute, or relative to the run folder (mtl train
    writes these); runs of older mtl wrote paths relative to the working folder they were
    trained from: tried as given, then under the recorded data folder (as before)."""
    from mtl.safepaths import resolve_stored

    path = resolve_stored(name, run)
    if path.exists() or Path(name).is_absolute():
        return path
    legacy = Path(name)
    if legacy.exists():
        return legacy
    if data_root is not None and (data_root / legacy).exists():
        return data_root / legacy
    return path


def check_classes(folder_classes: list[str], model_classes: list[str], data: str) -> list[str]:
    """Raise for folder classes the model cannot predict; warn for model classes with no images."""
    unknown = [c for c in folder_classes if c not in model_classes]
    if unknown:
        raise DataError(
            f"{data} has class folders the model does not know: {', '.join(unknown)} "
            f"(the model's classes: {', '.join(model_classes)}); "
            "remove those folders or evaluate a model trained on them"
        )
    missing = [c for c in model_classes if c not in folder_classes]
    if missing:
        return [
            f"no test images for the model's class(es) {', '.join(missing)}: "
            "their recall is reported as 0"
        ]
    return []


def evaluate(
    model_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    split: str | None = None,
    batch_size: int = 32,
    labels: str | os.PathLike[str] | None = None,
    plot_path: str | os.PathLike[str] | None = None,
    force: bool = False,
    on_progress: ProgressFn | None = None,
) -> EvaluationReport:
    """Predict every image of a folder-per-class test set (or, with ``split``, of the run's
    own ``split.csv`` subset) and score the predictions."""
    from mtl import files
    from mtl.inference.predict import open_model, predict_paths

    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1. Received batch_size={batch_size}")
    if plot_path is not None:
        files.check_new(plot_path, force=force)
    by_class, where = _test_photos(model_path, data_dir, split)
    predictor = open_model(model_path, labels)
    names = predictor.class_names
    warnings = check_classes(list(by_class), names, where)
    if split == "val" and was_refit(run_folder_of(model_path)):
        warnings.append(
            "this model was refit on every photo, the validation photos included: these scores "
            "are not held out (metrics.json's val scores, from before the refit, are)"
        )
    paths = [p for images in by_class.values() for p in images]
    truth = {p: names.index(c) for c, images in by_class.items() for p in images}
    results, probs_by_path = predict_paths(
        predictor, paths, batch_size=batch_size, on_progress=on_progress
    )
    ok = [p for p in paths if p in probs_by_path]
    if not ok:
        raise DataError(f"none of the {len(paths)} images in {where} could be read")
    probs = np.stack([probs_by_path[p] for p in ok]).astype(np.float64)
    y_true = np.array([truth[p] for p in ok], dtype=np.int64)
    report = _report(str(predictor.path), where, names, ok, probs, y_true)
    report.bad_files = [(r.file, r.error or "") for r in results if not r.ok]
    report.warnings = warnings
    if plot_path is not None:
        report.plot_file = plot_confusion_matrix(report, plot_path, force=force)
    return report


def _test_photos(
    model_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None,
    split: str | None,
) -> tuple[dict[str, list[Path]], str]:
    """Class -> photos to score, from a test folder or the run's split, and where from."""
    if (data_dir is None) == (split is None):
        raise UsageError(
            "give a test folder or --split val (the run's held-out photos), not both"
            if split is not None
            else "missing DATA: a test folder (one folder per class), or --split val with a run"
        )
    if split is not None:
        run = run_folder_of(model_path)
        return read_split(run, split), f"{run / SPLIT_FILE} ({split})"
    assert data_dir is not None
    return scan_test_set(data_dir), str(data_dir)


def _report(
    model: str,
    data: str,
    names: list[str],
    files: list[Path],
    probs: np.ndarray,
    y_true: np.ndarray,
) -> EvaluationReport:
    """Every number of the report from the predictions (:mod:`mtl.report.metrics`)."""
    y_pred = np.argmax(probs, axis=1)
    cm = metrics.confusion_matrix(y_true, y_pred, len(names))
    precision, recall, f1, support = metrics.precision_recall_f1(cm)
    per_class = [
        ClassMetrics(names[i], float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i in range(len(names))
    ]
    wrong = [
        Misclassified(
            file=str(p),
            true_label=names[t],
            predicted_label=names[q],
            probability=float(row[q]),
            true_probability=float(row[t]),
        )
        for p, t, q, row in zip(files, y_true, y_pred, probs, strict=True)
        if t != q
    ]
    wrong.sort(key=lambda m: -m.probability)  # the most confident mistakes first
    return EvaluationReport(
        model=model,
        data=data,
        class_names=names,
        files=[str(p) for p in files],
        y_true=y_true.tolist(),
        y_pred=y_pred.tolist(),
        probabilities=probs,
        accuracy=float(np.mean(y_true == y_pred)),
        per_class=per_class,
        macro_f1=metrics.macro_f1(cm),
        confusion=cm,
        misclassified=wrong,
        bad_files=[],
        summary=metrics.summary(probs, y_true, names),
    )


def plot_confusion_matrix(
    report: EvaluationReport, path: str | os.PathLike[str], *, force: bool = False
) -> Path:
    """The confusion matrix as a PNG heat map (the renderer ``mtl train`` uses too)."""
    from mtl.report import plots

    title = f"{Path(report.model).name}: accuracy {report.accuracy:.1%} on {report.images} images"
    return plots.confusion_matrix(
        report.confusion.tolist(), report.class_names, path, title=title, force=force
    )

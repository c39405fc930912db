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

from mtl.data.images import list_images
from mtl.errors import DataError, UsageError
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


def scan_test_set(data_dir: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """Class folder name -> its image files (recursively), for non-empty class folders."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"no test set folder at {root}")
    classes: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = list_images(sub)
        if images:
            classes[sub.name] = images
    if not classes:
        raise DataError(
            f"{root} has no class folders with images; expected one folder per class, "
            "e.g. test/ants/*.jpg and test/bees/*.jpg"
        )
    return classes


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
    data_dir: str | os.PathLike[str],
    *,
    batch_size: int = 32,
    labels: str | os.PathLike[str] | None = None,
    plot_path: str | os.PathLike[str] | None = None,
    force: bool = False,
    on_progress: ProgressFn | None = None,
) -> EvaluationReport:
    """Predict every image of a folder-per-class test set and score the predictions."""
    from mtl import files
    from mtl.inference.predict import open_model, predict_paths

    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1. Received batch_size={batch_size}")
    if plot_path is not None:
        files.check_new(plot_path, force=force)
    by_class = scan_test_set(data_dir)
    predictor = open_model(model_path, labels)
    names = predictor.class_names
    warnings = check_classes(list(by_class), names, str(data_dir))
    paths = [p for images in by_class.values() for p in images]
    truth = {p: names.index(c) for c, images in by_class.items() for p in images}
    results, probs_by_path = predict_paths(
        predictor, paths, batch_size=batch_size, on_progress=on_progress
    )
    ok = [p for p in paths if p in probs_by_path]
    bad = [(r.file, r.error or "") for r in results if not r.ok]
    if not ok:
        raise DataError(f"none of the {len(paths)} images in {data_dir} could be read")
    probs = np.stack([probs_by_path[p] for p in ok]).astype(np.float64)
    y_true = np.array([truth[p] for p in ok], dtype=np.int64)
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
        for p, t, q, row in zip(ok, y_true, y_pred, probs, strict=True)
        if t != q
    ]
    wrong.sort(key=lambda m: -m.probability)  # the most confident mistakes first
    report = EvaluationReport(
        model=str(model_path),
        data=str(data_dir),
        class_names=names,
        files=[str(p) for p in ok],
        y_true=y_true.tolist(),
        y_pred=y_pred.tolist(),
        probabilities=probs,
        accuracy=float(np.mean(y_true == y_pred)),
        per_class=per_class,
        macro_f1=metrics.macro_f1(cm),
        confusion=cm,
        misclassified=wrong,
        bad_files=bad,
        summary=metrics.summary(probs, y_true, names),
        warnings=warnings,
    )
    if plot_path is not None:
        report.plot_file = plot_confusion_matrix(report, plot_path, force=force)
    return report


def plot_confusion_matrix(
    report: EvaluationReport, path: str | os.PathLike[str], *, force: bool = False
) -> Path:
    """The confusion matrix as a PNG heat map (the renderer ``mtl train`` uses too)."""
    from mtl.report import plots

    title = f"{Path(report.model).name}: accuracy {report.accuracy:.1%} on {report.images} images"
    return plots.confusion_matrix(
        report.confusion.tolist(), report.class_names, path, title=title, force=force
    )

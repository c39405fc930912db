"""Judging a trained model on a folder-per-class test set.

Metrics are computed here with numpy (the tests check them against
scikit-learn). Unreadable files are counted apart, never as wrong answers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtl.data.images import list_images
from mtl.errors import DataError, UsageError

ProgressFn = Callable[[int, int], None]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """``cm[i, j]``: images of true class i predicted as class j."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's ``zero_division=0``)."""
    num = num.astype(np.float64)
    den = den.astype(np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix."""
    tp = np.diag(cm)
    precision = _safe_divide(tp, cm.sum(axis=0))
    recall = _safe_divide(tp, cm.sum(axis=1))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return precision, recall, f1, cm.sum(axis=1)


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
            "accuracy": round(self.accuracy, 6),
            "macro_f1": round(self.macro_f1, 6),
            "per_class": {
                m.label: {
                    "precision": round(m.precision, 6),
                    "recall": round(m.recall, 6),
                    "f1": round(m.f1, 6),
                    "support": m.support,
                }
                for m in self.per_class
            },
            "confusion_matrix": {
                "labels": self.class_names,
                "rows": "true class",
                "columns": "predicted class",
                "matrix": self.confusion.tolist(),
            },
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
    cm = confusion_matrix(y_true, y_pred, len(names))
    precision, recall, f1, support = precision_recall_f1(cm)
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
    present = [i for i in range(len(names)) if support[i] > 0]
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
        macro_f1=float(np.mean(f1[present])),
        confusion=cm,
        misclassified=wrong,
        bad_files=bad,
        warnings=warnings,
    )
    if plot_path is not None:
        report.plot_file = plot_confusion_matrix(report, plot_path, force=force)
    return report


def plot_confusion_matrix(
    report: EvaluationReport, path: str | os.PathLike[str], *, force: bool = False
) -> Path:
    """Write the confusion matrix as a PNG heat map with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtl import files

    cm = report.confusion
    n = len(report.class_names)
    side = min(20.0, 4.0 + 0.6 * n)
    fig, ax = plt.subplots(figsize=(side, side), dpi=100)
    try:
        ax.imshow(cm, cmap="Blues", vmin=0)
        ax.set_xticks(range(n), report.class_names, rotation=45, ha="right")
        ax.set_yticks(range(n), report.class_names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(
            f"{Path(report.model).name}\naccuracy {report.accuracy:.1%} on {report.images} images",
            fontsize=10,
        )
        top = cm.max() if cm.size else 0
        for i in range(n):
            for j in range(n):
                colour = "white" if top and cm[i, j] > top / 2 else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=colour)
        fig.tight_layout()
        return files.write_with(path, lambda tmp: fig.savefig(tmp, format="png"), force=force)
    finally:
        plt.close(fig)

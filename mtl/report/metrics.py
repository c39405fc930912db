"""Classification metrics from probabilities, in plain NumPy (no scikit-learn at run time).

``mtl train`` (``metrics.json``) and ``mtl evaluate`` (``--json``) report the
same numbers through :func:`summary`, so they share one JSON shape. The tests
check every number against scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Above this many classes the confusion matrix is left out of metrics.json and its plot
# (1000 classes would be 10^6 cells: 22 MB of JSON and a plot that does not finish).
MAX_MATRIX_CLASSES = 100

# metrics.json's "state": whether the run's numbers are all there. A run with DATA/test/
# writes SCORING_TEST with its model (test: null), then COMPLETE once test/ is scored, or
# INTERRUPTED when Ctrl-C or SIGTERM stops the scoring; ``mtl train --resume RUN``
# finishes it. A run without test/ is COMPLETE when its model is written.
STATE = "state"
COMPLETE = "complete"
SCORING_TEST = "scoring test/"
INTERRUPTED = "interrupted while scoring test/"


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return float(-np.mean(np.log(p))) if len(labels) else float("nan")


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


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes that have images (absent classes would only add zeros)."""
    _, _, f1, support = precision_recall_f1(cm)
    present = support > 0
    return float(np.mean(f1[present])) if present.any() else float("nan")


def summary(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, loss, per-class precision/recall/F1 and the confusion matrix, as JSON."""
    predicted = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(labels, predicted, len(classes))
    precision, recall, f1, support = precision_recall_f1(cm)
    accuracy = float((predicted == labels).mean()) if len(labels) else float("nan")
    return {
        "accuracy": round(accuracy, 6),
        "loss": round(cross_entropy(probs, labels), 6),
        "macro_f1": round(macro_f1(cm), 6),
        "count": int(len(labels)),
        "per_class": {
            c: {
                "precision": round(float(precision[i]), 6),
                "recall": round(float(recall[i]), 6),
                "f1": round(float(f1[i]), 6),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion_matrix": {
            "labels": list(classes),
            "rows": "true class",
            "columns": "predicted class",
            "matrix": cm.tolist(),
        },
    }

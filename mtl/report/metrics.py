"""Classification metrics from probabilities, in plain NumPy (no scikit-learn at run time)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return float(-np.mean(np.log(p))) if len(labels) else float("nan")


def confusion(labels: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels, predicted), 1)
    return cm


def summary(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    predicted = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    cm = confusion(labels, predicted, len(classes))
    per_class = {}
    for i, c in enumerate(classes):
        tp = int(cm[i, i])
        predicted_i = int(cm[:, i].sum())
        actual_i = int(cm[i, :].sum())
        precision = tp / predicted_i if predicted_i else 0.0
        recall = tp / actual_i if actual_i else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = {
            "precision": round(precision, 6),
            "recall": round(recall, 6),
            "f1": round(f1, 6),
            "support": actual_i,
        }
    accuracy = float((predicted == labels).mean()) if len(labels) else float("nan")
    return {
        "accuracy": round(accuracy, 6),
        "loss": round(cross_entropy(probs, labels), 6),
        "count": int(len(labels)),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }

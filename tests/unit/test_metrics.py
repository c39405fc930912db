"""mtl.report.metrics alone: every number against scikit-learn's, and the one JSON shape."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from mtl.report import metrics


@pytest.fixture
def labels() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 200)  # class 4 never occurs; class 3 is never predicted
    probs = rng.random((200, 5))
    probs[np.arange(200), y_true] += rng.random(200) * 1.5  # mostly right
    probs[:, 3] = 1e-3  # never the largest: class 3 is never predicted
    probs /= probs.sum(axis=1, keepdims=True)
    return y_true, probs.argmax(axis=1), probs


def test_confusion_and_per_class_scores(labels):
    y_true, y_pred, _ = labels
    cm = metrics.confusion_matrix(y_true, y_pred, 5)
    np.testing.assert_array_equal(cm, sk.confusion_matrix(y_true, y_pred, labels=range(5)))
    ours = metrics.precision_recall_f1(cm)
    theirs = sk.precision_recall_fscore_support(y_true, y_pred, labels=range(5), zero_division=0)
    for mine, expected in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, expected)
    # Macro F1 over the classes that have images, as scikit-learn does with their labels.
    present = sorted(set(y_true))
    assert metrics.macro_f1(cm) == pytest.approx(
        sk.f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
    )


def test_cross_entropy_is_log_loss(labels):
    y_true, _, probs = labels
    assert metrics.cross_entropy(probs, y_true) == pytest.approx(
        sk.log_loss(y_true, probs, labels=range(5)), rel=1e-6
    )
    assert np.isnan(metrics.cross_entropy(probs[:0], y_true[:0]))


def test_summary_shape(labels):
    y_true, y_pred, probs = labels
    classes = ["a", "b", "c", "d", "e"]
    s = metrics.summary(probs, y_true, classes)
    assert set(s) == {"accuracy", "loss", "macro_f1", "count", "per_class", "confusion_matrix"}
    assert s["accuracy"] == pytest.approx(sk.accuracy_score(y_true, y_pred), abs=1e-6)
    assert s["count"] == 200 and list(s["per_class"]) == classes
    assert s["per_class"]["e"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    cm = s["confusion_matrix"]
    assert cm["labels"] == classes and cm["rows"] == "true class"
    assert np.array(cm["matrix"]).sum() == 200

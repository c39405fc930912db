"""MobileNet's ImageNet concepts for pooled features, and each class's mean of them.

The frozen base's pooled features are what MobileNet's ImageNet top reads, so
its 1,000 concept probabilities cost one matrix product over features already
computed. A class's mean concept distribution over its photos is the classifier
both train's ImageNet prior (:mod:`mtl.training.prior`) and review's
noise-robust second opinion (:mod:`mtl.review.scores`) are built on: how well
each class mean explains a photo's own distribution. Nothing here imports Keras.
"""

from __future__ import annotations

import numpy as np


def concept_probs(top_kernel: np.ndarray, top_bias: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(n, 1000) float64 ImageNet probabilities of pooled features ``rows`` (n, d)."""
    logits = np.asarray(rows, dtype=np.float64) @ top_kernel + top_bias
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return np.asarray(p)


def class_sums(
    probs: np.ndarray, labels: np.ndarray, classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the sum of ``probs``' rows and their count (sums of chunks add up)."""
    sums = np.zeros((classes, probs.shape[1]))
    np.add.at(sums, labels, probs)
    return sums, np.bincount(labels, minlength=classes).astype(np.float64)


def class_means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each class's mean concept distribution (a class without rows: zeros)."""
    return np.asarray(sums / np.maximum(counts, 1)[:, None])

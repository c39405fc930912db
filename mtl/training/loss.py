"""The training target: what the head learns to predict for each photo, for both engines.

One definition: :func:`targets` turns class labels into the rows the loss compares
the head's probabilities with, and both engines train against exactly those rows
(NumPy, :mod:`mtl.training.headfit`: the gradient is ``probs - targets``; Keras,
:mod:`mtl.training.kerashead`: ``categorical_crossentropy`` on the batches of
:class:`mtl.training.fitting.CachedBatches`). A head option that changes the target,
label smoothing for instance, is a change to :func:`targets` and a setting in
:class:`mtl.pipeline.config.TrainConfig`; nothing else.

Nothing here imports Keras. Validation and ``metrics.json`` score probabilities
against the labels themselves (:func:`mtl.report.metrics.cross_entropy`), whatever
the training target.
"""

from __future__ import annotations

import numpy as np

# Keras' clipping of probabilities before the log (keras.config.epsilon()).
EPSILON = 1e-7

# The loss Keras compiles with: the cross-entropy of probabilities against targets.
KERAS_LOSS = "categorical_crossentropy"


def targets(labels: np.ndarray, classes: int) -> np.ndarray:
    """The target rows (float32, ``(len(labels), classes)``) for integer ``labels``:
    one-hot, as sparse categorical cross-entropy trains."""
    out = np.zeros((len(labels), classes), np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def cross_entropy(probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-row loss of ``probs`` against ``target`` rows, with Keras' clipping of the
    probabilities to [1e-7, 1 - 1e-7]. Its gradient with respect to the logits of a
    softmax is ``probs - target`` (each target row sums to 1)."""
    p = np.clip(probs, EPSILON, 1 - EPSILON)
    return np.asarray(-(target * np.log(p)).sum(axis=1))

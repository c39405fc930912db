"""The head trained in NumPy on cached pooled features: no Keras on the critical path.

When the whole base is frozen, training is a small dense network over a few
thousand feature rows: NumPy does each epoch in milliseconds, while importing
TensorFlow to do the same costs about 5 s on two cores (most of a small run).
So on a CPU the head is trained here, with Keras' own recipe: Glorot-uniform
kernels and zero biases, ReLU, inverted dropout, a softmax over the classes,
categorical cross-entropy against the targets of :mod:`mtl.training.loss` (weighted
by sample weight, averaged over the batch), and Keras' update rules for Adam,
AdamW, SGD (momentum 0.9) and RMSprop with their default constants. The weights
come out in Keras' ``get_weights()`` order (kernel, bias per Dense layer), ready
for the saved model (:mod:`mtl.model.skeleton`), and the same network runs inside it.

Everything is drawn from ``numpy.random.default_rng`` seeded by (seed, epoch),
so a run is reproducible and independent of thread timing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mtl.model.head import Head
from mtl.training import loss as target_loss
from mtl.training.tracking import check_loss, epoch_order


def one_blas_thread() -> Any:
    """A context in which BLAS runs on one thread: OpenBLAS' thread team costs more than
    it saves on a head's small products, and ten times more when the cores are busy.
    (Process-wide: enter it once around all the training, not per thread.)"""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def side_by_side(heads: Sequence[Head]) -> Head:
    """One head whose logits are the mean of ``heads``' logits: an ensemble that is still
    a plain stack of Dense layers, so the saved model and every export run it.

    The heads share one layout and none is composed with the prior. Their first layers
    read the same features side by side, deeper hidden layers are block-diagonal (each
    head sees only its own units), and the last layers' outputs are averaged. Linear
    heads average into one linear map."""
    first = heads[0]
    shapes = {tuple(k.shape for k in h.kernels) for h in heads}
    if len(shapes) != 1 or any(h.skip for h in heads):
        raise ValueError("only heads of one layout, not composed with the prior, add up")
    n = len(heads)
    if len(first.kernels) == 1:
        return Head(
            [_mean([h.kernels[0] for h in heads])],
            [_mean([h.biases[0] for h in heads])],
            first.dropout,
        )
    kernels = [np.concatenate([h.kernels[0] for h in heads], axis=1)]
    for i in range(1, len(first.kernels) - 1):
        kernels.append(_block_diagonal([h.kernels[i] for h in heads]))
    last = np.concatenate([h.kernels[-1] for h in heads], axis=0).astype(np.float64) / n
    kernels.append(last.astype(np.float32))
    biases = [np.concatenate([h.biases[i] for h in heads]) for i in range(len(first.biases) - 1)]
    biases.append(_mean([h.biases[-1] for h in heads]))
    return Head(kernels, biases, first.dropout)


def _block_diagonal(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """The blocks along the diagonal of one float32 matrix, zeros elsewhere."""
    rows, cols = sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)
    out = np.zeros((rows, cols), np.float32)
    r = c = 0
    for b in blocks:
        out[r : r + b.shape[0], c : c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return out


def _mean(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The element-wise mean, summed in float64, as float32."""
    return np.asarray(np.mean(np.stack(arrays), axis=0, dtype=np.float64), np.float32)


@dataclass
class Optimizer:
    """Keras' update rules (``keras.optimizers``) with their default constants."""

    name: str
    learning_rate: float
    iterations: int = 0
    slots: list[list[np.ndarray]] = field(default_factory=list)

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        # In place, into preallocated buffers: on a head this small the update, not the
        # matrix products, is most of a step's time.
        if not self.slots:
            self.slots = [[np.zeros_like(p) for p in params] for _ in range(3)]
        self.iterations += 1
        lr, t = self.learning_rate, self.iterations
        first, second, scratch = self.slots
        for p, g, m, v, tmp in zip(params, grads, first, second, scratch, strict=True):
            if self.name in ("adam", "adamw"):
                if self.name == "adamw":
                    p -= p * (0.004 * lr)  # AdamW's decoupled weight decay (Keras: 0.004)
                m *= 0.9
                np.multiply(g, 1 - 0.9, out=tmp)
                m += tmp
                v *= 0.999
                np.multiply(g, g, out=tmp)
                tmp *= 1 - 0.999
                v += tmp
                alpha = lr * math.sqrt(1 - 0.999**t) / (1 - 0.9**t)
                np.sqrt(v, out=tmp)
                tmp += 1e-7
                np.divide(m, tmp, out=tmp)
                tmp *= alpha
                p -= tmp
            elif self.name == "sgd":  # momentum 0.9, as mtl's Keras SGD
                m *= 0.9
                np.multiply(g, lr, out=tmp)
                m -= tmp
                p += m
            elif self.name == "rmsprop":
                v *= 0.9
                np.multiply(g, g, out=tmp)
                tmp *= 0.1
                v += tmp
                np.add(v, 1e-7, out=tmp)
                np.sqrt(tmp, out=tmp)
                np.divide(g, tmp, out=tmp)
                tmp *= lr
                p -= tmp
            else:  # pragma: no cover - config.validate allows only the four
                raise ValueError(f"unknown optimizer {self.name!r}")


@dataclass
class EpochStats:
    loss: float
    accuracy: float


# errstate: a diverging run ends with TrainingDiverged, not NumPy's overflow warnings.
@np.errstate(all="ignore")
def train_epoch(
    head: Head,
    opt: Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None,
    batch_size: int,
    seed: int,
    epoch: int,
    centre: np.ndarray | None = None,
) -> EpochStats:
    """One pass over the rows in the order of (seed, epoch); updates ``head`` in place.
    ``centre``: subtracted from each batch's rows (the head then reads centred features:
    :meth:`Head.centred` gives the one that reads them as they are).

    Run it under :func:`one_blas_thread`."""
    if head.skip:
        raise ValueError("a head with a skip to its features is composed, not trained")
    order = epoch_order(len(x), seed, epoch)
    drop_rng = np.random.default_rng([seed, epoch, 0xD0])
    params = [w for pair in zip(head.kernels, head.biases, strict=True) for w in pair]
    t = target_loss.targets(y, head.kernels[-1].shape[1])
    total_loss = correct = 0.0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        xb, yb = x[rows], y[rows]
        if centre is not None:
            xb = xb.astype(np.float32) - centre
        keep = None
        if head.dropout:
            width = head.kernels[-1].shape[0]
            rate = head.dropout
            keep = (drop_rng.random((len(rows), width)) >= rate).astype(np.float32) / (1 - rate)
        probs, inputs = head._forward(xb, keep)
        w = weights[rows] if weights is not None else np.ones(len(rows))
        tb = t[rows]
        losses = target_loss.cross_entropy(probs, tb)
        total_loss += float((losses * w).sum())
        correct += float((probs.argmax(axis=1) == yb).sum())
        params_grads = _backward(head, probs, tb, w, inputs, keep)
        opt.step(params, params_grads)
    n = len(order)
    loss = total_loss / n
    check_loss(loss, epoch + 1, opt.learning_rate)
    return EpochStats(loss, correct / n)


def _backward(
    head: Head,
    probs: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    inputs: list[np.ndarray],
    keep: np.ndarray | None,
) -> list[np.ndarray]:
    """Gradients of the batch's mean weighted loss against ``targets``
    (:func:`mtl.training.loss.targets`), in :meth:`Head.weights` order."""
    n = len(targets)
    delta = probs - targets  # softmax + cross-entropy, with respect to the logits
    delta = (delta * (weights / n)[:, None]).astype(np.float32)
    grads: list[np.ndarray] = []
    last = len(head.kernels) - 1
    for i in range(last, -1, -1):
        grads[:0] = [inputs[i].T @ delta, delta.sum(axis=0)]
        if i == 0:
            break
        back = delta @ head.kernels[i].T
        if i == last and keep is not None:
            back = back * keep
        # ReLU passes the gradient where its output was positive (a dropped unit's is 0
        # either way: ``back`` is masked too).
        delta = back * (inputs[i] > 0)
    return grads

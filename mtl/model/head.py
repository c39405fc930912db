"""The head as the saved model runs it, in NumPy: dense layers, ReLU, softmax.

Training (:mod:`mtl.training.headfit`) fits it; prediction without Keras
(:mod:`mtl.inference.litekeras`) and the ImageNet prior's composition
(:mod:`mtl.training.prior`) run it. The weights are in Keras' ``get_weights()``
order (kernel, bias per Dense layer), as the saved model holds them. Nothing here
imports Keras.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PREDICT_ROWS = 4096  # rows per matrix product at prediction: bounded memory on big sets


@dataclass
class Head:
    """Dense layers (ReLU between them), dropout before the last, softmax out."""

    kernels: list[np.ndarray]
    biases: list[np.ndarray]
    dropout: float = 0.0
    # The last layer also reads the head's input features (:func:`mtl.training.prior.compose`):
    # its kernel has (last hidden width + feature width) rows. Prediction only.
    skip: bool = False

    @classmethod
    def fresh(cls, dim: int, classes: int, units: Sequence[int], dropout: float, seed: int) -> Head:
        """Glorot-uniform kernels and zero biases, as ``keras.layers.Dense`` starts."""
        rng = np.random.default_rng([seed, 0x4EAD])
        sizes = [dim, *(int(u) for u in units), classes]
        kernels, biases = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            kernels.append(rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32))
            biases.append(np.zeros(fan_out, np.float32))
        return cls(kernels, biases, dropout)

    def weights(self) -> list[np.ndarray]:
        """Keras' ``get_weights()`` order: kernel, bias of each Dense layer."""
        return [w for pair in zip(self.kernels, self.biases, strict=True) for w in pair]

    def copy(self) -> Head:
        return Head(
            [k.copy() for k in self.kernels],
            [b.copy() for b in self.biases],
            self.dropout,
            self.skip,
        )

    def centred(self, centre: np.ndarray) -> Head:
        """The network ``x -> self(x - centre)`` as a plain head: one trained on features
        minus their mean, turned into one that reads the features as they are (the first
        layer's bias takes ``-centre @ kernel``; nothing else changes, so the saved model
        and every export run it as is)."""
        out = self.copy()
        bias = out.biases[0].astype(np.float64) - centre.astype(np.float64) @ out.kernels[0]
        out.biases[0] = bias.astype(np.float32)
        return out

    @property
    def units(self) -> list[int]:
        """The hidden layers' widths (``[]``: a linear head), as ``--head`` gives them."""
        return [int(k.shape[1]) for k in self.kernels[:-1]]

    def probs(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (inference: no dropout), float64, in bounded chunks."""
        return _softmax(self.logits(x))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The last layer's outputs before the softmax (inference), in bounded chunks."""
        with np.errstate(all="ignore"):  # a diverging head is reported as such, once
            out = [self._logits(x[i : i + PREDICT_ROWS])[0] for i in range(0, len(x), PREDICT_ROWS)]
        return np.concatenate(out) if out else np.zeros((0, len(self.biases[-1])), np.float32)

    def _forward(
        self, x: np.ndarray, keep: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Probabilities and each layer's input (for the backward pass); ``keep``: the
        dropout mask, already scaled by 1/(1-rate)."""
        z, inputs = self._logits(x, keep)
        return _softmax(z), inputs

    def _logits(
        self, x: np.ndarray, keep: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        inputs = []
        features = np.asarray(x, np.float32)
        h = features
        last = len(self.kernels) - 1
        for i, (k, b) in enumerate(zip(self.kernels, self.biases, strict=True)):
            if i == last and keep is not None:
                h = h * keep
            if i == last and self.skip:
                h = np.concatenate([h, features], axis=1)
            inputs.append(h)
            h = h @ k + b
            if i < last:
                h = np.maximum(h, 0.0)
        return h, inputs


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))

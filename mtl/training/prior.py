"""The ImageNet prior: a linear classifier from MobileNet's own ImageNet top, blended in.

MobileNet's ImageNet top turns the same pooled features into 1,000 concept
probabilities. Each class of the user's data has a mean concept distribution
over its training photos; how well each class mean explains a photo's own
distribution (minus the cross-entropy) classifies the photo. Where the classes
are ImageNet concepts (ants, bees, most animals and objects) this is strong on
few photos: on the 245 ants/bees photos, 5-fold, it scores 0.967 where a
logistic regression on the features scores 0.914. Where they are not
(clothing, digits) it is weak, and it gets no weight.

Because every class mean sums to 1, minus the cross-entropy is, up to a
per-photo constant that the softmax ignores, ``logits @ means.T`` with
``logits`` the top's pre-softmax outputs: a linear layer on the features with
kernel ``top_kernel @ means.T`` and bias ``top_bias @ means.T``. So the blend
``softmax(a * head_logits + b * prior_logits)`` is one Dense layer over the
head's last hidden layer and the features side by side (:func:`compose`),
inside the saved model, and every consumer (Keras, LiteRT, ONNX, exports) gets it.

``a`` and ``b`` (>= 0) are fitted by maximum likelihood on the validation photos,
with the trained head's validation probabilities, as a temperature would be
(:func:`fit`): the prior gets weight only when it explains the held-out labels
better together with the head than the head alone. Nothing here imports Keras.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtl.model import concepts
from mtl.model.head import Head

ROWS = 1024  # feature rows per product in Prior.logits


@dataclass(frozen=True)
class Prior:
    """The prior as a linear layer on the pooled features."""

    kernel: np.ndarray  # (features, classes)
    bias: np.ndarray  # (classes,)

    @classmethod
    def from_top(
        cls,
        top_kernel: np.ndarray,
        top_bias: np.ndarray,
        rows: np.ndarray,
        labels: np.ndarray,
        classes: int,
    ) -> Prior:
        """Class means of the top's probabilities over training ``rows`` (one per view)."""
        sums, counts = concept_sums(top_kernel, top_bias, rows, labels, classes)
        return cls.from_sums(top_kernel, top_bias, sums, counts)

    @classmethod
    def from_sums(
        cls, top_kernel: np.ndarray, top_bias: np.ndarray, sums: np.ndarray, counts: np.ndarray
    ) -> Prior:
        """From per-class sums of concept probabilities (:func:`concept_sums`, added up
        over chunks of a large dataset) and row counts."""
        means = concepts.class_means(sums, counts)
        kernel, bias = top_kernel @ means.T, top_bias @ means.T
        return cls(kernel.astype(np.float32), bias.astype(np.float32))

    def logits(self, rows: np.ndarray) -> np.ndarray:
        """In float64, a chunk of rows at a time: bounded memory on a large validation set."""
        out = np.empty((len(rows), len(self.bias)))
        for i in range(0, len(rows), ROWS):
            out[i : i + ROWS] = rows[i : i + ROWS].astype(np.float64) @ self.kernel + self.bias
        return out


def concept_sums(
    top_kernel: np.ndarray, top_bias: np.ndarray, rows: np.ndarray, labels: np.ndarray, classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the sum of the top's probabilities over ``rows``, and the row count."""
    probs = concepts.concept_probs(top_kernel, top_bias, rows)
    return concepts.class_sums(probs, labels, classes)


@dataclass(frozen=True)
class Blend:
    head: float  # a: the head's logits' factor
    prior: float  # b: the prior's
    # The prior's share of the blended logits' spread over the validation photos, 0
    # (unused) to 1 (the head ignored): for reports (a and b also undo the head's
    # over-confidence, so b / (a + b) says little).
    weight: float = 0.0

    def to_json(self) -> dict[str, float]:
        return {
            "weight": round(self.weight, 4),
            "head_factor": round(self.head, 6),
            "prior_factor": round(self.prior, 6),
        }


def _views_nll(za: np.ndarray, zb: np.ndarray, labels: np.ndarray, a: float, b: float) -> float:
    """Mean negative log-likelihood of ``labels`` under the views' average of
    ``softmax(a * za + b * zb)``; ``za``, ``zb``: (photos, views, classes). In log space
    throughout, so a confident mistake costs what it should instead of a clipped constant."""
    from scipy.special import logsumexp

    z = a * za + b * zb
    log_p = z - logsumexp(z, axis=2, keepdims=True)  # per view
    log_avg = logsumexp(log_p, axis=1) - np.log(z.shape[1])  # (photos, classes)
    return float(-log_avg[np.arange(len(labels)), labels].mean())


def fit(head_logits: np.ndarray, prior_logits: np.ndarray, labels: np.ndarray) -> Blend:
    """``a, b >= 0`` minimising the validation photos' negative log-likelihood; both
    logits (photos, views, classes). ``b`` is 0 (the head kept as trained) unless

    - the prior alone classifies the validation photos better than always answering
      their most frequent class, beyond chance (:func:`informative`, p < 0.1): its classes are
      ImageNet concepts. On 8x8 digits (10 classes) the prior alone was right on 10 of
      100 validation photos, yet as a per-class bias it passed the test below and got
      weight: 0.937 on the test split against 0.951 without it (bench/accuracy.py's
      digits, seed 5, int8 base); ants/bees' prior alone: 92-100%.
    - and it explains the labels better than the head with a temperature of its own
      does, by more than chance would on these photos: the total log-likelihood must
      gain ``ln(n) / 2`` (the Bayesian information criterion's price of one parameter)."""
    if not informative(prior_logits, labels):
        return Blend(1.0, 0.0)
    return _likelihood_blend(head_logits, prior_logits, labels)


# 0.1, not 0.01: on a few validation photos (4 of a 20-photo set), where the prior helps
# most, all of them right is p = 0.0625 against two balanced classes.
P_VALUE = 0.1


def informative(prior_logits: np.ndarray, labels: np.ndarray, p_value: float = P_VALUE) -> bool:
    """Whether the prior's own answers (``prior_logits`` averaged over views) are right on
    more photos than answering the most frequent class would be, at ``p_value`` (a
    one-sided binomial test)."""
    # scipy.special, not scipy.stats: the optimiser's import already loads it, and
    # scipy.stats would add 0.25 s to every run
    from scipy.special import betainc

    n = len(labels)
    if n == 0:
        return False
    right = int((prior_logits.mean(axis=1).argmax(axis=1) == labels).sum())
    majority = float(np.bincount(labels).max()) / n
    if right == 0 or majority >= 1.0:
        return False
    # P(X >= right) for X ~ Binomial(n, majority): the regularised incomplete beta
    return bool(betainc(right, n - right + 1, majority) < p_value)


def _likelihood_blend(
    head_logits: np.ndarray, prior_logits: np.ndarray, labels: np.ndarray
) -> Blend:
    """The blend by maximum likelihood, kept only past the information criterion."""
    from scipy.optimize import minimize, minimize_scalar

    za, zb = head_logits.astype(np.float64), prior_logits.astype(np.float64)
    n = len(labels)
    # The head's own temperature first (over log a: the likelihood is far from flat there).
    alone = minimize_scalar(
        lambda t: _views_nll(za, zb, labels, float(np.exp(t)), 0.0),
        bounds=(np.log(0.01), np.log(20.0)),
        method="bounded",
    )
    both = minimize(
        lambda ab: _views_nll(za, zb, labels, float(ab[0]), float(ab[1])),
        x0=np.array([float(np.exp(alone.x)), 0.0]),
        bounds=[(0.0, 20.0), (0.0, 20.0)],
        method="L-BFGS-B",
    )
    a, b = (float(v) for v in both.x)
    gain = n * (float(alone.fun) - float(both.fun))
    if not np.isfinite(both.fun) or b < 1e-6 or gain <= np.log(max(n, 2)) / 2:
        return Blend(1.0, 0.0)  # no better than the head alone: keep the head as trained
    spread_a = a * _spread(za)
    spread_b = b * _spread(zb)
    return Blend(a, b, spread_b / max(spread_a + spread_b, 1e-12))


def _spread(z: np.ndarray) -> float:
    """How far apart a set of logits puts the classes: the mean over photos and views of
    the standard deviation across classes."""
    return float(z.std(axis=-1).mean())


def compose(head: Head, prior: Prior, blend: Blend) -> Head:
    """One head computing ``softmax(a * head_logits + b * prior_logits)``: with hidden
    layers, the last layer reads the last hidden layer and the features side by side
    (:attr:`Head.skip`); without, the two linear maps add up."""
    kernels = [k.copy() for k in head.kernels]
    biases = [b.copy() for b in head.biases]
    a, b = blend.head, blend.prior
    last = kernels[-1].astype(np.float64) * a
    bias = biases[-1].astype(np.float64) * a + prior.bias * b
    skip = len(kernels) > 1
    side = prior.kernel * b
    last = np.concatenate([last, side], axis=0) if skip else last + side
    kernels[-1], biases[-1] = last.astype(np.float32), bias.astype(np.float32)
    return Head(kernels, biases, head.dropout, skip)

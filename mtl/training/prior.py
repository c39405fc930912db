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

import math
from collections.abc import Callable
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
    return _nll_and_grad(za, zb, labels, a, b)[0]


def _logsumexp(z: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    top = np.max(z, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    out = np.log(np.sum(np.exp(z - top), axis=axis, keepdims=True)) + top
    return out if keepdims else np.squeeze(out, axis=axis)


def _nll_and_grad(
    za: np.ndarray, zb: np.ndarray, labels: np.ndarray, a: float, b: float
) -> tuple[float, np.ndarray]:
    """:func:`_views_nll` and its gradient in (a, b): for each photo, each view's share of
    the label's averaged probability weighs that view's (logit of the label minus the
    logits' expectation under its softmax)."""
    n = len(labels)
    z = a * za + b * zb
    log_p = z - _logsumexp(z, axis=2, keepdims=True)  # per view
    rows = np.arange(n)
    log_label = log_p[rows, :, labels]  # (photos, views)
    log_avg = _logsumexp(log_label, axis=1) - np.log(z.shape[1])
    share = np.exp(log_label - _logsumexp(log_label, axis=1, keepdims=True))
    p = np.exp(log_p)
    grad = np.empty(2)
    for i, zi in enumerate((za, zb)):
        centred = zi[rows, :, labels] - np.einsum("pvc,pvc->pv", p, zi)
        grad[i] = -float((share * centred).sum()) / n
    return float(-log_avg.mean()), grad


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
    n = len(labels)
    if n == 0:
        return False
    right = int((prior_logits.mean(axis=1).argmax(axis=1) == labels).sum())
    majority = float(np.bincount(labels).max()) / n
    if right == 0 or majority >= 1.0:
        return False
    return bool(binomial_tail(right, n, majority) < p_value)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (exact to rounding; SciPy's
    ``betainc(k, n - k + 1, p)``, without SciPy's 0.3 s import in every run)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0 or p >= 1.0:
        return float(p >= 1.0)
    ks = np.arange(k, n + 1, dtype=np.float64)
    lgamma = np.vectorize(math.lgamma, otypes=[np.float64])
    terms = lgamma(n + 1.0) - lgamma(ks + 1.0) - lgamma(n - ks + 1.0)
    terms += ks * math.log(p) + (n - ks) * math.log1p(-p)
    return float(min(1.0, math.exp(float(_logsumexp(terms, axis=0)))))


def _likelihood_blend(
    head_logits: np.ndarray, prior_logits: np.ndarray, labels: np.ndarray
) -> Blend:
    """The blend by maximum likelihood, kept only past the information criterion."""
    za, zb = head_logits.astype(np.float64), prior_logits.astype(np.float64)
    n = len(labels)
    # The head's own temperature first (over log a: the likelihood is far from flat there).
    t, alone = golden_section(
        lambda t: _views_nll(za, zb, labels, math.exp(t), 0.0), math.log(0.01), math.log(20.0)
    )
    (a, b), both = box_newton(
        lambda ab: _nll_and_grad(za, zb, labels, float(ab[0]), float(ab[1])),
        np.array([math.exp(t), 0.0]),
        0.0,
        20.0,
    )
    gain = n * (alone - both)
    if not np.isfinite(both) or b < 1e-6 or gain <= np.log(max(n, 2)) / 2:
        return Blend(1.0, 0.0)  # no better than the head alone: keep the head as trained
    spread_a = a * _spread(za)
    spread_b = b * _spread(zb)
    return Blend(a, b, spread_b / max(spread_a + spread_b, 1e-12))


def golden_section(
    f: Callable[[float], float], lo: float, hi: float, tol: float = 1e-5
) -> tuple[float, float]:
    """The minimiser of a unimodal ``f`` on [lo, hi] and its value, to ``tol``."""
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    f1, f2 = f(x1), f(x2)
    while hi - lo > tol:
        if f1 <= f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - ratio * (hi - lo)
            f1 = f(x1)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + ratio * (hi - lo)
            f2 = f(x2)
    return (x1, f1) if f1 <= f2 else (x2, f2)


def box_newton(
    f: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    lo: float,
    hi: float,
    iterations: int = 200,
) -> tuple[np.ndarray, float]:
    """A local minimum of a smooth ``f`` (value, gradient) over the box [lo, hi]^d, by a
    trust region: a Newton step (Hessian by differences of the gradient) on the
    coordinates not held at a bound where the curvature is positive, else the steepest
    descent, at most ``radius`` long, projected into the box; the radius grows after a
    step that lowers ``f`` and shrinks after one that does not. A blend's likelihood is
    far from quadratic (one photo's loss can fall off a cliff), so the steps must stay
    safe where Newton's would overshoot or climb."""
    x = np.clip(np.asarray(x0, dtype=np.float64), lo, hi)
    fx, g = f(x)
    radius = 1.0
    for _ in range(iterations):
        # A coordinate at a bound whose gradient pushes it outward stays there.
        free = ~(((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0)))
        if not free.any() or np.max(np.abs(g[free])) < 1e-10 or radius < 1e-10:
            break
        gf = g[free]
        h = np.empty((len(x), len(x)))
        for i in range(len(x)):
            step = 1e-6 * max(1.0, abs(x[i]))
            e = np.zeros_like(x)
            e[i] = step
            h[:, i] = (f(x + e)[1] - f(x - e)[1]) / (2 * step)
        hf = ((h + h.T) / 2)[np.ix_(free, free)]
        d = -gf / np.linalg.norm(gf)
        if np.all(np.isfinite(hf)) and np.linalg.eigvalsh(hf).min() > 0:
            d = -np.linalg.solve(hf, gf)
        while True:
            length = float(np.linalg.norm(d))
            step_d = d * min(1.0, radius / length) if length > 0 else d
            trial = x.copy()
            trial[free] = np.clip(x[free] + step_d, lo, hi)
            ft, gt = f(trial)
            if ft < fx:
                if length <= radius:  # the full Newton step fitted: trust it further
                    radius = max(radius, 2 * length)
                else:
                    radius *= 2
                x, fx, g = trial, ft, gt
                break
            radius /= 4
            if radius < 1e-10:
                break
    return x, fx


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

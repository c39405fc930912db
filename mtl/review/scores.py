"""Scores for every photo: out-of-fold class probabilities, label quality, off-topic-ness,
near-duplicates across classes.

- **Out-of-fold probabilities**: k-fold over the pooled base features `mtl train`
  caches; a multinomial logistic regression (the linear member of train's head
  family) on L2-normalised features per fold, so no photo is scored by a head
  that saw it.
- **Concept classifier**: where the ImageNet top is known, a second classifier that
  a few wrong labels barely move: how well each class's mean ImageNet-concept
  distribution (leave-one-out) explains a photo's own. It is blended with the
  regression (geometric mean) at the weight, 0 to 1, whose calibrated
  probabilities best explain the given labels: near 1 where the classes are
  ImageNet concepts (ants and bees: swapped-label precision / recall 0.74 / 0.79
  -> 0.93 / 0.89 in bench/review_noise.py), near 0 where they are not (clothing).
- **Calibration**: one temperature for the out-of-fold probabilities, the one that
  best explains the given labels (maximum likelihood). The regularised logistic
  regression is under-confident (temperature about 0.5 on clothing) and the concept
  classifier over-confident (about 1.8 on ants/bees), by dataset-dependent amounts;
  calibrated, one threshold relative to chance (below ``0.7 / k`` for ``k``
  classes) serves 2 classes and 8 alike.
- **Wrong label**: cleanlab's label quality (self-confidence: the calibrated
  out-of-fold probability of the given class). cleanlab's confident-learning
  verdict (``find_label_issues``) was measured and dropped: on clothing its
  precision for swapped labels was 0.46 against 0.75 for the calibrated threshold
  (bench/review_noise.py).
- **Off-topic**: how badly a photo explains what its class usually shows, in
  ImageNet terms. The frozen MobileNet's own ImageNet classifier (one linear
  layer over the same pooled features) gives every photo a distribution over
  1,000 concepts; each class has a mean distribution; a photo's score is the
  cross-entropy of the closest class's mean under the photo's distribution,
  as a robust z-score over the dataset. In ``bench/review_noise.py`` it found
  92-100% of injected off-topic photos at 70%+ precision where k-nearest-neighbour
  distances (cleanlab's ``OutOfDistribution``) found 0-70%: off-topic photos
  look like each other, so they are each other's neighbours. When the ImageNet
  top is unknown (MobileNet v3) cleanlab's ``OutOfDistribution`` is used instead.
- **Near-duplicates across classes**: cosine similarity of pooled features, every pair
  up to ``EXACT_UP_TO`` photos, each with the photos of its nearest buckets above; identical
  files (the same bytes) in two classes are always found, by content key.

Everything is deterministic given the seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mtl.model.concepts import class_means, class_sums
from mtl.progress import ProgressFn

FOLDS = 5
# Inverse regularisation of the logistic regression on L2-normalised features:
# best recall of swapped labels in bench/review_noise.py (0.3: 0.80, 1: 0.85, 3: 0.87).
C = 2.0
# Weights of the concept classifier in the wrong-label probabilities, chosen per dataset.
WEIGHTS = tuple(i / 10 for i in range(11))
DUPLICATE_SIMILARITY = 0.97  # cosine similarity of pooled features: the same picture, re-encoded


@dataclass
class Scores:
    """Per photo (rows in the order given)."""

    probs: np.ndarray  # (n, k) calibrated out-of-fold class probabilities
    label_quality: np.ndarray  # (n,) cleanlab's self-confidence: probs[i, given]; low = suspect
    temperature: float  # the calibration's: probs = softmax(log(raw out-of-fold) / temperature)
    off_topic: np.ndarray  # (n,) robust z-score; high = fits no class
    off_topic_method: str  # "imagenet-concepts" or "knn" (cleanlab OutOfDistribution)
    duplicate_of: np.ndarray  # (n,) index of a near-identical photo in another class, or -1
    duplicate_similarity: np.ndarray  # (n,) its cosine similarity (0 when none)
    concept_weight: float = 0.0  # the concept classifier's share of probs (combine)

    @property
    def suggested(self) -> np.ndarray:
        return np.asarray(self.probs.argmax(axis=1))


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def robust_z(values: np.ndarray) -> np.ndarray:
    """(v - median) / (1.4826 * MAD): about a standard normal's z for the typical photos."""
    med = float(np.median(values))
    mad = float(np.median(np.abs(values - med))) * 1.4826
    return (values - med) / max(mad, 1e-12)


def out_of_fold(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    folds: int = FOLDS,
    seed: int = 42,
    c: float = C,
    on_progress: ProgressFn | None = None,
) -> np.ndarray:
    """Class probabilities for every photo from a head trained on the other folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    k = int(labels.max()) + 1
    n_splits = max(2, min(folds, int(np.bincount(labels, minlength=k).min())))
    z = normalise(x)
    probs = np.zeros((len(x), k), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for i, (fit, held) in enumerate(splitter.split(z, labels)):
        head = LogisticRegression(C=c, max_iter=3000)
        head.fit(z[fit], labels[fit])
        probs[np.ix_(held, head.classes_)] = head.predict_proba(z[held])
        if on_progress:
            on_progress(i + 1, n_splits)
    return probs


def calibrate(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """Temperature scaling: ``softmax(log(probs) / T)`` with the ``T`` (0.05-20) that maximises
    the likelihood of the given labels. Returns the calibrated probabilities and ``T``."""
    from scipy.optimize import minimize_scalar

    log_p = np.log(np.clip(probs, 1e-12, 1.0))
    rows = np.arange(len(labels))

    def scaled(t: float) -> np.ndarray:
        z = log_p / t
        return np.asarray(z - z.max(axis=1, keepdims=True))

    def nll(log_t: float) -> float:
        z = scaled(float(np.exp(log_t)))
        return float(-(z[rows, labels] - np.log(np.exp(z).sum(axis=1))).mean())

    t = float(np.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))
    e = np.exp(scaled(t))
    return np.asarray(e / e.sum(axis=1, keepdims=True)), t


def concept_class_probs(concepts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A second, noise-robust classifier: each photo's class probabilities from how well
    each class's mean ImageNet distribution explains the photo's own (softmax of minus
    the cross-entropy), the photo's own class mean taken without it (leave-one-out, so
    no photo votes for its own label). Class means average out a few wrong labels."""
    k = int(labels.max()) + 1
    log_p = np.log(np.clip(concepts, 1e-9, 1.0))
    sums, counts = class_sums(concepts, labels, k)  # (k, 1000), (k,)
    dots = log_p @ sums.T  # (n, k): log p_i . (sum of class c)
    rows = np.arange(len(labels))
    own = np.einsum("ij,ij->i", log_p, concepts)  # log p_i . p_i, to leave photo i out
    dots[rows, labels] -= own
    n_c = np.broadcast_to(counts, dots.shape).copy()
    n_c[rows, labels] -= 1
    z = dots / np.maximum(n_c, 1.0)  # minus the cross-entropy of each class mean
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def combine(
    oof: np.ndarray, concept_probs: np.ndarray | None, labels: np.ndarray
) -> tuple[np.ndarray, float, float]:
    """The out-of-fold regression's probabilities blended (geometric mean, weight ``w``)
    with the concept classifier's, then calibrated; ``w`` in 0, 0.1, ..., 1 is the one
    whose calibrated probabilities best explain the given labels, as the temperature is.
    Both inputs are out of sample for every photo, so that likelihood is an honest
    criterion. Returns (probabilities, temperature, w)."""
    best: tuple[float, np.ndarray, float, float] | None = None
    log_a = np.log(np.clip(oof, 1e-12, 1.0))
    log_b = np.log(np.clip(concept_probs, 1e-12, 1.0)) if concept_probs is not None else None
    rows = np.arange(len(labels))
    for w in WEIGHTS if log_b is not None else (0.0,):
        mixed = log_a if log_b is None or w == 0 else (1 - w) * log_a + w * log_b
        mixed = np.exp(mixed - mixed.max(axis=1, keepdims=True))
        probs, t = calibrate(mixed / mixed.sum(axis=1, keepdims=True), labels)
        nll = float(-np.log(np.clip(probs[rows, labels], 1e-12, 1.0)).mean())
        if best is None or nll < best[0] - 1e-9:  # ties: the smaller weight
            best = (nll, probs, t, float(w))
    assert best is not None
    return best[1], best[2], best[3]


def concept_scores(concepts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Off-topic z-scores from ImageNet probabilities (n, 1000): the cross-entropy of the
    closest class's mean distribution under each photo's own."""
    k = int(labels.max()) + 1
    log_p = np.log(np.clip(concepts, 1e-9, 1.0))
    means = class_means(*class_sums(concepts, labels, k))
    cross = -(log_p @ means.T)  # (n, k)
    return robust_z(cross.min(axis=1))


def knn_scores(x: np.ndarray, k: int = 10) -> np.ndarray:
    """Off-topic z-scores from cleanlab's OutOfDistribution on the features (a fallback)."""
    from cleanlab.outlier import OutOfDistribution

    z = normalise(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ood = OutOfDistribution(params={"k": max(1, min(k, len(z) - 1))})
        typical = np.asarray(ood.fit_score(features=z, verbose=False), dtype=np.float64)
    return robust_z(-np.log(np.clip(typical, 1e-12, 1.0)))


# Up to this many photos every pair is compared (exact; about 3 s at 8k photos on 2 cores);
# above, each photo is compared only with the photos of its nearest buckets: sub-quadratic.
EXACT_UP_TO = 8192
PROBES = 8  # buckets a photo is compared with: its own and the 7 nearest


def cross_class_duplicates(
    x: np.ndarray,
    labels: np.ndarray,
    threshold: float = DUPLICATE_SIMILARITY,
    *,
    same_bytes: Sequence[str] | None = None,
    exact_up_to: int = EXACT_UP_TO,
    seed: int = 42,
) -> tuple[np.ndarray, np.ndarray]:
    """For each photo, its most similar photo in another class if above ``threshold``.

    ``same_bytes``: a key per photo equal for identical files (the feature cache's
    content keys): such photos in two classes are always found, at similarity 1.
    Past ``exact_up_to`` photos the search is approximate (:func:`_bucketed`); a pair
    found is always reported on both sides."""
    z = normalise(x).astype(np.float32)
    labels = np.asarray(labels)
    if len(z) <= exact_up_to:
        best, sim = _all_pairs(z, labels, threshold)
    else:
        best, sim = _bucketed(z, labels, threshold, seed)
    if same_bytes is not None:
        _same_bytes(same_bytes, labels, best, sim)
    _symmetric(best, sim)
    return best, sim


def _all_pairs(
    z: np.ndarray, labels: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Every photo against every photo (blocks of 512 rows): exact, quadratic."""
    best = np.full(len(z), -1, dtype=np.int64)
    sim = np.zeros(len(z), dtype=np.float64)
    for start in range(0, len(z), 512):
        block = z[start : start + 512] @ z.T
        block[labels[start : start + 512, None] == labels[None, :]] = -1.0
        j = block.argmax(axis=1)
        s = block[np.arange(len(block)), j]
        hit = s >= threshold
        best[start : start + len(block)][hit] = j[hit]
        sim[start : start + len(block)][hit] = s[hit]
    return best, sim


def _bucketed(
    z: np.ndarray, labels: np.ndarray, threshold: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """An inverted-file search done with matrix products: about sqrt(n) buckets (spherical
    k-means on a seeded sample), each photo filed in its nearest bucket and compared,
    exactly, with every photo filed in its ``PROBES`` nearest: about ``PROBES * n *
    sqrt(n)`` similarities instead of ``n * n``. Two photos that similar are filed in
    the same bucket or in each other's nearest ones (the planted pairs of
    bench/review_scale.py: all found). Deterministic given the seed."""
    n = len(z)
    centres = _centres(z, int(np.sqrt(n)), seed)
    probes = min(PROBES, len(centres))
    near = np.empty((n, probes), dtype=np.int64)
    for start in range(0, n, 8192):
        s = z[start : start + 8192] @ centres.T
        top = np.argpartition(-s, probes - 1, axis=1)[:, :probes]
        order = np.take_along_axis(s, top, axis=1).argsort(axis=1)[:, ::-1]
        near[start : start + len(s)] = np.take_along_axis(top, order, axis=1)
    members = _groups(near[:, 0], len(centres))  # each photo in its own bucket
    askers = _groups(near.ravel(), len(centres), np.repeat(np.arange(n), probes))
    best = np.full(n, -1, dtype=np.int64)
    sim = np.zeros(n, dtype=np.float64)
    for c in range(len(centres)):
        m, q = members[c], askers[c]
        if not len(m) or not len(q):
            continue
        block = z[q] @ z[m].T
        block[labels[q, None] == labels[None, m]] = -1.0
        j = block.argmax(axis=1)
        s = block[np.arange(len(q)), j].astype(np.float64)
        better = (s >= threshold) & (s > sim[q])
        best[q[better]], sim[q[better]] = m[j[better]], s[better]
    return best, sim


def _centres(z: np.ndarray, k: int, seed: int, rounds: int = 6) -> np.ndarray:
    """``k`` unit centres by spherical k-means on a seeded sample of ``40 k`` photos."""
    rng = np.random.default_rng(seed)
    sample = z[np.sort(rng.choice(len(z), min(len(z), 40 * k), replace=False))]
    centres = sample[rng.choice(len(sample), k, replace=False)].copy()
    for _ in range(rounds):
        own = (sample @ centres.T).argmax(axis=1)
        sums = np.zeros_like(centres)
        np.add.at(sums, own, sample)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centres = np.where(norms > 0, sums / np.maximum(norms, 1e-12), centres)
    return centres.astype(np.float32)


def _groups(bucket: np.ndarray, k: int, values: np.ndarray | None = None) -> list[np.ndarray]:
    """``values`` (default: positions) grouped by ``bucket`` (0..k-1), in one sort."""
    values = np.arange(len(bucket)) if values is None else values
    order = np.argsort(bucket, kind="stable")
    bounds = np.searchsorted(bucket[order], np.arange(k + 1))
    return [values[order[bounds[c] : bounds[c + 1]]] for c in range(k)]


def _same_bytes(keys: Sequence[str], labels: np.ndarray, best: np.ndarray, sim: np.ndarray) -> None:
    """Identical files in two classes, exactly (by content key), whatever the features."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        if len(members) < 2 or len({int(labels[i]) for i in members}) < 2:
            continue
        for i in members:
            j = next(j for j in members if labels[j] != labels[i])
            best[i], sim[i] = j, 1.0


def _symmetric(best: np.ndarray, sim: np.ndarray) -> None:
    """A photo found as another's duplicate is flagged too (the label of either is unsure)."""
    for i in np.flatnonzero(best >= 0):
        j = int(best[i])
        if best[j] < 0 or sim[j] < sim[i]:
            best[j], sim[j] = i, sim[i]


def score(
    x: np.ndarray,
    labels: np.ndarray,
    concepts: np.ndarray | None,
    *,
    folds: int = FOLDS,
    seed: int = 42,
    c: float = C,
    duplicate: float = DUPLICATE_SIMILARITY,
    same_bytes: Sequence[str] | None = None,
    on_progress: ProgressFn | None = None,
) -> Scores:
    """Every score for features ``x`` (n, d) with given ``labels``; ``concepts``: the
    ImageNet probabilities of the same photos (None: the k-NN fallback); ``duplicate``:
    the similarity from which a photo of another class counts as the same picture."""
    from cleanlab.rank import get_label_quality_scores

    raw = out_of_fold(x, labels, folds=folds, seed=seed, c=c, on_progress=on_progress)
    by_concepts = concept_class_probs(concepts, labels) if concepts is not None else None
    probs, temperature, weight = combine(raw, by_concepts, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quality = get_label_quality_scores(labels, probs, method="self_confidence")
    dup, dup_sim = cross_class_duplicates(x, labels, duplicate, same_bytes=same_bytes, seed=seed)
    if concepts is not None:
        off, method = concept_scores(concepts, labels), "imagenet-concepts"
    else:
        off, method = knn_scores(x), "knn"
    return Scores(
        probs=probs,
        label_quality=np.asarray(quality, dtype=np.float64),
        temperature=temperature,
        off_topic=off,
        off_topic_method=method,
        duplicate_of=dup,
        duplicate_similarity=dup_sim,
        concept_weight=weight,
    )

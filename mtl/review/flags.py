"""From scores to findings: one reason per flagged photo, a score in [0, 1], worst first."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl.errors import UsageError
from mtl.review.quality import Stats
from mtl.review.scores import Scores


@dataclass(frozen=True)
class Thresholds:
    """When a photo is flagged. Defaults chosen in bench/review_noise.py (both shared
    datasets, three noise seeds each); see docs/benchmarks.md#review."""

    # Another class wins out of fold and the calibrated out-of-fold probability of the
    # given class is below this fraction of chance (wrong_label / k for k classes).
    wrong_label: float = 0.7
    # Robust z-score of the off-topic score (about standard-normal for typical photos).
    off_topic: float = 3.5
    # Cosine similarity of pooled features to a photo of another class.
    duplicate: float = 0.97
    dark: float = 0.12  # mean luminance below this (0 black, 1 white)
    blurry: float = 0.0008  # variance of the Laplacian at 256 px below this
    aspect: float = 3.0  # long side over short side above this
    # The detail fills less than this share of the photo (quality.detail_area): a small
    # subject on a plain or blurred background. No shared photo is under 0.09.
    tiny: float = 0.08
    # --relabel moves a wrong-label photo only when the suggested class is this sure.
    relabel: float = 0.9

    def check(self) -> Thresholds:
        """Refuse (exit 2) a threshold that is not a number in its range."""
        for name, limit in LIMITS.items():
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                in_range = False
            elif limit.positive:
                in_range = limit.low < value <= limit.high
            else:
                in_range = limit.low <= value <= limit.high
            if not in_range:
                raise UsageError(f"{limit.option} must be a number {limit.bound}. Received {value}")
        return self


@dataclass(frozen=True)
class Limit:
    """A threshold's range, and the option that sets it (the API's name where the
    command line has none: ``thresholds.dark``)."""

    low: float
    high: float
    option: str
    help: str = ""  # the option's line in mtl review --help
    positive: bool = False  # above ``low`` (0), not from it

    @property
    def bound(self) -> str:
        if self.positive:
            return f"above {self.low:g} and at most {self.high:g}"
        return f"from {self.low:g} to {self.high:g}"


# One row per Thresholds field. duplicate: below 0.5 photos that merely share a subject
# would count as the same picture.
LIMITS: dict[str, Limit] = {
    "wrong_label": Limit(
        0.0,
        1.0,
        "--label-threshold",
        "wrong_label only when the given class's calibrated out-of-fold probability "
        "is below this times chance (1/k for k classes).",
        positive=True,
    ),
    "off_topic": Limit(
        0.0,
        100.0,
        "--off-topic-threshold",
        "off_topic at this robust z-score and above.",
        positive=True,
    ),
    "duplicate": Limit(
        0.5, 1.0, "--duplicate-threshold", "Feature similarity of a cross-class duplicate."
    ),
    "dark": Limit(0.0, 1.0, "thresholds.dark"),
    "blurry": Limit(0.0, 1.0, "thresholds.blurry"),
    "aspect": Limit(1.0, 1000.0, "thresholds.aspect"),
    "tiny": Limit(0.0, 1.0, "thresholds.tiny"),
    "relabel": Limit(
        0.0, 1.0, "--relabel-confidence", "--relabel only when the suggestion is this sure."
    ),
}


@dataclass(frozen=True)
class Finding:
    """One flagged photo."""

    index: int  # row in the scored photos
    path: Path
    given: str
    suggested: str | None  # the likelier class (wrong label), else None
    reason: str
    score: float  # 0.5 at the reason's threshold, towards 1 the further past it (any reason)
    detail: str  # in words
    probability: float  # out-of-fold probability of the given class
    suggested_probability: float = 0.0  # out-of-fold probability of the suggested class
    priority: float = 0.0  # what the list is sorted by, worst first (see priority())

    def to_json(self, root: Path) -> dict[str, object]:
        return {
            "file": self.path.relative_to(root).as_posix(),
            "given": self.given,
            "suggested": self.suggested,
            "reason": self.reason,
            "score": round(self.score, 4),
            "priority": round(self.priority, 4),
            "given_probability": round(self.probability, 4),
            "suggested_probability": round(self.suggested_probability, 4)
            if self.suggested
            else None,
            "detail": self.detail,
        }


# Label problems: the reasons whose fix is the photo's label (or its removal).
LABEL_REASONS = ("off_topic", "wrong_label")
PRIORITY = (
    "Priority = 1 - (1 - w)(1 - o)(1 - q): the chance that at least one of three problems "
    "is real, taken as independent. w: the calibrated out-of-fold chance that the given "
    "class is wrong (1 - its probability); o: how surely the photo fits no class, 0.5 at "
    "the off-topic threshold and 0.9 at 2.2 z past it; q: the score of an image or "
    "duplicate problem (0.5 at its threshold, towards 1 past it; 0 for label problems). "
    "So an off-topic photo ranks with the wrong labels, above photos near the boundary "
    "of two classes."
)


def priority(p_given: float, off_topic_z: float, t: Thresholds, quality: float = 0.0) -> float:
    """One number for every flagged photo, worst first: :data:`PRIORITY` in words. Off-topic
    and wrong-label evidence combine (an off-topic photo's label is wrong whatever the
    class probabilities say), so an off-topic photo no longer ranks below a photo that
    is merely between two classes."""
    wrong = min(max(1.0 - p_given, 0.0), 1.0)
    x = min(max(off_topic_z - t.off_topic, -50.0), 50.0)
    off = 1.0 / (1.0 + math.exp(-x))
    return float(1.0 - (1.0 - wrong) * (1.0 - off) * (1.0 - min(max(quality, 0.0), 1.0)))


# Every reason's score is 0.5 at its threshold and grows towards 1 the further past it,
# so one list sorted by score (and --top N) ranks all reasons alike.


def _above(value: float, threshold: float) -> float:
    """For a value flagged above ``threshold`` (z-scores, aspect ratios)."""
    return float(value / (value + threshold)) if value + threshold > 0 else 1.0


def _below(value: float, threshold: float) -> float:
    """For a value flagged below ``threshold`` (probabilities, brightness, sharpness)."""
    return float(1.0 - max(value, 0.0) / max(threshold, 1e-12) / 2)


def _towards_one(value: float, threshold: float) -> float:
    """For a similarity flagged from ``threshold`` up to its maximum, 1."""
    return float(0.5 + 0.5 * (value - threshold) / max(1.0 - threshold, 1e-12))


@dataclass(frozen=True)
class _Photos:
    """What the reasons' tests read: the scored photos and their scores."""

    paths: Sequence[Path]
    labels: np.ndarray
    classes: Sequence[str]
    scores: Scores
    stats: Sequence[Stats | None]

    def stat(self, i: int) -> Stats | None:
        return self.stats[i] if i < len(self.stats) else None


@dataclass(frozen=True)
class _Hit:
    score: float
    detail: str
    suggested: int | None = None  # the likelier class (wrong label)


def _duplicate(p: _Photos, i: int, t: Thresholds) -> _Hit | None:
    j, similarity = int(p.scores.duplicate_of[i]), float(p.scores.duplicate_similarity[i])
    if j < 0 or similarity < t.duplicate:
        return None
    where = f"near-identical to {p.paths[j].name} in {p.classes[int(p.labels[j])]}"
    return _Hit(_towards_one(similarity, t.duplicate), where)


def _off_topic(p: _Photos, i: int, t: Thresholds) -> _Hit | None:
    z = float(p.scores.off_topic[i])
    if z < t.off_topic:
        return None
    return _Hit(_above(z, t.off_topic), f"fits no class (off-topic z {z:.1f})")


def _wrong_label(p: _Photos, i: int, t: Thresholds) -> _Hit | None:
    s, given, other = p.scores, int(p.labels[i]), int(p.scores.suggested[i])
    below = t.wrong_label / s.probs.shape[1]  # a fraction of chance, 1/k
    if other == given or s.label_quality[i] >= below:
        return None
    odds = f"{s.probs[i, other]:.2f} vs {s.probs[i, given]:.2f}"
    detail = f"looks like {p.classes[other]} ({odds})"
    return _Hit(_below(float(s.label_quality[i]), below), detail, other)


def _dark(p: _Photos, i: int, t: Thresholds) -> _Hit | None:
    s = p.stat(i)
    if s is None or s.brightness >= t.dark:
        return None
    return _Hit(_below(s.brightness, t.dark), f"very dark (mean {s.brightness:.2f})")


def _tiny_subject(p: _Photos, i: int, t: Thresholds) -> _Hit | None:
    s = p.stat(i)
    if s is None or s.detail_area >= t.tiny:
        return None
    detail = f"a small subject: its detail fills {s.detail_area:.0%} of the photo"
    return _Hit(_below(s.detail_area, t.tiny), detail)


def _blurry(p: _Photos, i: int, t: Thresholds) -> _Hit | None:
    s = p.stat(i)
    if s is None or s.sharpness >= t.blurry:
        return None
    return _Hit(_below(s.sharpness, t.blurry), f"blurry (sharpness {s.sharpness:.5f})")


def _odd_aspect(p: _Photos, i: int, t: Thresholds) -> _Hit | None:
    s = p.stat(i)
    if s is None or s.aspect <= t.aspect:
        return None
    detail = f"aspect ratio {s.aspect:.1f}:1 ({s.width}x{s.height})"
    return _Hit(_above(s.aspect, t.aspect), detail)


@dataclass(frozen=True)
class Reason:
    """Why a photo is flagged: what ``--help``, the page, the table and the JSON say."""

    name: str  # in the JSON, the table, and the folder --apply moves it to
    meaning: str  # in words (--help, the page's legend)
    threshold: str  # the Thresholds field that decides it (LIMITS names its option)
    test: Callable[[_Photos, int, Thresholds], _Hit | None]
    colour: str = ""  # its name's colour on the page ("": the text's)


# In the order they win when several apply to one photo.
REASON_TABLE: tuple[Reason, ...] = (
    Reason("duplicate", "a near-identical photo in another class", "duplicate", _duplicate, "#60a"),
    Reason("off_topic", "fits no class", "off_topic", _off_topic, "#a50"),
    Reason(
        "wrong_label",
        "another class is likelier, the given one far below chance",
        "wrong_label",
        _wrong_label,
        "#b00",
    ),
    Reason("dark", "very dark", "dark", _dark),
    # Before blurry: a small sharp subject on a blurred background is not a blurry photo.
    Reason(
        "tiny_subject",
        "a small subject on a plain or blurred background",
        "tiny",
        _tiny_subject,
    ),
    Reason("blurry", "little sharp detail anywhere", "blurry", _blurry),
    Reason("odd_aspect", "very wide or very tall", "aspect", _odd_aspect),
)
REASONS = tuple(r.name for r in REASON_TABLE)


def find(
    paths: Sequence[Path],
    labels: np.ndarray,
    classes: Sequence[str],
    scores: Scores,
    stats: Sequence[Stats | None],
    t: Thresholds,
) -> list[Finding]:
    """Every photo past a threshold, with its first reason (REASON_TABLE's order), worst
    first by :func:`priority`."""
    photos = _Photos(paths, labels, classes, scores, stats)
    out: list[Finding] = []
    for i in range(len(paths)):
        for reason in REASON_TABLE:
            hit = reason.test(photos, i, t)
            if hit is not None:
                break
        else:
            continue
        given = int(labels[i])
        suggested = classes[hit.suggested] if hit.suggested is not None else None
        p_suggested = float(scores.probs[i, hit.suggested]) if hit.suggested is not None else 0.0
        p_given = float(scores.probs[i, given])
        quality = 0.0 if reason.name in LABEL_REASONS else hit.score
        rank = priority(p_given, float(scores.off_topic[i]), t, quality)
        out.append(
            Finding(
                i,
                paths[i],
                classes[given],
                suggested,
                reason.name,
                hit.score,
                hit.detail,
                p_given,
                p_suggested,
                rank,
            )
        )
    out.sort(key=lambda f: (-f.priority, REASONS.index(f.reason), str(f.path)))
    return out


def every_photo(
    root: Path,
    paths: Sequence[Path],
    labels: np.ndarray,
    classes: Sequence[str],
    scores: Scores,
    stats: Sequence[Stats | None],
    found: Sequence[Finding],
) -> list[dict[str, object]]:
    """One row of scores per photo, flagged or not (``--json``'s ``scores``)."""
    reasons = {f.index: f.reason for f in found}
    rows: list[dict[str, object]] = []
    for i, path in enumerate(paths):
        s = stats[i] if i < len(stats) else None
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        probs = zip(classes, scores.probs[i], strict=True)
        row = {
            "file": rel,
            "given": classes[int(labels[i])],
            "likeliest": classes[int(scores.suggested[i])],
            "probabilities": {c: round(float(p), 4) for c, p in probs},
            "label_quality": round(float(scores.label_quality[i]), 4),
            "off_topic_z": round(float(scores.off_topic[i]), 3),
            "duplicate_similarity": round(float(scores.duplicate_similarity[i]), 4),
            "brightness": round(s.brightness, 4) if s else None,
            "sharpness": round(s.sharpness, 6) if s else None,
            "detail_area": round(s.detail_area, 4) if s else None,
            "aspect": round(s.aspect, 3) if s else None,
            "flagged": reasons.get(i),
        }
        rows.append(row)
    return rows

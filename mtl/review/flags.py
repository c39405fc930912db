"""From scores to findings: one reason per flagged photo, a score in [0, 1], worst first."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl.errors import UsageError
from mtl.review.quality import Stats
from mtl.review.scores import Scores

# Reasons, in the order they win when several apply to one photo.
REASONS = ("duplicate", "off_topic", "wrong_label", "dark", "tiny_subject", "blurry", "odd_aspect")


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
        for name, (low, high, option) in _RANGES.items():
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and math.isfinite(value)
            if not ok or not low <= value <= high or (name in _POSITIVE and value <= 0):
                bound = f"above 0 and at most {high:g}" if name in _POSITIVE else (
                    f"from {low:g} to {high:g}")  # fmt: skip
                raise UsageError(f"{option} must be a number {bound}. Received {value}")
        return self


# Each threshold's range, and the option that sets it (the API's name in brackets).
# duplicate: below 0.5 photos that merely share a subject would count as the same picture.
_RANGES = {
    "wrong_label": (0.0, 1.0, "--label-threshold"),
    "off_topic": (0.0, 100.0, "--off-topic-threshold"),
    "duplicate": (0.5, 1.0, "--duplicate-threshold"),
    "dark": (0.0, 1.0, "thresholds.dark"),
    "blurry": (0.0, 1.0, "thresholds.blurry"),
    "aspect": (1.0, 1000.0, "thresholds.aspect"),
    "tiny": (0.0, 1.0, "thresholds.tiny"),
    "relabel": (0.0, 1.0, "--relabel-confidence"),
}
_POSITIVE = {"wrong_label", "off_topic"}


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

    def to_json(self, root: Path) -> dict[str, object]:
        return {
            "file": self.path.relative_to(root).as_posix(),
            "given": self.given,
            "suggested": self.suggested,
            "reason": self.reason,
            "score": round(self.score, 4),
            "given_probability": round(self.probability, 4),
            "suggested_probability": round(self.suggested_probability, 4)
            if self.suggested
            else None,
            "detail": self.detail,
        }


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


def find(
    paths: Sequence[Path],
    labels: np.ndarray,
    classes: Sequence[str],
    scores: Scores,
    stats: Sequence[Stats | None],
    t: Thresholds,
) -> list[Finding]:
    """Every photo past a threshold, with its strongest reason, worst first per reason."""
    suggested = scores.suggested
    n = len(paths)
    q = scores.label_quality
    below = t.wrong_label / scores.probs.shape[1]
    out: list[Finding] = []
    for i in range(n):
        given = classes[int(labels[i])]
        p_given = float(scores.probs[i, labels[i]])
        s = stats[i] if i < len(stats) else None
        reason, score, detail, suggest = "", 0.0, "", None
        if scores.duplicate_of[i] >= 0 and scores.duplicate_similarity[i] >= t.duplicate:
            j = int(scores.duplicate_of[i])
            reason = "duplicate"
            score = _towards_one(float(scores.duplicate_similarity[i]), t.duplicate)
            detail = f"near-identical to {paths[j].name} in {classes[int(labels[j])]}"
        elif scores.off_topic[i] >= t.off_topic:
            z = float(scores.off_topic[i])
            reason, score = "off_topic", _above(z, t.off_topic)
            detail = f"fits no class (off-topic z {z:.1f})"
        elif suggested[i] != labels[i] and q[i] < below:
            other = classes[int(suggested[i])]
            reason, score, suggest = "wrong_label", _below(float(q[i]), below), other
            detail = f"looks like {other} ({scores.probs[i, suggested[i]]:.2f} vs {p_given:.2f})"
        elif s is not None and s.brightness < t.dark:
            reason, score = "dark", _below(s.brightness, t.dark)
            detail = f"very dark (mean {s.brightness:.2f})"
        elif s is not None and s.detail_area < t.tiny:  # before blurry: sharp, but small
            reason, score = "tiny_subject", _below(s.detail_area, t.tiny)
            detail = f"a small subject: its detail fills {s.detail_area:.0%} of the photo"
        elif s is not None and s.sharpness < t.blurry:
            reason, score = "blurry", _below(s.sharpness, t.blurry)
            detail = f"blurry (sharpness {s.sharpness:.5f})"
        elif s is not None and s.aspect > t.aspect:
            reason, score = "odd_aspect", _above(s.aspect, t.aspect)
            detail = f"aspect ratio {s.aspect:.1f}:1 ({s.width}x{s.height})"
        if reason:
            p_suggested = float(scores.probs[i, suggested[i]]) if suggest else 0.0
            out.append(
                Finding(i, paths[i], given, suggest, reason, score, detail, p_given, p_suggested)
            )
    out.sort(key=lambda f: (-f.score, REASONS.index(f.reason), str(f.path)))
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
        rows.append({
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
        })  # fmt: skip
    return rows

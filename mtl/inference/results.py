"""Per-image results shared by classify and predict, and their JSON shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mtl import reprs


@dataclass(frozen=True)
class Prediction:
    rank: int
    label: str
    probability: float
    wnid: str | None = None  # ImageNet WordNet id; None for a trained model's classes

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"rank": self.rank}
        if self.wnid is not None:
            data["wnid"] = self.wnid
        data["label"] = self.label
        data["probability"] = round(self.probability, 6)
        return data


@dataclass(frozen=True)
class ImageResult:
    """One image's predictions, or the one-line reason it failed."""

    file: str
    predictions: list[Prediction] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        return {"file": self.file, "predictions": [p.to_json() for p in self.predictions]}

    def __repr__(self) -> str:
        if self.error is not None:
            return reprs.short_repr("ImageResult", {"file": self.file, "error": self.error})
        best = self.predictions[0] if self.predictions else None
        shown = {"label": best.label, "probability": best.probability} if best else {}
        return reprs.short_repr("ImageResult", {"file": self.file, **shown})


class ImageResults(list[ImageResult]):
    """The results of ``mtl.classify``: a list, with ``to_json()`` (what ``--json``
    prints), a one-line repr and an HTML table."""

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self]

    def __repr__(self) -> str:
        return f"ImageResults({summary(self)})"

    def _repr_html_(self) -> str:
        return results_html(self, "mtl classify")


def summary(results: list[ImageResult]) -> str:
    """``3 images, 1 unreadable: a.jpg ants 0.9812, ...`` (the first few)."""
    failed = sum(not r.ok for r in results)
    best = [
        f"{r.file} {r.predictions[0].label} {r.predictions[0].probability:.4f}"
        for r in results[:3]
        if r.ok and r.predictions
    ]
    more = ", ..." if len(results) > 3 else ""
    head = f"{len(results)} image(s)" + (f", {failed} unreadable" if failed else "")
    return head + (": " + ", ".join(best) + more if best else "")


def results_html(results: list[ImageResult], caption: str) -> str:
    """One row per (image, rank), as the CLI's table; unreadable images with their reason."""
    rows: list[list[Any]] = []
    for r in results:
        if not r.ok:
            rows.append([r.file, "", r.error, ""])
        for p in r.predictions:
            rows.append([r.file if p.rank == 1 else "", p.rank, p.label, p.probability])
    return reprs.html_table(caption, ["file", "rank", "label", "probability"], rows)


def top_k(
    probabilities: Any, labels: list[str], k: int, wnids: list[str] | None = None
) -> list[Prediction]:
    """The k most probable classes of one probability vector, best first."""
    import numpy as np

    probs = np.asarray(probabilities, dtype=np.float64)
    k = min(k, probs.shape[-1])
    # Stable sort so equal probabilities keep class order: same input, same output.
    order = np.argsort(-probs, kind="stable")[:k]
    return [
        Prediction(
            rank=i + 1,
            label=labels[j],
            probability=float(probs[j]),
            wnid=wnids[j] if wnids else None,
        )
        for i, j in enumerate(order)
    ]

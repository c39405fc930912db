"""Per-image results shared by classify and predict, and their JSON shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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

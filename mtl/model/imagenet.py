"""The 1000 ImageNet classes, read from Keras' imagenet_class_index.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mtl.errors import WeightsUnavailable


@dataclass(frozen=True)
class ClassIndex:
    wnids: list[str]
    labels: list[str]


def load_class_index(path: Path) -> ClassIndex:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        items = sorted(((int(k), v) for k, v in raw.items()), key=lambda kv: kv[0])
        wnids = [str(v[0]) for _, v in items]
        labels = [str(v[1]) for _, v in items]
    except (OSError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise WeightsUnavailable(f"cannot read the ImageNet class index {path}: {exc}") from None
    if len(labels) != 1000:
        raise WeightsUnavailable(
            f"the ImageNet class index {path} has {len(labels)} classes, expected 1000"
        )
    return ClassIndex(wnids=wnids, labels=labels)

"""ImageNet itself: the 1000 classes (Keras' imagenet_class_index.json) and MobileNet's
ImageNet top, the one Dense layer over the pooled features in an include-top weights
file (review's off-topic and wrong-label scores, train's ImageNet prior)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl import files
from mtl.errors import WeightsUnavailable
from mtl.model import backbones


@dataclass(frozen=True)
class ClassIndex:
    wnids: list[str]
    labels: list[str]


def load_class_index(path: Path) -> ClassIndex:
    try:
        raw = files.read_json(path, "the ImageNet class index")
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


# The dense layer over the pooled features in each family's include-top file.
def has_top(model: str) -> bool:
    """Whether ``model``'s ImageNet top is one layer over the pooled features here."""
    family = backbones.FAMILIES.get(model)
    return family is not None and family.top_layer is not None


def read_top(path: Path, model: str) -> tuple[np.ndarray, np.ndarray]:
    """The ImageNet top's kernel (d, 1000) and bias (1000,), float64, from ``path``, an
    include-top weights file of ``model``."""
    import h5py  # a Keras dependency

    with h5py.File(path, "r") as f:
        group = f[backbones.FAMILIES[model].top_layer]
        found: dict[str, np.ndarray] = {}

        def keep(name: str, obj: object) -> None:  # visititems stops at a non-None return
            if isinstance(obj, h5py.Dataset):
                found.setdefault(name.rsplit("/", 1)[-1].split(":")[0], obj[()])

        group.visititems(keep)
    kernel = np.asarray(found["kernel"], dtype=np.float64)
    kernel = kernel.reshape(-1, kernel.shape[-1])  # (1, 1, d, 1000) or (d, 1000)
    return kernel, np.asarray(found["bias"], dtype=np.float64)

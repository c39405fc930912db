"""`mtl train` data handling that needs no model: scan, stable split, errors, config presets."""

from __future__ import annotations

import shutil

from mtl.data import dataset
from tests.conftest import HYMENOPTERA


def test_real_split_proportions():
    ds = dataset.scan(HYMENOPTERA, val_split=0.2, seed=42)
    assert ds.classes == ["ants", "bees"]
    assert ds.counts("val") == [25, 24] and ds.counts("train") == [99, 97]


def test_copy_of_real_photo_keeps_its_side(tmp_path):
    """Moving the dataset elsewhere does not change the split (paths relative to the class)."""
    for cls in ("ants", "bees"):
        shutil.copytree(HYMENOPTERA / cls, tmp_path / cls)
    a = {(it.path.name, it.subset) for it in dataset.scan(HYMENOPTERA).items}
    b = {(it.path.name, it.subset) for it in dataset.scan(tmp_path).items}
    assert a == b

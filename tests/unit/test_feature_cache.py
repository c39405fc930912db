"""The feature cache alone: keys, memory budget and spill, shared folders, damage."""

from __future__ import annotations

import numpy as np

from mtl.data import features


def test_keys_depend_on_content_and_spec(tmp_path):
    a, b, c = tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.jpg"
    a.write_bytes(b"one")
    b.write_bytes(b"one")  # same bytes, other name: the same entry
    c.write_bytes(b"two")
    da, db, dc = (features.file_digest(p) for p in (a, b, c))
    key = features.FeatureCache.key
    assert key(da, "s") == key(db, "s") != key(dc, "s")
    assert key(da, "s") != key(da, "other spec")


def test_entries_spill_to_files_beyond_the_budget(tmp_path):
    row = np.arange(256, dtype=np.float32)  # 1 KiB
    cache = features.FeatureCache(folder=tmp_path, memory_bytes=2048)
    for i in range(4):
        cache.put(f"k{i:02d}", row + i)
    assert cache.stats.spilled == 2
    assert len(list(tmp_path.rglob("*.npy"))) == 2
    for i in range(4):
        assert f"k{i:02d}" in cache
        np.testing.assert_array_equal(cache.get(f"k{i:02d}"), row + i)
    np.testing.assert_array_equal(features.stack(cache, ["k00", "k03"]), np.stack([row, row + 3]))


def test_a_shared_folder_is_read_by_later_caches(tmp_path):
    first = features.FeatureCache(folder=tmp_path, persistent=True)
    first.put("key", np.ones(3, np.float32))
    later = features.FeatureCache(folder=tmp_path)
    assert "key" in later
    np.testing.assert_array_equal(later.get("key"), np.ones(3))


def test_a_broken_entry_is_a_miss(tmp_path):
    cache = features.FeatureCache(folder=tmp_path, persistent=True)
    cache.put("key", np.ones(3, np.float32))
    (npy,) = tmp_path.rglob("*.npy")
    npy.write_bytes(b"not numpy")
    assert features.FeatureCache(folder=tmp_path).get("key") is None
    assert not npy.exists()


def test_pad_rows():
    x = np.ones((3, 2), np.float32)
    padded = features.pad_rows(x, 8)
    assert padded.shape == (8, 2) and padded[3:].sum() == 0
    assert features.pad_rows(x, 3) is x and features.pad_rows(x, 0) is x

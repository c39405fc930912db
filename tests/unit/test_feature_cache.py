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
    row = np.arange(512, dtype=np.float32)  # 1 KiB once stored as float16 (exact: integers)
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


def test_pooled_features_are_kept_as_float16_of_their_shape(tmp_path):
    """Pooled features (one row per view) are what a large run holds all along: half the
    bytes of float32. Feature maps (a cut inside the base) and pixels keep their type."""
    rng = np.random.default_rng(0)
    pooled = (rng.random((2, 1024)) * 6).astype(np.float32)  # 2 views, ReLU6 range
    cache = features.FeatureCache(folder=tmp_path, persistent=True)
    cache.put("pooled", pooled)
    cache.put("one-view", pooled[0])
    cache.put("map", np.ones((7, 7, 32), np.float32))
    cache.put("pixels", np.zeros((8, 8, 3), np.uint8))
    got = cache.get("pooled")
    assert got is not None and got.dtype == np.float16 and got.shape == (2, 1024)
    assert got.nbytes == 2 * 1024 * 2
    np.testing.assert_allclose(got, pooled, rtol=2**-11)  # float16: 11 significant bits
    assert cache.get("one-view").dtype == np.float16
    assert cache.get("map").dtype == np.float32 and cache.get("pixels").dtype == np.uint8
    on_disk = features.FeatureCache(folder=tmp_path).get("pooled")  # the .npy file, too
    assert on_disk is not None and on_disk.dtype == np.float16


def test_stack_with_release_holds_the_features_once():
    """``stack(release=True)`` moves entries into one float16 array: the cache's memory is
    freed entry by entry, so a run never holds its features twice."""
    cache = features.FeatureCache()
    rows = np.arange(6 * 2 * 4, dtype=np.float32).reshape(6, 2, 4)
    for i, r in enumerate(rows):
        cache.put(f"k{i}", r)
    assert cache._used == 6 * 2 * 4 * 2
    # k0 twice: two files with the same bytes share one entry
    x = features.stack(cache, [f"k{i}" for i in (5, 0, 3, 0)], release=True)
    assert x.dtype == np.float16 and x.shape == (4, 2, 4)
    np.testing.assert_array_equal(x, rows[[5, 0, 3, 0]])
    assert cache._used == 3 * 2 * 4 * 2 and "k5" not in cache and "k1" in cache


def test_digests_in_parallel_match_one_by_one(tmp_path):
    """The cache keys of many files are hashed on every core, in the order given, with an
    unreadable file's reason in its place."""
    paths = []
    for i in range(100):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(bytes([i]) * (5000 + i))
        paths.append(p)
    paths.insert(50, tmp_path / "missing.jpg")
    got = features.digests(paths)
    assert got[50] == "!no such file"
    assert got[:50] + got[51:] == [features.file_digest(p) for p in paths[:50] + paths[51:]]

"""Training's memory after the base pass grows with the photos by their float16 features
alone (issue 35): the cache's copies are released into one matrix, every subset's rows
are slices of it, and nothing else is held per photo. Measured with tracemalloc (NumPy's
arrays are traced), on the real NumPy engine and Session, with random features in place
of the base pass: no weights, no wall clock."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np

from mtl.data import dataset, features
from mtl.pipeline.basepass import BasePass, cpu_devices
from mtl.pipeline.config import TrainConfig, validate
from mtl.training.headrun import NumpyEngine
from mtl.training.results import Hooks
from mtl.training.session import Session

VIEWS, DIM, CLASSES = 2, 1024, 4


def _session(tmp_path: Path, photos: int) -> tuple[Session, NumpyEngine]:
    """A run's state right after its base pass: every photo's pooled features in the cache."""
    cfg = validate(TrainConfig(epochs=2, patience=0, prior=False))
    items = [
        dataset.Item(tmp_path / f"{i}.jpg", i % CLASSES, "val" if i % 5 == 0 else "train")
        for i in range(photos)
    ]
    ds = dataset.Dataset(tmp_path, [f"c{i}" for i in range(CLASSES)], items, "split")
    cache = features.FeatureCache()
    rng = np.random.default_rng(photos)
    centers = rng.random((CLASSES, 1, DIM), np.float32) * 3
    for it in items:
        noise = rng.random((VIEWS, DIM), np.float32)
        cache.put(str(it.path), centers[it.label] + noise)
    run_dir = tmp_path / f"run{photos}"
    run_dir.mkdir(parents=True)
    base = BasePass(cfg, tmp_path / "weights.h5")
    session = Session(cfg, ds, tmp_path, cpu_devices(), run_dir, cache, base, Hooks())
    session.key_of = {it.path: str(it.path) for it in items}
    engine = NumpyEngine(session)
    session.engine = engine
    return session, engine


def _peak_of_training(tmp_path: Path, photos: int) -> tuple[int, int]:
    """Traced bytes held before training (the cache, filled) and the peak while the head
    trains, is refit and scored: what a run holds from its base pass to its model."""
    session, engine = _session(tmp_path, photos)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        with engine.training():
            engine.fit()
            session.post_fit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return before, peak


def test_training_holds_each_photos_features_once_as_float16(tmp_path):
    n = 2000
    feature_bytes = VIEWS * DIM * 2  # float16
    _peak_of_training(tmp_path / "warm", 100)  # what the first run imports is not a photo's
    small = _peak_of_training(tmp_path / "a", n)
    large = _peak_of_training(tmp_path / "b", 2 * n)
    extra_peak = (large[1] - small[1]) / n  # bytes a photo adds to the peak
    # The old path held the features 5 times (float32 in the cache, then stacked per
    # subset and cast again): about 40 KB a photo at this shape. Now: the float16
    # features once (4 KB), plus small per-photo arrays (labels, probabilities).
    assert extra_peak < 1.5 * feature_bytes, f"{extra_peak / 1024:.1f} KB a photo"


def test_every_subsets_rows_are_slices_of_one_float16_matrix(tmp_path):
    session, engine = _session(tmp_path, 50)
    session.hold(("train", "val"))
    assert session.cache._used == 0  # every entry moved out of the cache's memory
    both, labels = session.rows(("train", "val"))
    train, _ = session.rows(("train",))
    val, val_labels = session.rows(("val",))
    assert both.dtype == np.float16 and both.shape == (50, VIEWS, DIM)
    assert np.shares_memory(train, both) and np.shares_memory(val, both)
    assert len(train) == 40 and len(val) == 10
    np.testing.assert_array_equal(labels, np.concatenate([session.labels("train"), val_labels]))


def test_progress_bars_show_the_rate():
    """A long pass says how fast it goes (and rich's column, the time left)."""
    from rich.progress import Progress

    from mtl.cli._common import RateColumn

    clock = [0.0]
    bar = Progress(RateColumn(), get_time=lambda: clock[0], auto_refresh=False, disable=True)
    task = bar.add_task("photos", total=1000)
    assert str(RateColumn().render(bar.tasks[0])) == ""  # nothing done yet: no rate
    for second in range(1, 11):
        clock[0] = float(second)
        bar.update(task, completed=40 * second)
    assert str(RateColumn().render(bar.tasks[0])) == "40/s"

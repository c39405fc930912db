"""The checkpoint format alone: a round trip, the commit point, damage, and early stopping state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mtl.errors import UsageError
from mtl.training import checkpoint
from mtl.training.tracking import EarlyStopping


def _ckpt(epochs_done: int, best: list[np.ndarray] | None) -> checkpoint.Checkpoint:
    rng = np.random.default_rng(epochs_done)
    early = EarlyStopping(3, best_loss=0.25, best_epoch=epochs_done, wait=1)
    return checkpoint.Checkpoint(
        epochs_done=epochs_done,
        phase="train",
        history=[{"epoch": i + 1} for i in range(epochs_done)],
        early=early.to_json(),
        variables=[rng.random((4, 3)).astype("float32"), rng.random(3).astype("float32")],
        optimizer={"iterations": np.array(7), "0": rng.random((4, 3))},
        best_weights=best,
    )


def test_round_trip(tmp_path):
    best = [np.ones((4, 3), "float32"), np.zeros(3, "float32")]
    saved = _ckpt(2, best)
    checkpoint.save(tmp_path, saved)
    loaded = checkpoint.load(tmp_path)
    assert loaded is not None
    assert (loaded.epochs_done, loaded.phase, loaded.history) == (2, "train", saved.history)
    for a, b in zip(loaded.variables, saved.variables, strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.optimizer.keys() == saved.optimizer.keys()
    assert loaded.best_weights is not None
    for a, b in zip(loaded.best_weights, best, strict=True):
        np.testing.assert_array_equal(a, b)
    early = EarlyStopping.from_json(loaded.early, patience=3)
    assert (early.best_loss, early.best_epoch, early.wait) == (0.25, 2, 1)


def test_a_newer_epoch_replaces_the_older_files(tmp_path):
    checkpoint.save(tmp_path, _ckpt(1, None))
    checkpoint.save(tmp_path, _ckpt(2, None))
    names = sorted(p.name for p in checkpoint.folder(tmp_path).iterdir())
    assert names == ["epoch-0002.npz", "state.json"]
    assert checkpoint.load(tmp_path).epochs_done == 2  # type: ignore[union-attr]


def test_state_json_is_the_commit_point(tmp_path):
    """Arrays of an epoch whose state.json was never written are ignored."""
    checkpoint.save(tmp_path, _ckpt(1, None))
    (checkpoint.folder(tmp_path) / "epoch-0002.npz").write_bytes(b"half written")
    assert checkpoint.load(tmp_path).epochs_done == 1  # type: ignore[union-attr]


def test_no_checkpoint_and_damaged_ones(tmp_path):
    assert checkpoint.load(tmp_path) is None
    checkpoint.save(tmp_path, _ckpt(1, None))
    (checkpoint.folder(tmp_path) / "epoch-0001.npz").write_bytes(b"garbage")
    with pytest.raises(UsageError, match="cannot read the checkpoint"):
        checkpoint.load(tmp_path)
    (checkpoint.folder(tmp_path) / "state.json").write_text("{not json")
    with pytest.raises(UsageError, match="cannot read the checkpoint"):
        checkpoint.load(tmp_path)


def test_run_file_round_trip(tmp_path):
    split = [["a/1.jpg", "a", "train"], ["b/2.jpg", "b", "val"]]
    checkpoint.write_run(tmp_path, {"epochs": 3}, tmp_path / "data", split)
    config, data, saved_split = checkpoint.read_run(tmp_path)
    assert config == {"epochs": 3} and data == (tmp_path / "data").resolve()
    assert saved_split == split
    path = checkpoint.folder(tmp_path) / checkpoint.RUN_FILE
    assert json.loads(path.read_text())["config"] == {"epochs": 3}


def test_temp_files_are_cleaned(tmp_path):
    folder = checkpoint.folder(tmp_path)
    folder.mkdir()
    (folder / ".state.json.abc.tmp").write_text("x")
    (tmp_path / ".model.keras.x.part").write_text("x")
    checkpoint.clean_temp_files(tmp_path)
    assert not list(tmp_path.rglob(".*.tmp")) and not list(tmp_path.rglob(".*.part"))


def test_early_stopping():
    early = EarlyStopping(patience=2)
    assert early.update(1, 0.5) and early.best_epoch == 1
    assert not early.update(2, 0.6) and not early.should_stop(2, last=10)
    assert not early.update(3, math.nan)  # NaN never counts as an improvement
    assert early.should_stop(3, last=10) and early.stopped_early
    never = EarlyStopping(patience=0)
    for epoch in range(1, 5):
        never.update(epoch, 1.0)
    assert not never.should_stop(4, last=10)
    last = EarlyStopping(patience=1)
    last.update(1, 0.5)
    last.update(2, 0.7)
    assert not last.should_stop(2, last=2)  # the phase ends anyway: not an early stop


def test_fine_tune_note_says_when_it_never_helped():
    from mtl.training.tracking import EpochLog, fine_tune_notes

    def log(epoch: int, phase: str, best: bool) -> EpochLog:
        return EpochLog(phase, epoch, 5, 0.1, 0.9, 0.2, 0.9, 1e-3, 0.1, best)

    never = [log(1, "train", True), log(2, "train", True), log(3, "fine_tune", False)]
    (note,) = fine_tune_notes(never, kept=2, first_phase_epochs=2)
    assert "none beat the first phase" in note and "first phase's best" in note
    helped = [*never[:2], log(3, "fine_tune", True)]
    assert fine_tune_notes(helped, kept=3, first_phase_epochs=2) == []
    assert fine_tune_notes(never[:2], kept=2, first_phase_epochs=2) == []

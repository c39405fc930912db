"""Interrupted training: a real process killed with SIGKILL mid-run, then `mtl train --resume`."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mtl.cli import app
from tests.conftest import ALPHA, HYMENOPTERA, ROOT

# 3 epochs on the head, then 2 fine-tuning the top of the base: a kill can land in either.
ARGS = ["--alpha", str(ALPHA), "--epochs", "3", "--fine-tune-epochs", "2", "--patience", "0"]
SLOW_WORKER = Path(__file__).with_name("slow_train.py")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    for label in ("ants", "bees"):
        (root / label).mkdir()
        for p in sorted((HYMENOPTERA / label).glob("*.jpg"))[:16]:
            shutil.copy(p, root / label / p.name)
    return root


@pytest.fixture(scope="module")
def uninterrupted(small_data, tmp_path_factory) -> dict:
    from typer.testing import CliRunner

    run = tmp_path_factory.mktemp("runs") / "whole"
    result = CliRunner().invoke(app, ["train", str(small_data), *ARGS, "--out", str(run)])
    assert result.exit_code == 0, result.stderr
    assert not (run / "checkpoint").exists()  # a finished run keeps no checkpoint
    return json.loads((run / "metrics.json").read_text())


def state(run: Path) -> dict:
    try:
        return json.loads((run / "checkpoint" / "state.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.parametrize("kill_after", [1, 4], ids=["in-head-phase", "in-fine-tune-phase"])
def test_killed_run_resumes_to_the_same_result(
    cli, small_data, uninterrupted, tmp_path, kill_after
):
    run = tmp_path / "run"
    # The same settings as ARGS, through the API with a callback that slows every epoch's
    # end: time to land the kill between epochs.
    options = ["alpha", str(ALPHA), "epochs", "3", "fine_tune_epochs", "2", "patience", "0"]
    cmd = [sys.executable, str(SLOW_WORKER), str(small_data), str(run), *options]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while state(run).get("epochs_done", 0) < kill_after:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the run never reached its checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert state(run)["epochs_done"] == kill_after
    assert not (run / "model.keras").exists()  # never a model from an unfinished run

    result = cli.invoke(app, ["train", "--resume", str(run), "--json"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["epochs_run"] == uninterrupted["epochs_run"] == 5
    for side in ("train", "val"):
        assert abs(resumed[side]["loss"] - uninterrupted[side]["loss"]) < 1e-4, side
        assert resumed[side]["accuracy"] == uninterrupted[side]["accuracy"], side
    assert summary["val"]["accuracy"] == uninterrupted["val"]["accuracy"]
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 5
    assert not list(run.glob("**/.*.part")) and not list(run.glob("**/.*.tmp"))
    assert not (run / "checkpoint").exists()


def test_existing_run_folder_is_refused_without_resume_or_force(cli, small_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    result = cli.invoke(app, ["train", str(small_data), "--alpha", str(ALPHA), "--out", str(run)])
    assert result.exit_code == 2
    assert "--resume" in result.stderr and "--force" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (run / "notes.txt").read_text() == "mine"


def test_resume_errors(cli, small_data, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli.invoke(app, ["train", "--resume", str(empty)])
    assert result.exit_code == 2 and "no checkpoint" in result.stderr
    result = cli.invoke(app, ["train", "--resume", str(empty), "--epochs", "3"])
    assert result.exit_code == 2 and "epochs" in result.stderr
    done = tmp_path / "done"
    done.mkdir()
    (done / "model.keras").write_bytes(b"x")
    result = cli.invoke(app, ["train", "--resume", str(done)])
    assert result.exit_code == 0 and "already finished" in result.stderr
    assert (done / "model.keras").read_bytes() == b"x"  # untouched


# Augmentation draws from Keras' seed generators every batch, over several batches per
# epoch: a resumed run is exact only if their state and the batch order come back whole.
AUGMENTED = ["--alpha", str(ALPHA), "--augment", "--epochs", "3", "--batch-size", "4",
             "--patience", "0", "--seed", "3"]  # fmt: skip


def history_rows(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def five_per_class(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("five")
    for label in ("ants", "bees"):
        (data / label).mkdir(parents=True)
        for p in sorted((HYMENOPTERA / label).glob("*.jpg"))[:5]:
            shutil.copy(p, data / label / p.name)
    return data


def test_ctrl_c_says_how_to_resume_and_an_augmented_resume_is_exact(cli, five_per_class, tmp_path):
    data = five_per_class
    whole = tmp_path / "whole"
    result = cli.invoke(app, ["train", str(data), *AUGMENTED, "--out", str(whole)])
    assert result.exit_code == 0, result.stderr

    run = tmp_path / "run"
    cmd = [sys.executable, str(SLOW_WORKER), "--cli", "train", str(data), *AUGMENTED,
           "--out", str(run)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # the epoch's line comes after its checkpoint, in the sleep
        lines.append(line)
        if line.startswith("epoch   1/3"):
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, "".join(lines) + rest
    assert rest.strip().splitlines()[-1] == (
        f"interrupted after epoch 1: resume with mtl train --resume {run}"
    )
    assert "Traceback" not in rest
    assert state(run)["epochs_done"] == 1 and not (run / "model.keras").exists()

    result = cli.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.stderr
    assert len(history_rows(whole)) == 3
    assert history_rows(run) == history_rows(whole)
    resumed, uninterrupted = (json.loads((r / "metrics.json").read_text()) for r in (run, whole))
    for side in ("train", "val"):
        assert resumed[side] == uninterrupted[side], side


def test_a_dead_head_is_refused_not_saved(cli, five_per_class, tmp_path):
    """A checkpoint whose weights are all zero is finite (checkpoint.load takes it) but
    dead: every hidden unit 0, the loss log(2) every epoch, 0.5/0.5 for every photo."""
    import keras

    from mtl.errors import TrainingInterrupted
    from mtl.pipeline.config import TrainConfig
    from mtl.training.trainer import train

    class StopAfterFirstEpoch(keras.callbacks.Callback):  # Ctrl-C, in process
        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            raise KeyboardInterrupt

    run = tmp_path / "run"
    config = TrainConfig(alpha=ALPHA, epochs=3, patience=0)
    with pytest.raises(TrainingInterrupted, match="after epoch 1: resume with"):
        train(five_per_class, config, out=run, callbacks=[StopAfterFirstEpoch()])
    arrays = run / "checkpoint" / state(run)["arrays"]
    with np.load(arrays) as npz:
        saved = {k: npz[k] for k in npz.files}
    # Every weight and the optimizer's moments zero (momentum would revive it).
    dead = {k: np.zeros_like(v) if v.dtype.kind == "f" else v for k, v in saved.items()}
    assert sum(k.startswith("var/") and v.dtype.kind == "f" for k, v in dead.items()) >= 4
    np.savez(arrays, **dead)

    result = cli.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 1, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert f"training of {run} diverged at epoch 2" in line
    assert "same probabilities (0.5, 0.5)" in line
    assert not (run / "model.keras").exists()

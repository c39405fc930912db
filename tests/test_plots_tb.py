"""What a default run draws: learning_curves.png's lines and the TensorBoard events.

One small real run (20 photos, the defaults: a validated fit, then the refit on every
photo), read back as a user's tools read it: history.csv into the plot's series, the
event files through TensorBoard's own EventAccumulator and hparams plugin protos.
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest

import mtl
from mtl.report.plots import curve_series
from tests.conftest import ALPHA, HYMENOPTERA

pytestmark = pytest.mark.slow

EPOCHS = 4


@pytest.fixture(scope="module")
def run(offline_env, tmp_path_factory):
    data = tmp_path_factory.mktemp("plots_data")
    for cls in ("ants", "bees"):
        photos = sorted((HYMENOPTERA / cls).iterdir())
        for split, chosen in (("train", photos[:10]), ("test", photos[10:14])):
            (data / split / cls).mkdir(parents=True)
            for f in chosen:
                shutil.copy(f, data / split / cls / f.name)
    out = tmp_path_factory.mktemp("plots_runs") / "birds3"
    result = mtl.train(data, alpha=ALPHA, epochs=EPOCHS, patience=0, head=[16], out=out, seed=2)
    assert result.kept_epoch == EPOCHS  # patience 0: every epoch kept, refit as long
    return result


def _history(run_dir: Path) -> list[dict[str, object]]:
    """history.csv as the plot reads a run: numbers as numbers."""
    with open(run_dir / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: (v if k == "phase" else float(v)) for k, v in row.items()} for row in rows]


def test_history_says_which_phase_each_epoch_is(run):
    phases = [row["phase"] for row in _history(run.run_dir)]
    assert phases == ["train"] * EPOCHS + ["refit"] * EPOCHS


def test_learning_curves_draw_the_refit_apart(run):
    """Before: the refit's epochs 1..4 were appended to the train line (epochs 1,2,3,4,1,
    2,3,4: the line jumped back). Now every line runs forward, the refit is its own."""
    history = _history(run.run_dir)
    for metric in ("loss", "accuracy"):
        series = curve_series(history, metric)
        assert set(series) == {f"train {metric}", f"val {metric}", f"refit {metric}"}
        for epochs, values in series.values():
            assert epochs == list(range(1, EPOCHS + 1))  # no jump back
            assert len(values) == EPOCHS
        fit = [h for h in history if h["phase"] == "train"]
        refit = [h for h in history if h["phase"] == "refit"]
        assert series[f"train {metric}"][1] == [h[metric] for h in fit]
        assert series[f"val {metric}"][1] == [h["val_" + metric] for h in fit]
        assert series[f"refit {metric}"][1] == [h[metric] for h in refit]
    assert (run.run_dir / "learning_curves.png").stat().st_size > 1000


def test_fine_tuning_continues_the_train_line():
    """Fine-tuning's epochs carry on the fit's count: one line, no refit line, and an
    epoch without validation (NaN) leaves no point."""
    nan = float("nan")
    history = [
        {"phase": "train", "epoch": 1, "loss": 0.9, "val_loss": 0.8},
        {"phase": "train", "epoch": 2, "loss": 0.7, "val_loss": nan},
        {"phase": "fine_tune", "epoch": 3, "loss": 0.5, "val_loss": 0.4},
    ]
    series = curve_series(history, "loss")
    assert series == {"train loss": ([1, 2, 3], [0.9, 0.7, 0.5]), "val loss": ([1, 3], [0.8, 0.4])}


def _accumulator(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def _scalars(acc, tag: str) -> list[tuple[int, float]]:
    from tensorboard.util import tensor_util

    return [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def _session(run_dir: Path) -> Path:
    (session,) = (run_dir / "tensorboard").iterdir()
    return session


def test_tensorboard_names_each_run_uniquely_and_logs_the_test_scores(run, tmp_path):
    """A run's TensorBoard name is its folder's and its start time, so two runs named
    alike never share a line under ``--logdir runs/``; the held-out test photos' scores
    join the charts as the ``test`` run, at the kept epoch."""
    session = _session(run.run_dir)
    assert re.fullmatch(r"birds3-\d{8}-\d{6}\.\d{3}", session.name), session.name
    test = _accumulator(session / "test")
    assert _scalars(test, "epoch_accuracy") == [
        (EPOCHS, pytest.approx(run.test_metrics["accuracy"], abs=1e-6))
    ]
    assert _scalars(test, "epoch_loss")[0][1] == pytest.approx(run.test_metrics["loss"], abs=1e-5)
    # Another run of the same name, elsewhere: another TensorBoard name.
    for cls in ("ants", "bees"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for f in sorted((HYMENOPTERA / cls).iterdir())[:4]:
            shutil.copy(f, tmp_path / "data" / cls / f.name)
    other = tmp_path / "birds3"
    mtl.train(tmp_path / "data", alpha=ALPHA, epochs=1, head=[16], out=other, seed=2)
    assert _session(other).name != session.name


def test_tensorboard_train_and_validation_share_tags_under_the_run_name(run):
    """Keras' layout under a folder named by the run: ``train`` and ``validation`` hold the
    same tags (so TensorBoard draws loss and val_loss in one chart), the refit apart."""
    session = _session(run.run_dir)
    assert sorted(p.name for p in session.iterdir() if p.is_dir()) == [
        "refit",
        "test",
        "train",
        "validation",
    ]
    history = _history(run.run_dir)
    fit = [h for h in history if h["phase"] == "train"]
    train, val, refit = (_accumulator(session / r) for r in ("train", "validation", "refit"))
    assert {"epoch_loss", "epoch_accuracy"} <= set(val.Tags()["tensors"])
    assert set(val.Tags()["tensors"]) <= set(train.Tags()["tensors"])
    assert "epoch_learning_rate" in train.Tags()["tensors"]
    steps = list(range(1, EPOCHS + 1))
    assert [s for s, _ in _scalars(train, "epoch_loss")] == steps
    assert [v for _, v in _scalars(train, "epoch_loss")] == pytest.approx(
        [h["loss"] for h in fit], abs=1e-5
    )
    assert [v for _, v in _scalars(val, "epoch_loss")] == pytest.approx(
        [h["val_loss"] for h in fit], abs=1e-5
    )
    assert [s for s, _ in _scalars(refit, "epoch_loss")] == steps
    assert "confusion_matrix" in _accumulator(session).Tags()["tensors"]


def test_tensorboard_hparams_hold_the_runs_settings(run):
    """The hparams plugin's session-start entry, named by the run, carries config.json's
    settings: runs differing in --head or --views line up in the HParams tab."""
    import json

    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    acc = _accumulator(_session(run.run_dir))
    events = acc.Tensors(metadata.SESSION_START_INFO_TAG)
    assert len(events) == 1
    content = acc.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    start = data.session_start_info
    assert start.group_name == _session(run.run_dir).name
    config = json.loads((run.run_dir / "config.json").read_text())["config"]
    hp = start.hparams
    assert hp["head"].string_value == "16"
    assert hp["views"].string_value == ",".join(config["views"])
    assert hp["epochs"].number_value == EPOCHS
    assert hp["alpha"].number_value == pytest.approx(ALPHA)
    assert set(hp) == set(config)

"""A run folder is complete or clearly incomplete, never shared, never mixed with an older run.

Real training on a few real photos (features shared through one --cache-dir).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mtl.cli import app
from tests.conftest import ALPHA, HYMENOPTERA

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    for cls in ("ants", "bees"):
        (root / cls).mkdir()
        for f in sorted((HYMENOPTERA / cls).iterdir())[:6]:
            shutil.copy(f, root / cls / f.name)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("features")


def train(cli, data: Path, cache: Path, *args: str):
    base = ["train", str(data), "--alpha", str(ALPHA), "--cache-dir", str(cache), "--epochs", "2"]
    return cli.invoke(app, [*base, *args])


def test_numbered_run_folders_are_claimed_atomically(tmp_path, monkeypatch):
    from mtl.training import rundir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "train").mkdir(parents=True)
    real = rundir.next_run_dir
    # Another run takes the name between the listing and the mkdir: the next one is used.
    calls = []

    def racing(base: Path = Path("runs"), name: str = "train") -> Path:
        found = real(base, name)
        if not calls:
            found.mkdir()
        calls.append(found)
        return found

    monkeypatch.setattr(rundir, "next_run_dir", racing)
    claimed = rundir.prepare(None)
    assert claimed == Path("runs/train3") and calls[0] == Path("runs/train2")


def test_force_clears_the_old_run_first(cli, small, cache, tmp_path):
    run = tmp_path / "run"
    assert train(cli, small, cache, "--out", str(run)).exit_code == 0
    (run / "notes.txt").write_text("mine")
    from mtl.training import rundir

    rundir.clear_run(run)  # what --force does before anything else
    assert not (run / "model.keras").exists() and not (run / "metrics.json").exists()
    assert (run / "notes.txt").read_text() == "mine"  # not a run file: left alone


def test_model_is_written_last(cli, small, cache, tmp_path, monkeypatch):
    """A crash while writing the run leaves no model.keras: the run is clearly unfinished."""
    from mtl.model import modelio, skeleton

    def crash(first, path, *rest):  # save_model(model, path, meta), write(arch, path, ...)
        assert (Path(path).parent / "metrics.json").is_file()  # everything else came first
        raise RuntimeError("killed while writing the model")

    monkeypatch.setattr(modelio, "save_model", crash)
    monkeypatch.setattr(skeleton, "write", crash)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="killed"):
        cli.invoke(app, ["train", str(small), "--alpha", str(ALPHA), "--cache-dir", str(cache),
                         "--epochs", "2", "--out", str(run)], catch_exceptions=False)  # fmt: skip
    assert not (run / "model.keras").exists()


def test_resume_refuses_changed_data(cli, small, cache, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small, data)
    run = tmp_path / "run"
    assert train(cli, data, cache, "--out", str(run)).exit_code == 0
    # Make it look interrupted (no model), then change the data.
    (run / "model.keras").unlink()
    from mtl.training import checkpoint

    checkpoint.write_run(run, json.loads((run / "config.json").read_text())["config"], data,
                         [["ants/x.jpg", "ants", "train"]])  # fmt: skip
    result = cli.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 2 and "changed since the run started" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_resuming_a_numpy_run_trains_its_head_again(cli, small, cache, tmp_path):
    """A head trained in NumPy keeps no per-epoch checkpoint: --resume of a run killed
    before its model trains it again, on its own settings and split, to the same result."""
    from mtl.training import checkpoint

    run = tmp_path / "run"
    assert train(cli, small, cache, "--out", str(run)).exit_code == 0
    whole = json.loads((run / "metrics.json").read_text())
    assert whole["cache"]["head_engine"] == "numpy"
    split = [[(run / f).resolve().relative_to(small.resolve()).as_posix(), c, s]
             for f, c, s in (line.split(",") for line in
                             (run / "split.csv").read_text().splitlines()[1:])]  # fmt: skip
    for name in ("model.keras", "metrics.json", "history.csv"):
        (run / name).unlink()  # as if killed during the fit
    checkpoint.write_run(run, json.loads((run / "config.json").read_text())["config"], small, split)
    result = cli.invoke(app, ["train", "--resume", str(run), "--json"])
    assert result.exit_code == 0, result.stderr
    again = json.loads((run / "metrics.json").read_text())
    assert (run / "model.keras").is_file() and not (run / "checkpoint").exists()
    for side in ("train", "val"):
        assert again[side]["loss"] == pytest.approx(whole[side]["loss"], abs=1e-6)
        assert again[side]["accuracy"] == whole[side]["accuracy"]


def test_temp_files_of_every_kind_are_cleaned_on_resume(tmp_path):
    from mtl.training import checkpoint

    for name in (".model.abc123.keras", ".metrics.json.x.tmp", ".f.part"):
        (tmp_path / name).write_bytes(b"x")
    checkpoint.clean_temp_files(tmp_path)
    assert not any(tmp_path.iterdir())


def test_huge_batch_size_on_few_photos(cli, small, cache, tmp_path):
    """Memory follows the data, not --batch-size (this padded 12 photos to 100000 before)."""
    result = train(cli, small, cache, "--out", str(tmp_path / "run"), "-b", "100000", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["train"]["count"] > 0


def test_divergence_is_an_error_and_json_stays_strict(cli, small, cache, tmp_path):
    run = tmp_path / "run"
    result = train(cli, small, cache, "--out", str(run), "--lr", "1e30", "--json")
    assert result.exit_code == 1, result.stdout
    assert "diverged" in result.stderr and "learning rate" in result.stderr
    assert "NaN" not in result.stdout
    assert not (run / "model.keras").exists()


def test_many_classes_are_summarised(tmp_path):
    """1000 classes: no 10^6-cell matrix in metrics.json, no plot that never finishes."""
    from mtl.training import rundir

    classes = [f"c{i:04d}" for i in range(1000)]
    matrix = {"matrix": [[0] * 1000 for _ in range(1000)]}
    m = {"accuracy": 1.0, "count": 1000, "per_class": dict.fromkeys(classes, {}),
         "confusion_matrix": matrix}  # fmt: skip
    assert rundir._without_matrix(m)["confusion_matrix"] is None  # type: ignore[index]
    small_m = {**m, "per_class": {"a": {}, "b": {}}}
    assert rundir._without_matrix(small_m) is small_m


def test_an_unwritable_run_folder_is_exit_2_before_any_work(cli, small, cache, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = train(cli, small, cache, "--out", str(tmp_path / "file" / "run"))
    assert result.exit_code == 2 and "cannot write to run folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_two_trains_never_share_a_run_folder(cli, small, cache, tmp_path):
    from mtl.locks import folder_lock

    run = tmp_path / "run"
    with folder_lock(run, "mtl train"):  # as a run in progress holds it
        result = train(cli, small, cache, "--out", str(run), "--force")
    assert result.exit_code == 2 and "mtl train" in result.stderr
    assert not (run / "model.keras").exists()

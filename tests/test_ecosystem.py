"""Using mtl with the rest of a workflow: run folders wherever a model goes, `--split val`,
exit codes for unusable inputs, global --quiet/--verbose, help screens, 80-column tables."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtl.cli import app
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def run_dir(trained_model, tmp_path_factory) -> Path:
    """A run folder as `mtl train` leaves it: model.keras, split.csv (file,class,subset)."""
    run = tmp_path_factory.mktemp("runs") / "train"
    run.mkdir()
    (run / "model.keras").symlink_to(trained_model.path)
    rows = [
        [str(f), trained_model.class_names[y], subset]
        for subset, files, labels in (
            ("train", trained_model.train_files, trained_model.train_labels),
            ("val", trained_model.val_files, trained_model.val_labels),
        )
        for f, y in zip(files, labels, strict=True)
    ]
    with (run / "split.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["file", "class", "subset"], *rows])
    return run


# --- 6: a run folder wherever a model goes --------------------------------------------


def test_a_run_folder_is_accepted_wherever_a_model_is(cli, run_dir, trained_model, tmp_path):
    photo = str(trained_model.val_files[0])
    by_file = cli.invoke(app, ["predict", str(run_dir / "model.keras"), photo, "--json"])
    by_run = cli.invoke(app, ["predict", str(run_dir), photo, "--json"])
    assert by_run.exit_code == 0, by_run.stderr
    assert json.loads(by_run.stdout) == json.loads(by_file.stdout)

    result = cli.invoke(app, ["evaluate", str(run_dir), str(trained_model.val_dir), "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["model"] == str(run_dir / "model.keras")

    # A SavedModel folder or a folder without a model: a clear one-line error, exit 2.
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "saved_model.pb").write_bytes(b"\0")
    (tmp_path / "empty").mkdir()
    for folder, expected in (("served", "SavedModel folder"), ("empty", "no model.keras")):
        result = cli.invoke(app, ["predict", str(tmp_path / folder), photo])
        assert result.exit_code == 2 and expected in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_evaluate_split_val_scores_the_runs_held_out_photos(cli, run_dir, trained_model):
    result = cli.invoke(app, ["evaluate", str(run_dir), "--split", "val", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["images"] == len(trained_model.val_files)
    right = np.sum(trained_model.val_probabilities.argmax(1) == trained_model.val_labels)
    assert data["correct"] == right
    assert data["data"].endswith("split.csv (val)")

    both = cli.invoke(app, ["evaluate", str(run_dir), "data/", "--split", "val"])
    assert both.exit_code == 2 and "not both" in both.stderr
    neither = cli.invoke(app, ["evaluate", str(run_dir)])
    assert neither.exit_code == 2 and "--split val" in neither.stderr


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (["{missing}", "ants", "val"], "does not exist"),
        (["{folder}", "ants", "val"], "is a directory"),
        (["{fifo}", "ants", "val"], "FIFO"),
        (["{photo}", "ants", "holdout"], "unknown subset 'holdout'"),
        (["{photo}\x1b[2J", "ants", "val"], "bad file name"),
        (["{photo}", "ants"], "expected 3 columns"),
    ],
    ids=["missing", "folder", "fifo", "subset", "control-chars", "columns"],
)
def test_split_csv_is_checked_row_by_row(cli, trained_model, tmp_path, row, expected):
    """An edited split.csv is refused, naming the file and line, before any photo is read."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").symlink_to(trained_model.path)
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "folder.jpg").mkdir()
    names = {
        "missing": str(tmp_path / "gone.jpg"),
        "folder": str(tmp_path / "folder.jpg"),
        "fifo": str(tmp_path / "pipe.jpg"),
        "photo": str(trained_model.val_files[0]),
    }
    good = [str(trained_model.val_files[1]), "ants", "val"]
    bad = [cell.format(**names) for cell in row]
    with (run / "split.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["file", "class", "subset"], good, bad])
    result = cli.invoke(app, ["evaluate", str(run), "--split", "val"])
    assert result.exit_code == 2, result.stdout + result.stderr
    assert f"{run / 'split.csv'} line 3" in result.stderr and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


# --- 7: exit codes for unusable inputs ---------------------------------------------------


def test_inputs_that_are_all_missing_or_not_images_exit_2(cli, trained_model, tmp_path):
    model = str(trained_model.path)
    result = cli.invoke(app, ["predict", model, str(tmp_path / "missing"), "--json"])
    assert result.exit_code == 2 and "no such file or folder" in result.stderr
    assert result.stdout == ""
    (tmp_path / "notes.png").write_text("not a picture")
    result = cli.invoke(app, ["predict", model, str(tmp_path / "notes.png")])
    assert result.exit_code == 2
    assert "not a readable image" in result.stderr and "notes.png" in result.stderr
    # one good photo among them: the others are skipped and listed, exit code 1
    good = str(trained_model.val_files[0])
    result = cli.invoke(app, ["predict", model, good, str(tmp_path / "notes.png"), "--json"])
    assert result.exit_code == 1 and "1 of 2 images could not be read" in result.stderr


# --- 5 and 7: global --quiet / --verbose, help screens, 80 columns -----------------------


def mtl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mtl", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_quiet_and_verbose_work_before_or_after_the_command(cli, trained_model, tmp_path):
    model, photo = str(trained_model.path), str(trained_model.val_files[0])
    bars = {"MTL_PROGRESS": "1"}  # draw progress bars even though stderr is not a terminal
    target = tmp_path / "out.csv"
    loud = cli.invoke(app, ["predict", model, photo, "--csv", str(target)], env=bars)
    assert loud.exit_code == 0 and "wrote" in loud.stderr  # an info line
    for args in (["-q", "predict", model, photo], ["predict", model, photo, "--quiet"]):
        quiet = cli.invoke(app, [*args, "--csv", str(target), "--force"], env=bars)
        assert quiet.exit_code == 0, quiet.stderr
        assert quiet.stderr == "" and "probability" in quiet.stdout  # results only
    verbose = cli.invoke(app, ["--verbose", "predict", model, photo])
    assert verbose.exit_code == 0 and "1 image(s) in" in verbose.stderr  # model and timing
    plain = cli.invoke(app, ["predict", model, photo])
    assert "image(s) in" not in plain.stderr


def test_help_shows_choices_and_defaults_and_q_means_quiet_everywhere(cli):
    import typer.main

    result = cli.invoke(app, ["export", "--help"], env={"COLUMNS": "200"})
    assert "<tflite|saved_model|onnx>" in result.stdout and "[default: tflite]" in result.stdout
    assert "<none|dynamic|int8>" in result.stdout
    assert "<bool>" not in result.stdout  # flags take no value
    result = cli.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "<adam|adamw|sgd|rmsprop>" in result.stdout and "(adam)" in result.stdout
    assert "<auto|litert|keras>" in result.stdout and "<bool>" not in result.stdout
    result = cli.invoke(app, ["--help"])
    assert "--install-completion" in result.stdout and "--quiet" in result.stdout

    group = typer.main.get_command(app)
    for name, command in [("mtl", group), *group.commands.items()]:  # type: ignore[attr-defined]
        for param in command.params:
            if "-q" in param.opts:
                assert "--quiet" in param.opts, (name, param.opts)
            if "-v" in param.opts:
                assert "--verbose" in param.opts, (name, param.opts)


def test_tables_stay_readable_at_80_columns(trained_model, tmp_path):
    """Long paths are cut from the left at a folder (…/ants/photo.jpg), never mid-name."""
    deep = tmp_path / ("a-rather-long-folder-name-" * 3) / "held-out" / "ants"
    deep.mkdir(parents=True)
    photo = deep / trained_model.val_files[0].name
    photo.symlink_to(trained_model.val_files[0])
    done = mtl("predict", str(trained_model.path), str(photo), env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, done.stdout
    assert f"│ …/held-out/ants/{photo.name} " in done.stdout  # whole names, one line


def test_parser_errors_are_one_line_exit_2(tmp_path):
    """A value outside its choices or an unknown option is one line, like every bad input."""
    import subprocess
    import sys

    for args in (["export", "m.keras", "--format", "bogus"], ["train", "--bogus"]):
        proc = subprocess.run([sys.executable, "-m", "mtl", *args], capture_output=True,
                              text=True, cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    bare = subprocess.run([sys.executable, "-m", "mtl"], capture_output=True, text=True)
    assert bare.returncode == 0 and "Usage" in bare.stdout

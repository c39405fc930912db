"""``-q``/``-v`` everywhere the README says: before the command (``mtl -q train``) or after
it (``mtl train ... -q``), in every command; quiet prints the results only.

The real paths are cheap ones: a 20-photo training run (LiteRT base, NumPy head), predict
and evaluate with its model, review of the same photos, fetch --list. The commands whose
real work is slow (classify loads TensorFlow, export converts) are checked to accept the
flags both ways on an input they refuse at once, with their own error, not the parser's.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mtl.cli import app
from tests.conftest import ALPHA, HYMENOPTERA

pytestmark = pytest.mark.slow

PHOTO = HYMENOPTERA / "ants" / "0013035.jpg"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("quiet_data")
    for cls in ("ants", "bees"):
        (root / cls).mkdir()
        for f in sorted((HYMENOPTERA / cls).iterdir())[:10]:
            shutil.copy(f, root / cls / f.name)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("quiet_cache")


def invoke(args: list[str]):
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, args)
    return result


def train_args(data: Path, out: Path, cache: Path) -> list[str]:
    return ["train", str(data), "--alpha", str(ALPHA), "--epochs", "2", "--out", str(out),
            "--cache-dir", str(cache)]  # fmt: skip


@pytest.fixture(scope="module")
def loud_run(data, cache, tmp_path_factory):
    """The same run without -q: what the quiet runs must leave out."""
    out = tmp_path_factory.mktemp("quiet_runs") / "loud"
    result = invoke(train_args(data, out, cache))
    assert result.exit_code == 0, result.output
    return out, result


def test_train_without_q_prints_epochs_and_info(loud_run):
    _, result = loud_run
    assert "epoch   1/2" in result.stderr and "training on" in result.stderr
    assert "model:" in result.stdout


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_train_prints_the_result_only(where, data, cache, tmp_path):
    args = train_args(data, tmp_path / "run", cache)
    result = invoke(["-q", *args] if where == "before" else [*args, "-q"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # no epoch lines, no info lines (and no warning here)
    assert "mtl train:" in result.stdout and "model:" in result.stdout
    assert (tmp_path / "run" / "model.keras").is_file()


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_train_adds_timings(where, data, cache, tmp_path):
    args = train_args(data, tmp_path / "run", cache)
    result = invoke(["-v", *args] if where == "before" else [*args, "-v"])
    assert result.exit_code == 0, result.output
    assert "seconds: " in result.stderr and "epoch   2/2" in result.stderr


def test_quiet_predict_has_no_title_line(loud_run):
    run, _ = loud_run
    loud = invoke(["predict", str(run), str(PHOTO)])
    assert loud.exit_code == 0, loud.output
    # The title line names the format and what ran it (mtl's LiteRT base, or Keras).
    assert re.search(r"model\.keras \(keras( on (LiteRT \+ NumPy|Keras))?\)", loud.stdout)
    for args in (["-q", "predict", str(run), str(PHOTO)], ["predict", str(run), str(PHOTO), "-q"]):
        quiet = invoke(args)
        assert quiet.exit_code == 0, quiet.output
        assert "model.keras" not in quiet.stdout and "0013035.jpg" in quiet.stdout
        assert quiet.stdout.strip().splitlines()[0].lstrip().startswith("┏")  # the table first
        assert quiet.stderr == ""


def test_quiet_evaluate_both_ways(loud_run):
    run, _ = loud_run
    for args in (["-q", "evaluate", str(run), "--split", "val"],
                 ["evaluate", str(run), "--split", "val", "-q"]):  # fmt: skip
        result = invoke(args)
        assert result.exit_code == 0, result.output
        assert "accuracy" in result.stdout
        assert "wrote" not in result.stderr  # info lines gone; warnings may stay


@pytest.mark.parametrize("where", ["before", "after"])
def test_review_takes_q_and_v(where, data, cache):
    base = ["review", str(data), "--alpha", str(ALPHA), "--cache-dir", str(cache)]
    # --force: the second run writes the same report (review refuses to overwrite one).
    base += ["--folds", "2", "--report", str(data.parent / f"report-{where}.html"), "--force"]
    result = invoke(["-q", *base] if where == "before" else [*base, "-q"])
    assert result.exit_code == 0, result.output
    assert "mtl review:" in result.stdout
    verbose = invoke(["-v", *base] if where == "before" else [*base, "-v"])
    assert verbose.exit_code == 0, verbose.output


@pytest.mark.parametrize(
    ("command", "own_error"),
    [
        (["classify", str(PHOTO), "--top-k", "0"], "--top-k must be"),
        (["export", "no-such-model.keras"], "no-such-model.keras"),
        (["evaluate", "no-such-model.keras", str(HYMENOPTERA)], "no-such-model.keras"),
        (["predict", "no-such-model.keras", str(PHOTO)], "no-such-model.keras"),
        (["train", "--resume", "no-such-run", "--alpha", "0.5"], "--resume"),
        (["review", "no-such-folder"], "no-such-folder"),
        (["fetch"], "KEYWORD"),
    ],
)
@pytest.mark.parametrize("flag", ["-q", "--quiet", "-v", "--verbose"])
def test_every_command_takes_the_flags_before_and_after(command, own_error, flag):
    """Both positions parse in every command: the command then fails on its input with
    its own one-line error (exit 2), never 'No such option'."""
    for args in ([flag, *command], [*command, flag]):
        result = invoke(args)
        assert result.exit_code == 2, (args, result.output)
        assert "No such option" not in result.stderr and own_error in result.stderr, (
            args,
            result.stderr,
        )


def test_fetch_list_quiet_both_ways():
    loud = invoke(["fetch", "--list"])
    for args in (["-q", "fetch", "--list"], ["fetch", "--list", "-q"]):
        result = invoke(args)
        assert result.exit_code == 0 and result.stdout == loud.stdout

"""Reliability round 4 (issue 34), classes G and I without TensorFlow: names made safe
where they leave mtl (a terminal, a CSV cell, a class name in export metadata), and
signals that stop a command through the CLI's one handler, in real processes.

The same classes on a real model (and K, EXIF orientation) are in
tests/test_reliability_round4_gik.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from mtl import files
from mtl.cli import app
from mtl.errors import DataError, Interrupted, UsageError, interrupt_exit_code
from mtl.reprs import HIDDEN, for_terminal
from tests.conftest import ROOT

# What an attacker puts in a file or class name: retitle the terminal (OSC), clear it
# (CSI), overwrite the line (CR), an 8-bit CSI (U+009B), a name shown reversed (U+202E).
HOSTILE = "ants\x1b]0;pwned\x07\x1b[2J\r\x9b31m\u202egpj.exe"


# --- G: names on the terminal --------------------------------------------------------


def test_for_terminal_escapes_every_hidden_character_and_is_idempotent():
    shown = for_terminal(HOSTILE)
    assert not HIDDEN.search(shown)
    assert shown == "ants\\x1b]0;pwned\\x07\\x1b[2J\\x0d\\x9b31m\\u202egpj.exe"
    assert for_terminal(shown) == shown
    assert for_terminal("a\nb\tc\x1b", keep="\n\t") == "a\nb\tc\\x1b"
    assert for_terminal("fourmis é 蜂 🐝") == "fourmis é 蜂 🐝"  # printable text as it is


def test_every_string_a_cli_console_renders_is_escaped():
    from rich.table import Table

    from mtl.cli._common import SafeConsole, shown

    buf = io.StringIO()
    console = SafeConsole(file=buf, width=200, force_terminal=False)
    table = Table(title=f"run {shown(HOSTILE)}")
    table.add_column("class")
    table.add_row(HOSTILE)  # a cell added without shown(): the console still escapes it
    table.add_row(shown("[bold]x[/bold] :fire:"))
    console.print(table)
    console.print(HOSTILE, markup=False)
    console.print(f"error: {shown(HOSTILE)}")
    text = buf.getvalue()
    assert not HIDDEN.search(text.replace("\n", "")), repr(text)
    assert text.count("\\x1b]0;pwned\\x07") == 4
    assert "[bold]x[/bold] :fire:" in text  # markup and emoji codes in a name stay text


def test_a_hostile_name_in_an_error_message_is_escaped(cli, tmp_path):
    photo = tmp_path / f"{HOSTILE}.jpg"  # missing: refused before any model loads
    result = cli.invoke(app, ["predict", str(tmp_path / "model.keras"), str(photo)])
    assert result.exit_code == 2
    assert "\x1b" not in result.stderr and "\x9b" not in result.stderr
    assert "\\x1b]0;pwned\\x07" in result.stderr


def test_json_output_escapes_c1_and_bidi_characters_and_reads_back(capsys):
    from mtl.cli._common import print_json

    data = {"file": HOSTILE + "\x7f", "ok": "plain"}
    print_json(data)
    text = capsys.readouterr().out
    assert not HIDDEN.search(text.replace("\n", ""))
    assert json.loads(text) == data


# --- G: names in CSV cells ----------------------------------------------------------


@pytest.mark.parametrize(
    "cell",
    ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx", "'q"],
)
def test_formula_cells_are_written_as_text_and_read_back_exactly(tmp_path, cell):
    path = files.write_csv(tmp_path / "t.csv", ["file", "class"], [[cell, "ants"]])
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    written = rows[1][0]
    assert written == "'" + cell  # a spreadsheet shows it as text, never runs it
    assert files.csv_value(written) == cell


@pytest.mark.parametrize("cell", ["-0.5", "+1e-3", "0.25", "ants", 3, 0.5, ""])
def test_numbers_and_plain_names_are_written_as_they_are(cell):
    assert files.csv_cell(cell) == cell


def test_predict_csv_cells_go_through_the_one_writer():
    from mtl.inference.predict import results_csv
    from mtl.inference.results import ImageResult, Prediction

    rows = list(
        csv.reader(
            io.StringIO(
                results_csv(
                    [
                        ImageResult("=1+1.jpg", [Prediction(1, "@bees", 0.9)]),
                        ImageResult("-x.jpg", [], error="+not an image"),
                    ]
                )
            )
        )
    )
    assert rows[1][:3] == ["'=1+1.jpg", "1", "'@bees"]
    assert rows[2] == ["'-x.jpg", "", "", "", "'+not an image"]


def test_evaluate_reads_a_formula_like_class_name_back_from_split_csv(tmp_path):
    from mtl.inference.evaluate import read_split

    data = tmp_path / "data"
    (data / "=ants").mkdir(parents=True)
    photo = data / "=ants" / "x.jpg"
    Image.new("RGB", (8, 8)).save(photo)
    run = tmp_path / "run"
    run.mkdir()
    files.write_json(run / "config.json", {"data": "../data", "data_absolute": str(data)})
    rows = [["../data/=ants/x.jpg", "=ants", "val"]]
    files.write_csv(run / "split.csv", ["file", "class", "subset"], rows)
    assert ",'=ants," in (run / "split.csv").read_text()
    assert {c: [p.resolve() for p in ps] for c, ps in read_split(run, "val").items()} == {
        "=ants": [photo.resolve()]
    }


# --- G: class names where they enter and leave -----------------------------------------


@pytest.mark.parametrize("name", ["a\x1bb", "a\x7fb", "a\x9bb", "photo\u202egpj", "a\tb"])
def test_class_names_with_control_characters_are_refused(tmp_path, name):
    from mtl.data import dataset
    from mtl.deploy.facts import labels_text

    assert dataset.label_problem(name) is not None
    assert dataset.label_problem("fourmis rousses") is None
    with pytest.raises(UsageError, match="cannot be written to a labels file"):
        labels_text(["bees", name])
    for c in ("bees", name):
        (tmp_path / c).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / c / "x.jpg")
    with pytest.raises(DataError, match="control character U\\+"):
        dataset.scan(tmp_path)


# --- K: the input contract ---------------------------------------------------------------


def test_every_export_says_to_feed_the_photo_upright():
    from mtl.deploy.facts import ModelFacts

    facts = ModelFacts(("a", "b"), "center", 224, "0", "0" * 64, "a\nb\n")
    for any_size in (True, False):
        contract = facts.input_contract(dtype="uint8", any_size=any_size)
        assert "ImageOps.exif_transpose(img)" in contract["orientation"]
    line = "ImageOps.exif_transpose("
    for doc in ("docs/images.md", "docs/api.md", "docs/predict-evaluate-export.md", "README.md"):
        assert line in (ROOT / doc).read_text(encoding="utf-8"), doc


# --- I: signals, in real processes -------------------------------------------------------

# A command that makes a temporary folder, does FIRST (says it started, or imports a
# module), and waits: what a signal finds.
COMMAND = """
import os, sys, time, tempfile, shutil
import typer
from mtl.cli._common import run_app

app = typer.Typer()

@app.command()
def work(where: str) -> None:
    sys.path.insert(0, where)
    tmp = tempfile.mkdtemp(dir=where, prefix=".work.")
    try:
        FIRST
        time.sleep(60)
    finally:
        shutil.rmtree(tmp)

@app.command()
def other() -> None:
    pass

run_app(app)
"""
WORKER = COMMAND.replace("FIRST", 'open(os.path.join(where, "started"), "w").close()')
IMPORTER = COMMAND.replace("FIRST", "import slow_module  # noqa: F401")


def _signalled(code: str, where: Path, ready: str, sig: int) -> tuple[int, str]:
    """Run ``code``'s ``work`` command in its own process, send ``sig`` once the file
    ``ready`` appears in ``where`` (progress, not a fixed sleep): its exit code and stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "work", str(where)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_dfl_sigint,
    )
    deadline = time.monotonic() + 60
    while not (where / ready).exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr


def _dfl_sigint() -> None:
    # As in a terminal: a test runner in the background of a shell ignores SIGINT, one
    # started under nohup SIGHUP, and a child inherits that (mtl leaves an ignored signal
    # ignored, as the parent asked).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


@pytest.mark.parametrize(
    ("sig", "code", "line"),
    [
        (signal.SIGINT, 130, "interrupted (Ctrl-C)"),
        (signal.SIGTERM, 143, "interrupted (SIGTERM)"),
        (signal.SIGHUP, 129, "interrupted (SIGHUP)"),
    ],
)
def test_a_signal_unwinds_the_command_and_exits_128_plus_it(tmp_path, sig, code, line):
    returncode, stderr = _signalled(WORKER, tmp_path, "started", sig)
    assert returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == line
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["started"]  # its temp folder gone


def test_a_signal_inside_an_import_waits_for_it_then_unwinds(tmp_path):
    """A signal raised inside an import leaves the module half set up (TensorFlow's, seen as
    a SystemError from its converter): mtl delivers it once the import is done, and the
    command still unwinds and exits 128 + the signal."""
    (tmp_path / "slow_module.py").write_text(
        "import os, time\n"
        f"open({str(tmp_path / 'importing')!r}, 'w').close()\n"
        "for _ in range(40):\n"
        "    time.sleep(0.025)\n"
        f"open({str(tmp_path / 'imported')!r}, 'w').close()\n"
    )
    returncode, stderr = _signalled(IMPORTER, tmp_path, "importing", signal.SIGTERM)
    assert returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted (SIGTERM)"
    assert "Traceback" not in stderr
    assert (tmp_path / "imported").exists()  # the module finished importing
    assert not list(tmp_path.glob(".work.*"))  # and the command's finally ran


def test_a_signal_inside_a_finaliser_waits_for_it_then_unwinds(tmp_path):
    """Raised in a ``__del__`` (a zip file collected while training wrote its model), an
    exception is printed as a traceback and dropped: mtl delivers the signal once the
    finaliser is done, and the command unwinds as for any other signal."""
    (tmp_path / "slow_del.py").write_text(
        "import time\n"
        "class Slow:\n"
        "    def __del__(self):\n"
        f"        open({str(tmp_path / 'finalising')!r}, 'w').close()\n"
        "        for _ in range(40):\n"
        "            time.sleep(0.025)\n"
        f"        open({str(tmp_path / 'finalised')!r}, 'w').close()\n"
        "def drop():\n"
        "    Slow()\n"
    )
    worker = COMMAND.replace("FIRST", "import slow_del; slow_del.drop()")
    returncode, stderr = _signalled(worker, tmp_path, "finalising", signal.SIGINT)
    assert returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted (Ctrl-C)"
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert (tmp_path / "finalised").exists()
    assert not list(tmp_path.glob(".work.*"))


def test_interrupt_exit_codes():
    assert interrupt_exit_code(KeyboardInterrupt()) == 130
    assert interrupt_exit_code(Interrupted(signal.SIGTERM)) == 143
    assert isinstance(Interrupted(signal.SIGTERM), KeyboardInterrupt)  # every handler runs

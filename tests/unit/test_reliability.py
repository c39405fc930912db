"""Reproductions of the adversarial run's reliability and security findings, one per defect.

Each test failed (or hung) before its fix. Keras is imported only by the model-file
tests at the end; everything else runs on fetch's fake engine or plain files.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtl.cli import app
from mtl.crawler import FetchRequest, fetch
from mtl.errors import DataError, ImageError, UsageError
from tests.fakes.engine_server import FakeEngine, jpeg

FAST = ["--min-size", "100x100", "--timeout", "2", "--threads", "2", "--quiet"]


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEngine]:
    with FakeEngine() as fake:
        monkeypatch.setenv("MTL_ENGINE_URL", fake.base)
        yield fake


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


def rows(out: Path) -> list[dict[str, object]]:
    text = (out / "manifest.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n") if line]


def test_an_absolute_manifest_path_cannot_delete_a_file_elsewhere(engine, tmp_path):
    engine.set_results("ants", [engine.add("/i/a1.jpg", jpeg(1))])
    shared = engine.add("/i/shared.jpg", jpeg(2))
    engine.set_results("bees", [shared])
    out = tmp_path / "f3"
    assert invoke("fetch", "ants", "--limit", "1", "--out", str(out), *FAST)[0] == 0
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    # The entry claims the picture bees is about to download, so the run would call it
    # ambiguous and delete "its" file: PurePosixPath("/x").parts == ("/", "x").
    from mtl.crawler.validate import inspect_image

    probe = tmp_path / "probe.jpg"
    probe.write_bytes(jpeg(2))
    info = inspect_image(probe, (1, 1))
    entry = {
        "class": "/", "file": str(victim), "url": None, "engine": "local",
        "sha256": hashlib.sha256(jpeg(2)).hexdigest(), "phash": info.phash,
        "width": info.width, "height": info.height, "fetched": "",
    }  # fmt: skip
    with open(out / "manifest.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
    before = sorted(p.name for p in (out / "ants").iterdir())
    code, _, stderr = invoke("fetch", "bees", "--limit", "1", "--out", str(out), *FAST)
    assert code == 2, stderr
    assert "manifest.jsonl:2" in stderr and "Traceback" not in stderr
    assert victim.read_bytes() == b"precious"
    assert sorted(p.name for p in (out / "ants").iterdir()) == before
    assert not (out / "bees").exists()
    assert engine.hits[shared.removeprefix(engine.base)] == 0


@pytest.mark.parametrize(
    ("class_", "file"),
    [
        ("/", "/victim"),
        ("crow", "/crow/x.jpg"),
        ("crow", "crow/../x.jpg"),
        ("crow", "crow//x.jpg"),
        ("crow", "./crow/x.jpg"),
        ("crow", "crow/sub/x.jpg"),
        ("..", "../x.jpg"),
        (".", "./x.jpg"),
        ("crow", "crow\\..\\x.jpg"),
        ("crow", "crow/x\0.jpg"),
        ("crow", "jay/x.jpg"),
        (7, "7/x.jpg"),
    ],
)
def test_every_unsafe_manifest_path_is_refused_naming_file_and_line(tmp_path, class_, file):
    from mtl.crawler.manifest import load_manifest

    good = {"class": "crow", "file": "crow/a.jpg", "sha256": "0" * 64, "phash": "0" * 16}
    good |= {"width": 9, "height": 9}
    bad = {**good, "class": class_, "file": file}
    (tmp_path / "manifest.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"manifest\.jsonl:2: a bad entry"):
        load_manifest(tmp_path)


def test_a_symlinked_class_folder_cannot_lead_outside_out(tmp_path):
    from mtl.crawler.manifest import load_manifest

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "crow").symlink_to(elsewhere)
    entry = {"class": "crow", "file": "crow/a.jpg", "sha256": "0" * 64, "phash": "0" * 16}
    (out / "manifest.jsonl").write_text(json.dumps(entry | {"width": 9, "height": 9}) + "\n")
    with pytest.raises(DataError, match=r"manifest\.jsonl:1: .* leads outside"):
        load_manifest(out)


def test_the_training_manifest_reader_refuses_absolute_paths(tmp_path):
    from mtl.data import dataset

    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
    line = json.dumps({"class": "a", "file": str(tmp_path / "data" / "a" / "x.jpg")})
    (tmp_path / "data" / "manifest.jsonl").write_text(line + "\n")
    with pytest.raises(DataError, match="line 1 names a file outside.*absolute"):
        dataset.scan(tmp_path / "data")


def test_a_second_fetch_into_a_busy_folder_is_refused(engine, tmp_path):
    from mtl.locks import LOCK_NAME, folder_lock

    engine.set_results("bees", [engine.add("/i/b1.jpg", jpeg(3))])
    out = tmp_path / "data"
    with folder_lock(out, "mtl fetch"):  # another fetch holds the folder
        code, _, stderr = invoke("fetch", "bees", "--limit", "1", "--out", str(out), *FAST)
        assert code == 2, stderr
        # Held in this process: the message says so rather than naming our own pid.
        assert "in use by another mtl fetch" in stderr and str(out) in stderr
        assert not (out / "bees").exists() and not (out / "manifest.jsonl").exists()
    assert not (out / LOCK_NAME).exists()  # released and removed
    code, _, stderr = invoke("fetch", "bees", "--limit", "1", "--out", str(out), *FAST)
    assert code == 0, stderr
    assert not (out / LOCK_NAME).exists()


def test_the_lock_is_held_across_processes_and_can_be_waited_for(tmp_path):
    import subprocess
    import sys

    from mtl.locks import FolderBusy, folder_lock

    code = (
        "import sys, time\n"
        "from mtl.locks import folder_lock\n"
        "with folder_lock(sys.argv[1], 'mtl train'):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusy, match="another mtl train pid"), folder_lock(tmp_path):
            pass
        got: list[str] = []
        waiter = threading.Thread(target=lambda: _wait_for(tmp_path, got))
        waiter.start()
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        waiter.join()
        assert got == ["locked"]
    finally:
        holder.kill()
        holder.wait()


def _wait_for(folder: Path, got: list[str]) -> None:
    from mtl.locks import folder_lock

    with folder_lock(folder, "waiter", wait=True):
        got.append("locked")


@pytest.fixture
def fifo_watch(tmp_path) -> Iterator[tuple[Path, list[str]]]:
    """A FIFO ``x.jpg``; a watcher records (and unblocks) any reader that opens it."""
    folder = tmp_path / "imgs"
    (folder / "cls").mkdir(parents=True)
    fifo = folder / "cls" / "x.jpg"
    os.mkfifo(fifo)
    opened: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:  # succeeds only while someone has the FIFO open for reading
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.005)
                continue
            opened.append("opened")
            os.close(fd)  # the reader now sees end of file instead of hanging

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    yield fifo, opened
    stop.set()
    thread.join()


def test_a_fifo_is_skipped_with_a_reason_by_every_reader(fifo_watch, sample_photos, engine):
    from mtl.crawler.validate import inspect_image
    from mtl.data.features import file_digest
    from mtl.data.images import expand_inputs, iter_batches, list_images, load_image

    fifo, opened = fifo_watch
    good = fifo.parent / "good.jpg"
    good.write_bytes(sample_photos["grace_hopper"].read_bytes())
    with pytest.raises(ImageError, match="FIFO"):
        load_image(fifo, 32)
    assert list_images(fifo.parent.parent) == [good, fifo]  # listed, so it is reported
    (batch,) = iter_batches(expand_inputs([str(fifo.parent)]), 32)
    assert batch.paths == [good] and batch.failures == [(fifo, batch.failures[0][1])]
    assert "FIFO" in batch.failures[0][1]
    with pytest.raises(OSError, match="FIFO"):
        file_digest(fifo)
    from mtl.crawler.reasons import Rejected

    with pytest.raises(Rejected, match="FIFO"):
        inspect_image(fifo, (1, 1))
    # fetch adopts what a user put in a class folder: the FIFO is a note, not a hang.
    engine.set_results("cls", [engine.add("/i/c.jpg", jpeg(5))])
    result = fetch(FetchRequest(["cls"], out=fifo.parent.parent, limit=2, min_size="10x10"))
    assert any("x.jpg is not counted" in n and "FIFO" in n for n in result.notes)
    assert opened == []


@pytest.mark.parametrize("name", ["d[/]", "d[bold]x"])
def test_markup_in_out_is_printed_literally(engine, tmp_path, name):
    engine.set_results("ants", [engine.add("/i/a.jpg", jpeg(6))])
    out = tmp_path / name
    code, stdout, stderr = invoke("fetch", "ants", "--limit", "1", "--out", str(out), *FAST)
    assert code == 0, stderr
    assert f"mtl fetch -> {out}" in stdout.replace("\n", "")
    assert f"manifest: {out / 'manifest.jsonl'}" in stdout


def test_every_cli_renderer_escapes_user_strings():
    """No f-string with a value reaches Rich markup unescaped: a static check of mtl/cli."""
    import re

    cli = Path(__file__).resolve().parents[2] / "mtl" / "cli"
    bad = []
    for path in sorted(cli.glob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            # Bars.print never reads markup; fail() takes a message its callers escaped.
            if "markup=False" in line or "bars.print(" in line or "{message}" in line:
                continue
            for call in re.findall(r"(?:Table\(title=|add_row\(|\.print\()f\"([^\"]*)\"", line):
                for expr in re.findall(r"\{([^}]*)\}", call):
                    safe = expr.startswith(("shown(", "escape(", "_escape(", "len(")) or re.search(
                        r":\.\d+f$|^(alpha|show|report\.kind)$", expr
                    )
                    if not safe:
                        bad.append(f"{path.name}:{n}: {{{expr}}}")
    assert bad == []


def test_nan_and_infinity_become_null(tmp_path, capsys):
    import numpy as np

    from mtl import files
    from mtl.cli._common import print_json

    data = {"p": float("nan"), "q": [np.float32("inf"), -np.inf, 0.5], "n": np.float64(0.25)}
    print_json(data)
    text = capsys.readouterr().out
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=pytest.fail) == {
        "p": None, "q": [None, None, 0.5], "n": 0.25,
    }  # fmt: skip
    files.write_json(tmp_path / "m.json", data)
    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=pytest.fail)["p"] is None


def test_a_config_file_that_is_not_utf8_is_a_usage_error(tmp_path):
    from mtl.pipeline.config import load_toml

    bad = tmp_path / "c.toml"
    bad.write_bytes(b"epochs = 2\n# caf\xe9\n")
    with pytest.raises(UsageError, match=r"c\.toml is not valid TOML: not UTF-8"):
        load_toml(bad)


@pytest.mark.parametrize("seed", [-1, 2**32, 2**40])
def test_a_seed_out_of_range_is_a_usage_error(seed):
    from mtl.pipeline.config import resolve

    with pytest.raises(UsageError, match="--seed must be between 0 and 2"):
        resolve(None, {"seed": seed})


def test_an_unwritable_csv_or_plot_is_refused_before_the_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for args in (
        ["predict", str(tmp_path / "none.keras"), str(tmp_path), "--csv", f"{blocker}/out.csv"],
        ["evaluate", str(tmp_path / "none.keras"), str(tmp_path), "--plot", f"{blocker}/cm.png"],
    ):
        code, _, stderr = invoke(*args)
        assert code == 2, stderr
        assert f"cannot write file {blocker}/" in stderr and "is not a folder" in stderr


def test_a_read_only_folder_is_refused(tmp_path, monkeypatch):
    from mtl import files

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == tmp_path else real(p, m))
    with pytest.raises(UsageError, match=f"cannot write file {tmp_path}/x.csv: .* not writable"):
        files.check_new(tmp_path / "x.csv", force=False)


def test_an_os_error_at_the_edge_is_exit_2_naming_the_file(capsys):
    import typer

    from mtl.cli._common import call

    def core() -> None:
        raise PermissionError(13, "Read-only file system", "/ro/runs/train")

    with pytest.raises(typer.Exit) as info:
        call(core)
    assert info.value.exit_code == 2
    err = capsys.readouterr().err
    assert "cannot use /ro/runs/train: Read-only file system" in err
    assert "unexpected" not in err


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\n", "\r"])
def test_line_breaking_class_names_are_refused_at_train_and_export(tmp_path, sep):
    from mtl.data import dataset
    from mtl.deploy.export import labels_text

    with pytest.raises(UsageError, match="line break"):
        labels_text(["ants", f"be{sep}es"])
    for name in ("ants", f"be{sep}es"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "x.jpg").write_bytes(jpeg(7))
    with pytest.raises(DataError, match="cannot be a class name: it contains a line break"):
        dataset.scan(tmp_path)


def test_labels_are_read_one_per_newline(tmp_path):
    from mtl.inference.tflite import read_labels

    path = tmp_path / "m.labels.txt"
    path.write_text("ants\nb\u2028ees\r\nwasps\n", encoding="utf-8", newline="")
    assert read_labels(path) == ["ants", "b\u2028ees", "wasps"]


def test_files_placed_before_a_crash_keep_their_urls(engine, tmp_path, monkeypatch):
    from mtl.crawler import state

    urls = [engine.add(f"/i/k{i}.jpg", jpeg(300 + i)) for i in range(3)]
    engine.set_results("crow", urls)
    real_save = state.OutputState.save
    monkeypatch.setattr(state.OutputState, "save", lambda self: None)  # kill -9 before a flush
    fetch(FetchRequest(["crow"], out=tmp_path, limit=2, min_size="10x10"))
    assert not (tmp_path / "manifest.jsonl").exists()
    assert len(list((tmp_path / "crow").glob("*.jpg"))) == 2
    monkeypatch.setattr(state.OutputState, "save", real_save)
    result = fetch(FetchRequest(["crow"], out=tmp_path, limit=3, min_size="10x10"))
    (crow,) = result.classes
    assert (crow.existing, crow.kept, crow.rejected["duplicate"]) == (2, 3, 0)
    by_file = {r["file"]: r for r in rows(tmp_path)}
    assert [by_file[f"crow/00000{i}.jpg"]["url"] for i in (1, 2, 3)] == urls
    assert {r["engine"] for r in by_file.values()} == {"bing"}
    assert [engine.hits[u.removeprefix(engine.base)] for u in urls] == [1, 1, 1]
    assert not (tmp_path / ".mtl-pending.jsonl").exists()


def test_a_torn_journal_line_is_ignored(tmp_path):
    from mtl.crawler.manifest import PENDING, load_pending

    (tmp_path / PENDING).write_text('{"class": "crow", "file": "cr')
    assert load_pending(tmp_path) == []


def test_fetched_images_are_0644(engine, tmp_path):
    engine.set_results("ants", [engine.add("/i/a.jpg", jpeg(8))])
    fetch(FetchRequest(["ants"], out=tmp_path, limit=1, min_size="10x10"))
    (image,) = (tmp_path / "ants").iterdir()
    assert stat.S_IMODE(image.stat().st_mode) == 0o644

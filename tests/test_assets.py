"""Known datasets and verified downloads: mtl.assets.datasets, `mtl fetch --dataset`, weight checks.

Everything is served from a loopback HTTP server; the zip is built from the
real hymenoptera training photos (tests/fakes/hymenoptera_zip.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mtl.assets import datasets, weights
from mtl.cli import app
from mtl.errors import DatasetUnavailable, WeightsUnavailable
from mtl.model import backbones
from tests.conftest import HYMENOPTERA, ROOT, WEIGHTS, closed_port
from tests.fakes import hymenoptera_zip
from tests.fakes.file_server import FileServer

ZIP = "/datasets/hymenoptera_data.zip"


@pytest.fixture(scope="module")
def good_zip() -> bytes:
    return hymenoptera_zip.build(HYMENOPTERA)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FileServer]:
    """A file server as MTL_DATASETS_URL, an empty mtl cache, no MTL_DATA_DIR."""
    monkeypatch.setenv("MTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MTL_DATA_DIR", raising=False)
    with FileServer() as s:
        monkeypatch.setenv("MTL_DATASETS_URL", s.url("/datasets/"))
        yield s


def cache_is_empty(tmp_path: Path) -> bool:
    folder = tmp_path / "cache" / "datasets"
    return not folder.exists() or list(folder.iterdir()) == []


def test_the_pins_are_the_real_training_photos():
    pins = datasets.HYMENOPTERA.pinned()
    assert len(pins) == datasets.HYMENOPTERA.counts["train"] == 245
    shared = {
        f"train/{f.relative_to(HYMENOPTERA).as_posix()}"
        for f in HYMENOPTERA.rglob("*")
        if f.is_file()
    }
    assert set(pins) == shared
    assert datasets.HYMENOPTERA.file_name == "hymenoptera_data.zip"


def test_download_verifies_unpacks_and_caches(server, good_zip, tmp_path):
    server.add(ZIP, good_zip)
    seen: list[tuple[int, int | None]] = []
    got = datasets.resolve(
        "hymenoptera", progress=lambda n, done, total: seen.append((done, total))
    )
    assert got.source == "download"
    assert got.path == tmp_path / "cache" / "datasets" / "hymenoptera"
    assert got.splits == {"train": {"ants": 124, "bees": 121}, "val": {"ants": 70, "bees": 83}}
    assert server.asked == [ZIP]
    assert seen[-1] == (len(good_zip), len(good_zip))
    some = sorted((HYMENOPTERA / "bees").iterdir())[5]
    assert (got.path / "train" / "bees" / some.name).read_bytes() == some.read_bytes()
    # Only the finished folder is left: no zip, no temp folder.
    assert [p.name for p in got.path.parent.iterdir()] == ["hymenoptera"]
    # Later calls use the cache, offline.
    again = datasets.resolve("hymenoptera")
    assert again.source == "cache" and again.path == got.path and server.asked == [ZIP]


def test_a_local_copy_wins_and_is_not_written(server, monkeypatch):
    monkeypatch.setenv("MTL_DATA_DIR", str(HYMENOPTERA.parents[1]))
    got = datasets.resolve("hymenoptera")
    assert got.source == "local" and got.path == HYMENOPTERA.parent
    assert got.splits == {"train": {"ants": 124, "bees": 121}}
    assert server.asked == []


def _flip_photo(files: dict[str, bytes]) -> None:
    name = "hymenoptera_data/train/ants/0013035.jpg"
    data = bytearray(files[name])
    data[len(data) // 2] ^= 0xFF
    files[name] = bytes(data)


def _drop_val(files: dict[str, bytes]) -> None:
    del files[next(n for n in files if "/val/bees/" in n)]


def _drop_train(files: dict[str, bytes]) -> None:
    del files["hymenoptera_data/train/bees/" + sorted((HYMENOPTERA / "bees").iterdir())[0].name]


def _escape(files: dict[str, bytes]) -> None:
    files["hymenoptera_data/../../evil.txt"] = b"outside"


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_flip_photo, "SHA-256 mismatch for train/ants/0013035.jpg"),
        (
            _drop_val,
            "expected 153 val photos in hymenoptera_data/val/, found 152 (70 ants, 82 bees)",
        ),
        (_drop_train, "the zip lacks hymenoptera_data/train/bees/"),
        (_escape, "unsafe member name 'hymenoptera_data/../../"),
    ],
)
def test_a_wrong_zip_is_refused_and_nothing_kept(server, tmp_path, edit, reason):
    server.add(ZIP, hymenoptera_zip.build(HYMENOPTERA, edit))
    with pytest.raises(DatasetUnavailable) as exc:
        datasets.resolve("hymenoptera")
    assert "refused the download of hymenoptera" in exc.value.message
    assert reason in exc.value.message
    assert cache_is_empty(tmp_path)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "cache" / "evil.txt").exists()


def test_a_truncated_zip_is_refused(server, good_zip, tmp_path):
    server.add(ZIP, good_zip[: len(good_zip) * 2 // 3])  # served whole: only the zip knows
    with pytest.raises(DatasetUnavailable, match="refused the download.*not a zip file"):
        datasets.resolve("hymenoptera")
    assert cache_is_empty(tmp_path)


def test_a_bad_crc_is_refused(server, good_zip, tmp_path):
    data = bytearray(good_zip)
    at = good_zip.index(b"\xff\xd8\xff", len(good_zip) // 2)  # inside some stored JPEG
    data[at + 100] ^= 0xFF
    server.add(ZIP, bytes(data))
    with pytest.raises(DatasetUnavailable, match="refused the download.*bad CRC for hymenoptera"):
        datasets.resolve("hymenoptera")
    assert cache_is_empty(tmp_path)


def test_a_dropped_connection_is_refused(server, good_zip, tmp_path):
    server.add(ZIP, good_zip, cut=len(good_zip) // 2)
    with pytest.raises(DatasetUnavailable, match="cannot download it from"):
        datasets.resolve("hymenoptera")
    assert cache_is_empty(tmp_path)


def test_offline_with_nothing_cached_says_what_and_where(server, monkeypatch, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/mirror/"
    monkeypatch.setenv("MTL_DATASETS_URL", url)
    with pytest.raises(DatasetUnavailable) as exc:
        datasets.resolve("hymenoptera")
    message = exc.value.message
    assert "\n" not in message
    assert message.startswith("missing dataset hymenoptera and cannot download it from ")
    assert url + "hymenoptera_data.zip" in message
    assert "set MTL_DATA_DIR to that folder" in message and "hymenoptera_data/" in message
    with pytest.raises(DatasetUnavailable, match="^missing dataset hymenoptera; download "):
        datasets.resolve("hymenoptera", download=False)
    assert cache_is_empty(tmp_path)


# --- the command line --------------------------------------------------------------


def test_fetch_dataset_copies_it_under_out(cli, server, good_zip, tmp_path):
    server.add(ZIP, good_zip)
    out = tmp_path / "data"
    result = cli.invoke(app, ["fetch", "--dataset", "hymenoptera", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["path"] == str(out / "hymenoptera") and got["copied"] is True
    assert got["source"] == "download"
    assert got["splits"]["train"] == {"ants": 124, "bees": 121}
    assert len(list((out / "hymenoptera" / "val" / "bees").iterdir())) == 83
    # Again: already there, nothing downloaded or copied.
    result = cli.invoke(app, ["fetch", "--dataset", "hymenoptera", "--out", str(out)])
    assert result.exit_code == 0
    assert f"hymenoptera: 245 train + 153 val photos already in {out / 'hymenoptera'}" in (
        result.stdout
    )
    assert f"next: mtl train {out / 'hymenoptera' / 'train'}" in result.stderr
    assert server.asked == [ZIP]
    assert [p.name for p in out.iterdir()] == ["hymenoptera"]  # no temp folder left


def test_fetch_list(cli, server):
    result = cli.invoke(app, ["fetch", "--list", "--json"])
    assert result.exit_code == 0
    (row,) = json.loads(result.stdout)
    assert row["name"] == "hymenoptera" and row["photos"] == {"train": 245, "val": 153}
    assert row["url"] == server.url(ZIP) and row["path"] is None
    table = cli.invoke(app, ["fetch", "--list"])
    assert table.exit_code == 0 and "hymenoptera" in table.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["crow", "--dataset", "hymenoptera"], "not both"),
        (["--urls", "x.txt", "--dataset", "hymenoptera"], "not both"),
        (["--dataset", "hymenoptera", "--list"], "not both"),
        (["--dataset", "wasps"], "unknown dataset 'wasps'; known: hymenoptera"),
        ([], "give at least one KEYWORD, or --urls FILE (or --dataset NAME)"),
    ],
)
def test_fetch_dataset_usage_errors(cli, server, argv, message):
    result = cli.invoke(app, ["fetch", *argv])
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert server.asked == []


def test_fetch_dataset_offline_is_one_line(cli, server, monkeypatch, tmp_path):
    monkeypatch.setenv("MTL_DATASETS_URL", f"http://127.0.0.1:{closed_port()}/")
    result = cli.invoke(app, ["fetch", "--dataset", "hymenoptera", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "missing dataset hymenoptera" in result.stderr
    assert not (tmp_path / "d").exists()


def test_fetch_dataset_does_not_import_tensorflow(tmp_path):
    code = (
        "import sys\n"
        "from mtl.cli import app\n"
        f"try:\n    app(['fetch', '--dataset', 'hymenoptera', '--out', {str(tmp_path)!r}])\n"
        "except SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    env = {**os.environ, "MTL_DATA_DIR": str(HYMENOPTERA.parents[1]), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr
    assert len(list((tmp_path / "hymenoptera" / "train" / "ants").iterdir())) == 124


# --- weights: a bad download is never kept -------------------------------------------


@pytest.mark.parametrize(
    ("remote", "body", "reason"),
    [
        (
            backbones.weights_file("mobilenet", 0.75, include_top=False),
            b"<html>a captive portal</html>",
            "not an HDF5 file",
        ),
        (weights.class_index_file(), b'{"0": ["n01440764", "tench"]}', "SHA-256 is not a1e7a966"),
    ],
)
def test_a_bad_weights_download_is_not_kept(tmp_path, monkeypatch, remote, body, reason):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    with FileServer() as s:
        s.add("/w/" + remote.name, body)
        monkeypatch.setenv("MTL_WEIGHTS_URL", s.url("/w/"))
        with pytest.raises(WeightsUnavailable, match=reason):
            weights.resolve(remote, tmp_path / "empty")
    assert list((tmp_path / "kh" / "models").iterdir()) == []


def test_the_real_weights_pass_the_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    with FileServer() as s:
        monkeypatch.setenv("MTL_WEIGHTS_URL", s.url("/w/"))
        for remote in (
            weights.class_index_file(),
            backbones.weights_file("mobilenet", 0.75, include_top=False),
        ):
            s.add("/w/" + remote.name, (WEIGHTS / remote.name).read_bytes())
            got = weights.resolve(remote, tmp_path / "empty")
            assert got.read_bytes() == (WEIGHTS / remote.name).read_bytes()

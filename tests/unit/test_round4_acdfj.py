"""Reliability round 4 (issue 34), classes A, C, D, F and J, without TensorFlow or weights.

A: nothing written or deleted through a link mtl did not make. C: one table of split
folder names. D: one reader for user-supplied files. F: any decoder error skips one file.
J: ``mtl train`` holds DATA's lock, shared with readers, exclusive against writers.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtl.data.images import iter_batches, load_image
from mtl.errors import ImageError


def odd_dds() -> bytes:
    """A DDS header whose pixel-format flags name nothing Pillow knows: ``Image.open``
    raises NotImplementedError (not an OSError) on it."""
    header = bytearray(124)
    struct.pack_into("<IIIII", header, 0, 124, 0x1007, 8, 8, 0)
    struct.pack_into("<II", header, 72, 32, 0)
    return b"DDS " + bytes(header) + bytes(256)


def photo(path: Path, value: int = 90, size: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    pixels[..., 0] = value
    Image.fromarray(pixels).save(path, "JPEG")
    return path


# --- F: one odd image never stops a command -------------------------------------------


def test_a_decoder_raising_not_implemented_skips_that_file_only(tmp_path):
    odd = tmp_path / "odd.jpg"
    odd.write_bytes(odd_dds())
    good = photo(tmp_path / "good.jpg")
    with pytest.raises(ImageError, match="NotImplementedError"):
        load_image(odd, 32)
    batches = list(iter_batches([odd, good], 32))
    assert [p for b in batches for p in b.paths] == [good]
    failures = [f for b in batches for f in b.failures]
    assert [p for p, _ in failures] == [odd]
    assert "cannot decode image" in failures[0][1]


def test_any_exception_type_from_a_decoder_is_one_files_problem(tmp_path, monkeypatch):
    """Whatever a Pillow plugin raises (struct.error, IndexError, ZeroDivisionError...)."""
    from mtl.data import images

    good = photo(tmp_path / "good.jpg")

    def broken(*_args: object, **_kw: object) -> None:
        raise ZeroDivisionError("division by zero in a plugin")

    monkeypatch.setattr(images, "_pixels", broken)
    with pytest.raises(ImageError, match="ZeroDivisionError: division by zero"):
        load_image(good, 32)


def test_fetch_rejects_an_odd_dds_as_not_an_image(tmp_path):
    from mtl.crawler.reasons import Rejected
    from mtl.crawler.validate import inspect_image

    odd = tmp_path / "odd.jpg"
    odd.write_bytes(odd_dds())
    with pytest.raises(Rejected) as info:
        inspect_image(odd, (10, 10))
    assert info.value.reason == "not_image"


# --- A: never write or delete through a link mtl did not make -------------------------


def test_a_linked_lock_file_is_refused_and_its_target_untouched(tmp_path):
    from mtl.files import LinkRefused
    from mtl.locks import LOCK_NAME, folder_lock

    data = tmp_path / "data"
    data.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (data / LOCK_NAME).symlink_to(victim)
    for shared in (False, True):
        lock = folder_lock(data, "mtl review", shared=shared)
        with pytest.raises(LinkRefused, match=r"\.mtl\.lock is a symbolic link"), lock:
            pass
    assert victim.read_text() == "precious"


def test_a_linked_checkpoint_folder_takes_nothing_written_nor_deleted(tmp_path):
    from mtl.files import LinkRefused
    from mtl.training import checkpoint, rundir

    run = tmp_path / "run"
    run.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "epoch-0001.npz").write_bytes(b"someone's")
    (run / "checkpoint").symlink_to(elsewhere)
    with pytest.raises(LinkRefused, match="checkpoint is a symbolic link"):
        rundir.refuse_links(run)
    with pytest.raises(LinkRefused):
        checkpoint.write_run(run, {}, tmp_path, [])
    ckpt = checkpoint.Checkpoint(1, "head", [{}], {}, [np.zeros(2)], {}, None)
    with pytest.raises(LinkRefused):
        checkpoint.save(run, ckpt)
    with pytest.raises(LinkRefused):
        rundir.clear_run(run)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["epoch-0001.npz"]
    assert (run / "checkpoint").is_symlink()


def test_a_linked_output_file_is_refused_but_a_linked_output_folder_works(tmp_path):
    from mtl import files

    target = tmp_path / "target.json"
    target.write_text("keep")
    (tmp_path / "out.json").symlink_to(target)
    with pytest.raises(files.LinkRefused, match="out.json is a symbolic link"):
        files.write_json(tmp_path / "out.json", {"a": 1}, force=True)
    assert target.read_text() == "keep"
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "mine").symlink_to(real)  # the user's own linked folder
    files.write_json(tmp_path / "mine" / "x.json", {"a": 1})
    assert (real / "x.json").is_file()
    folder = files.owned_dir(tmp_path / "mine" / "made" / "deeper", under=tmp_path / "mine")
    assert folder.is_dir() and (real / "made" / "deeper").is_dir()
    (real / "made" / "link").symlink_to(tmp_path)
    with pytest.raises(files.LinkRefused, match="link is a symbolic link"):
        files.owned_dir(tmp_path / "mine" / "made" / "link" / "x", under=tmp_path / "mine")


def test_a_journal_append_never_follows_a_link(tmp_path):
    from mtl import files

    target = tmp_path / "t"
    target.write_text("keep")
    (tmp_path / "journal").symlink_to(target)
    with pytest.raises(files.LinkRefused):
        files.append_text(tmp_path / "journal", "line\n")
    with pytest.raises(files.LinkRefused):
        files.remove(tmp_path / "journal")
    assert target.read_text() == "keep"


# --- J: DATA's lock, shared by readers, exclusive against writers ---------------------


def test_readers_share_a_folder_and_writers_are_refused_while_they_read(tmp_path):
    from mtl.locks import LOCK_NAME, FolderBusy, folder_lock

    data = tmp_path / "data"
    data.mkdir()
    # flock is per open file: two locks in one process behave as two processes' would.
    reader, writer = "mtl train (reading)", "mtl review"
    with folder_lock(data, reader, shared=True):
        with folder_lock(data, reader, shared=True):
            busy = pytest.raises(FolderBusy, match=r"mtl train \(reading\)")
            with busy, folder_lock(data, writer):
                pass
        with pytest.raises(FolderBusy), folder_lock(data, "mtl fetch"):
            pass
        assert (data / LOCK_NAME).exists()  # the other reader's, still held
    assert not (data / LOCK_NAME).exists()  # the last one out removed it
    busy = pytest.raises(FolderBusy, match="mtl review")
    with folder_lock(data, writer), busy, folder_lock(data, reader, shared=True):
        pass
    with folder_lock(data, writer):
        pass


def test_a_reader_of_a_read_only_folder_reads_without_a_lock(tmp_path):
    import os

    from mtl.locks import LOCK_NAME, folder_lock

    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o555)
    try:
        with folder_lock(data, "mtl train (reading)", shared=True):
            assert not (data / LOCK_NAME).exists()
    finally:
        data.chmod(0o755)


# --- D: one reader for user-supplied files --------------------------------------------


def small_data(
    root: Path, classes: tuple[str, ...] = ("ants", "bees"), n: int = 3, first: int = 0
) -> Path:
    """``n`` photos per class; ``first`` offsets their content (another split's photos)."""
    for c, name in enumerate(classes):
        for i in range(n):
            photo(root / name / f"{i:03d}.jpg", value=first + 10 * c + i)
    return root


def cli_run(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from mtl.cli import app

    result = CliRunner().invoke(app, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), repr(result.exception)
    return result.exit_code, result.stderr


def deep_json(levels: int = 100_000) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("kind", ["fifo", "device", "deep", "deep_toml", "huge"])
def test_settings_and_decisions_files_that_hang_or_recurse_are_exit_2(tmp_path, kind):
    import os

    data = small_data(tmp_path / "data")
    if kind == "fifo":
        os.mkfifo(tmp_path / "given.toml")  # opening it for reading would wait for a writer
        given, why = tmp_path / "given.toml", "FIFO"
    elif kind == "device":
        given, why = Path("/dev/zero"), "device"
    elif kind == "huge":
        given, why = tmp_path / "given.toml", "too large"
        given.write_text("# " + "x" * (17 << 20))
    else:
        given = tmp_path / ("given.toml" if kind == "deep_toml" else "given.json")
        given.write_text(("x = " + deep_json(5000)) if kind == "deep_toml" else deep_json())
        why = "nested deeper than 64 levels"
    code, err = cli_run("train", str(data), "--config", str(given))
    assert code == 2 and why in err and "Traceback" not in err, err
    if kind in ("deep_toml", "huge"):
        return  # a decisions file is JSON, and may be larger (64 MiB)
    code, err = cli_run("review", str(data), "--apply", str(given))
    assert code == 2 and why in err and "Traceback" not in err, err


def test_a_fifo_labels_file_is_refused_at_once(tmp_path):
    import os

    from mtl.errors import ModelFileError
    from mtl.inference.tflite import read_labels

    os.mkfifo(tmp_path / "model.labels.txt")
    with pytest.raises(ModelFileError, match="FIFO"):
        read_labels(tmp_path / "model.labels.txt")


def test_a_linked_folder_inside_a_shared_cache_takes_no_entry(tmp_path):
    from mtl import files
    from mtl.data import features

    shared, elsewhere = tmp_path / "cache", tmp_path / "elsewhere"
    elsewhere.mkdir()
    shared.mkdir()
    key = "ab" + "0" * 38
    (shared / "ab").symlink_to(elsewhere)
    cache = features.FeatureCache(shared, persistent=True)
    with pytest.raises(files.LinkRefused, match="ab is a symbolic link"):
        cache.put(key, np.ones(3, np.float32))
    assert list(elsewhere.iterdir()) == []


def test_a_deep_manifest_line_is_exit_2_naming_the_file(tmp_path):
    from mtl.data import dataset
    from mtl.errors import DataError

    data = small_data(tmp_path / "data")
    (data / "manifest.jsonl").write_text('{"path": "ants/000.jpg"}\n' + deep_json() + "\n")
    with pytest.raises(DataError, match=r"manifest.jsonl line 2"):
        dataset.scan(data)


def test_json_and_toml_readers_bound_depth_without_recursion():
    from mtl import files

    assert files.loads_json("[[1]]") == [[1]]
    with pytest.raises(files.TooDeep):
        files.loads_json("[" * 65 + "]" * 65)  # parses, but deeper than any record of mtl's
    with pytest.raises(files.TooDeep):
        files.loads_json(deep_json())  # the parser itself would recurse too deep
    with pytest.raises(files.TooDeep):
        files.loads_toml("x = " + deep_json(5000))


class Doubler:
    """A feature extractor in NumPy: features are the pixels' mean per channel, doubled."""

    spec = "doubler"
    batch = 0
    calls = 0
    images = 0

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.images += len(pixels)
        return pixels.reshape(len(pixels), -1, 3).mean(axis=1).astype(np.float32) * 2


@pytest.mark.parametrize(
    "bad",
    [
        np.full(3, np.nan, np.float32),  # a NaN entry (served, the run "diverged")
        np.ones(5, np.float32),  # another shape
        np.ones(3, np.int64),  # not features
    ],
    ids=["nan", "shape", "dtype"],
)
def test_a_bad_shared_cache_entry_is_computed_again(tmp_path, bad):
    from mtl.data import features

    paths = [photo(tmp_path / f"{i}.jpg", value=40 * i) for i in range(3)]
    shared = tmp_path / "cache"
    first = features.compute(paths, Doubler(), features.FeatureCache(shared, persistent=True), 16)
    expected = features.stack(features.FeatureCache(shared), first.keys)
    key = first.keys[1]
    (entry,) = shared.rglob(f"{key}.npy")
    entry.unlink()
    np.save(entry, bad)
    cache = features.FeatureCache(shared, persistent=True)
    again = features.compute(paths, Doubler(), cache, 16)
    assert cache.stats.bad == 1 and cache.stats.computed == 1 and cache.stats.hits == 2
    np.testing.assert_array_equal(features.stack(cache, again.keys), expected)


# --- C: one table of split folder names, read by every command ------------------------


def test_split_folders_are_found_in_any_case_and_alias(tmp_path):
    from mtl.data import dataset

    data = small_data(tmp_path / "d" / "Train")
    small_data(tmp_path / "d" / "VALID", n=2, first=100)
    small_data(tmp_path / "d" / "Test", n=1, first=200)
    ds = dataset.scan(tmp_path / "d")
    assert ds.classes == ["ants", "bees"] and ds.layout == "train/val"
    assert ds.val_dir == tmp_path / "d" / "VALID"
    assert ds.counts("train") == [3, 3] and ds.counts("val") == [2, 2] and len(ds.test) == 2
    assert data.is_dir()


@pytest.mark.parametrize(
    ("folders", "message"),
    [
        (("ants", "bees", "Test", "VAL"), r"mixes split folders \(Test/, VAL/\) with class "),
        (("train", "ants"), r"has train/ and also class folders beside them \(ants/\)"),
        (("train", "Train"), r"has Train/ and train/: keep one train folder"),
        (("train", "val", "validation"), r"keep one validation folder"),
    ],
)
def test_an_ambiguous_layout_is_exit_2_saying_what_was_found(tmp_path, folders, message):
    from mtl.data import dataset
    from mtl.errors import DataError

    data = tmp_path / "d"
    for name in folders:
        if dataset.split_role(name):
            small_data(data / name)
        else:
            photo(data / name / "x.jpg")
    with pytest.raises(DataError, match=message):
        dataset.scan(data)
    code, err = cli_run("train", str(data), "--out", str(tmp_path / "run"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_a_class_folder_named_like_a_split_is_refused(tmp_path):
    from mtl.data import dataset
    from mtl.errors import DataError

    data = small_data(tmp_path / "d" / "train", classes=("ants", "Val"))
    with pytest.raises(DataError, match="named like a split folder"):
        dataset.scan(data.parent)


def test_a_run_folder_inside_data_is_not_a_class(tmp_path):
    from mtl.data import dataset

    data = small_data(tmp_path / "d")
    run = data / "run"
    photo(run / "learning_curves.png")  # a run's plots are images too
    (run / "model.keras").write_bytes(b"PK")
    numbered = data / "runs" / "train"
    (numbered / "checkpoint").mkdir(parents=True)
    (numbered / "checkpoint" / "run.json").write_text("{}")
    photo(numbered / "confusion_matrix.png")
    ds = dataset.scan(data)
    assert ds.classes == ["ants", "bees"]
    assert any("left out run/, runs/" in w for w in ds.warnings), ds.warnings


def test_photos_in_two_splits_are_reported(tmp_path):
    import os
    import shutil

    from mtl.data import dataset

    data = tmp_path / "d"
    small_data(data / "train", n=4)
    small_data(data / "test", n=1, first=100)
    shutil.copy(data / "train" / "ants" / "001.jpg", data / "test" / "ants" / "copy.jpg")
    os.link(data / "train" / "bees" / "002.jpg", data / "test" / "bees" / "linked.jpg")
    ds = dataset.scan(data)
    (warning,) = [w for w in ds.warnings if "also training photos" in w]
    assert warning.startswith("2 test photo(s)")
    assert "test/ants/copy.jpg = train/ants/001.jpg" in warning
    assert "test/bees/linked.jpg = train/bees/002.jpg" in warning


def test_a_symlinked_test_folder_is_read_as_the_test_split(tmp_path):
    from mtl.data import dataset

    data = small_data(tmp_path / "d" / "train").parent
    elsewhere = small_data(tmp_path / "held", n=2, first=100)
    (data / "test").symlink_to(elsewhere)
    ds = dataset.scan(data)
    assert len(ds.test) == 4 and {it.subset for it in ds.test} == {"test"}
    assert not [w for w in ds.warnings if "also training" in w]


def test_review_decisions_and_undo_work_under_a_valid_folder(tmp_path):
    """review knew only train/ and val/: a move under valid/ left the dataset."""
    import json

    data = tmp_path / "d"
    small_data(data / "train", n=4)
    small_data(data / "valid", n=2, first=100)
    decisions = tmp_path / "decisions.json"
    import hashlib

    from mtl.review import actions

    sha = hashlib.sha256((data / "valid/ants/001.jpg").read_bytes()).hexdigest()
    rows = [{"file": "valid/ants/001.jpg", "action": "move", "class": "bees", "sha256": sha}]
    bound = {"data": str(data), "state": actions.folder_state(data)}  # as the page saves it
    decisions.write_text(json.dumps({"format": "mtl-review-decisions", **bound, "decisions": rows}))
    code, err = cli_run("review", str(data), "--apply", str(decisions))
    assert code == 0, err

    def names(folder: str) -> list[str]:
        return sorted(p.name for p in (data / "valid" / folder).iterdir())

    assert names("bees") == ["000.jpg", "001-1.jpg", "001.jpg"] and names("ants") == ["000.jpg"]
    assert not (data / "bees").exists()  # it stays in the validation folder
    code, err = cli_run("review", str(data), "--undo")
    assert code == 0, err
    assert names("bees") == ["000.jpg", "001.jpg"] and names("ants") == ["000.jpg", "001.jpg"]


def test_a_folder_without_images_beside_train_is_no_class_and_no_ambiguity(tmp_path):
    from mtl.data import dataset

    data = small_data(tmp_path / "d" / "train").parent
    (data / "notes").mkdir()
    (data / "notes" / "README.txt").write_text("how the photos were taken")
    assert dataset.scan(data).classes == ["ants", "bees"]


EPOCH = {
    "epoch": 1,
    "phase": "train",
    "loss": 1.0,
    "accuracy": 0.5,
    "val_loss": 1.1,
    "val_accuracy": 0.5,
    "learning_rate": 0.001,
}


def test_tensorboard_logging_never_writes_through_a_link(tmp_path):
    pytest.importorskip("tensorboard")
    from mtl.report.events import RunEvents

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    board = tmp_path / "run" / "tensorboard"
    board.mkdir(parents=True)
    (board / "run").symlink_to(elsewhere)
    events = RunEvents(board, "run", {"epochs": 1})
    events.epoch(EPOCH)
    events.close()
    assert list(elsewhere.iterdir()) == [] and not events.active
    real = RunEvents(tmp_path / "other" / "tensorboard", "r", {"epochs": 1})
    real.epoch(EPOCH)
    real.close()
    assert list((tmp_path / "other" / "tensorboard" / "r").rglob("events.out.tfevents.*"))

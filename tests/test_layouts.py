"""Split-folder layouts as Ultralytics, fastai and Hugging Face's imagefolder read them
(issue 23 item 1), and review's ``_review/`` invisible to every folder scan (issue 24 M15).

Real photos: a small copy of shared/data/clothing (train/ + test/) and a Roboflow-like
train/ + valid/ made from it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mtl.cli import app
from mtl.data import dataset
from mtl.data.images import expand_inputs, list_images
from mtl.deploy.export import representative_images
from mtl.errors import DataError
from mtl.inference.evaluate import scan_test_set
from tests.conftest import ALPHA, SHARED

CLOTHING = SHARED / "data" / "clothing"
CLASSES = ("pants", "shoes")


def clothing_copy(root: Path, train: int = 12, test: int = 4, val: str | None = None) -> Path:
    """``root`` with train/ and test/ (and ``val``/ when given) of two clothing classes."""
    for c in CLASSES:
        photos = list_images(CLOTHING / "train" / c)
        held = list_images(CLOTHING / "test" / c)[:test]
        sides = {"train": photos[:train], "test": held}
        if val:
            sides[val] = photos[train : train + 3]
        for side, files in sides.items():
            (root / side / c).mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copy(f, root / side / c / f.name)
    return root


def test_train_and_test_folders_are_splits_not_classes(tmp_path):
    data = clothing_copy(tmp_path / "clothing")
    ds = dataset.scan(data, val_split=0.25, seed=1)
    assert ds.classes == list(CLASSES)
    assert ds.layout == "split"
    assert len(ds.items) == 24 and {it.subset for it in ds.items} == {"train", "val"}
    assert all(it.path.parent.parent.name == "train" for it in ds.items)
    assert len(ds.test) == 8 and {it.subset for it in ds.test} == {"test"}
    assert all(it.path.parent.parent.name == "test" for it in ds.test)
    assert not {it.path for it in ds.test} & {it.path for it in ds.items}


@pytest.mark.parametrize("name", ["val", "valid", "validation"])
def test_validation_folder_names(tmp_path, name):
    data = clothing_copy(tmp_path / "d", test=0, val=name)
    shutil.rmtree(data / "test")
    ds = dataset.scan(data)
    assert ds.layout == "train/val" and ds.val_dir == data / name
    assert ds.counts("train") == [12, 12] and ds.counts("val") == [3, 3]
    assert ds.test == []


def test_two_validation_folders_refused(tmp_path):
    data = clothing_copy(tmp_path / "d", val="val")
    shutil.copytree(data / "val", data / "valid")
    with pytest.raises(DataError, match="val/ and valid/"):
        dataset.scan(data)


def test_test_class_unknown_to_train_refused(tmp_path):
    data = clothing_copy(tmp_path / "d")
    shutil.copytree(data / "test" / "pants", data / "test" / "hats")
    with pytest.raises(DataError, match="'hats' is in .*test but not in"):
        dataset.scan(data)


@pytest.mark.parametrize("folders", [("test", "val"), ("test", "valid"), ("validation",)])
def test_only_split_folders_refused_exit_2_no_model(cli, tmp_path, folders):
    data = tmp_path / "d"
    for name in folders:  # each "split" holds class folders of real photos
        clothing_copy(tmp_path / "src" / name, test=0)
        shutil.copytree(tmp_path / "src" / name / "train", data / name)
    run = tmp_path / "run"
    result = cli.invoke(app, ["train", str(data), "--out", str(run), "--alpha", str(ALPHA)])
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert len(message.splitlines()) == 1
    assert "split folders" in message and "train/" in message
    assert not (run / "model.keras").exists()


def test_train_reports_test_and_never_trains_on_it(cli, tmp_path):
    """One real run: test/ is in split.csv as held out, scored by the saved model."""
    data = clothing_copy(tmp_path / "clothing")
    run = tmp_path / "runs" / "r"
    result = cli.invoke(
        app,
        ["train", str(data), "--alpha", str(ALPHA), "--epochs", "3", "--out", str(run), "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["classes"] == list(CLASSES)
    assert sum(out["train_count"].values()) + sum(out["val_count"].values()) == 24
    assert out["test"]["count"] == 8 and 0.0 <= out["test"]["accuracy"] <= 1.0
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test"]["count"] == 8 and saved["test"]["accuracy"] == out["test"]["accuracy"]
    rows = (run / "split.csv").read_text().splitlines()[1:]
    test_rows = [r for r in rows if r.endswith(",test")]
    assert len(test_rows) == 8 and all("/test/" in r for r in test_rows)
    assert not any("/test/" in r for r in rows if not r.endswith(",test"))
    # Paths relative to the run folder: evaluate --split from another working folder.
    assert all(not r.startswith("/") for r in rows)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    evaluated = subprocess.run(
        [sys.executable, "-m", "mtl", "evaluate", os.path.relpath(run, elsewhere),
         "--split", "test", "--json"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(out["test"]["accuracy"])


def set_aside(folder: Path) -> Path:
    """What ``mtl review --apply`` leaves: photos and its record under ``_review/``."""
    review = folder / "_review" / "off_topic"
    review.mkdir(parents=True)
    photo = next(iter(list_images(CLOTHING / "test" / "shoes")))
    shutil.copy(photo, review / "x.jpg")
    (folder / "_review" / "review.jsonl").write_text("{}\n")
    return review / "x.jpg"


def test_review_folder_invisible_to_every_scan(tmp_path):
    data = clothing_copy(tmp_path / "d", train=3, test=2)
    aside = set_aside(data / "test")
    found = scan_test_set(data / "test")
    assert sorted(found) == list(CLASSES)
    everything = [p for files in found.values() for p in files]
    assert aside not in everything and len(everything) == 4
    assert aside not in expand_inputs([data / "test"]) and len(expand_inputs([data])) == 10
    assert aside not in representative_images(data, 100)[0]
    # Named itself, the folder is what the user asked for.
    assert expand_inputs([data / "test" / "_review"]) == [aside]

"""`mtl train` end to end on the real photos and weights; the feature cache; determinism."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mtl.cli import app
from tests.conftest import ALPHA, HYMENOPTERA

pytestmark = pytest.mark.slow


def subset(dst: Path, n: int, start: int = 0) -> Path:
    """The first ``n`` photos (sorted) of each class, copied."""
    for cls in ("ants", "bees"):
        (dst / cls).mkdir(parents=True, exist_ok=True)
        for f in sorted((HYMENOPTERA / cls).iterdir())[start : start + n]:
            shutil.copy(f, dst / cls / f.name)
    return dst


def read_split(run: Path) -> list[tuple[str, str, str]]:
    with (run / "split.csv").open() as fh:
        return [(Path(r["file"]).name, r["class"], r["subset"]) for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run of `mtl train` with the defaults on all 245 photos (the model is trained once)."""
    from typer.testing import CliRunner

    run = tmp_path_factory.mktemp("e2e") / "run"
    result = CliRunner().invoke(
        app, ["train", str(HYMENOPTERA), "--alpha", str(ALPHA), "--out", str(run)]
    )
    assert result.exit_code == 0, result.stderr + result.stdout
    return run, result


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """A --cache-dir the small runs share: each photo's features are computed once."""
    return tmp_path_factory.mktemp("feature_cache")


def test_saved_model_is_what_training_measured(trained):
    """The reloaded model.keras (views averaged inside it) scores, on the photos it was
    refit on, exactly what training reported: no train/predict skew."""
    from mtl.data.images import load_image
    from mtl.model.modelio import load_model

    run, _ = trained
    loaded = load_model(run / "model.keras")
    # the defaults: the photo's central square at 256 (its central 224 is the crop view)
    assert loaded.class_names == ["ants", "bees"] and (loaded.image_size, loaded.fit) == (
        256,
        "center",
    )
    photos = [(HYMENOPTERA / c / name, c) for name, c, _ in read_split(run)]
    pixels = np.stack([load_image(p, loaded.image_size, loaded.fit) for p, _ in photos])
    pixels = pixels.astype("float32")
    probs = np.asarray(loaded.model.predict(pixels, batch_size=64, verbose=0))
    predicted = [loaded.class_names[i] for i in probs.argmax(axis=1)]
    accuracy = np.mean([p == c for p, (_, c) in zip(predicted, photos, strict=True)])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["count"] == len(photos) == 245  # refit on every photo
    assert accuracy == pytest.approx(metrics["train"]["accuracy"], abs=1e-6)  # rounded to 6
    # Held out from the validated run (same recipe without them):
    assert metrics["val"]["count"] == 49 and metrics["val"]["accuracy"] >= 0.85
    assert any("refit on all 245 photos" in note for note in metrics["notes"])


def test_views_are_averaged_inside_the_model_and_survive_tflite(trained, tmp_path):
    from mtl.data.images import load_image
    from mtl.deploy.export import export_model
    from mtl.inference.tflite import TFLiteModel
    from mtl.model.modelio import load_model

    run, _ = trained
    model = load_model(run / "model.keras").model
    names = [layer.name for layer in model.layers]
    # any photo in; its central square at 256: the crop view is its own central 224 pixels,
    # the image view the whole square resized to 224 (each in the int8 base's layers)
    assert "views_average" in names
    assert "int8_view_crop_crop" in names and "int8_view_image_resize" in names
    assert "int8_view_crop_resize" not in names and model.input_shape == (None, None, None, 3)
    files = [HYMENOPTERA / "ants" / "0013035.jpg", HYMENOPTERA / "bees" / "16838648_415acd9e3f.jpg"]
    x = np.stack([load_image(f, 256, "center") for f in files]).astype("float32")
    report = export_model(run / "model.keras", fmt="tflite", out=tmp_path / "m.tflite")
    lite = TFLiteModel(report.files[0].path)
    np.testing.assert_allclose(lite(x), model.predict_on_batch(x), atol=1e-4)


def test_saved_model_layout(trained):
    from mtl.model.modelio import load_model

    run, _ = trained
    model = load_model(run / "model.keras").model
    names = [layer.name for layer in model.layers]
    # the default's int8 base (mtl.model.int8keras): its preprocessing is a table of 256
    assert names[1:3] == ["fit", "int8_pixel_in"] and names[-1] == "class_names"
    assert [type(la).__name__ for la in model.layers[1:3]] == ["Resizing", "Rescaling"]
    assert model.get_layer("int8_preprocess").input_dim == 256
    assert not any(type(layer).__name__ == "Lambda" for layer in model.layers)
    # The refit's head and the validated head side by side (headfit.side_by_side).
    assert model.get_layer("head").get_layer("dense_0").units == 2 * 512


def test_run_folder_contents(trained):
    run, result = trained
    for name in ("model.keras", "labels.txt", "config.json", "split.csv", "history.csv",
                 "metrics.json", "learning_curves.png", "confusion_matrix.png"):  # fmt: skip
        assert (run / name).is_file(), name
    assert (run / "labels.txt").read_text() == "ants\nbees\n"
    assert (run / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["alpha"] == ALPHA and cfg["freeze"] == "all" and cfg["head"] == [512]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["val"]["per_class"]) == {"ants", "bees"}
    assert np.array(metrics["val"]["confusion_matrix"]["matrix"]).sum() == metrics["val"]["count"]
    assert metrics["skipped"] == []
    with (run / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == metrics["epochs_run"] >= 1
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    assert not (run / "cache").exists()  # the in-memory cache leaves nothing behind
    # Each photo went through the base exactly once.
    assert metrics["cache"]["base_forward_images"] == 245
    assert "val" in result.stdout and "accuracy" in result.stdout
    assert "training on CPU" in result.stderr and "the head in float32 on NumPy" in result.stderr
    assert metrics["cache"]["head_engine"] == "numpy" and "epoch   1/20" in result.stderr
    assert "refit (all photos)" in result.stderr


@pytest.mark.parametrize("freeze", ["all", "20"])
def test_base_runs_once_then_only_the_trainable_part(tmp_path, monkeypatch, freeze):
    """Every base forward pass happens before epoch 1; epochs 2+ run none (freeze all and N)."""
    from mtl.data import features
    from mtl.model import litebase
    from mtl.pipeline.config import resolve
    from mtl.training.trainer import train

    events: list[str] = []

    def counting(cls):
        original = cls.__call__

        def counted(self, pixels):
            events.append(f"base:{len(pixels)}")
            return original(self, pixels)

        monkeypatch.setattr(cls, "__call__", counted)

    counting(features.Extractor)  # either engine may run the pass
    counting(litebase.LiteExtractor)
    data = subset(tmp_path / "data", 6)
    # freeze 20 also exercises the spill to disk (no memory budget) and the PyDataset path.
    memory = 0 if freeze == "20" else 2048
    cfg = resolve(None, {"alpha": ALPHA, "epochs": 3, "patience": 0, "freeze": freeze,
                         "cache_memory_mb": memory, "refit": False})  # fmt: skip
    result = train(
        data,
        cfg,
        out=tmp_path / "run",
        on_epoch=lambda e: events.append(f"epoch:{e.epoch}"),
    )
    epochs_at = [i for i, e in enumerate(events) if e.startswith("epoch")]
    assert len(epochs_at) == 3
    base_at = [i for i, e in enumerate(events) if e.startswith("base")]
    assert base_at and max(base_at) < epochs_at[0]
    assert sum(int(e.split(":")[1]) for e in events if e.startswith("base")) == 12
    assert result.cache["base_forward_images"] == 12
    if freeze == "20":
        assert result.cache["spilled"] == 12


def test_editing_a_file_invalidates_only_its_entry(tmp_path):
    from PIL import Image

    from mtl.assets.weights import resolve as resolve_weights
    from mtl.data import features
    from mtl.model.backbones import weights_file
    from mtl.model.classifier import build_parts

    data = subset(tmp_path / "data", 3)
    paths = sorted(data.rglob("*.jpg"))
    parts = build_parts(
        ["ants", "bees"], model="mobilenet", alpha=ALPHA,
        weights=resolve_weights(weights_file("mobilenet", ALPHA, include_top=False)),
        size=224, head_units=[8], dropout=0.0, freeze_layers=None,
    )  # fmt: skip
    cache = features.FeatureCache(folder=tmp_path / "cache", persistent=True)
    ex = features.Extractor(parts.extractor, parts.spec)
    first = features.compute(paths, ex, cache, 224)
    assert ex.images == 6 and cache.stats.computed == 6
    before = {p: np.array(cache.get(k)) for p, k in zip(first.paths, first.keys, strict=True)}

    # Edit one photo (mirror it): only its entry is recomputed.
    edited = paths[2]
    Image.open(edited).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(edited, format="JPEG")
    again = features.compute(paths, ex, cache, 224)
    assert ex.images == 7 and cache.stats.hits == 5
    after = {p: np.array(cache.get(k)) for p, k in zip(again.paths, again.keys, strict=True)}
    assert not np.allclose(after[edited], before[edited])
    for p in paths:
        if p != edited:
            np.testing.assert_array_equal(after[p], before[p])

    # A fresh process (new memory) reuses the files of a persistent cache: nothing recomputed.
    cache2 = features.FeatureCache(folder=tmp_path / "cache", persistent=True)
    ex2 = features.Extractor(parts.extractor, parts.spec)
    features.compute(paths, ex2, cache2, 224)
    assert ex2.images == 0 and cache2.stats.hits == 6
    # A different freeze point is a different key: everything is recomputed.
    ex3 = features.Extractor(parts.extractor, parts.spec + "|other")
    features.compute(paths, ex3, cache2, 224)
    assert ex3.images == 6


def test_same_seed_same_split_and_metrics(cli, tmp_path, shared_cache):
    data = subset(tmp_path / "data", 12)
    runs = []
    for name in ("a", "b"):
        result = cli.invoke(
            app,
            ["train", str(data), "--alpha", str(ALPHA), "--epochs", "3", "--seed", "5",
             "--out", str(tmp_path / name), "--cache-dir", str(shared_cache), "--json"],
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        runs.append(json.loads(result.stdout))
    assert read_split(tmp_path / "a") == read_split(tmp_path / "b")
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    for m in (ma, mb):
        m.pop("cache")
    assert ma == mb
    ha = (tmp_path / "a" / "history.csv").read_text().splitlines()
    hb = (tmp_path / "b" / "history.csv").read_text().splitlines()
    strip = [",".join(r.split(",")[:-1]) for r in ha], [",".join(r.split(",")[:-1]) for r in hb]
    assert strip[0] == strip[1]  # identical but for the seconds column
    assert runs[0]["val"] == runs[1]["val"]
    # The second run found every photo in the shared cache.
    assert runs[1]["cache"]["base_forward_images"] == 0 and runs[1]["cache"]["hits"] == 24


def test_corrupt_files_are_skipped_and_reported(cli, tmp_path, shared_cache):
    data = subset(tmp_path / "data", 12)
    (data / "ants" / "empty.jpg").write_bytes(b"")
    (data / "bees" / "text.jpg").write_text("definitely not a jpeg")
    good = sorted((data / "bees").glob("*.jpg"))[0].read_bytes()
    (data / "bees" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    run = tmp_path / "run"
    result = cli.invoke(
        app,
        ["train", str(data), "--alpha", str(ALPHA), "--epochs", "2", "--out", str(run),
         "--cache-dir", str(shared_cache)],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    skipped = json.loads((run / "metrics.json").read_text())["skipped"]
    assert sorted(Path(s["file"]).name for s in skipped) == [
        "empty.jpg",
        "text.jpg",
        "truncated.jpg",
    ]
    reasons = {Path(s["file"]).name: s["reason"] for s in skipped}
    assert "empty" in reasons["empty.jpg"] and "truncated" in reasons["truncated.jpg"]
    assert "skipped 3 unreadable" in result.stderr and "text.jpg" in result.stderr
    kept = {name for name, _, _ in read_split(run)}
    assert not kept & {"empty.jpg", "text.jpg", "truncated.jpg"} and len(kept) == 24


def test_fine_tune_and_augment_phases(cli, tmp_path, shared_cache):
    """Smoke: a second phase at a low rate, and augmentation layers inside the saved model."""
    from mtl.model.modelio import load_model

    data = subset(tmp_path / "data", 6)
    run = tmp_path / "run"
    result = cli.invoke(
        app,
        ["train", str(data), "--alpha", str(ALPHA), "--epochs", "1", "--fine-tune-epochs", "1",
         "--fine-tune-layers", "6", "--augment", "--patience", "0", "--out", str(run), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    with (run / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["phase"] for r in rows] == ["train", "fine_tune"]
    assert float(rows[1]["learning_rate"]) == pytest.approx(1e-5)
    model = load_model(run / "model.keras").model
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds[1:5] == ["Resizing", "RandomFlip", "RandomRotation", "RandomZoom"]  # fit first
    backbone = next(layer for layer in model.layers if layer.name.startswith("mobilenet"))
    trainable = [layer.name for layer in backbone.layers if layer.trainable]
    assert trainable and all(not name.endswith("_bn") for name in trainable)
    # Augmentation is off at inference: the same image gives the same probabilities.
    x = np.full((2, 224, 224, 3), 100.0, dtype="float32")
    np.testing.assert_allclose(model.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-6)


def test_val_split_0_trains_on_every_photo(cli, tmp_path, shared_cache):
    data = subset(tmp_path / "data", 12)
    run = tmp_path / "run"
    result = cli.invoke(
        app,
        ["train", str(data), "--alpha", str(ALPHA), "--epochs", "3", "--val-split", "0",
         "--patience", "2", "--out", str(run), "--cache-dir", str(shared_cache), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["val"] is None and summary["train"]["count"] == 24
    assert summary["kept_epoch"] == 3 and summary["best_epoch"] is None
    assert (
        "no validation split" in summary["notes"][0] and "no early stopping" in summary["notes"][0]
    )
    assert {s for _, _, s in read_split(run)} == {"train"}
    assert "NaN" not in (run / "metrics.json").read_text()


def test_model_keras_loads_in_plain_keras(trained, tmp_path):
    """Any Keras user can load model.keras: a fresh interpreter that never imports mtl,
    safe mode, same probabilities; the class names are inside the file (mtl.json)."""
    import subprocess
    import sys
    import zipfile

    from mtl.data.images import load_image
    from mtl.model.modelio import load_model

    run, _ = trained
    files = [HYMENOPTERA / "ants" / "0013035.jpg", HYMENOPTERA / "bees" / "16838648_415acd9e3f.jpg"]
    x = np.stack([load_image(f, 256, "center") for f in files]).astype("float32")
    np.save(tmp_path / "x.npy", x)
    script = (
        "import json, sys, zipfile, numpy as np, keras\n"
        "m = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
        "names = json.loads(zipfile.ZipFile(sys.argv[1]).read('mtl.json'))['class_names']\n"
        "p = m.predict(np.load(sys.argv[2]), verbose=0)\n"
        "assert not any(k == 'mtl' or k.startswith('mtl.') for k in sys.modules)\n"
        "print(json.dumps({'names': names, 'probs': p.tolist()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(run / "model.keras"), str(tmp_path / "x.npy")],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    )  # fmt: skip
    plain = json.loads(out.stdout.strip().splitlines()[-1])
    ours = load_model(run / "model.keras")
    assert plain["names"] == ours.class_names == ["ants", "bees"]
    np.testing.assert_allclose(plain["probs"], ours.model.predict_on_batch(x), atol=1e-6)
    with zipfile.ZipFile(run / "model.keras") as z:
        assert "mtl.layers" not in z.read("config.json").decode()  # Keras' own layers only

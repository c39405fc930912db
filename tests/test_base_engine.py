"""The frozen base's one pass on LiteRT: same features as Keras, converted once, started early."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtl.cli import app
from tests.conftest import ALPHA, HYMENOPTERA
from tests.test_train import subset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_parts():
    from mtl.assets.weights import resolve
    from mtl.model.backbones import weights_file
    from mtl.model.classifier import build_parts

    return build_parts(
        ["ants", "bees"], model="mobilenet", alpha=ALPHA,
        weights=resolve(weights_file("mobilenet", ALPHA, include_top=False)),
        size=224, head_units=[8], dropout=0.0, freeze_layers=None,
    )  # fmt: skip


def test_litert_features_equal_keras_features_on_real_photos(base_parts):
    from mtl.data.images import load_image
    from mtl.model.litebase import LiteExtractor
    from mtl.runtime import tflite_flatbuffer

    photos = (
        sorted((HYMENOPTERA / "ants").iterdir())[:6] + sorted((HYMENOPTERA / "bees").iterdir())[:6]
    )
    x = np.stack([load_image(p, 224) for p in photos])
    keras_features = np.asarray(base_parts.extractor.predict_on_batch(x.astype("float32")))
    flatbuffer = tflite_flatbuffer(base_parts.extractor, (224, 224, 3))
    lite = LiteExtractor(flatbuffer, "spec", threads=2)
    lite_features = lite(x)
    assert lite_features.shape == keras_features.shape == (12, round(1024 * ALPHA))
    assert keras_features.max() > 1.0  # real activations, not an empty pass
    np.testing.assert_allclose(lite_features, keras_features, atol=1e-4)
    # The early pass (one thread, padded batches) gives the very same bits as the main one.
    padded = LiteExtractor(flatbuffer, "spec", threads=1, batch=32)
    np.testing.assert_array_equal(np.concatenate([padded(x[:5]), padded(x[5:])]), lite_features)
    assert (lite.calls, lite.images, padded.calls, padded.images) == (1, 12, 2, 12)


def _train(cli, data: Path, out: Path, *extra: str) -> dict:
    result = cli.invoke(
        app,
        ["train", str(data), "--alpha", str(ALPHA), "--epochs", "2", "--patience", "0",
         "--out", str(out), "--json", *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _metrics(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    m.pop("cache")
    return m


def test_converted_once_then_started_early_with_the_same_results(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_CACHE_DIR", str(tmp_path / "mtl_cache"))
    data = subset(tmp_path / "data", 8)
    # float32: the LiteRT base Keras' own must equal (the default's int8 is tested apart)
    first = _train(cli, data, tmp_path / "a", "--base-precision", "float32")
    assert first["cache"]["base_engine"] == "litert"
    assert first["cache"]["base_converted"] == 1 and not first["cache"]["base_started_early"]
    assert first["cache"]["base_forward_images"] == 16
    converted = list((tmp_path / "mtl_cache" / "bases").glob("*.tflite"))
    assert len(converted) == 1 and converted[0].stat().st_size > 1_000_000  # weights inside

    second = _train(cli, data, tmp_path / "b", "--base-precision", "float32")
    assert second["cache"]["base_converted"] == 0 and second["cache"]["base_started_early"]
    assert second["cache"]["base_forward_images"] == 16
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")

    # Keras running the pass instead: features within 1e-4, so the same predictions.
    keras_run = _train(cli, data, tmp_path / "c", "--base-engine", "keras")
    assert keras_run["cache"]["base_engine"] == "keras"
    assert keras_run["cache"]["base_converted"] == 0
    assert keras_run["val"]["accuracy"] == first["val"]["accuracy"]
    assert keras_run["val"]["loss"] == pytest.approx(first["val"]["loss"], abs=1e-3)
    config = json.loads((tmp_path / "c" / "config.json").read_text())["config"]
    assert config["base_engine"] == "keras"


def test_a_damaged_converted_base_is_converted_again(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_CACHE_DIR", str(tmp_path / "mtl_cache"))
    data = subset(tmp_path / "data", 3)
    _train(cli, data, tmp_path / "a")
    (converted,) = (tmp_path / "mtl_cache" / "bases").glob("*.tflite")
    converted.write_bytes(b"not a flatbuffer")
    again = _train(cli, data, tmp_path / "b")
    assert again["cache"]["base_engine"] == "litert" and again["cache"]["base_converted"] == 1
    assert converted.stat().st_size > 1_000_000
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")


def test_an_unwritable_cache_folder_still_trains(cli, tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("MTL_CACHE_DIR", str(blocker / "mtl"))
    data = subset(tmp_path / "data", 3)
    result = _train(cli, data, tmp_path / "run")
    assert result["cache"]["base_engine"] == "litert" and result["cache"]["base_converted"] == 1
    assert (tmp_path / "run" / "model.keras").is_file()


def _devices(**kw):
    from mtl.runtime import TrainingDevices

    values = {"description": "test", "strategy": None, "mixed_precision": False}
    return TrainingDevices(**{**values, **kw})


def test_engine_choice(monkeypatch, tmp_path):
    from mtl.errors import UsageError
    from mtl.pipeline.basepass import BasePass
    from mtl.pipeline.config import resolve

    def choose(devices, **options):
        return BasePass(resolve(None, options), tmp_path / "w.h5").choose(devices)

    assert choose(_devices()) == "litert"
    assert choose(_devices(), base_engine="keras") == "keras"
    assert choose(_devices(), augment=True) == "keras"  # nothing cached: no separate pass
    assert choose(_devices(accelerated=True)) == "keras"  # a GPU beats any CPU engine
    assert choose(_devices(accelerated=True), base_engine="litert") == "litert"
    assert choose(_devices(mixed_precision=True)) == "keras"
    with pytest.raises(UsageError, match="float32 on one device"):
        choose(_devices(mixed_precision=True), base_engine="litert")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert choose(_devices()) == "keras"
    with pytest.raises(UsageError, match="Received KERAS_BACKEND=jax"):
        choose(_devices(), base_engine="litert")


def test_unknown_engine_is_refused(cli, tmp_path):
    result = cli.invoke(app, ["train", str(tmp_path), "--base-engine", "onnx"])
    assert result.exit_code == 2  # a choice: the parser names the value and the choices
    assert "'onnx'" in result.stderr
    assert all(name in result.stderr for name in ("auto", "litert", "keras"))


TF_CHECK = """
import json, sys
import mtl
r = mtl.train(sys.argv[1], alpha={alpha}, epochs=2, out=sys.argv[2])
print(json.dumps({{"tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules,
                  "cache": r.cache}}))
"""


def test_head_on_numpy_then_no_tensorflow_at_all(tmp_path, monkeypatch):
    """The first run converts the base and writes model.keras with Keras (keeping its
    skeleton); the second imports neither TensorFlow nor Keras, and saves the same model."""
    import os
    import subprocess
    import sys

    from mtl.data.images import load_image
    from mtl.model.modelio import load_model

    data = subset(tmp_path / "data", 6)
    env = {**os.environ, "MTL_CACHE_DIR": str(tmp_path / "mtl_cache")}
    runs = []
    for name in ("a", "b"):
        out = subprocess.run(
            [sys.executable, "-c", TF_CHECK.format(alpha=ALPHA), str(data), str(tmp_path / name)],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["cache"]["head_engine"] == second["cache"]["head_engine"] == "numpy"
    assert first["cache"]["base_converted"] == 1 and first["cache"]["model_writer"] == "keras"
    assert first["tensorflow"]  # converting the base and writing the model need it, once
    assert second["cache"]["base_converted"] == 0
    assert second["cache"]["model_writer"] == "skeleton"
    assert not second["tensorflow"] and not second["keras"]
    photos = sorted((data / "bees").iterdir())[:3]
    a, b = (load_model(tmp_path / n / "model.keras") for n in ("a", "b"))
    assert (a.image_size, a.fit) == (b.image_size, b.fit) == (256, "center")
    x = np.stack([load_image(p, a.image_size, a.fit) for p in photos]).astype("float32")
    assert a.class_names == b.class_names == ["ants", "bees"]
    np.testing.assert_allclose(a.model.predict_on_batch(x), b.model.predict_on_batch(x), atol=1e-6)

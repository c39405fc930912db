"""The int8 base as the default on a CPU, and carried by ``model.keras`` (issue 25 item 2).

Real weights, real photos: the Keras layers :mod:`mtl.model.int8keras` reads out of the
converted ``.tflite`` give LiteRT's int8 features (not float32's), on photos and on
small upsized ones where int8 and float32 differ most; a default run trains on int8,
and ``model.keras`` in a process that never imports mtl gives mtl's probabilities.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mtl.cli import app
from mtl.model.litebase import BaseSpec
from tests.conftest import ALPHA, HYMENOPTERA
from tests.test_int8_base import _cosines, _float_parts, _spec
from tests.test_int8_base import _train as int8_train
from tests.test_train import subset

pytestmark = pytest.mark.slow

PLAIN_KERAS = """
import json, sys
import keras
import numpy as np

model = keras.saving.load_model(sys.argv[1])
out = [model.predict(np.array(keras.utils.load_img(p))[None], verbose=0)[0].tolist()
       for p in sys.argv[2:]]
assert not [m for m in sys.modules if m == "mtl" or m.startswith("mtl.")]
print(json.dumps(out))
"""


def _train(cli, data: Path, out: Path, *extra: str) -> dict:
    return int8_train(cli, data, out, *extra, precision=None)  # the default: auto


def _float_base(spec: BaseSpec) -> tuple[Any, dict[str, list[Any]]]:
    """The float32 Keras parts ``spec``'s base was converted from, and its view layers."""
    from mtl.model.classifier import view_layers

    return _float_parts(spec), view_layers(spec.views, spec.size, spec.input_side)


@pytest.fixture(scope="module")
def data(offline_env, tmp_path_factory) -> Path:
    return subset(tmp_path_factory.mktemp("int8k") / "data", 8)


@pytest.fixture(scope="module")
def default_run(offline_env, tmp_path_factory, data) -> tuple[Path, dict]:
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("int8k") / "run"
    return out, _train(CliRunner(), data, out)


def _photos() -> list[Path]:
    return (
        sorted((HYMENOPTERA / "ants").iterdir())[-6:]
        + sorted((HYMENOPTERA / "bees").iterdir())[-6:]
    )


def _probs(cli, model: Path, files: list[Path], **env: str) -> np.ndarray:
    """`mtl predict --json`'s probabilities of ants and bees, per photo."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        result = cli.invoke(app, ["predict", str(model), *map(str, files), "-k", "2", "--json"])
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    return np.array(
        [[{p["label"]: p["probability"] for p in r["predictions"]}[c] for c in ("ants", "bees")]
         for r in (rows if isinstance(rows, list) else rows["results"])]
    )  # fmt: skip


def _agree(ours: np.ndarray, theirs: np.ndarray, worst: float, mean: float) -> None:
    """Probabilities within ``worst`` (``mean`` on average); the same answer wherever mtl's
    is not a near tie (a photo at 0.5 may fall either side of it: one-step differences)."""
    difference = np.abs(ours - theirs)
    assert difference.max() <= worst and difference.mean() <= mean, (ours, theirs)
    clear = ours.max(axis=1) >= 0.6
    assert (ours.argmax(1) == theirs.argmax(1))[clear].all(), (ours, theirs)


def _upsized(pixels: np.ndarray, small: int) -> np.ndarray:
    """Each photo shrunk to ``small`` pixels and blown up again: the smooth input of
    eurosat's 64-pixel patches or 8x8 digits, where int8 loses the most."""
    from PIL import Image

    out = []
    for p in pixels.astype(np.uint8):
        img = Image.fromarray(p).resize((small, small), Image.BILINEAR)
        out.append(np.asarray(img.resize(p.shape[:2][::-1], Image.BILINEAR)))
    return np.stack(out).astype(np.float32)


def test_a_default_run_trains_on_int8_and_saves_it(default_run):
    path, summary = default_run
    spec = _spec(path)
    assert spec.precision == "int8" and spec.views == ("image", "crop")
    assert summary["cache"]["base_engine"] == "litert"
    assert summary["cache"]["base_precision"] == "int8"
    assert json.loads((path / "config.json").read_text())["config"]["base_precision"] == "auto"
    with zipfile.ZipFile(path / "model.keras") as z:
        layers = [layer["name"] for layer in json.loads(z.read("config.json"))["config"]["layers"]]
    assert "int8_preprocess" in layers and "int8_conv_pw_13" in layers
    assert "preprocess" not in layers  # the float32 network is not in the file


@pytest.fixture(scope="module")
def mirror_run(offline_env, tmp_path_factory, data) -> tuple[Path, dict]:
    """Both views and their mirrors: four towers, two of them through a mirror's product."""
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("int8k") / "mirrors"
    return out, _train(CliRunner(), data, out, "--views", "image,flip,crop,crop_flip")


def test_mirror_views_run_on_int8_too(mirror_run, cli):
    path, summary = mirror_run
    spec = _spec(path)
    assert spec.precision == "int8" and spec.views == ("image", "flip", "crop", "crop_flip")
    assert summary["cache"]["base_precision"] == "int8"
    with zipfile.ZipFile(path / "model.keras") as z:
        layers = [layer["name"] for layer in json.loads(z.read("config.json"))["config"]["layers"]]
    assert "int8_view_flip_mirror" in layers and "int8_view_crop_flip_mirror" in layers
    model = path / "model.keras"  # mtl's LiteRT path against the model on Keras
    _agree(
        _probs(cli, model, _photos()),
        _probs(cli, model, _photos(), MTL_PREDICT_ENGINE="keras"),
        0.1,
        0.03,
    )


@pytest.mark.parametrize("which", ["default_run", "mirror_run"])
def test_emulated_base_gives_litert_int8_features_not_float32(which, request):
    from mtl.data.images import load_image
    from mtl.litert import LiteModel
    from mtl.model import int8keras
    from mtl.runtime import keras

    spec = _spec(request.getfixturevalue(which)[0])
    parts, layers = _float_base(spec)
    emu = int8keras.emulate(spec.path(), parts.backbone, layers, spec.model)
    k = keras()
    image = k.Input((spec.input_side, spec.input_side, 3))
    x = image
    for layer in emu.prefix:
        x = layer(x)
    towers = []
    for tower in emu.towers.values():
        y = x
        for layer in tower:
            y = layer(y)
        towers.append(k.layers.Reshape((1, -1))(y))
    model = k.Model(image, k.layers.Concatenate(axis=1)(towers))

    photos = np.stack([load_image(p, spec.input_side, "center") for p in _photos()])
    lite = LiteModel(spec.path())
    for pixels, least in ((photos, 0.998), (_upsized(photos, 16), 0.996)):
        lite.resize(len(pixels))
        int8 = lite.run(pixels.astype(np.float32))
        emulated = np.asarray(model.predict(pixels, verbose=0))
        float32 = np.asarray(parts.extractor.predict(pixels, verbose=0))
        ours, theirs = _cosines(int8, emulated), _cosines(int8, float32)
        assert ours.mean() >= least and ours.min() >= 0.99, (ours.mean(), ours.min())
        # what model.keras carried before: float32, several times further from what the
        # head saw (bias-corrected int8 is within 0.997 of float32 on photos)
        assert 1 - theirs.mean() > 4 * (1 - ours.mean()), (theirs.mean(), ours.mean())


def test_plain_keras_on_model_keras_gives_mtl_predict_probabilities(default_run, cli):
    """docs/api.md's habitual Keras code, mtl never imported, on full-size photos."""
    path = default_run[0] / "model.keras"
    files = _photos()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_KERAS, str(path), *map(str, files)],
        capture_output=True, text=True, env=env, cwd="/", check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    plain = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    # Keras decodes the whole JPEG, mtl's loader at a reduced DCT scale: resampling noise.
    _agree(_probs(cli, path, files), plain, 0.1, 0.03)


def test_a_skeleton_written_model_is_the_same_int8_network(default_run, data, cli, tmp_path):
    """The second run of the settings writes model.keras from the kept skeleton (another
    seed could change the head's layout: the ImageNet prior's skip or not)."""
    again = _train(cli, data, tmp_path / "again")
    assert again["cache"]["model_writer"] == "skeleton"
    model = tmp_path / "again" / "model.keras"
    lite = _probs(cli, model, _photos())  # mtl's own path: the int8 base on LiteRT
    _agree(lite, _probs(cli, model, _photos(), MTL_PREDICT_ENGINE="keras"), 0.1, 0.03)


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (["--base-precision", "float32"], "asked for"),
        (["--base-engine", "keras"], "no LiteRT"),
    ],
)
def test_auto_runs_float32_where_int8_is_not_asked_or_cannot_be_saved(
    cli, data, tmp_path, extra, why
):
    summary = _train(cli, data, tmp_path / "r", *extra)
    assert summary["cache"]["base_precision"] == "float32", why
    with zipfile.ZipFile(tmp_path / "r" / "model.keras") as z:
        layers = [layer["name"] for layer in json.loads(z.read("config.json"))["config"]["layers"]]
    assert "preprocess" in layers and not [n for n in layers if n.startswith("int8_")]


def test_int8_that_cannot_be_saved_is_a_usage_error(cli, data, tmp_path):
    result = cli.invoke(
        app,
        ["train", str(data), "--alpha", str(ALPHA), "--out", str(tmp_path / "r"),
         "--base-precision", "int8", "--augment"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--base-precision int8" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists() or not (tmp_path / "r" / "model.keras").exists()


def test_a_float32_tflite_is_not_emulable(default_run):
    from mtl.model import calibration, int8keras

    spec = _spec(default_run[0])
    parts, layers = _float_base(spec)
    flatbuffer = calibration.convert(parts.extractor, spec.input_side, "float32")
    with pytest.raises(int8keras.NotEmulable, match="not int8|expected QUANTIZE"):
        int8keras.emulate(flatbuffer, parts.backbone, layers, spec.model)


@pytest.mark.parametrize(
    ("fmt", "extra"),
    [
        ("tflite", []),
        ("onnx", []),
        ("tflite", ["--quantize", "dynamic"]),
        # quantizes the float32 network under the head (int8base.float_network): the
        # carried emulation, quantized again, scored 0.68 where mtl scored 0.98
        ("tflite", ["--quantize", "int8", "--representative", "DATA"]),
    ],
)
def test_exports_of_an_int8_model_give_its_numbers(default_run, data, cli, tmp_path, fmt, extra):
    model = default_run[0] / "model.keras"
    out = tmp_path / f"model.{fmt}"
    extra = [str(data) if e == "DATA" else e for e in extra]
    result = cli.invoke(app, ["export", str(model), "--format", fmt, "--out", str(out), *extra])
    assert result.exit_code == 0, result.stderr
    # int8 quantizes the float network anew (its own calibration on the photos given),
    # bias-corrected as mtl's base is: as close as the others (0.3 off on a photo before)
    # A full-integer export re-quantizes the head and its output too (steps of 1/255): at
    # alpha 1.0 one photo moves by 0.15; the mean and every clear answer hold.
    worst = 0.2 if "int8" in extra else 0.1
    _agree(_probs(cli, model, _photos()), _probs(cli, out, _photos()), worst, 0.03)

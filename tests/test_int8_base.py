"""`mtl train --base-precision int8`: the frozen base as a full-integer LiteRT model.

Real weights, real photos: the int8 base is converted once and kept, rebuilt when its
cached file is damaged, stays close to float32 on real photos, is recorded in mtl.json,
and `mtl predict` runs it, giving training's own numbers.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mtl.cli import app
from mtl.model.litebase import BaseSpec
from tests.conftest import ALPHA, HYMENOPTERA, WEIGHTS
from tests.test_train import subset

pytestmark = pytest.mark.slow

# Cosine of pooled features, int8 (bias-corrected, calibration 2) to float32, per photo
# and view on ants/bees (bench/int8_base.py over 150 photos: mean 0.997, worst 0.99;
# 0.985 / 0.94 before bias correction).
MEAN_COSINE = 0.99
WORST_COSINE = 0.97


def _train(cli, data: Path, out: Path, *extra: str, precision: str | None = "int8") -> dict:
    """A short `mtl train --json` (``precision`` None: the default, auto)."""
    asked = ["--base-precision", precision] if precision else []
    result = cli.invoke(
        app,
        ["train", str(data), "--alpha", str(ALPHA), "--epochs", "3", "--out", str(out),
         "--json", *asked, *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _spec(run: Path) -> BaseSpec:
    with zipfile.ZipFile(run / "model.keras") as z:
        meta = json.loads(z.read("mtl.json"))
    spec = BaseSpec.from_json(meta["info"]["frozen_base"])
    assert spec is not None
    return spec


@pytest.fixture(scope="module")
def data(offline_env, tmp_path_factory) -> Path:
    return subset(tmp_path_factory.mktemp("int8") / "data", 8)


@pytest.fixture(scope="module")
def run(offline_env, tmp_path_factory, data) -> tuple[Path, dict]:
    """An int8 run without the refit, so the saved model is the validated one."""
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("int8run") / "run"
    return out, _train(CliRunner(), data, out, "--no-refit")


def test_mtl_json_and_config_record_the_int8_base(run):
    path, summary = run
    spec = _spec(path)
    assert spec.precision == "int8" and spec.freeze is None
    assert "int8" in spec.text() and spec.path().is_file()
    assert json.loads((path / "config.json").read_text())["config"]["base_precision"] == "int8"
    assert summary["cache"]["base_engine"] == "litert"
    # the float32 base of the same settings is another file: the two never mix
    float_spec = BaseSpec(**{**spec.to_json(), "views": spec.views, "precision": "float32"})
    assert float_spec.path() != spec.path() and float_spec.text() != spec.text()


def test_conversion_is_kept_and_reused_and_a_damaged_file_rebuilt(run, data, tmp_path, cli):
    path, first = run
    base = _spec(path).path()
    base.unlink()  # converted by whichever run came first (the default runs int8 too)
    converted = _train(cli, data, tmp_path / "converted", "--no-refit")
    assert converted["cache"]["base_converted"] == 1
    assert converted["val"] == first["val"]  # the same network, the same numbers
    again = _train(cli, data, tmp_path / "again", "--no-refit")
    assert again["cache"]["base_converted"] == 0  # the kept file ran
    assert again["val"] == first["val"]

    base.write_bytes(b"TFL3 not a model")
    rebuilt = _train(cli, data, tmp_path / "rebuilt", "--no-refit")
    assert rebuilt["cache"]["base_converted"] == 1
    assert base.read_bytes()[4:8] == b"TFL3"  # a model again (the converter's bytes vary)
    assert rebuilt["val"] == first["val"]


def test_predict_runs_the_int8_base_and_agrees_with_training(run, cli, monkeypatch):
    from mtl.inference.predict import open_model

    path, summary = run
    assert open_model(path).engine == "litert"
    result = cli.invoke(app, ["evaluate", str(path), "--split", "val", "--json"])
    assert result.exit_code == 0, result.stderr
    got = json.loads(result.stdout)
    want = summary["val"]
    assert (got["accuracy"], got["loss"]) == (want["accuracy"], want["loss"])

    # Plain Keras runs model.keras, which carries the int8 network (mtl.model.int8keras):
    # float arithmetic on the int8 grids, so the same answers to within rounding.
    monkeypatch.setenv("MTL_PREDICT_ENGINE", "keras")
    result = cli.invoke(app, ["evaluate", str(path), "--split", "val", "--json"])
    assert result.exit_code == 0, result.stderr
    plain = json.loads(result.stdout)
    # at most one photo at a near tie may fall the other side (tests/test_int8_keras.py
    # compares the probabilities photo by photo)
    assert abs(plain["accuracy"] - want["accuracy"]) <= 1 / plain["count"] + 1e-9
    assert plain["loss"] == pytest.approx(want["loss"], abs=0.02)


def test_predict_converts_a_missing_int8_base_itself(run, cli):
    """A model trained on int8 never falls back to the float32 base it did not train on."""
    path, summary = run
    base = _spec(path).path()
    base.unlink()
    result = cli.invoke(app, ["evaluate", str(path), "--split", "val", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["loss"] == summary["val"]["loss"]
    assert base.is_file()


def _pixels(side: int) -> np.ndarray:
    """24 ants/bees photos as training reads them."""
    from mtl.data.images import load_image

    photos = sorted((HYMENOPTERA / "ants").iterdir())[-12:]
    photos += sorted((HYMENOPTERA / "bees").iterdir())[-12:]
    return np.stack([load_image(p, side, "center") for p in photos])


def _float_parts(spec: BaseSpec):
    from mtl.model.backbones import weights_file
    from mtl.model.classifier import build_parts

    return build_parts(
        ["a", "b"], model=spec.model, alpha=spec.alpha, size=spec.size, head_units=[],
        dropout=0.0, freeze_layers=None, views=spec.views, input_size=spec.input_side,
        weights=WEIGHTS / weights_file(spec.model, spec.alpha, include_top=False).name,
    )  # fmt: skip


def _cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Per photo and view."""
    ref, got = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, ref.shape[-1])
    return np.asarray(
        (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    )


@pytest.fixture(scope="module")
def reference(run):
    """The run's int8 spec, 24 photos, the float network it was converted from, and that
    network's own (float32 LiteRT) features of the photos."""
    from mtl.model import calibration
    from mtl.model.litebase import LiteExtractor

    spec = _spec(run[0])
    pixels = _pixels(spec.input_side)
    parts = _float_parts(spec)
    flat = calibration.convert(parts.extractor, spec.input_side, "float32")
    return spec, pixels, parts, LiteExtractor(flat, "f")(pixels)


def test_int8_features_stay_close_to_float32_on_real_photos(reference):
    from mtl.model.litebase import LiteExtractor

    spec, pixels, _, ref = reference
    cos = _cosines(ref, LiteExtractor(spec.path(), spec.text())(pixels))
    assert cos.mean() >= MEAN_COSINE and cos.min() >= WORST_COSINE, (cos.mean(), cos.min())
    assert cos.mean() < 0.9999  # it is the int8 model, not the float one


def test_bias_correction_cuts_the_int8_error_and_leaves_the_float_network_as_it_was(reference):
    """Calibration 2 (bias-corrected, what training converted) against 1 (the images
    alone) on the same photos; converting changes no weight of the Keras network."""
    from mtl.model import calibration
    from mtl.model.litebase import LiteExtractor

    spec, pixels, parts, ref = reference
    assert spec.calibration == calibration.VERSION == 2
    side = spec.input_side
    before = [np.array(w) for w in parts.extractor.get_weights()]
    plain = LiteExtractor(calibration.convert(parts.extractor, side, "int8", 1), "v1")(pixels)
    after = parts.extractor.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    corrected = LiteExtractor(spec.path(), spec.text())(pixels)
    error_plain = 1 - _cosines(ref, plain)
    error_corrected = 1 - _cosines(ref, corrected)
    # measured on these photos: about 5x smaller on the mean, 3x on the worst
    assert error_corrected.mean() < 0.4 * error_plain.mean()
    assert error_corrected.max() < 0.6 * error_plain.max()
    with pytest.raises(ValueError, match="calibration version 99"):
        calibration.convert(parts.extractor, side, "int8", 99)


def test_exports_find_the_backbone_of_a_whole_classifier_to_correct(reference):
    """`mtl export --quantize int8` corrects the whole model's base the same way, for the
    conversion only; a model without a MobileNet inside is converted as it is."""
    from mtl.model import calibration

    parts = reference[2]
    assert calibration.correctable(parts.model)
    bn = parts.backbone.get_layer("conv_dw_1_bn")
    before = np.array(bn.beta)
    with calibration.bias_corrected(parts.model):
        during = np.array(bn.beta)
    assert np.abs(during - before).max() > 1e-3  # a real shift, not rounding noise
    assert np.array_equal(np.array(bn.beta), before)
    assert not calibration.correctable(parts.top)  # the head alone: nothing to correct


def test_a_model_from_before_bias_correction_keeps_its_base(run):
    """An int8 spec written before ``calibration`` existed is version 1: the same cache
    file and conversion as then, so such a model's predictions do not change; a version
    this mtl does not know is refused in one line."""
    from mtl.errors import ModelFileError
    from mtl.model import int8base

    values = _spec(run[0]).to_json()
    old = BaseSpec.from_json({k: v for k, v in values.items() if k != "calibration"})
    assert old is not None and old.calibration == 1
    assert "int8-calibration1|" in old.text() and old.path() != _spec(run[0]).path()
    assert BaseSpec.from_json({**values, "calibration": "2"}) is None
    future = BaseSpec.from_json({**values, "calibration": 99})
    assert future is not None
    with pytest.raises(ModelFileError, match="newer mtl"):
        int8base.convert_for_predict(future)


def test_calibration_images_are_fixed_and_span_the_input_range():
    from mtl.model import calibration

    a = np.stack(list(calibration.images(64, count=8)))
    b = np.stack(list(calibration.images(64, count=8)))
    assert a.dtype == np.float32 and a.shape == (8, 64, 64, 3)
    assert np.array_equal(a, b)
    assert a.min() == 0.0 and a.max() == 255.0


def test_an_old_spec_reads_as_float32_and_a_bad_precision_is_refused(run):
    values = _spec(run[0]).to_json()
    old = {k: v for k, v in values.items() if k != "precision"}
    spec = BaseSpec.from_json(old)
    assert spec is not None and spec.precision == "float32"
    assert BaseSpec.from_json({**values, "precision": "int4"}) is None


@pytest.mark.parametrize(
    "extra",
    [["--augment"], ["--base-engine", "keras"], ["--fine-tune-epochs", "1"], ["--freeze", "20"]],
)
def test_int8_where_it_cannot_run_is_a_usage_error(cli, data, tmp_path, extra):
    result = cli.invoke(
        app,
        ["train", str(data), "--alpha", str(ALPHA), "--out", str(tmp_path / "r"),
         "--base-precision", "int8", *extra],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--base-precision int8" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r" / "model.keras").exists()


def test_the_device_line_and_config_json_say_what_ran(run):
    """Not "float32 tensorflow" when LiteRT ran the int8 base and NumPy the head; config.json
    records what the "auto" settings became (issue 33)."""
    path, summary = run
    assert "the frozen base in int8 on LiteRT, the head in float32 on NumPy" in summary["device"]
    saved = json.loads((path / "config.json").read_text())
    assert saved["device"] == summary["device"]
    ran = saved["ran"]
    assert (ran["base_engine"], ran["base_precision"], ran["head_engine"]) == (
        "litert", "int8", "numpy"
    )  # fmt: skip
    assert ran["refit"] is False and ran["views"] == saved["config"]["views"]

"""`mtl predict` on mtl's own model.keras without Keras: LiteRT base + NumPy head, same outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mtl.cli import app
from tests.conftest import ALPHA, HYMENOPTERA
from tests.test_train import subset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(offline_env, tmp_path_factory) -> Path:
    """A run of `mtl train` (defaults: two views, head on NumPy) on 16 real photos, on the
    float32 base: LiteRT's answers must equal Keras' here (the int8 default's agreement is
    tests/test_int8_keras.py's)."""
    from typer.testing import CliRunner

    tmp = tmp_path_factory.mktemp("lite")
    out = tmp / "run"
    result = CliRunner().invoke(
        app,
        ["train", str(subset(tmp / "data", 8)), "--alpha", str(ALPHA), "--epochs", "3",
         "--out", str(out), "--base-precision", "float32"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return out


def _photos() -> np.ndarray:
    from mtl.data.images import load_image

    files = (
        sorted((HYMENOPTERA / "ants").iterdir())[20:27]
        + sorted((HYMENOPTERA / "bees").iterdir())[20:27]
    )
    return np.stack([load_image(p, 256, "center") for p in files])  # the default model's input


def _keras(path: Path) -> np.ndarray:
    from mtl.model.modelio import load_model

    return np.asarray(load_model(path).model.predict_on_batch(_photos().astype("float32")))


def test_same_probabilities_as_the_keras_model(run, monkeypatch):
    from mtl.inference.predict import open_model

    lite = open_model(run)
    assert (lite.kind, lite.engine) == ("keras", "litert")
    assert lite.class_names == ["ants", "bees"] and lite.image_size == 256
    got = lite(_photos())
    want = _keras(run / "model.keras")
    assert got.shape == want.shape == (14, 2)
    assert (got.argmax(axis=1) == np.repeat([0, 1], 7)).mean() > 0.5  # a trained model
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert lite(_photos()[:0]).shape == (0, 2)
    monkeypatch.setenv("MTL_PREDICT_ENGINE", "keras")
    assert open_model(run).engine == "keras"


PREDICT = """
import json, sys
from typer.testing import CliRunner
from mtl.cli import app
r = CliRunner().invoke(app, ["predict", sys.argv[1], sys.argv[2], "--json"])
print(json.dumps({"exit": r.exit_code, "out": r.stdout, "tensorflow": "tensorflow" in sys.modules,
                  "keras": "keras" in sys.modules}))
"""


def test_predict_and_evaluate_import_no_tensorflow(run, cli):
    photo = sorted((HYMENOPTERA / "bees").iterdir())[30]
    out = subprocess.run(
        [sys.executable, "-c", PREDICT, str(run / "model.keras"), str(photo)],
        capture_output=True, text=True, env=dict(os.environ), check=True,
    )  # fmt: skip
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert child["exit"] == 0 and not child["tensorflow"] and not child["keras"]
    (first,) = json.loads(child["out"])
    assert first["predictions"][0]["label"] in ("ants", "bees")
    result = cli.invoke(app, ["predict", str(run), str(photo), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == [first]  # same as in-process


def _rewrite_meta(src: Path, dst: Path, change) -> Path:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(src) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(entries["mtl.json"])
    change(meta["info"])
    entries["mtl.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return dst


def test_anything_unusual_is_left_to_keras(run, tmp_path, monkeypatch):
    """No converted base on this machine, a damaged or hostile entry: the file is loaded
    with Keras (slower, the same answers), never mispredicted or refused."""
    from mtl.inference.predict import open_model

    model = run / "model.keras"
    want = _keras(model)

    def wrong_places(info):  # type: ignore[no-untyped-def]
        info["head_weights"] = info["head_weights"][:2] * 2  # a kernel that does not chain

    cases = {
        "wrong": _rewrite_meta(model, tmp_path / "wrong.keras", wrong_places),
        "missing": _rewrite_meta(
            model, tmp_path / "missing.keras", lambda i: i.update(head_weights=["no/such"] * 2)
        ),
        "finetuned": _rewrite_meta(
            model, tmp_path / "ft.keras", lambda i: i["frozen_base"].update(freeze=40)
        ),
        "junk": _rewrite_meta(model, tmp_path / "junk.keras", lambda i: i.update(frozen_base=7)),
        "path": _rewrite_meta(  # a path read back from a file never names the base to load
            model, tmp_path / "path.keras", lambda i: i["frozen_base"].update(model="../../x")
        ),
    }
    for name, path in cases.items():
        predictor = open_model(path)
        assert predictor.engine == "keras", name
        np.testing.assert_allclose(predictor(_photos()), want, atol=1e-6)
    monkeypatch.setenv("MTL_CACHE_DIR", str(tmp_path / "empty_cache"))  # never converted here
    predictor = open_model(model)
    assert predictor.engine == "keras"
    np.testing.assert_allclose(predictor(_photos()), want, atol=1e-6)


def test_the_model_keeps_how_photos_are_made_square(run, tmp_path, monkeypatch, cli):
    """mtl train's default fit travels in mtl.json and predict applies it; a file made
    before the choice existed (no "fit") squashes, as it was trained; a damaged one is
    refused in one line."""
    from mtl.data.images import load_image
    from mtl.inference.predict import open_model, predict_paths
    from mtl.model.modelio import load_model

    files = (
        sorted((HYMENOPTERA / "ants").iterdir())[20:27]
        + sorted((HYMENOPTERA / "bees").iterdir())[20:27]
    )
    model = run / "model.keras"
    squashed = np.stack([load_image(p, 256, "squash") for p in files]).astype("float32")
    want = np.asarray(load_model(model).model.predict_on_batch(squashed))
    old = _rewrite_meta(model, tmp_path / "old.keras", lambda i: i.pop("fit"))
    for engine in ("auto", "keras"):
        monkeypatch.setenv("MTL_PREDICT_ENGINE", engine)
        assert open_model(model).fit == "center"
        predictor = open_model(old)
        assert predictor.fit == "squash"
        _, probs = predict_paths(predictor, files)
        np.testing.assert_allclose(np.stack([probs[f] for f in files]), want, atol=1e-5)
    bad = _rewrite_meta(model, tmp_path / "bad.keras", lambda i: i.update(fit="../crop"))
    result = cli.invoke(app, ["predict", str(bad), str(files[0])])
    assert result.exit_code != 0 and "unknown fit '../crop'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1

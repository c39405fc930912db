"""A self-contained model.keras and exports that carry their contract (issue 23 items 2, 11).

The habitual Keras code, in a process that never imports mtl, gets mtl's probabilities
from ``model.keras`` on real, non-square photos; a lone ``.tflite`` predicts from its own
metadata; ONNX tensors have meaningful names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtl.cli import app
from tests.conftest import SHARED

PHOTOS = SHARED / "data" / "clothing" / "test"

# docs/api.md's example, exactly: the photo as decoded, nothing else.
PLAIN_KERAS = """
import json, sys
import keras
import numpy as np
from PIL import ImageOps

model = keras.saving.load_model(sys.argv[1])
out = []
for path in sys.argv[2:]:
    img = keras.utils.load_img(path)  # any size: the model crops and resizes itself
    img = ImageOps.exif_transpose(img)  # upright, as mtl reads it: the model cannot see EXIF
    probs = model.predict(np.array(img)[None], verbose=0)[0]
    out.append(probs.tolist())
assert not [m for m in sys.modules if m == "mtl" or m.startswith("mtl.")]
print(json.dumps(out))
"""


def photos() -> list[Path]:
    """Real photos of several shapes (portrait, landscape, square) from clothing/test."""
    from PIL import Image

    picked, shapes = [], set()
    for folder in sorted(PHOTOS.iterdir()):
        for f in sorted(folder.iterdir())[:6]:
            with Image.open(f) as img:
                shape = "square" if img.width == img.height else img.width > img.height
            if shape not in shapes or len(picked) < 4:
                picked.append(f)
                shapes.add(shape)
        if len(picked) >= 6:
            break
    return picked


def mtl_probs(cli, model: Path, files: list[Path], *extra: str) -> np.ndarray:
    result = cli.invoke(app, ["predict", str(model), *map(str, files), "-k", "2", "--json", *extra])
    assert result.exit_code == 0, result.stderr
    rows = []
    data = json.loads(result.stdout)
    for r in data if isinstance(data, list) else data["results"]:
        by = {p["label"]: p["probability"] for p in r["predictions"]}
        rows.append([by["ants"], by["bees"]])
    return np.array(rows)


def test_doc_example_matches_mtl_predict_without_mtl(cli, trained_model):
    doc = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    for line in (
        "img = keras.utils.load_img(",
        "img = ImageOps.exif_transpose(img)  # upright, as mtl reads it: the model cannot see EXIF",
        "probs = model.predict(np.array(img)[None], verbose=0)[0]",
    ):
        assert line in doc and line in PLAIN_KERAS  # the docs' example is this code
    files = photos()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_KERAS, str(trained_model.path), *map(str, files)],
        capture_output=True, text=True, env=env, cwd="/", check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    plain = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    ours = mtl_probs(cli, trained_model.path, files)
    # Resampling noise only: Keras decodes the whole JPEG, mtl's loader at a reduced DCT
    # scale (an ants/bees model on clothing photos sits near its boundary: sensitive).
    difference = np.abs(plain - ours)
    assert difference.max() <= 0.1 and difference.mean() <= 0.03, (plain, ours)


def test_fit_layer_crops_the_central_square_or_squashes():
    from mtl.model.classifier import fit_layer

    rng = np.random.default_rng(0)
    photo = rng.uniform(0, 255, (1, 30, 50, 3)).astype("float32")
    center = np.asarray(fit_layer("center", 30)(photo))
    np.testing.assert_allclose(center, photo[:, :, 10:40], atol=1e-4)  # the identity on it
    squash = np.asarray(fit_layer("squash", 30)(photo))
    assert squash.shape == (1, 30, 30, 3) and np.abs(squash - center).max() > 10
    square = photo[:, :, :30]
    np.testing.assert_array_equal(np.asarray(fit_layer("center", 30)(square)), square)


def test_skeleton_serves_the_other_fit():
    from mtl.model import skeleton

    config = {"config": {"layers": [
        {"name": "image", "class_name": "InputLayer", "config": {}},
        {"name": "fit", "class_name": "Resizing", "config": {"crop_to_aspect_ratio": True}},
    ]}}  # fmt: skip
    squash = skeleton.with_fit(config, "squash")
    assert squash is not None and squash["config"]["layers"][1]["config"] == {
        "crop_to_aspect_ratio": False
    }
    assert skeleton.with_fit({"config": {"layers": []}}, "center") is None


@pytest.fixture(scope="module")
def lone_tflite(trained_model, tmp_path_factory):
    from typer.testing import CliRunner

    folder = tmp_path_factory.mktemp("lone")
    target = folder / "m.tflite"
    result = CliRunner().invoke(app, ["export", str(trained_model.path), "-o", str(target)])
    assert result.exit_code == 0, result.stderr
    (folder / "m.labels.txt").unlink()  # the model alone, as it is often copied
    return target


def test_lone_tflite_predicts_from_its_metadata(cli, trained_model, lone_tflite):
    import mmap

    from mtl.litert import read_metadata

    files = photos()[:3]
    lite = mtl_probs(cli, lone_tflite, files)
    np.testing.assert_allclose(lite, mtl_probs(cli, trained_model.path, files), atol=1e-3)
    with open(lone_tflite, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        info = json.loads(read_metadata(m, "mtl"))  # type: ignore[arg-type]
    assert info["class_names"] == ["ants", "bees"]
    # one photo of any size, made square inside (the file declares the square it makes)
    assert info["input"]["shape"] == ["batch", "height", "width", 3]
    assert info["input"]["size"] == 224 and info["input"]["fit"] == "center"
    assert "0-255" in info["input"]["pixels"]


def test_onnx_names_and_contract(cli, trained_model, tmp_path):
    pytest.importorskip("tf2onnx")
    import onnxruntime as ort

    target = tmp_path / "m.onnx"
    result = cli.invoke(app, ["export", str(trained_model.path), "-f", "onnx", "-o", str(target)])
    assert result.exit_code == 0, result.stderr
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["mtl.input"])["shape"] == ["batch", "height", "width", 3]
    assert session.get_inputs()[0].type == "tensor(uint8)"  # a decoded photo, any size
    files = photos()[:3]
    np.testing.assert_allclose(
        mtl_probs(cli, target, files), mtl_probs(cli, trained_model.path, files), atol=1e-3
    )

"""`mtl export`: TFLite float/dynamic/int8 and SavedModel, parity with Keras on real photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtl.cli import app
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def exported(trained_model, tmp_path_factory) -> dict[str, Path]:
    """model.keras exported as float and int8 TFLite (int8 calibrated on the training half)."""
    from typer.testing import CliRunner

    runner = CliRunner()
    folder = tmp_path_factory.mktemp("export")
    out = {"float": folder / "model.tflite", "int8": folder / "model.int8.tflite"}
    result = runner.invoke(
        app, ["export", str(trained_model.path), "--out", str(out["float"]), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [Path(f["file"]).name for f in data["files"]] == ["model.tflite", "model.labels.txt"]
    args = ["export", str(trained_model.path), "--quantize", "int8", "-o", str(out["int8"])]
    result = runner.invoke(app, [*args, "--representative", str(trained_model.train_dir)])
    assert result.exit_code == 0, result.stderr
    assert "TFLite int8" in result.stdout and "MiB" in result.stdout  # sizes printed
    return out


@pytest.fixture(scope="module")
def val_pixels(trained_model) -> np.ndarray:
    from mtl.data.images import load_image

    return np.stack([load_image(f, 224, "center") for f in trained_model.val_files])


def test_float_tflite_matches_keras_within_1e4(exported, trained_model, val_pixels):
    from mtl.inference.tflite import TFLiteModel, labels_path_for, read_labels
    from mtl.model.modelio import load_model

    lite = TFLiteModel(exported["float"])
    assert lite.input_dtype == "float32" and lite.image_size == 224
    assert lite.fit == "center"  # from the model, in the file's own metadata
    assert read_labels(labels_path_for(exported["float"])) == trained_model.class_names
    probs = lite(val_pixels)
    np.testing.assert_allclose(probs, trained_model.val_probabilities, atol=1e-4)
    keras_model = load_model(trained_model.path).model
    direct = np.asarray(keras_model.predict_on_batch(val_pixels[:8].astype("float32")))
    np.testing.assert_allclose(probs[:8], direct, atol=1e-4)
    # one at a time gives the same as in a batch
    np.testing.assert_allclose(lite(val_pixels[3:4]), probs[3:4], atol=1e-6)


def test_tflite_metadata_without_a_fit_or_damaged(exported, tmp_path):
    """A .tflite whose mtl entry names no fit squashes (as files made before it did);
    a damaged entry is a one-line ModelFileError, not a crash."""
    from mtl.errors import ModelFileError
    from mtl.inference.tflite import INFO_METADATA, TFLiteModel
    from mtl.litert import add_metadata, read_metadata

    data = exported["float"].read_bytes()
    assert b'"fit": "center"' in (read_metadata(data, INFO_METADATA) or b"")
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(add_metadata(data, INFO_METADATA, b"{}"))
    assert TFLiteModel(plain).fit == "squash"
    for junk in (b"not json", b"[1]", b'{"fit": "sideways"}'):
        bad = tmp_path / "bad.tflite"
        bad.write_bytes(add_metadata(data, INFO_METADATA, junk))
        with pytest.raises(ModelFileError, match="metadata|unknown fit"):
            TFLiteModel(bad)


def test_int8_tflite_agrees_on_top1(exported, trained_model, val_pixels):
    from mtl.inference.tflite import TFLiteModel

    lite = TFLiteModel(exported["int8"])
    assert lite.input_dtype == "float32"  # raw RGB in, quantized inside
    assert lite.fit == "center"
    probs = lite(val_pixels)
    agree = np.mean(probs.argmax(1) == trained_model.val_probabilities.argmax(1))
    assert agree >= 0.95, agree
    assert exported["int8"].stat().st_size < 0.4 * exported["float"].stat().st_size


def test_predict_and_evaluate_accept_tflite(cli, exported, trained_model):
    files = [str(f) for f in trained_model.val_files[:3]]
    result = cli.invoke(app, ["predict", str(exported["float"]), "--json", "-k", "2", *files])
    assert result.exit_code == 0, result.stderr
    for d, row in zip(json.loads(result.stdout), trained_model.val_probabilities, strict=False):
        for p in d["predictions"]:
            assert abs(p["probability"] - row[trained_model.class_names.index(p["label"])]) < 1e-4
    result = cli.invoke(
        app, ["evaluate", str(exported["int8"]), str(trained_model.val_dir), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    keras_acc = np.mean(trained_model.val_probabilities.argmax(1) == trained_model.val_labels)
    assert abs(json.loads(result.stdout)["accuracy"] - keras_acc) <= 0.05


def test_tflite_predict_never_imports_tensorflow(exported, trained_model):
    code = (
        "import sys, json, time\n"
        "t = time.perf_counter()\n"
        "from mtl.cli import app\n"
        "try:\n"
        f"    app(['predict', {str(exported['int8'])!r}, {str(trained_model.val_files[0])!r},"
        " '--json'])\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules)\n"
        "print('RESULT', json.dumps({'code': code, 'heavy': heavy,"
        " 'seconds': time.perf_counter() - t}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
    result = json.loads(line.removeprefix("RESULT "))
    assert result["code"] == 0, done.stderr
    assert result["heavy"] == [], result
    assert '"label"' in done.stdout


def test_dynamic_and_saved_model(cli, trained_model, val_pixels, tmp_path):
    from mtl.inference.tflite import TFLiteModel

    target = tmp_path / "phone" / "ants_bees.tflite"
    result = cli.invoke(
        app, ["export", str(trained_model.path), "--quantize", "dynamic", "-o", str(target)]
    )
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "phone" / "ants_bees.labels.txt").read_text() == "ants\nbees\n"
    # Dynamic range quantizes each depthwise kernel with one scale: photos near the
    # decision boundary can flip (94% agree here), the accuracy holds.
    probs = TFLiteModel(target)(val_pixels)
    float_top = trained_model.val_probabilities.argmax(1)
    assert np.mean(probs.argmax(1) == float_top) >= 0.9
    labels = trained_model.val_labels
    assert np.mean(probs.argmax(1) == labels) >= np.mean(float_top == labels) - 0.03

    folder = tmp_path / "served"
    result = cli.invoke(
        app, ["export", str(trained_model.path), "-f", "saved_model", "-o", str(folder)]
    )
    assert result.exit_code == 0, result.stderr
    # TF Serving's layout: a version folder, the labels among its assets.
    assert (folder / "1" / "saved_model.pb").is_file()
    assert (folder / "1" / "assets" / "labels.txt").read_text() == "ants\nbees\n"
    import tensorflow as tf

    served = tf.saved_model.load(str(folder / "1"))
    # the decoded-pixels signature, on mtl's loader's squares (the fit inside: identity)
    out = served.signatures["pixels"](image=tf.constant(val_pixels[:4]))
    np.testing.assert_allclose(
        np.asarray(out["probabilities"]), trained_model.val_probabilities[:4], atol=1e-4
    )
    assert not [p for p in tmp_path.rglob(".*")]  # no temp files or folders left


def test_export_errors(cli, trained_model, exported, tmp_path):
    model = str(trained_model.path)
    cases = [
        (["--quantize", "int8"], "--representative"),
        (["-f", "coreml"], "'coreml' is not one of"),  # a choice, checked by the parser
        (["--quantize", "tiny"], "'tiny' is not one of"),
        (["-f", "saved_model", "--quantize", "int8"], "tflite only"),
        (["-o", str(exported["float"])], "--force"),
        (["--quantize", "int8", "--representative", str(tmp_path / "none")], "no representative"),
    ]
    before = exported["float"].read_bytes()
    for args, expected in cases:
        result = cli.invoke(app, ["export", model, *args])
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert exported["float"].read_bytes() == before


def test_tflite_labels_missing_or_wrong(cli, exported, trained_model, tmp_path):
    lonely = tmp_path / "lonely.tflite"
    lonely.write_bytes(exported["float"].read_bytes())
    photo = str(trained_model.val_files[0])
    result = cli.invoke(app, ["predict", str(lonely), photo])
    # The class names travel inside (its mtl metadata): a lone .tflite predicts.
    assert result.exit_code == 0 and "ants" in result.stdout + result.stderr
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    result = cli.invoke(
        app, ["predict", str(lonely), photo, "--labels", str(tmp_path / "three.txt")]
    )
    assert result.exit_code == 2 and "3 labels" in result.stderr and "2 classes" in result.stderr
    (tmp_path / "two.txt").write_text("left\nright\n")
    result = cli.invoke(
        app, ["predict", str(lonely), photo, "--labels", str(tmp_path / "two.txt"), "--json"]
    )
    assert result.exit_code == 0
    assert json.loads(result.stdout)[0]["predictions"][0]["label"] in ("left", "right")


# --- ONNX: ONNX Runtime, class names inside the file, no TensorFlow to predict ----------


@pytest.fixture(scope="module")
def onnx_file(trained_model, tmp_path_factory) -> Path:
    """`mtl export RUN --format onnx`: the run folder is enough, labels go inside."""
    from typer.testing import CliRunner

    run = tmp_path_factory.mktemp("onnx_run")
    (run / "model.keras").symlink_to(trained_model.path)
    result = CliRunner().invoke(app, ["export", str(run), "--format", "onnx", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [Path(f["file"]).name for f in data["files"]] == ["model.onnx"]
    assert sorted(p.name for p in run.iterdir()) == ["model.keras", "model.onnx"]  # no labels file
    return run / "model.onnx"


def test_onnx_matches_keras_and_carries_its_labels(onnx_file, trained_model, val_pixels):
    import onnx

    from mtl.inference.onnx import CLASS_NAMES_KEY, ONNXModel

    meta = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert json.loads(meta[CLASS_NAMES_KEY]) == trained_model.class_names == ["ants", "bees"]
    assert meta["mtl.fit"] == "center"
    model = ONNXModel(onnx_file)
    assert model.class_names == ["ants", "bees"] and model.image_size == 224
    assert model.fit == "center"
    probs = model(val_pixels)
    np.testing.assert_allclose(probs, trained_model.val_probabilities, atol=1e-4)
    assert np.array_equal(probs.argmax(1), trained_model.val_probabilities.argmax(1))


def test_onnx_predict_and_evaluate_without_tensorflow(onnx_file, trained_model):
    """`mtl predict model.onnx` runs on ONNX Runtime and never imports TensorFlow or Keras."""
    files = [str(f) for f in trained_model.val_files[:4]]
    code = (
        "import sys, json\n"
        "from mtl.cli import app\n"
        "try:\n"
        f"    app(['predict', {str(onnx_file)!r}, *{files!r}, '--json', '-k', '2'])\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules)\n"
        "print('RESULT', json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
    assert json.loads(line.removeprefix("RESULT ")) == {"code": 0, "heavy": []}, done.stderr
    rows = json.loads(done.stdout.split("RESULT")[0])
    for d, row in zip(rows, trained_model.val_probabilities, strict=False):
        for p in d["predictions"]:
            assert abs(p["probability"] - row[trained_model.class_names.index(p["label"])]) < 1e-4

    from typer.testing import CliRunner

    result = CliRunner().invoke(
        app, ["evaluate", str(onnx_file), str(trained_model.val_dir), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    keras_right = np.sum(trained_model.val_probabilities.argmax(1) == trained_model.val_labels)
    assert json.loads(result.stdout)["correct"] == keras_right  # the same answers as Keras


# --- the light install (`pip install mtl`, no TensorFlow) ---------------------------------

BLOCK_HEAVY = (
    "import sys\n"
    "for name in ('tensorflow', 'keras', 'tf2onnx', 'jax', 'torch'):\n"
    "    sys.modules[name] = None  # as if not installed: importing it raises ImportError\n"
)


def test_light_install_runs_tflite_and_onnx_with_tensorflow_unimportable(
    exported, onnx_file, trained_model, tmp_path
):
    """What `pip install mtl` (no `train` extra) can do: predict and evaluate exported models;
    a model.keras asks for the extra in one line."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK_HEAVY)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    photo = str(trained_model.val_files[0])

    def mtl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mtl", *args], capture_output=True, text=True, env=env,
            timeout=300, cwd=ROOT,
        )  # fmt: skip

    for model in (exported["float"], onnx_file):
        done = mtl("predict", str(model), photo, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)[0]["predictions"][0]["label"] in ("ants", "bees")
    done = mtl("evaluate", str(exported["int8"]), str(trained_model.val_dir), "--json")
    assert done.returncode == 0, done.stderr
    done = mtl("predict", str(trained_model.path), photo)
    assert done.returncode == 2 and "pip install 'mtl[train]'" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_tflite_predict_leaves_a_clean_terminal(exported, trained_model):
    """In a real terminal (a pty): no LiteRT "INFO: Created TensorFlow Lite XNNPACK delegate"
    line and no progress bar left behind, just the table."""
    import pty

    photos = [str(f) for f in trained_model.val_files[:40]]
    code = "from mtl.cli import main; main()\n"
    argv = [sys.executable, "-c", code, "predict", str(exported["float"]), *photos]
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdout and stderr are the terminal
        os.chdir(ROOT)
        os.environ["COLUMNS"] = "80"
        os.execv(sys.executable, argv)
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    screen = b"".join(chunks).decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, screen
    assert "XNNPACK" not in screen and "INFO:" not in screen, screen
    assert "predicting" in screen  # a bar was drawn ...
    after_table = screen.split("probability", 1)[1]
    assert "predicting" not in after_table  # ... and erased before the table
    last = screen.rstrip().splitlines()[-1]
    assert last.startswith("└"), last

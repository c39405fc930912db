"""`mtl predict` on a really trained model: the model's own numbers, robust inputs, clear errors."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtl.cli import app


def predict_json(cli, model: Path, *args: str) -> tuple[int, list[dict], str]:
    result = cli.invoke(app, ["predict", str(model), "--json", *args])
    data = json.loads(result.stdout) if result.stdout.strip() else None
    return result.exit_code, data, result.stderr


@pytest.fixture(scope="module")
def confident(trained_model) -> tuple[Path, str]:
    """The validation photo the model is surest about, and its label."""
    probs = trained_model.val_probabilities
    i = int(np.argmax(probs.max(axis=1)))
    return trained_model.val_files[i], trained_model.class_names[int(np.argmax(probs[i]))]


def test_probabilities_are_exactly_the_models(cli, trained_model):
    """Same pixels (load_image), same preprocessing (inside the model): same probabilities."""
    from mtl.data.images import load_image
    from mtl.inference.predict import predict
    from mtl.model.modelio import load_model

    files = trained_model.train_files[:2] + trained_model.val_files[-2:]
    loaded = load_model(trained_model.path)
    assert loaded.fit == "center"  # mtl train's default, recorded in the model
    pixels = np.stack([load_image(f, loaded.image_size, loaded.fit) for f in files])
    pixels = pixels.astype("float32")
    expected = np.asarray(loaded.model(pixels, training=False))

    report = predict(trained_model.path, files, top_k_count=2)
    for r, row in zip(report.results, expected, strict=True):
        for p in r.predictions:
            j = trained_model.class_names.index(p.label)
            assert abs(p.probability - float(row[j])) < 1e-6

    code, data, stderr = predict_json(cli, trained_model.path, "--top-k", "2", *map(str, files))
    assert code == 0, stderr
    assert [d["file"] for d in data] == [str(f) for f in files]
    for d, row in zip(data, expected, strict=True):
        assert [p["rank"] for p in d["predictions"]] == [1, 2]
        for p in d["predictions"]:
            assert set(p) == {"rank", "label", "probability"}  # classify's shape, no wnid
            j = trained_model.class_names.index(p["label"])
            assert abs(p["probability"] - float(row[j])) < 1e-6
    # and the same as the probabilities computed from the training features
    val = {
        f: row
        for f, row in zip(trained_model.val_files, trained_model.val_probabilities, strict=True)
    }
    for f, row in zip(files[2:], expected[2:], strict=True):
        np.testing.assert_allclose(row, val[f], atol=1e-5)


def test_other_sizes_formats_and_orientations_give_the_same_label(
    cli, trained_model, confident, tmp_path
):
    photo, label = confident
    img = Image.open(photo).convert("RGB")
    w, h = img.size
    img.resize((w * 3 // 5, h * 3 // 5)).save(tmp_path / "small.png")
    img.resize((w * 2, h * 2)).save(tmp_path / "large.png")
    img.convert("L").save(tmp_path / "gray.jpg", quality=95)
    # Stored rotated 90 degrees counter-clockwise; EXIF orientation 6 says "turn it back".
    exif = Image.Exif()
    exif[0x0112] = 6
    img.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rotated.jpg", exif=exif, quality=95)

    from mtl.data.images import load_image

    assert load_image(tmp_path / "rotated.jpg", 224).shape == (224, 224, 3)
    code, data, stderr = predict_json(cli, trained_model.path, str(photo))
    assert code == 0, stderr
    original = data[0]["predictions"][0]
    assert original["label"] == label
    code, data, stderr = predict_json(cli, trained_model.path, str(tmp_path))
    assert code == 0, stderr
    assert len(data) == 4
    for d in data:
        top = d["predictions"][0]
        assert top["label"] == label, d
        assert len(d["predictions"]) == 1  # top-1 by default
        if Path(d["file"]).name in ("small.png", "large.png"):
            assert abs(top["probability"] - original["probability"]) < 0.05, d


def test_table_output_and_top_k(cli, trained_model, confident):
    photo, label = confident
    result = cli.invoke(app, ["predict", str(trained_model.path), str(photo)])
    assert result.exit_code == 0, result.stderr
    assert label in result.stdout and "probability" in result.stdout
    result = cli.invoke(app, ["predict", str(trained_model.path), str(photo), "-k", "5"])
    assert result.exit_code == 0, result.stderr
    assert "ants" in result.stdout and "bees" in result.stdout  # k is capped at 2 classes


def test_csv_output_and_no_overwrite(cli, trained_model, confident, tmp_path):
    photo, label = confident
    target = tmp_path / "out.csv"
    args = ["predict", str(trained_model.path), str(photo), "--csv", str(target)]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    lines = target.read_text().splitlines()
    assert lines[0] == "file,rank,label,probability,error"
    assert lines[1].startswith(f"{photo},1,{label},")
    target.write_text("keep me")
    result = cli.invoke(app, args)
    assert result.exit_code == 2 and "--force" in result.stderr
    assert target.read_text() == "keep me"
    result = cli.invoke(app, [*args, "--force"])
    assert result.exit_code == 0 and target.read_text().startswith("file,rank")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_bad_images_are_reported_and_skipped(cli, trained_model, confident, tmp_path):
    photo, label = confident
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(photo.read_bytes())
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("not a picture")
    code, data, stderr = predict_json(
        cli, trained_model.path, str(folder), str(folder / "gone.jpg")
    )
    assert code == 1
    by_name = {Path(d["file"]).name: d for d in data}
    assert by_name["good.jpg"]["predictions"][0]["label"] == label
    assert set(by_name["empty.jpg"]) == {"file", "error"}
    assert "not an image" in by_name["notes.png"]["error"]
    assert "no such file" in by_name["gone.jpg"]["error"]
    assert "3 of 4 images could not be read" in stderr
    assert "Traceback" not in stderr


# --- files that are not (readable) mtl models: exit 2, one line, no traceback -----------


def tiny_model(with_class_names: bool, model_format: int | None = None):  # type: ignore[no-untyped-def]
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    x = keras.layers.Dense(2, activation="softmax")(x)
    if with_class_names:
        from mtl.model.layers import ClassNames

        kwargs = {} if model_format is None else {"model_format": model_format}
        x = ClassNames(["a", "b"], mtl_version="9.0.0", **kwargs)(x)
    return keras.Model(inputs, x)


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, offline_env) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad_models")
    out = {}
    (folder / "text").mkdir()
    out["text"] = folder / "text" / "model.keras"
    out["text"].write_text("this is not a model\n")
    (folder / "zip").mkdir()
    out["zip"] = folder / "zip" / "model.keras"
    with zipfile.ZipFile(out["zip"], "w") as z:
        z.writestr("hello.txt", "a zip, but not a model")
    out["plain"] = folder / "plain.keras"
    tiny_model(False).save(out["plain"])
    out["newer"] = folder / "newer.keras"
    tiny_model(True, model_format=99).save(out["newer"])
    # A layer this mtl does not have (as a future mtl might write): safe mode refuses it.
    out["unknown_layer"] = folder / "unknown_layer.keras"
    tiny_model(True).save(folder / "current.keras")
    with (
        zipfile.ZipFile(folder / "current.keras") as src,
        zipfile.ZipFile(out["unknown_layer"], "w") as dst,
    ):
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                data = data.replace(b"ClassNames", b"ClassNamesV7")
            dst.writestr(item, data)
    out["missing"] = folder / "nope" / "model.keras"
    out["h5"] = folder / "model.h5"
    out["h5"].write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    out["tflite_garbage"] = folder / "model.tflite"
    out["tflite_garbage"].write_bytes(b"\0" * 256)
    (folder / "model.labels.txt").write_text("a\nb\n")
    return out


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("text", "is not an mtl model"),
        ("zip", "without config.json"),
        ("plain", "has no class names"),
        ("newer", "upgrade mtl"),
        ("unknown_layer", "ClassNamesV7"),
        ("missing", "no model file"),
        ("h5", "is not an mtl model"),
        ("tflite_garbage", "not a readable TFLite model"),
    ],
)
def test_not_an_mtl_model_exits_2_with_one_line(cli, bad_models, sample_photos, kind, expected):
    result = cli.invoke(app, ["predict", str(bad_models[kind]), str(sample_photos["coffee"])])
    assert result.exit_code == 2, result.stdout + result.stderr
    message = result.stderr.strip()
    assert expected in message
    assert str(bad_models[kind]) in message.replace("\n", "")
    assert "Traceback" not in message
    assert len(message.splitlines()) == 1, message
    assert result.stdout == ""


def test_newer_model_names_the_version(cli, bad_models, sample_photos):
    result = cli.invoke(app, ["predict", str(bad_models["newer"]), str(sample_photos["coffee"])])
    assert result.exit_code == 2
    assert "9.0.0" in result.stderr and "format 99" in result.stderr


def test_bad_options(cli, trained_model, confident):
    photo, _ = confident
    result = cli.invoke(app, ["predict", str(trained_model.path), str(photo), "-k", "0"])
    assert result.exit_code == 2 and "Received top_k=0" in result.stderr
    result = cli.invoke(
        app, ["predict", str(trained_model.path), str(photo), "--labels", "labels.txt"]
    )
    assert result.exit_code == 2 and "--labels" in result.stderr


def test_help_of_predict_evaluate_export_imports_no_tensorflow():
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = (
        "import sys\n"
        "from mtl.cli import app\n"
        "for cmd in ('predict', 'evaluate', 'export'):\n"
        "    try:\n        app([cmd, '--help'])\n    except SystemExit:\n        pass\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr
    for cmd in ("predict", "evaluate", "export"):
        assert f"mtl {cmd}" in done.stdout

"""`mtl classify` on the real ImageNet MobileNet weights and real photos."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mtl.cli import app
from tests.conftest import ALPHA


def classify_json(cli, *args: str) -> tuple[int, list[dict], str]:
    result = cli.invoke(app, ["classify", "--alpha", str(ALPHA), "--json", *args])
    return result.exit_code, json.loads(result.stdout or "null"), result.stderr


@pytest.fixture(scope="module")
def sample_results(sample_photos):
    from typer.testing import CliRunner

    code, data, stderr = classify_json(
        CliRunner(), "--top-k", "5", *map(str, sample_photos.values())
    )
    assert code == 0, stderr
    return {Path(r["file"]).stem: r for r in data}


def test_grace_hopper_central_crop_sees_her_bow_tie(sample_results):
    """The default crop keeps the portrait's centre: her face and bow tie, not the
    uniform's shoulders (squashed, the whole photo reads as military_uniform: below)."""
    assert sample_results["grace_hopper"]["predictions"][0]["label"] == "bow_tie"


def test_coffee_is_espresso(sample_results):
    assert sample_results["coffee"]["predictions"][0]["label"] == "espresso"


def test_chelsea_has_a_cat_in_top3(sample_results):
    top3 = {p["label"] for p in sample_results["chelsea"]["predictions"][:3]}
    assert top3 & {"Egyptian_cat", "tabby", "tiger_cat"}


def test_json_shape(sample_results):
    preds = sample_results["coffee"]["predictions"]
    assert [p["rank"] for p in preds] == [1, 2, 3, 4, 5]
    assert preds[0]["wnid"].startswith("n") and len(preds[0]["wnid"]) == 9
    probs = [p["probability"] for p in preds]
    assert probs == sorted(probs, reverse=True)
    assert 0 < sum(probs) <= 1.0 + 1e-6


def _direct_keras(photos: dict[str, Path], pixels_of) -> dict[str, dict[str, float]]:
    """keras.applications.MobileNet(weights='imagenet') + preprocess_input on ``pixels_of``."""
    import keras

    net = keras.applications.MobileNet(alpha=ALPHA, weights="imagenet")
    names = sorted(photos)
    pixels = np.stack([pixels_of(photos[n]) for n in names]).astype("float32")
    probs = net.predict_on_batch(keras.applications.mobilenet.preprocess_input(pixels))
    index = json.loads(
        (Path(os.environ["MTL_WEIGHTS_DIR"]) / "imagenet_class_index.json").read_text()
    )
    return {
        name: {index[str(i)][1]: float(p) for i, p in enumerate(row)}
        for name, row in zip(names, probs, strict=True)
    }


def _assert_same(results: dict, expected: dict[str, dict[str, float]]) -> None:
    for name, probs in expected.items():
        for p in results[name]["predictions"]:
            assert abs(p["probability"] - probs[p["label"]]) < 1e-4


def test_probabilities_equal_direct_keras(sample_results, sample_photos):
    """The default fit is ImageNet's evaluation crop: the short side resized to 256, the
    central 224x224; mtl == Keras' own MobileNet on those pixels."""
    from mtl.data.images import load_image

    def crop(path: Path) -> np.ndarray:
        return load_image(path, 256, fit="center")[16:240, 16:240]

    _assert_same(sample_results, _direct_keras(sample_photos, crop))


def test_squash_equals_direct_keras_on_the_whole_photo(cli, sample_photos):
    from mtl.data.images import load_image

    code, data, stderr = classify_json(
        cli, "--fit", "squash", "-k", "5", *map(str, sample_photos.values())
    )
    assert code == 0, stderr
    results = {Path(r["file"]).stem: r for r in data}
    _assert_same(results, _direct_keras(sample_photos, lambda p: load_image(p, 224)))
    assert results["coffee"]["predictions"][0]["label"] == "espresso"
    assert results["grace_hopper"]["predictions"][0]["label"] == "military_uniform"


def test_unknown_fit_is_refused(cli, sample_photos):
    result = cli.invoke(app, ["classify", "--fit", "crop", str(sample_photos["coffee"])])
    assert result.exit_code == 2 and "'crop'" in result.stderr
    assert "Traceback" not in result.stderr


def test_table_output(cli, sample_photos):
    result = cli.invoke(
        app, ["classify", "--alpha", str(ALPHA), "-k", "2", str(sample_photos["coffee"])]
    )
    assert result.exit_code == 0, result.stderr
    assert "espresso" in result.stdout and "rank" in result.stdout and "n07920052" in result.stdout


def test_bad_files_are_skipped_and_good_ones_classified(cli, sample_photos, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "coffee.png").write_bytes(sample_photos["coffee"].read_bytes())
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not a picture\n")
    jpeg = sample_photos["grace_hopper"].read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    code, data, stderr = classify_json(cli, str(folder))
    assert code == 1
    by_name = {Path(r["file"]).name: r for r in data}
    assert by_name["coffee.png"]["predictions"][0]["label"] == "espresso"
    assert "empty" in by_name["empty.jpg"]["error"]
    assert "not an image" in by_name["notes.jpg"]["error"]
    assert "truncated" in by_name["truncated.jpg"]["error"]
    for name in ("empty.jpg", "notes.jpg", "truncated.jpg"):
        assert name in stderr
    assert "Traceback" not in stderr


def test_offline_without_weights_exits_2_with_a_message(cli, sample_photos, tmp_path, monkeypatch):
    empty = tmp_path / "no_weights"
    empty.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))
    result = cli.invoke(
        app,
        ["classify", "--alpha", "0.75", "--weights-dir", str(empty), str(sample_photos["coffee"])],
    )
    assert result.exit_code == 2
    message = result.stderr
    assert "imagenet_class_index.json" in message  # the first file it needs
    assert os.environ["MTL_WEIGHTS_URL"].rstrip("/") in message
    assert str(empty) in message
    assert "Traceback" not in message
    assert len(message.strip().splitlines()) == 1


def test_bad_arguments_echo_the_value(cli, sample_photos):
    result = cli.invoke(app, ["classify", "--alpha", "0.3", str(sample_photos["coffee"])])
    assert result.exit_code == 2
    assert "Received alpha=0.3" in result.stderr
    result = cli.invoke(app, ["classify", "--model", "resnet", str(sample_photos["coffee"])])
    # a choice: the parser names the value and every model there is
    assert result.exit_code == 2 and "'resnet'" in result.stderr
    assert "mobilenet_v3_large" in result.stderr


def test_folder_without_images_is_an_error(cli, tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    result = cli.invoke(app, ["classify", str(tmp_path)])
    assert result.exit_code == 2
    assert ".jpg" in result.stderr and ".png" in result.stderr

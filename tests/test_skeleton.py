"""model.keras written without Keras (mtl/model/skeleton.py) is the model Keras would write."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from mtl.model import skeleton
from tests.conftest import ALPHA, HYMENOPTERA


@pytest.fixture
def built(offline_env, tmp_path, monkeypatch):
    """A two-view model on the real ImageNet base, saved by Keras and kept as a skeleton."""
    from mtl.assets import weights
    from mtl.model import backbones
    from mtl.model.classifier import build_parts
    from mtl.model.modelio import model_meta, save_model

    monkeypatch.setenv("MTL_CACHE_DIR", str(tmp_path / "cache"))
    wfile = weights.resolve(backbones.weights_file("mobilenet", ALPHA, include_top=False))
    parts = build_parts(
        ["ants", "bees"], model="mobilenet", alpha=ALPHA, weights=wfile, size=224,
        head_units=[16], dropout=0.5, freeze_layers=None, views=["image", "crop"],
    )  # fmt: skip
    rng = np.random.default_rng(0)
    parts.head.set_weights(
        [rng.normal(size=w.shape).astype("float32") for w in parts.head.get_weights()]
    )
    first = save_model(parts.model, tmp_path / "first.keras", model_meta(["ants", "bees"]))
    arch = skeleton.arch("base-spec", ["image", "crop"], [16], 0.5)
    assert skeleton.store(first, parts.head.get_weights(), arch) == skeleton.path(arch)
    return parts, arch, tmp_path


def test_written_model_predicts_as_the_keras_model(built):
    from mtl.data.images import load_image
    from mtl.model.modelio import ModelInfo, check_model_file, load_model, model_meta

    parts, arch, tmp = built
    rng = np.random.default_rng(1)
    new = [rng.normal(size=w.shape).astype("float32") for w in parts.head.get_weights()]
    meta = model_meta(["ants", "bees"], ModelInfo(views=("image", "crop")))
    assert skeleton.write(arch, tmp / "model.keras", new, meta, views=2)
    check_model_file(tmp / "model.keras")
    loaded = load_model(tmp / "model.keras")
    assert loaded.class_names == ["ants", "bees"] and loaded.info.views == ("image", "crop")
    photos = sorted((HYMENOPTERA / "bees").iterdir())[:4]
    x = np.stack([load_image(p, 224) for p in photos]).astype("float32")
    parts.head.set_weights(new)
    expected = np.asarray(parts.model.predict_on_batch(x))
    np.testing.assert_allclose(loaded.model.predict_on_batch(x), expected, atol=1e-6)
    with zipfile.ZipFile(tmp / "model.keras") as z:
        assert skeleton.ENTRY not in z.namelist()  # the places of the weights stay in the cache
        assert json.loads(z.read("metadata.json"))["keras_version"]


def test_another_architecture_or_a_damaged_skeleton_is_not_used(built):
    from mtl.model.modelio import model_meta

    parts, arch, tmp = built
    head = parts.head.get_weights()
    meta = model_meta(["a", "b"])
    other = skeleton.arch("base-spec", ["image", "crop"], [32], 0.5)
    assert not skeleton.write(other, tmp / "other.keras", head, meta, views=2)
    assert not skeleton.write(arch, tmp / "short.keras", head[:2], meta, views=2)
    skeleton.path(arch).write_bytes(b"not a zip")
    assert not skeleton.write(arch, tmp / "broken.keras", head, meta, views=2)
    assert not any((tmp / n).exists() for n in ("other.keras", "short.keras", "broken.keras"))


def test_weights_that_cannot_be_placed_keep_no_skeleton(built):
    parts, _, tmp = built
    zeros = [np.zeros_like(w) for w in parts.head.get_weights()]  # not unique in the file
    arch = skeleton.arch("base-spec", ["image"], [16], 0.5)
    assert skeleton.store(tmp / "first.keras", zeros, arch) is None
    assert not skeleton.path(arch).exists()


@pytest.mark.parametrize("views", [["image", "crop"], ["image"]])
def test_another_class_count_from_the_same_skeleton(offline_env, tmp_path, monkeypatch, views):
    """A skeleton kept from a 2-class run writes a 5-class model that Keras loads and that
    predicts as the Keras-built 5-class model with the same weights."""
    from mtl.assets import weights
    from mtl.data.images import load_image
    from mtl.model import backbones
    from mtl.model.classifier import build_parts
    from mtl.model.modelio import load_model, model_meta, save_model

    monkeypatch.setenv("MTL_CACHE_DIR", str(tmp_path / "cache"))
    wfile = weights.resolve(backbones.weights_file("mobilenet", ALPHA, include_top=False))
    rng = np.random.default_rng(2)

    def build(names: list[str]):
        parts = build_parts(
            names, model="mobilenet", alpha=ALPHA, weights=wfile, size=224, head_units=[8],
            dropout=0.5, freeze_layers=None, views=views,
        )  # fmt: skip
        parts.head.set_weights(
            [rng.normal(size=w.shape).astype("float32") for w in parts.head.get_weights()]
        )
        return parts

    two = build(["a", "b"])
    first = save_model(two.model, tmp_path / "two.keras", model_meta(["a", "b"]))
    arch = skeleton.arch("spec", views, [8], 0.5)
    assert skeleton.store(first, two.head.get_weights(), arch) is not None
    names = ["a", "b", "c", "d", "e"]
    five = build(names)
    meta = model_meta(names)
    assert skeleton.write(arch, tmp_path / "five.keras", five.head.get_weights(), meta,
                          views=len(views))  # fmt: skip
    loaded = load_model(tmp_path / "five.keras")
    assert loaded.class_names == names
    photos = sorted((HYMENOPTERA / "ants").iterdir())[:3]
    x = np.stack([load_image(p, 224) for p in photos]).astype("float32")
    expected = np.asarray(five.model.predict_on_batch(x))
    assert expected.shape == (3, 5)
    np.testing.assert_allclose(loaded.model.predict_on_batch(x), expected, atol=1e-6)


def test_a_config_not_laid_out_as_expected_is_refused():
    config = {"config": {"layers": [{"name": "head", "config": {"layers": []}}]}}
    assert skeleton.with_classes(config, 3, views=1) is None  # no "probabilities" layer

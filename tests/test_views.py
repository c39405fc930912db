"""The default model's input: the photo's central square at 256, whose views are the base's.

With ``fit = "center"`` and a crop view, the saved model takes 256x256 pixels: the crop
view is their central 224x224 (the photo's own pixels, no upsampling) and the image
view is the whole square resized to 224 inside the model.
"""

from __future__ import annotations

import numpy as np
import pytest

from mtl.pipeline.config import TrainConfig
from tests.conftest import ALPHA, HYMENOPTERA

pytestmark = pytest.mark.slow


def test_input_size_follows_fit_and_views():
    assert TrainConfig().input_size == 256  # the defaults: center, image + crop
    assert TrainConfig(fit="squash").input_size == 224
    assert TrainConfig(views=["image"]).input_size == 224
    assert TrainConfig(views=["image", "crop_flip"], image_size=160).input_size == 183
    assert round(183 * 0.875) == 160  # its central 87.5% is the base's side again
    assert TrainConfig(fine_tune_epochs=2).input_size == 224  # one view: no crop
    assert TrainConfig(freeze=20).input_size == 224


@pytest.fixture(scope="module")
def parts():
    from mtl.assets.weights import resolve
    from mtl.model.backbones import weights_file
    from mtl.model.classifier import build_parts

    weights = resolve(weights_file("mobilenet", ALPHA, include_top=False))
    common = dict(model="mobilenet", alpha=ALPHA, weights=weights, size=224, head_units=[8],
                  dropout=0.0, freeze_layers=None)  # fmt: skip
    views = build_parts(["ants", "bees"], views=("image", "crop"), input_size=256, **common)
    plain = build_parts(["ants", "bees"], views=("image",), **common)
    return views, plain


def _squares(n: int) -> np.ndarray:
    from mtl.data.images import load_image

    files = (
        sorted((HYMENOPTERA / "ants").iterdir())[:n] + sorted((HYMENOPTERA / "bees").iterdir())[:n]
    )
    return np.stack([load_image(p, 256, "center") for p in files]).astype("float32")


def test_the_crop_view_is_the_photos_own_central_pixels(parts):
    import keras

    views, plain = parts
    # The saved models take any photo (their first layer makes it square); training feeds
    # the square itself: 256 with the crop view, 224 without.
    assert views.model.input_shape == plain.model.input_shape == (None, None, None, 3)
    assert (views.input_side, plain.input_side) == (256, 224)
    x = _squares(3)
    both = np.asarray(views.extractor.predict_on_batch(x))
    assert both.shape == (6, 2, round(1024 * ALPHA))
    crop = np.asarray(plain.extractor.predict_on_batch(x[:, 16:240, 16:240]))
    # (float32 noise only: the same ops on the same pixels, in another graph)
    np.testing.assert_allclose(both[:, 1], crop, rtol=1e-5, atol=1e-5)
    resized = np.asarray(keras.layers.Resizing(224, 224)(x))
    whole = np.asarray(plain.extractor.predict_on_batch(resized))
    np.testing.assert_allclose(both[:, 0], whole, rtol=1e-5, atol=1e-5)
    assert not np.allclose(both[:, 0], both[:, 1], atol=1e-2)  # two different views


def test_litert_runs_the_256_input_base_as_keras_does(parts):
    from mtl.model.litebase import LiteExtractor
    from mtl.runtime import tflite_flatbuffer

    views, _ = parts
    x = _squares(2)
    lite = LiteExtractor(tflite_flatbuffer(views.extractor, (256, 256, 3)), "spec", threads=2)
    np.testing.assert_allclose(
        lite(x.astype(np.uint8)), views.extractor.predict_on_batch(x), atol=1e-4
    )


def test_a_base_spec_from_before_input_size_reads_as_the_base_side():
    from mtl.model.litebase import BaseSpec

    spec = BaseSpec("mobilenet", 0.75, 224, None, "d" * 64, "3", ("image", "crop"), 256)
    assert BaseSpec.from_json(spec.to_json()) == spec and "|input=256" in spec.text()
    old = {k: v for k, v in spec.to_json().items() if k != "input_size"}
    read = BaseSpec.from_json(old)
    assert read is not None and read.input_side == 224 and "input=" not in read.text()
    for bad in (-1, 10**9, "256", None):
        assert BaseSpec.from_json({**spec.to_json(), "input_size": bad}) is None

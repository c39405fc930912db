"""The ImageNet prior (mtl.training.prior): its algebra, its fit, and a real run with it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mtl.training import headfit, prior
from tests.conftest import ALPHA, HYMENOPTERA


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("units", [[16], []])
def test_composed_head_is_the_blend_of_head_and_prior(units):
    rng = np.random.default_rng(0)
    x = rng.random((20, 12), dtype=np.float32) * 3
    head = headfit.Head.fresh(12, 3, units, 0.5, seed=1)
    p = prior.Prior(
        rng.normal(size=(12, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    )
    blend = prior.Blend(0.7, 0.4)
    composed = prior.compose(head, p, blend)
    assert composed.skip == bool(units)  # with hidden layers the last layer reads both
    want = _softmax(0.7 * head.logits(x).astype(np.float64) + 0.4 * p.logits(x))
    np.testing.assert_allclose(composed.probs(x), want, atol=1e-5)
    if composed.skip:  # its last layer's input is not what training feeds
        with pytest.raises(ValueError, match="composed, not trained"):
            opt = headfit.Optimizer("adam", 1e-3)
            headfit.train_epoch(composed, opt, x, np.zeros(20, int), None, 8, 0, 0)


def test_prior_is_minus_the_cross_entropy_of_the_class_means():
    """softmax(prior logits) = softmax(-CE(class mean, photo)): each class mean sums to 1,
    so the log-normaliser of the top is a per-photo constant the softmax drops."""
    rng = np.random.default_rng(1)
    top_k, top_b = rng.normal(size=(8, 50)), rng.normal(size=50)
    rows = rng.random((30, 8))
    labels = np.arange(30) % 3
    p = prior.Prior.from_top(top_k, top_b, rows, labels, 3)
    concepts = _softmax(rows @ top_k + top_b)
    means = np.stack([concepts[labels == c].mean(axis=0) for c in range(3)])
    want = _softmax(np.log(concepts) @ means.T)
    np.testing.assert_allclose(_softmax(p.logits(rows)), want, atol=1e-5)


def test_fit_gives_no_weight_to_a_prior_that_does_not_help():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 200)
    head = rng.normal(size=(200, 2, 3))
    head[np.arange(200), :, labels] += 2.0  # an informative head
    noise = rng.normal(size=(200, 2, 3)) * 3
    assert prior.fit(head, noise, labels) == prior.Blend(1.0, 0.0)
    useful = rng.normal(size=(200, 2, 3))
    useful[np.arange(200), :, labels] += 4.0  # a better classifier than the head
    blend = prior.fit(head, useful, labels)
    assert blend.prior > 0 and 0.5 < blend.weight <= 1.0


@pytest.mark.slow
def test_a_real_run_blends_the_prior_into_the_saved_model(tmp_path, cli):
    """Ants and bees are ImageNet concepts: the validation photos give the prior weight,
    the saved model (Keras and LiteRT + NumPy alike) scores what training reported, and
    --no-prior leaves it out."""
    from mtl.cli import app
    from mtl.data.images import load_image
    from mtl.inference.predict import open_model
    from mtl.model.modelio import load_model
    from tests.test_train import subset

    data = subset(tmp_path / "data", 40)
    runs = {}
    for name, extra in (("on", []), ("off", ["--no-prior"])):
        # float32: the saved model's answers then equal LiteRT's to 1e-5, so they show the
        # prior is in the file (the int8 default's agreement: tests/test_int8_keras.py)
        result = cli.invoke(
            app,
            ["train", str(data), "--alpha", str(ALPHA), "--epochs", "5", "--out",
             str(tmp_path / name), "--json", "--base-precision", "float32", *extra],
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        runs[name] = json.loads(result.stdout)
    notes_on = " ".join(runs["on"]["notes"])
    assert "ImageNet prior blended in at weight" in notes_on
    assert "prior" not in " ".join(runs["off"]["notes"])
    assert runs["off"]["prior"] is None and 0 < runs["on"]["prior"]["weight"] <= 1
    saved = json.loads((tmp_path / "on" / "metrics.json").read_text())
    assert saved["prior"] == runs["on"]["prior"] and runs["on"]["prior"]["prior_factor"] > 0
    config = json.loads((tmp_path / "off" / "config.json").read_text())["config"]
    assert config["prior"] is False
    photos = (
        sorted((HYMENOPTERA / "ants").iterdir())[60:66]
        + sorted((HYMENOPTERA / "bees").iterdir())[60:66]
    )
    x = np.stack([load_image(p, 256, "center") for p in photos])  # the default model's input
    keras_probs = load_model(tmp_path / "on" / "model.keras").model.predict_on_batch(
        x.astype("float32")
    )
    lite = open_model(tmp_path / "on")
    assert lite.engine == "litert"
    np.testing.assert_allclose(lite(x), keras_probs, atol=1e-5)
    assert (np.asarray(keras_probs).argmax(axis=1) == np.repeat([0, 1], 6)).mean() >= 0.75


@pytest.mark.slow
def test_the_keras_head_engine_blends_the_prior_the_same_way(tmp_path):
    """A run whose head trains in Keras (here because a Keras callback is passed; on a
    GPU for speed) gets the prior by the same steps, and its saved model scores on its
    photos exactly what training reported."""
    import keras

    import mtl
    from mtl.data.images import load_image
    from mtl.model.modelio import load_model

    data = HYMENOPTERA  # 49 validation photos: enough for the prior to earn its weight
    # fit="squash": on these photos the squashed input leaves the prior more to add (with
    # the central square the head alone is good enough on some seeds: weight 0)
    result = mtl.train(
        data, alpha=ALPHA, epochs=5, out=tmp_path / "run", callbacks=[keras.callbacks.Callback()],
        fit="squash",
    )  # fmt: skip
    assert result.cache["head_engine"] == "keras"
    assert any("ImageNet prior blended in at weight" in n for n in result.notes)
    loaded = load_model(result.model_path)
    files = sorted(data.glob("*/*"))
    x = np.stack([load_image(p, 224, loaded.fit) for p in files]).astype("float32")
    probs = np.asarray(loaded.model.predict(x, batch_size=32, verbose=0))
    labels = np.array([loaded.class_names.index(p.parent.name) for p in files])
    assert (probs.argmax(axis=1) == labels).mean() == pytest.approx(
        result.train_metrics["accuracy"],
        abs=1e-6,  # metrics.json rounds to 6 places
    )


def test_a_damaged_or_missing_top_file_means_no_prior_and_a_reason(tmp_path):
    """The prior is optional: an unusable include-top file never stops a run."""
    from mtl.model import backbones
    from mtl.pipeline.config import TrainConfig
    from mtl.training.trainer import _prior_weights

    cfg = TrainConfig(alpha=ALPHA)
    name = backbones.weights_file("mobilenet", ALPHA, include_top=True).name
    (tmp_path / name).write_bytes(b"not an hdf5 file at all")
    why = _prior_weights(cfg, tmp_path, None)
    assert isinstance(why, str) and "its weights are unavailable" in why and name in why
    assert _prior_weights(TrainConfig(alpha=ALPHA, prior=False), tmp_path, None) == "off"
    assert _prior_weights(TrainConfig(alpha=ALPHA, val_split=0), tmp_path, None) == ""
    found = _prior_weights(cfg, None, None)  # the real file (MTL_WEIGHTS_DIR)
    assert not isinstance(found, str) and found.name == name


def test_a_prior_no_better_than_the_majority_class_gets_no_weight():
    """As a per-class bias, an uninformative prior can still pass the likelihood test
    (8x8 digits did); its own answers must beat the most frequent class first."""
    rng = np.random.default_rng(3)
    labels = np.where(rng.random(300) < 0.5, 0, rng.integers(1, 10, 300))  # half class 0
    head = rng.normal(size=(300, 2, 10))
    head[np.arange(300), :, labels] += 1.5  # informative, but blind to the imbalance
    bias = np.log(np.bincount(labels, minlength=10) / 300 + 1e-3)
    prior_logits = np.broadcast_to(bias, (300, 2, 10)) + rng.normal(size=(300, 2, 10)) * 0.01
    assert not prior.informative(prior_logits, labels)  # always class 0: the majority
    assert prior._likelihood_blend(head, prior_logits, labels).prior > 0  # the old test
    assert prior.fit(head, prior_logits, labels) == prior.Blend(1.0, 0.0)
    useful = rng.normal(size=(300, 2, 10))
    useful[np.arange(300), :, labels] += 4.0
    assert prior.informative(useful, labels)

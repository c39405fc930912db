"""The NumPy head (mtl/training/headfit.py): its gradients, and Keras' own updates, step for step.

The head trains in NumPy so that a run needs no TensorFlow; these tests hold it
to Keras: the same starting weights and batches give the weights Keras' own
``fit`` gives, for every optimizer mtl offers.
"""

from __future__ import annotations

import numpy as np
import pytest

from mtl.errors import TrainingDiverged
from mtl.training import headfit, loss


def _loss(head: headfit.Head, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    probs, _ = head._forward(x)
    return float((loss.cross_entropy(probs, loss.targets(y, probs.shape[1])) * w).sum() / len(y))


@pytest.mark.parametrize("units", [[], [4], [4, 6]])
def test_gradients_match_finite_differences(units):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 5)).astype(np.float32)
    y = rng.integers(0, 3, 7)
    w = rng.uniform(0.5, 2.0, 7)
    head = headfit.Head.fresh(5, 3, units, 0.0, seed=1)
    for b in head.biases:
        b[:] = rng.normal(size=b.shape)
    probs, inputs = head._forward(x)
    grads = headfit._backward(head, probs, loss.targets(y, 3), w, inputs, None)
    for param, grad in zip(head.weights(), grads, strict=True):
        for idx in np.ndindex(param.shape):
            old = param[idx]
            param[idx] = old + 1e-3
            up = _loss(head, x, y, w)
            param[idx] = old - 1e-3
            down = _loss(head, x, y, w)
            param[idx] = old
            assert (up - down) / 2e-3 == pytest.approx(grad[idx], abs=2e-4)


def test_dropout_changes_training_not_prediction():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 2, 64)
    a = headfit.Head.fresh(8, 2, [16], 0.5, seed=0)
    b = headfit.Head.fresh(8, 2, [16], 0.0, seed=0)
    np.testing.assert_array_equal(a.probs(x), b.probs(x))  # inference ignores dropout
    for head in (a, b):
        headfit.train_epoch(head, headfit.Optimizer("adam", 1e-2), x, y, None, 16, 0, 0)
    assert not np.allclose(a.kernels[0], b.kernels[0])


def test_same_seed_same_head_and_probabilities_sum_to_one():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    y = rng.integers(0, 4, 50)
    heads = []
    for _ in range(2):
        head = headfit.Head.fresh(8, 4, [16], 0.5, seed=9)
        opt = headfit.Optimizer("adam", 1e-3)
        for epoch in range(3):
            headfit.train_epoch(head, opt, x, y, None, 8, seed=9, epoch=epoch)
        heads.append(head)
    for p, q in zip(heads[0].weights(), heads[1].weights(), strict=True):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_allclose(heads[0].probs(x).sum(axis=1), 1.0, atol=1e-9)


def test_sample_weights_count_in_the_loss():
    x = np.eye(2, dtype=np.float32).repeat(10, axis=0)
    y = np.array([0] * 10 + [1] * 10)
    heavy = np.array([5.0] * 10 + [1.0] * 10)
    plain = headfit.Head.fresh(2, 2, [], 0.0, seed=0)
    weighted = plain.copy()
    a = headfit.train_epoch(plain, headfit.Optimizer("sgd", 0.1), x, y, None, 20, 0, 0)
    b = headfit.train_epoch(weighted, headfit.Optimizer("sgd", 0.1), x, y, heavy, 20, 0, 0)
    assert b.loss > a.loss
    assert not np.allclose(plain.kernels[0], weighted.kernels[0])


def test_divergence_is_a_clear_error():
    x = np.full((8, 4), 1e30, np.float32)
    head = headfit.Head.fresh(4, 2, [8], 0.0, seed=0)
    with pytest.raises(TrainingDiverged, match="Lower the learning rate"):
        for epoch in range(3):
            headfit.train_epoch(
                head, headfit.Optimizer("sgd", 1e6), x, np.array([0, 1] * 4), None, 4, 0, epoch
            )


def test_what_trains_the_head(monkeypatch):
    """NumPy for pooled features on one CPU; Keras for everything else, from settings and
    machine alone."""
    from mtl.pipeline import basepass
    from mtl.pipeline.config import TrainConfig

    monkeypatch.setattr(basepass, "gpu_visible", lambda: False)
    monkeypatch.delenv("MTL_CPU_DEVICES", raising=False)
    monkeypatch.delenv("TF_CONFIG", raising=False)

    def engine(photos: int = 100, callbacks: bool = False, resuming: bool = False, **cfg):
        return basepass.head_engine(
            TrainConfig(**cfg), callbacks=callbacks, resuming=resuming, photos=photos
        )

    assert engine() == "numpy"
    assert engine(base_engine="keras") == "numpy"  # the base on Keras, the head still NumPy
    for keras_settings in ({"augment": True}, {"fine_tune_epochs": 2}, {"freeze": 20},
                           {"precision": "mixed"}):  # fmt: skip
        assert engine(**keras_settings) == "keras", keras_settings
    assert engine(callbacks=True) == engine(resuming=True) == "keras"
    assert engine(photos=10**6) == "keras"  # more features than cache_memory_mb holds
    monkeypatch.setenv("MTL_CPU_DEVICES", "2")
    assert engine() == "keras"
    monkeypatch.delenv("MTL_CPU_DEVICES")
    monkeypatch.setattr(basepass, "gpu_visible", lambda: True)
    assert engine() == "keras"


@pytest.mark.parametrize("units", [[], [4], [4, 6]])
def test_side_by_side_logits_are_the_mean_of_the_heads(units):
    """The saved model's ensemble of the validated and refit heads is one Dense stack
    whose logits are the mean of theirs, for linear, one- and two-layer heads."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(9, 5)).astype(np.float32)
    heads = [headfit.Head.fresh(5, 3, units, 0.5, seed=s) for s in (1, 2)]
    for h in heads:
        for b in h.biases:
            b[:] = rng.normal(size=b.shape)
    both = headfit.side_by_side(heads)
    assert both.units == [2 * u for u in units] and both.dropout == 0.5
    np.testing.assert_allclose(
        both.logits(x), np.mean([h.logits(x) for h in heads], axis=0), rtol=1e-5, atol=1e-5
    )


def test_side_by_side_refuses_heads_that_do_not_add_up():
    a = headfit.Head.fresh(5, 3, [4], 0.0, seed=1)
    with pytest.raises(ValueError, match="one layout"):
        headfit.side_by_side([a, headfit.Head.fresh(5, 3, [6], 0.0, seed=2)])
    composed = a.copy()
    composed.skip = True
    with pytest.raises(ValueError, match="one layout"):
        headfit.side_by_side([a, composed])


@pytest.mark.parametrize("units", [[], [16], [16, 8]])
def test_a_head_trained_on_centred_rows_reads_the_rows_themselves(units):
    """train_epoch(centre=c) trains a head on x - c; Head.centred(c) is the same network on x,
    a plain stack of Dense layers (the saved model's)."""
    from mtl.training.headrun import mean_row

    rng = np.random.default_rng(4)
    x = (rng.random((300, 12)) * 6).astype(np.float16)  # pooled ReLU6 features, as cached
    y = rng.integers(0, 3, 300)
    centre = mean_row(x)
    np.testing.assert_allclose(centre, x.astype(np.float64).mean(axis=0), rtol=1e-6)
    head = headfit.Head.fresh(12, 3, units, 0.0, 0)
    opt = headfit.Optimizer("adam", 1e-2)
    with headfit.one_blas_thread():
        for epoch in range(3):
            headfit.train_epoch(head, opt, x, y, None, 32, 0, epoch, centre)
    plain = head.centred(centre)
    assert [k.shape for k in plain.kernels] == [k.shape for k in head.kernels]
    want = head.probs(x.astype(np.float32) - centre)
    np.testing.assert_allclose(plain.probs(x.astype(np.float32)), want, atol=1e-5)
    assert not np.allclose(head.probs(x.astype(np.float32)), want, atol=1e-3)

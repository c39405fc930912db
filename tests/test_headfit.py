"""The NumPy head (mtl/training/headfit.py): its gradients, and Keras' own updates, step for step.

The head trains in NumPy so that a run needs no TensorFlow; these tests hold it
to Keras: the same starting weights and batches give the weights Keras' own
``fit`` gives, for every optimizer mtl offers.
"""

from __future__ import annotations

import numpy as np
import pytest

from mtl.training import headfit, loss


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
def test_one_epoch_matches_keras_fit(optimizer):
    """Same start, same batch order, no dropout: the weights Keras' fit reaches."""
    from mtl.model.classifier import build_head
    from mtl.training import fitting

    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 16)).astype(np.float32)
    y = rng.integers(0, 3, 100)
    ours = headfit.Head.fresh(16, 3, [8], 0.0, seed=5)
    keras_head = build_head(16, 3, [8], dropout=0.0)
    keras_head.set_weights(ours.weights())
    # Keras trains on what the NumPy head trains on: mtl.training.loss, one definition.
    keras_head.compile(optimizer=fitting.optimizer(optimizer, 0.01), loss=loss.KERAS_LOSS)
    order = headfit.epoch_order(len(x), 7, 0)
    targets = loss.targets(y, 3)
    keras_head.fit(x[order], targets[order], batch_size=32, epochs=1, shuffle=False, verbose=0)
    stats = headfit.train_epoch(
        ours, headfit.Optimizer(optimizer, 0.01), x, y, None, 32, seed=7, epoch=0
    )
    for mine, theirs in zip(ours.weights(), keras_head.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, atol=2e-5)
    assert 0.0 < stats.loss < 5.0 and 0.0 <= stats.accuracy <= 1.0

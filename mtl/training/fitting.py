"""The Keras pieces of training on cached features; importing this module imports Keras.

- :class:`CachedBatches`: training batches read from the feature cache, in an
  order drawn from (seed, epoch) alone, so a resumed run sees exactly the
  batches an uninterrupted one does;
- :func:`one_batch`: a dataset of one dummy batch (tracing the train step early);
- :class:`EpochEnd`: the per-epoch callback that hands each epoch to the
  session's one end of an epoch (:meth:`mtl.training.session.Session.end_epoch`);
- :func:`predict`: probabilities for cached features, in fixed-size batches;
- :func:`optimizer`: the optimizer named in the config.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mtl import runtime
from mtl.data import features
from mtl.training.results import view_mean
from mtl.training.tracking import EpochLog, epoch_order

runtime.keras()  # quiet, configured import first
import keras  # noqa: E402

PREDICT_BATCH = 64  # every predict call gets this many rows (padded): one traced function


def _rows(x: np.ndarray, views: int) -> np.ndarray:
    """Cached entries as ``(photos, views, ...)``: entries of several views carry that
    axis already; single-view entries (features, cut tensors, pixels) get it added."""
    return x if views > 1 else x[:, None]


class CachedBatches(keras.utils.PyDataset):
    """Batches of cached features for ``fit(initial_epoch=first_epoch)``, with each
    photo's row of ``targets`` (:func:`mtl.training.loss.targets`) as what it learns.

    Every view of every photo is a training row (an entry of several views is
    several rows). The features are stacked once when they fit in memory, else
    read per batch.
    """

    def __init__(
        self,
        cache: features.FeatureCache,
        keys: Sequence[str],
        targets: np.ndarray,
        sample_weights: np.ndarray | None,
        batch_size: int,
        seed: int,
        first_epoch: int,
        in_memory: bool,
        views: int = 1,
    ) -> None:
        super().__init__()
        self.cache, self.keys, self.targets = cache, list(keys), targets
        self.sample_weights, self.batch_size, self.seed = sample_weights, batch_size, seed
        self.views = views
        self.n = len(self.keys) * views
        # As cached (float16 for pooled features), each batch cast to float32: a float32
        # copy of every feature would double what a large run holds.
        self.stacked = _rows(features.stack(cache, self.keys), views) if in_memory else None
        self.epoch = first_epoch
        self.order = epoch_order(self.n, seed, first_epoch)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __getitem__(self, i: int) -> Any:
        rows = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        photo, view = rows // self.views, rows % self.views
        if self.stacked is not None:
            x = self.stacked[photo, view].astype("float32")
        else:
            entries = _rows(features.stack(self.cache, [self.keys[j] for j in photo]), self.views)
            x = entries[np.arange(len(rows)), view].astype("float32")
        y = self.targets[photo]
        if self.sample_weights is not None:
            return x, y, self.sample_weights[photo]
        return x, y

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = epoch_order(self.n, self.seed, self.epoch)


class _OneBatch(keras.utils.PyDataset):
    def __init__(self, batch: tuple[np.ndarray, ...]) -> None:
        super().__init__()
        self.batch = batch

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> tuple[np.ndarray, ...]:
        return self.batch


def one_batch(batch: tuple[np.ndarray, ...]) -> Any:
    """A dataset of one batch, with the element types of the real training data."""
    return _OneBatch(batch)


def predict(
    top: Any,
    cache: features.FeatureCache,
    keys: Sequence[str],
    direct: bool,
    views: int = 1,
    batch: int = PREDICT_BATCH,
) -> np.ndarray:
    """Probabilities of the trained part for cached entries, padded to one batch shape;
    an entry of several views gets the average of their probabilities, as the saved
    model computes it."""
    out = []
    for start in range(0, len(keys), batch):
        entries = features.stack(cache, keys[start : start + batch]).astype("float32")
        if views > 1:  # (photos, views, features)
            photos, views = entries.shape[:2]
            probs = _predict_rows(top, entries.reshape(photos * views, -1), direct, batch)
            out.append(view_mean(probs, photos))
        else:
            out.append(_predict_rows(top, entries, direct, batch))
    return np.concatenate(out) if out else np.zeros((0, 0))


def _predict_rows(top: Any, x: np.ndarray, direct: bool, batch: int) -> np.ndarray:
    out = []
    for start in range(0, len(x), batch):
        rows = x[start : start + batch]
        n = len(rows)
        rows = features.pad_rows(rows, batch)
        y = top(rows, training=False) if direct else top.predict_on_batch(rows)
        out.append(np.asarray(runtime.as_numpy(y), dtype=np.float64)[:n])
    return np.concatenate(out)


def optimizer(name: str, lr: float) -> Any:
    return {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate, momentum=0.9),
        "rmsprop": keras.optimizers.RMSprop,
    }[name](learning_rate=lr)


class EpochEnd(keras.callbacks.Callback):
    """Hands each epoch's loss, accuracy, learning rate and time to ``end`` (1-based
    epoch: :meth:`mtl.training.session.Session.end_epoch`, which validates, keeps the
    best weights, records, reports and checkpoints), and stops the fit when it says so.

    Validation runs there, with the predict function the final metrics use: Keras'
    own (``validation_data``) builds a tf.data iterator every epoch (0.1 s on 2 cores).
    Its scores go into the epoch's ``logs`` as ``val_loss`` and ``val_accuracy``, as
    Keras' own ``fit`` names them: the callbacks after this one (a user's
    ``EarlyStopping(monitor="val_loss")``, ``CSVLogger``, TensorBoard) see them.
    """

    def __init__(
        self, end: Callable[[int, float, float, float, float], tuple[EpochLog, bool]]
    ) -> None:
        super().__init__()
        self.end = end
        self.t0 = 0.0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        logs = logs if logs is not None else {}
        lr = float(runtime.as_numpy(self.model.optimizer.learning_rate))
        log, stop = self.end(
            epoch + 1,
            float(logs.get("loss", float("nan"))),
            float(logs.get("accuracy", float("nan"))),
            lr,
            time.perf_counter() - self.t0,
        )
        if not math.isnan(log.val_loss):  # Keras' fit without validation data has none
            logs["val_loss"] = log.val_loss
            logs["val_accuracy"] = log.val_accuracy
        if stop:
            self.model.stop_training = True

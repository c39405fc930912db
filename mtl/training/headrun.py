"""The NumPy engine: LiteRT features in, a head trained in NumPy, ``model.keras`` out.

:class:`NumpyEngine` supplies the steps of a run (:class:`~mtl.training.session.Engine`)
for pooled features: the base pass on LiteRT, each epoch in
:mod:`mtl.training.headfit`, predict, and the model written from a kept skeleton;
the rest of the run (the end of each epoch, the prior, the refit's ensemble, the
run folder) is :class:`~mtl.training.session.Session`'s, as for Keras.
:func:`mtl.pipeline.basepass.head_engine` chooses it from the settings and the
machine. Keras is imported only when the machine lacks something made once: the
LiteRT base (the first run on a machine converts it) or the model skeleton of
this architecture (:mod:`mtl.model.skeleton`; the first run with these settings
(any class count) writes the model with Keras and keeps it). Otherwise a small
run is over in the time TensorFlow takes to import.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtl.data import features
from mtl.model import skeleton
from mtl.model.modelio import with_info
from mtl.training import headfit
from mtl.training.results import FIRST_PASS, sample_weights, view_mean
from mtl.training.session import Session
from mtl.training.tracking import EpochLog

if TYPE_CHECKING:
    from mtl.model.classifier import Parts


class NumpyEngine:
    """The NumPy steps of a run on pooled features (whole base frozen, one CPU)."""

    name = "numpy"

    def __init__(self, session: Session) -> None:
        self.s = session
        self.current: headfit.Head | None = None  # the head trained, then the one saved
        self.parts: Parts | None = None  # the Keras model, built only if needed (keras_parts)
        self.stopping = threading.Event()  # set when the run fails: a refit thread stops
        self.early_refit: Future[tuple[headfit.Head, list[EpochLog]]] | None = None
        self._rows: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def key_of(self) -> dict[Path, str]:
        return self.s.key_of

    # --- the engine's steps -------------------------------------------------------------

    def first_pass(self) -> tuple[features.Features, str]:
        # What writing the run folder imports (h5py, the plots: 0.05 s of pure Python), loaded
        # while the base pass runs: decoding and LiteRT release the GIL.
        threading.Thread(target=_preload_writers, daemon=True, name="mtl-preload").start()
        t0 = time.perf_counter()
        feats = self.pooled_features()
        self.s.seconds["features"] = time.perf_counter() - t0
        base = self.s.base
        by = f"LiteRT, {base.precision(None)}" if base.engine == "litert" else "Keras"
        return (
            feats,
            f"pooled base features (whole base frozen, computed once by {by}); head on NumPy",
        )

    def training(self) -> AbstractContextManager[Any]:
        return headfit.one_blas_thread()

    def fit(self) -> None:
        """The validated fit. With a fixed number of epochs (``--patience 0``) the refit's
        length is known up front, so it trains in a second thread beside the fit (NumPy
        releases the GIL in its products): on two cores the pair takes about the time of
        one. Its epochs are reported after the fit's."""
        s, c = self.s, self.s.cfg
        t0 = time.perf_counter()
        # Every feature once, in one float16 matrix: the cache's copies go, and each
        # subset's rows are slices of it (bounded memory: :meth:`Session.hold`).
        s.hold(("train", "val"))
        if s.refits and not c.patience:
            pool = ThreadPoolExecutor(1, thread_name_prefix="mtl-refit")
            self.early_refit = pool.submit(self.fit_head, "refit", c.epochs, ("train", "val"))
            pool.shutdown(wait=False)
        try:
            self.current = self.fit_head("train", c.epochs, ("train",))[0]
        except BaseException:  # Ctrl-C, divergence: the refit's thread stops at its next epoch
            self.stopping.set()
            raise
        s.seconds["fit"] = time.perf_counter() - t0

    def probs(self, subsets: tuple[str, ...]) -> np.ndarray:
        assert self.current is not None
        return self.head_probs(self.current, self.rows(subsets)[0])

    def weights(self) -> list[np.ndarray]:
        assert self.current is not None
        return self.current.copy().weights()

    def restore_best(self) -> None:
        assert self.s.best_weights is not None
        self.current = head_from(self.s.best_weights, self.s.cfg.dropout)

    def state(self) -> None:
        return None  # a NumPy head trains in seconds: --resume trains it again

    def head(self) -> headfit.Head:
        assert self.current is not None
        return self.current

    def refit(self, epochs: int) -> tuple[headfit.Head, list[EpochLog]]:
        if self.early_refit is not None:
            return self.early_refit.result()
        return self.fit_head("refit", epochs, ("train", "val"))

    def use_head(self, head: headfit.Head) -> None:
        self.current = head

    @property
    def model_writer(self) -> str:
        """What :meth:`save` will write the model with."""
        return "skeleton" if skeleton.path(self.arch()).is_file() else "keras"

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        """From the skeleton of this architecture when one is kept, else with Keras (and
        then keep it as the skeleton for the next run).

        ``mtl.json`` also records the frozen base (its LiteRT spec) and where the head's
        weights are in the file, so `mtl predict` can run the model without Keras
        (:mod:`mtl.inference.litekeras`)."""
        head, arch = self.head(), self.arch()
        weights = head.weights()
        views = len(self.s.cfg.run_views)
        meta = with_info(meta, frozen_base=self.s.base.spec(None))
        if skeleton.write(arch, path, weights, meta, views):
            return
        from mtl.model.modelio import save_model
        from mtl.training.kerashead import with_head

        save_model(with_head(self.s, self.keras_parts(), head).model, path, meta)
        if skeleton.store(path, weights, arch):
            # Written again from the skeleton just kept: the same network and weights,
            # now with the head's places in mtl.json.
            skeleton.write(arch, path, weights, meta, views)

    # --- NumPy's pieces -----------------------------------------------------------------

    def arch(self) -> str:
        c, head = self.s.cfg, self.head()
        return skeleton.arch(
            self.s.base.spec(None).text(), c.run_views, head.units, c.dropout, skip=head.skip
        )

    def keras_parts(self) -> Parts:
        """The Keras model (imports TensorFlow): to convert the base, or to write the
        model when no skeleton is kept for it."""
        if self.parts is None:
            from mtl.training.kerashead import build

            self.parts = build(self.s, None, weights=self.s.wfile)
        return self.parts

    def pooled_features(self) -> features.Features:
        s = self.s
        report = s.hooks.on_progress
        on_progress = (lambda d, t: report(FIRST_PASS, d, t)) if report else None
        paths = [it.path for it in s.ds.items]
        result = s.base.fill_pooled(paths, s.cache, self.keras_parts, None, on_progress)
        s.key_of = dict(zip(result.paths, result.keys, strict=True))
        return result

    def rows(self, subsets: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The features (photos, views, dim) and labels of ``subsets``, stacked once."""
        if subsets not in self._rows:
            self._rows[subsets] = self.s.rows(subsets)
        return self._rows[subsets]

    @staticmethod
    def head_probs(head: headfit.Head, x: np.ndarray) -> np.ndarray:
        photos, views, dim = x.shape
        return view_mean(head.probs(x.reshape(photos * views, dim)), photos)

    def fit_head(
        self, phase: str, epochs: int, subsets: tuple[str, ...]
    ) -> tuple[headfit.Head, list[EpochLog]]:
        """A fresh head trained for ``epochs`` on ``subsets`` (every view a row), and the
        logs of its epochs; the validated fit's ("train") are reported as they end, the
        refit's (in its own thread) are left to the session."""
        s, c = self.s, self.s.cfg
        x, y = self.rows(subsets)
        photos, views, dim = x.shape
        per_photo = sample_weights(c.class_weight, s.ds, subsets, y)
        weights = None if per_photo is None else np.repeat(per_photo, views)
        head = headfit.Head.fresh(dim, len(s.ds.classes), c.head, c.dropout, c.seed)
        opt = headfit.Optimizer(c.optimizer, c.learning_rate)
        rows, row_labels = x.reshape(photos * views, dim), np.repeat(y, views)
        centre = mean_row(rows)
        live = phase != "refit"
        if live:
            self.current = head.centred(centre)  # what the session validates
        logs: list[EpochLog] = []
        for epoch in range(epochs):
            if self.stopping.is_set():
                raise features.Cancelled
            t0 = time.perf_counter()
            stats = headfit.train_epoch(
                head, opt, rows, row_labels, weights, c.batch_size, c.seed, epoch, centre
            )
            if live:
                self.current = head.centred(centre)
            log, stop = s.end_epoch(
                phase,
                epoch + 1,
                epochs,
                stats.loss,
                stats.accuracy,
                c.learning_rate,
                time.perf_counter() - t0,
                live=live,
            )
            logs.append(log)
            if stop:
                break
        return head.centred(centre), [] if live else logs


def mean_row(rows: np.ndarray) -> np.ndarray:
    """The rows' mean (float32), summed in float64 a chunk at a time: no float32 copy of
    every feature. The head trains on features minus it (:meth:`Head.centred`): on
    ReLU-pooled features, all positive, centring lets Adam's first steps move the
    first layer's units apart instead of all together (bench/accuracy.results.md)."""
    total = np.zeros(rows.shape[1], np.float64)
    for start in range(0, len(rows), 8192):
        total += rows[start : start + 8192].sum(axis=0, dtype=np.float64)
    return (total / max(1, len(rows))).astype(np.float32)


def head_from(weights: list[np.ndarray], dropout: float) -> headfit.Head:
    """A head from its weights in Keras' ``get_weights()`` order."""
    return headfit.Head(list(weights[0::2]), list(weights[1::2]), dropout)


def _preload_writers() -> None:
    """Import h5py (the model file) and the plots' module ahead of their use."""
    try:
        import h5py  # noqa: F401

        from mtl.report import plots  # noqa: F401
    except ImportError:  # reported where they are needed
        pass

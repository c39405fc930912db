"""A run whose head trains in NumPy: LiteRT features in, ``model.keras`` out, no TensorFlow.

:class:`NumpyTrainer` is :class:`~mtl.training.trainer.Trainer` with the same
steps and outputs (history, early stopping, refit, metrics, run folder), where
the head trains in :mod:`mtl.training.headfit` on the pooled features that
LiteRT computes. :func:`mtl.pipeline.basepass.head_engine` chooses it from the
settings and the machine. Keras is imported only when the machine lacks
something made once: the LiteRT base (the first run on a machine converts it)
or the model skeleton of this architecture (:mod:`mtl.model.skeleton`; the
first run with these settings (any class count) writes the model with Keras and
keeps it). Otherwise a small run is over in the time TensorFlow takes to import.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mtl.data import dataset, features
from mtl.model import skeleton
from mtl.model.modelio import with_info
from mtl.training import headfit, prior
from mtl.training.tracking import EarlyStopping, EpochLog
from mtl.training.trainer import FIRST_PASS, Trainer, TrainResult, _val_scores


class NumpyTrainer(Trainer):
    """The run of :class:`Trainer` for pooled features with the head in NumPy."""

    best: headfit.Head | None = None  # the best epoch's head (kept with --patience)
    head_engine = "numpy"
    parts: Any = None  # the Keras model, built only if something needs it (keras_parts)
    stopping: threading.Event  # set when the run fails: a refit in its thread stops

    def run(self, seconds: dict[str, float], t_start: float) -> TrainResult:
        c = self.cfg
        self.seconds = seconds
        # What writing the run folder imports (0.5 s of pure Python), loaded while the
        # base pass runs: decoding and LiteRT release the GIL.
        threading.Thread(target=_preload_writers, daemon=True, name="mtl-preload").start()
        t0 = time.perf_counter()
        feats = self.pooled_features()
        self.seconds["features"] = time.perf_counter() - t0
        warnings = self.check_data(feats)
        by = "LiteRT" if self.base.engine == "litert" else "Keras"
        self.announce(
            f"pooled base features (whole base frozen, computed once by {by}); head on NumPy",
            warnings,
        )
        with headfit.one_blas_thread():
            head, kept, notes, train_metrics, val_metrics = self.fit_and_refit()
        arch = skeleton.arch(
            self.base.spec(None).text(), c.run_views, head.units, c.dropout, skip=head.skip
        )
        self.model_writer = "skeleton" if skeleton.path(arch).is_file() else "keras"
        return self.write(
            lambda path, meta: self.save(head, arch, path, meta),
            kept, notes, train_metrics, val_metrics, warnings, t_start,
        )  # fmt: skip

    def fit_and_refit(
        self,
    ) -> tuple[headfit.Head, int, list[str], dict[str, Any], dict[str, Any] | None]:
        """The validated fit, then the refit on every photo. With a fixed number of epochs
        (``--patience 0``) the refit's length is known up front, so it trains in a second
        thread beside the fit (NumPy releases the GIL in its products): on two cores the
        pair takes about the time of one. Its epochs are reported after the fit's."""
        c = self.cfg
        self.stopping = threading.Event()
        has_val = bool(self.ds.subset("val"))
        refit = c.refit and has_val
        t0 = time.perf_counter()
        early_refit: Future[tuple[headfit.Head, list[EpochLog]]] | None = None
        if refit and not c.patience:
            pool = ThreadPoolExecutor(1, thread_name_prefix="mtl-refit")
            early_refit = pool.submit(self.fit_head, "refit", c.epochs, ("train", "val"))
            pool.shutdown(wait=False)
        try:
            head, _ = self.fit_head("train", c.epochs, ("train",), validate=True, live=True)
        except BaseException:  # Ctrl-C, divergence: the refit's thread stops at its next epoch
            self.stopping.set()
            raise
        self.seconds["fit"] = time.perf_counter() - t0
        kept, notes = self.keep(None)
        if self.best is not None and c.patience and has_val:
            head = self.best
        validated = head
        blend = self.fit_prior(head, notes) if has_val else None
        if blend is not None:
            head = prior.compose(head, self.prior_layer(("train",)), blend)
        train_metrics = self.evaluate(head, ("train",))
        val_metrics = self.evaluate(head, ("val",)) if has_val else None
        if refit:
            t0 = time.perf_counter()
            if early_refit is not None:
                head, logs = early_refit.result()
            else:
                head, logs = self.fit_head("refit", kept, ("train", "val"))
            # The saved model averages the two heads' logits: a free ensemble (the validated
            # head is trained anyway) that steadies the result across seeds.
            head = headfit.side_by_side([validated, head])
            if blend is not None:  # the same blend, the prior's class means from every photo
                head = prior.compose(head, self.prior_layer(("train", "val")), blend)
            for log in logs:
                self.history.append(log)
                self.report_epoch(log)
            train_metrics = self.evaluate(head, ("train", "val"))
            self.seconds["refit"] = time.perf_counter() - t0
            notes.append(self.refit_note(kept))
        return head, kept, notes, train_metrics, val_metrics

    def keras_parts(self) -> Any:
        """The Keras model (imports TensorFlow): to convert the base, or to write the
        model when no skeleton is kept for it."""
        if self.parts is None:
            self.parts = self.build(None, weights=self.wfile)
        return self.parts

    def pooled_features(self) -> features.Features:
        report = self.hooks.on_progress
        on_progress = (lambda d, t: report(FIRST_PASS, d, t)) if report else None
        paths = [it.path for it in self.ds.items]
        result = self.base.fill_pooled(paths, self.cache, self.keras_parts, None, on_progress)
        self.key_of = dict(zip(result.paths, result.keys, strict=True))
        return result

    # --- the head -------------------------------------------------------------------------

    def fit_head(
        self,
        phase: str,
        epochs: int,
        subsets: tuple[str, ...],
        *,
        validate: bool = False,
        live: bool = False,
    ) -> tuple[headfit.Head, list[EpochLog]]:
        """A fresh head trained for ``epochs`` on ``subsets`` (every view a row), and its
        epochs' logs (``live``: also in the history and reported as they end)."""
        c = self.cfg
        x, y = self.rows(subsets)
        photos, views, dim = x.shape
        weights = None
        if c.class_weight == "auto":
            counts = np.sum([self.ds.counts(s) for s in subsets], axis=0)
            cw = dataset.class_weights([int(n) for n in counts])
            weights = np.repeat(np.array([cw[label] for label in y], np.float64), views)
        head = headfit.Head.fresh(dim, len(self.ds.classes), c.head, c.dropout, c.seed)
        opt = headfit.Optimizer(c.optimizer, c.learning_rate)
        rows, row_labels = x.reshape(photos * views, dim), np.repeat(y, views)
        x_val, y_val = self.rows(("val",)) if validate else (None, None)
        early = self.early if validate else EarlyStopping(0)
        logs: list[EpochLog] = []
        for epoch in range(epochs):
            if self.stopping.is_set():
                raise features.Cancelled
            t0 = time.perf_counter()
            stats = headfit.train_epoch(
                head, opt, rows, row_labels, weights, c.batch_size, c.seed, epoch
            )
            val_loss = val_accuracy = float("nan")
            if x_val is not None and y_val is not None and len(y_val):
                val_loss, val_accuracy = _val_scores(self.probs(head, x_val), y_val)
            improved = early.update(epoch + 1, val_loss) if validate else False
            if validate and improved and early.patience:
                self.best = head.copy()
                self.best_weights = self.best.weights()  # what Trainer.keep looks for
            log = EpochLog(
                phase=phase,
                epoch=epoch + 1,
                epochs=epochs if phase == "refit" else self.total_epochs,
                loss=stats.loss,
                accuracy=stats.accuracy,
                val_loss=val_loss,
                val_accuracy=val_accuracy,
                learning_rate=c.learning_rate,
                seconds=time.perf_counter() - t0,
                best=improved,
            )
            logs.append(log)
            if live:
                self.history.append(log)
                self.report_epoch(log)
            if early.should_stop(epoch + 1, epochs):
                break
        return head, logs

    def load_best(self, parts: Any) -> None:
        pass  # run() takes self.best itself

    # --- the model file -------------------------------------------------------------------

    def save(self, head: headfit.Head, arch: str, path: Path, meta: dict[str, Any]) -> None:
        """From the skeleton of this architecture when one is kept, else with Keras (and
        then keep it as the skeleton for the next run).

        ``mtl.json`` also records the frozen base (its LiteRT spec) and where the head's
        weights are in the file, so `mtl predict` can run the model without Keras
        (:mod:`mtl.inference.litekeras`)."""
        weights = head.weights()
        views = len(self.cfg.run_views)
        meta = with_info(meta, frozen_base=self.base.spec(None))
        if skeleton.write(arch, path, weights, meta, views):
            self.model_writer = "skeleton"
            return
        from mtl.model.modelio import save_model

        parts = self.with_head(self.keras_parts(), head)  # the prior's skip, if any, too
        save_model(parts.model, path, meta)
        self.model_writer = "keras"
        if skeleton.store(path, weights, arch):
            # Written again from the skeleton just kept: the same network and weights,
            # now with the head's places in mtl.json.
            skeleton.write(arch, path, weights, meta, views)


def _preload_writers() -> None:
    """Import matplotlib (the plots), h5py (the model file) and SciPy's optimiser (the
    ImageNet prior's fit) ahead of their use."""
    try:
        import h5py  # noqa: F401
        import scipy.optimize  # noqa: F401
        import scipy.special  # noqa: F401

        from mtl.report import plots

        plots._pyplot()
    except ImportError:  # reported where they are needed
        pass

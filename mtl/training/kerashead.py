"""The Keras engine: the head (or the top of the base) trained with ``keras.Model.fit``.

Used where the NumPy engine cannot run (:func:`mtl.pipeline.basepass.head_engine`):
a GPU, several devices, mixed precision, augmentation, fine-tuning, a cut inside
the base, Keras callbacks, a resumed Keras checkpoint. Each epoch trains only the
part after the frozen base (:func:`mtl.model.classifier.build_parts`), whose layers
are shared with the saved model, so what is evaluated and saved is exactly what was
trained. Every epoch ends in :meth:`mtl.training.session.Session.end_epoch`
(through :class:`mtl.training.fitting.EpochEnd`); everything after the fit is
:meth:`~mtl.training.session.Session.post_fit`'s.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtl import runtime
from mtl.data import features
from mtl.errors import UsageError
from mtl.model import modelio
from mtl.pipeline.basepass import base_batch
from mtl.training import headfit
from mtl.training import loss as target_loss
from mtl.training.priorsteps import head_of
from mtl.training.results import FIRST_PASS, sample_weights
from mtl.training.session import Session
from mtl.training.tracking import EpochLog

if TYPE_CHECKING:
    from mtl.model.classifier import Parts


class KerasEngine:
    """The Keras steps of a run (:class:`~mtl.training.session.Engine`)."""

    name = "keras"
    model_writer = "keras"

    def __init__(self, session: Session) -> None:
        self.s = session
        self.direct = session.devices.strategy is not None
        self.compiled: list[Any] = []  # the tops compiled for their phase
        self._parts: Parts | None = None

    @property
    def parts(self) -> Parts:
        """The model being trained (after :meth:`first_pass`)."""
        assert self._parts is not None
        return self._parts

    @property
    def key_of(self) -> dict[Path, str]:
        return self.s.key_of

    # --- the engine's steps -------------------------------------------------------------

    def first_pass(self) -> tuple[features.Features, str]:
        s, c = self.s, self.s.cfg
        s.base.choose(s.devices)
        t0 = time.perf_counter()
        self._parts = parts = self.build(c.freeze, weights=s.wfile)
        s.seconds["build"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = None
        if s.base.engine == "litert" and s.ckpt is None:
            warm = lambda: self.warm_up(parts, c.learning_rate)  # noqa: E731
        feats = self.base_pass(parts, c.freeze, FIRST_PASS, while_waiting=warm)
        s.seconds["features"] = time.perf_counter() - t0
        return feats, _describe_cache(parts, len(parts.backbone.layers), s.base.engine)

    def training(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def fit(self) -> None:
        s, c = self.s, self.s.cfg
        ckpt = s.ckpt
        t0 = time.perf_counter()
        if ckpt is not None and ckpt.phase == "fine_tune":
            s.phase = "fine_tune"
        else:
            start = ckpt.epochs_done if ckpt is not None else 0
            if start < c.epochs:
                self.fit_phase(c.learning_rate, start, c.epochs)
            else:
                self.restore()
        s.seconds["fit"] = time.perf_counter() - t0
        if c.fine_tune_epochs:
            self.fine_tune()

    def probs(self, subsets: tuple[str, ...]) -> np.ndarray:
        from mtl.training import fitting

        keys = [k for name in subsets for k in self.s.keys(name)]
        parts = self.parts
        return fitting.predict(parts.top, self.s.cache, keys, self.direct, self.n_views(parts))

    def weights(self) -> list[np.ndarray]:
        # Only the part being trained changes: its weights are all the best epoch needs
        # (the whole model's are ~100x more to copy).
        return list(self.parts.top.get_weights())

    def restore_best(self) -> None:
        self.parts.top.set_weights(self.s.best_weights)

    def state(self) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        top = self.parts.top
        store: dict[str, Any] = {}
        top.optimizer.save_own_variables(store)
        variables = [np.asarray(runtime.as_numpy(v)) for v in top.variables]
        return variables, {k: np.asarray(runtime.as_numpy(v)) for k, v in store.items()}

    def head(self) -> headfit.Head:
        return head_of(self.parts.head.get_weights(), self.s.cfg.dropout)

    def refit(self, epochs: int) -> tuple[headfit.Head, list[EpochLog]]:
        """A fresh head trained the same way on every photo, validation photos included,
        for the epochs the validated run kept: the saved model learns from all the data,
        and the validation scores stay honest (they come from the run that did not see
        them). Its epochs are reported as they end."""
        from mtl.training import fitting

        s, c = self.s, self.s.cfg
        runtime.set_seed(c.seed)
        fresh = self.build(None, weights=None, backbone=self.parts.backbone)
        self.compile(fresh, c.learning_rate, 0)
        subsets = ("train", "val")
        keys = [k for name in subsets for k in s.keys(name)]
        labels = s.subset_labels(subsets)
        batches = self.batches(fresh, subsets, keys, labels, 0, in_memory=True)
        epoch_end = fitting.EpochEnd(self.epoch_end("refit", epochs))
        # Not the caller's callbacks: they follow the validated fit, as Keras' own fit
        # reports it (val_loss included); the refit has nothing to validate on.
        fresh.top.fit(batches, epochs=epochs, callbacks=[epoch_end], verbose=0, shuffle=False)
        return head_of(fresh.head.get_weights(), c.dropout), []

    def use_head(self, head: headfit.Head) -> None:
        self._parts = with_head(self.s, self.parts, head)

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        modelio.save_model(self.parts.model, path, meta)

    # --- Keras' pieces ------------------------------------------------------------------

    def build(self, freeze: int | None, **reuse: Any) -> Parts:
        return build(self.s, freeze, **reuse)

    def base_pass(
        self,
        parts: Parts,
        freeze: int | None,
        stage: str,
        while_waiting: Callable[[], None] | None = None,
    ) -> features.Features:
        """The frozen part's output for every image, into the cache (once per image)."""
        s = self.s
        report = s.hooks.on_progress
        result = s.base.fill(
            parts,
            freeze,
            [it.path for it in s.ds.items],
            s.cache,
            direct=self.direct,
            batch_size=base_batch(s.cfg),
            on_progress=(lambda d, t: report(stage, d, t)) if report else None,
            while_waiting=while_waiting,
        )
        s.key_of = dict(zip(result.paths, result.keys, strict=True))
        return result

    def compile(self, parts: Parts, lr: float, first: int) -> None:
        """Compile the trained part; a resumed run gets its variables and optimizer back."""
        from mtl.training import fitting

        with self.s.devices.scope():
            parts.top.compile(
                optimizer=fitting.optimizer(self.s.cfg.optimizer, lr),
                loss=target_loss.KERAS_LOSS,  # against target_loss.targets, as NumPy trains
                metrics=["accuracy"],
            )
            saved_optimizer = self.restore(parts)
            if saved_optimizer is not None and first > 0:
                parts.top.optimizer.build(parts.top.trainable_variables)
                parts.top.optimizer.load_own_variables(saved_optimizer)
        runtime.prepare_fit(parts.top, self.s.devices)
        self.compiled.append(parts.top)

    def warm_up(self, parts: Parts, lr: float) -> None:
        """Trace the training step and the predict function on a dummy batch while the
        early pass finishes in its thread (LiteRT runs without the GIL), then put every
        variable back, so the run is exactly what it would have been, only sooner."""
        from mtl.training import fitting

        self.compile(parts, lr, 0)
        top = parts.top
        if not top.optimizer.built:
            top.optimizer.build(top.trainable_variables)
        variables = [*top.variables, *top.optimizer.variables]
        saved = [np.array(runtime.as_numpy(v)) for v in variables]
        shape = tuple(int(d) for d in top.input_shape[1:])
        dummy = target_loss.targets(np.zeros(2, np.int64), len(self.s.ds.classes))
        batch: tuple[np.ndarray, ...] = (np.zeros((2, *shape), "float32"), dummy)
        if self.s.cfg.class_weight == "auto":
            batch = (*batch, np.ones(2, np.float32))
        top.fit(fitting.one_batch(batch), epochs=1, verbose=0)
        top.predict_on_batch(np.zeros((fitting.PREDICT_BATCH, *shape), "float32"))
        for v, value in zip(variables, saved, strict=True):
            v.assign(value)

    def restore(self, parts: Parts | None = None) -> dict[str, np.ndarray] | None:
        """Put the checkpoint's variables into ``parts``; its optimizer state is returned."""
        parts = parts if parts is not None else self.parts
        ckpt = self.s.ckpt
        if ckpt is None or ckpt.phase != self.s.phase:
            return None
        variables = parts.top.variables  # what training changes; the frozen rest is rebuilt
        if [tuple(v.shape) for v in variables] != [a.shape for a in ckpt.variables]:
            raise UsageError(f"the checkpoint in {self.s.run_dir} does not fit this model; retrain")
        for v, a in zip(variables, ckpt.variables, strict=True):
            v.assign(a)
        return ckpt.optimizer

    def epoch_end(self, phase: str, last: int) -> Callable[..., tuple[EpochLog, bool]]:
        """What :class:`~mtl.training.fitting.EpochEnd` calls with Keras' epoch: the
        session's end of the epoch (its log, and whether to stop)."""

        def end(
            epoch: int, loss: float, accuracy: float, lr: float, seconds: float
        ) -> tuple[EpochLog, bool]:
            return self.s.end_epoch(phase, epoch, last, loss, accuracy, lr, seconds)

        return end

    def fit_phase(self, lr: float, first: int, last: int) -> None:
        """Epochs ``first+1 .. last`` of the current phase (fewer if early stopping ends it)."""
        from mtl.training import fitting

        s, c, parts = self.s, self.s.cfg, self.parts
        if s.early.stopped_early:  # a resumed run that had already stopped
            return
        keys_t = s.keys("train")
        y_train = s.labels("train")
        per_entry = features.stack(s.cache, keys_t[:1]).astype("float32").nbytes
        in_memory = (
            parts.extractor is not None and per_entry * len(s.key_of) <= c.cache_memory_mb << 20
        )
        if not any(top is parts.top for top in self.compiled):
            self.compile(parts, lr, first)
        batches = self.batches(parts, ("train",), keys_t, y_train, first, in_memory)
        epoch_end = fitting.EpochEnd(self.epoch_end(s.phase, last))
        parts.top.fit(
            batches,
            epochs=last,
            initial_epoch=first,
            callbacks=[epoch_end, *s.hooks.callbacks],
            verbose=0,
            # The batches' order is CachedBatches', from (seed, epoch): Keras' own shuffle
            # of a PyDataset's batches draws from Python's global random, which a resumed
            # process starts afresh (so a resumed run saw other batches in another order).
            shuffle=False,
        )

    def fine_tune(self) -> None:
        """The second phase: unfreeze the top ``fine_tune_layers`` of the base, BatchNorm
        kept frozen, starting from the best head of the first phase."""
        s, c, parts = self.s, self.s.cfg, self.parts
        n_base = len(parts.backbone.layers)
        resumed_here = s.ckpt is not None and s.ckpt.phase == "fine_tune"
        if not resumed_here:  # a new phase: its own patience, also after an early stop
            s.early.wait, s.early.stopped_early = 0, False
        if s.best_weights is not None and not resumed_here:
            parts.top.set_weights(s.best_weights)  # start from the best head
        current = n_base if c.freeze is None else min(c.freeze, n_base)
        n = min(current, max(0, n_base - c.fine_tune_layers))
        t0 = time.perf_counter()
        s.phase = "fine_tune"
        self._parts = parts = self.build(
            n,
            weights=None,
            backbone=parts.backbone,
            head=parts.head,
            fine_tune=True,
            views=["image"],
        )
        if s.best_weights is not None and not resumed_here:
            # The best so far, in the layout of the larger part that fine-tuning trains.
            s.best_weights = parts.top.get_weights()
        self.base_pass(parts, n, "computing fine-tuning features")
        s.seconds["fine_tune_features"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.fit_phase(c.fine_tune_lr, len(s.history), s.total_epochs)
        s.seconds["fine_tune_fit"] = time.perf_counter() - t0

    def batches(
        self,
        parts: Parts,
        subsets: tuple[str, ...],
        keys: list[str],
        labels: np.ndarray,
        first: int,
        in_memory: bool,
    ) -> Any:
        """Keras' batches of ``subsets``' cached rows from epoch ``first`` on: the shared
        training target (:mod:`mtl.training.loss`) and class weights, a (seed, epoch) order."""
        from mtl.training import fitting

        s, c = self.s, self.s.cfg
        weights = sample_weights(c.class_weight, s.ds, subsets, labels)
        return fitting.CachedBatches(
            s.cache,
            keys,
            target_loss.targets(labels, len(s.ds.classes)),
            None if weights is None else weights.astype(np.float32),
            c.batch_size,
            c.seed,
            first,
            in_memory,
            self.n_views(parts),
        )

    def n_views(self, parts: Parts) -> int:
        """Views per cached entry: several only for pooled features (the extractor's rows)."""
        return len(self.s.views) if parts.cut < 0 else 1


def build(s: Session, freeze: int | None, **reuse: Any) -> Parts:
    """The model for training, cut after ``freeze`` base layers (None: the whole base)."""
    from mtl.pipeline.basepass import build_parts

    return build_parts(s.cfg, s.ds.classes, s.devices, freeze, **reuse)


def with_head(s: Session, parts: Parts, head: headfit.Head) -> Parts:
    """The same model with ``head``'s weights and layout (its widths: the averaged heads
    are twice as wide; the prior's skip) as its head."""
    int8 = {"int8_base": s.base.source(None)} if s.base.spec(None).precision == "int8" else {}
    rebuilt = build(
        s,
        None,
        weights=None,
        backbone=parts.backbone,
        head_skip=head.skip,
        head_units=head.units,
        **int8,
    )
    rebuilt.head.set_weights(head.weights())
    return rebuilt


def _describe_cache(parts: Parts, n_base: int, engine: str) -> str:
    if parts.extractor is None:
        return "decoded images (augmentation or an unfrozen base: the base runs every epoch)"
    by = "LiteRT" if engine == "litert" else "Keras"
    if parts.cut < 0:
        return f"pooled base features (all {n_base} base layers frozen, computed once by {by})"
    return (
        f"base layers [:{parts.cut}] computed once by {by}; layers [{parts.cut}:] train each epoch"
    )

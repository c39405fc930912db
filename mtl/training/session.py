"""One training run, whichever engine trains its head: every step the two engines share.

A :class:`Session` holds the run's state (data, cache, history, early
stopping, hooks, TensorBoard events) and does, once for both engines:

- the end of every epoch (:meth:`Session.end_epoch`): the divergence checks (the loss;
  the head's validation outputs),
  validation, early stopping, the :class:`~mtl.training.tracking.EpochLog`,
  the report to the hooks and TensorBoard, the checkpoint;
- after the fit (:meth:`Session.post_fit`): the kept epoch, the ImageNet prior
  (:mod:`mtl.training.priorsteps`), the refit on every photo, the two heads side
  by side, the final scores;
- the run folder (:meth:`Session.write`).

An :class:`Engine` supplies only its steps: the base pass, the fit (each epoch
ended by :meth:`Session.end_epoch`), predict, the weights to keep or checkpoint,
the refit's head and the saved model. :mod:`mtl.training.kerashead` is the
Keras engine, :mod:`mtl.training.headrun` the NumPy one; which one trains a
run's head is decided by :func:`mtl.pipeline.basepass.head_engine`. What the
head learns (its target rows: label smoothing would go there) is
:mod:`mtl.training.loss`, one definition both engines train against; what is
done with its epochs and its head is written here.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mtl import runtime
from mtl.data import dataset, features
from mtl.pipeline.basepass import BasePass
from mtl.pipeline.config import TrainConfig
from mtl.report import metrics
from mtl.report.events import RunEvents, session_name
from mtl.training import checkpoint, headfit, prior, rundir
from mtl.training.priorsteps import PriorSteps
from mtl.training.results import Hooks, TrainResult, TrainStart, val_scores
from mtl.training.tracking import (
    EarlyStopping,
    EpochLog,
    check_loss,
    check_outputs,
    fine_tune_notes,
)


class Engine(Protocol):
    """What trains a run's head: only the steps that differ between Keras and NumPy."""

    name: str  # "keras" or "numpy": metrics.json's cache.head_engine

    @property
    def model_writer(self) -> str:
        """What writes model.keras: "keras", or "skeleton" (:mod:`mtl.model.skeleton`)."""
        ...

    def first_pass(self) -> tuple[features.Features, str]:
        """The frozen base's one pass over every photo (filling :attr:`Session.key_of`),
        and what the cache then holds, in words."""
        ...

    def training(self) -> AbstractContextManager[Any]:
        """The context the fit and the steps after it run in."""
        ...

    def fit(self) -> None:
        """The validated fit (every phase), each epoch ended by :meth:`Session.end_epoch`."""
        ...

    def probs(self, subsets: tuple[str, ...]) -> np.ndarray:
        """The current head's probabilities for the photos of ``subsets``, views averaged."""
        ...

    def weights(self) -> list[np.ndarray]:
        """The trained part's weights now (kept for the best epoch)."""
        ...

    def restore_best(self) -> None:
        """Put :attr:`Session.best_weights` in place."""
        ...

    def state(self) -> tuple[list[np.ndarray], dict[str, np.ndarray]] | None:
        """The variables and optimizer state to checkpoint; None: the engine does not
        checkpoint (it retrains in seconds)."""
        ...

    def head(self) -> headfit.Head:
        """The current head as NumPy arrays (pooled features only)."""
        ...

    def refit(self, epochs: int) -> tuple[headfit.Head, list[EpochLog]]:
        """A fresh head trained on every photo for ``epochs``, and the logs of its epochs
        that :meth:`Session.end_epoch` has not reported yet."""
        ...

    def use_head(self, head: headfit.Head) -> None:
        """Make ``head`` the saved model's head."""
        ...

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        """Write the model with its current head to ``path``."""
        ...


class Session(PriorSteps):
    """The state of one run and the steps both engines share; :meth:`run` is the run."""

    def __init__(
        self,
        cfg: TrainConfig,
        ds: dataset.Dataset,
        wfile: Path,
        devices: runtime.TrainingDevices,
        run_dir: Path,
        cache: features.FeatureCache,
        base: BasePass,
        hooks: Hooks,
        ckpt: checkpoint.Checkpoint | None = None,
    ) -> None:
        self.cfg, self.ds, self.wfile, self.devices = cfg, ds, wfile, devices
        self.run_dir, self.cache, self.base, self.hooks = run_dir, cache, base, hooks
        self.ckpt = ckpt
        self.history: list[EpochLog] = []
        self.early = EarlyStopping(cfg.patience)
        self.best_weights: list[np.ndarray] | None = None
        # Epochs of the validated fit a resume need not redo: those checkpointed (an
        # engine that keeps no checkpoint, the NumPy head, retrains them in seconds).
        self.epochs_checkpointed = 0
        if ckpt is not None:
            self.epochs_checkpointed = ckpt.epochs_done
            self.history = [EpochLog(**h) for h in ckpt.history]
            self.early = EarlyStopping.from_json(ckpt.early, cfg.patience)
            self.best_weights = ckpt.best_weights
        self.key_of: dict[Path, str] = {}  # file -> its cache entry for the current phase
        self.views = cfg.run_views
        self.phase = "train"  # or "fine_tune": what a checkpoint resumes
        self.seconds: dict[str, float] = {}
        events = run_dir / rundir.EVENTS_FOLDER
        name = session_name(events, run_dir.name, resuming=ckpt is not None)
        self.events = RunEvents(events, name, cfg.to_dict())
        self.engine: Engine | None = None

    @property
    def total_epochs(self) -> int:
        return self.cfg.epochs + self.cfg.fine_tune_epochs

    @property
    def has_val(self) -> bool:
        return bool(self.ds.subset("val"))

    @property
    def refits(self) -> bool:
        """Whether a fresh head is trained on every photo after the validated fit."""
        return self.cfg.refit and self.cfg.pooled_only and self.has_val

    def keys(self, subset: str) -> list[str]:
        return [self.key_of[it.path] for it in self.ds.subset(subset)]

    def labels(self, subset: str) -> np.ndarray:
        return np.array([it.label for it in self.ds.subset(subset)], dtype=np.int64)

    def subset_labels(self, subsets: tuple[str, ...]) -> np.ndarray:
        return np.concatenate([self.labels(s) for s in subsets])

    # --- the whole run ------------------------------------------------------------------

    def run(self, engine: Engine, seconds: dict[str, float], t_start: float) -> TrainResult:
        self.engine = engine
        self.seconds = seconds
        feats, cached = engine.first_pass()
        warnings = self.check_data(feats)
        self.announce(cached, warnings)
        with engine.training():
            engine.fit()
            kept, notes, train_metrics, val_metrics = self.post_fit()
        return self.write(kept, notes, train_metrics, val_metrics, warnings, t_start)

    def end_epoch(
        self,
        phase: str,
        epoch: int,
        last: int,
        loss: float,
        accuracy: float,
        learning_rate: float,
        seconds: float,
        *,
        live: bool = True,
    ) -> tuple[EpochLog, bool]:
        """The one end of every epoch (1-based ``epoch`` of a fit that would end at
        ``last``), for both engines: the divergence check; for the validated fit, the
        validation scores, early stopping and the best weights; the log; with ``live``,
        the history, the report and (validated fit, engines that checkpoint) the
        checkpoint. Returns the log and whether to stop."""
        assert self.engine is not None
        check_loss(loss, epoch, learning_rate)
        validated = phase != "refit"
        # The refit holds nothing out: no validation, no early stopping.
        early = self.early if validated else EarlyStopping(0)
        val_loss = val_accuracy = float("nan")
        if validated and self.has_val:
            probs = self.engine.probs(("val",))
            check_outputs(probs, epoch, learning_rate, self.run_dir)
            val_loss, val_accuracy = val_scores(probs, self.labels("val"))
        improved = early.update(epoch, val_loss)
        if improved and early.patience:
            self.best_weights = self.engine.weights()
        log = EpochLog(
            phase=phase,
            epoch=epoch,
            epochs=self.total_epochs if validated else last,
            loss=loss,
            accuracy=accuracy,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            learning_rate=learning_rate,
            seconds=seconds,
            best=improved,
        )
        stop = early.should_stop(epoch, last)
        if live:
            self.history.append(log)
            if validated and self.save_checkpoint():
                # Before the report: an epoch the user saw is one a resume keeps.
                self.epochs_checkpointed = len(self.history)
            self.report_epoch(log)
        return log, stop

    def report_epoch(self, log: EpochLog) -> None:
        if self.hooks.on_epoch:
            self.hooks.on_epoch(log)
        self.events.epoch(log.to_json())

    def save_checkpoint(self) -> bool:
        """Before the report: a kill after this loses nothing. False: the engine keeps no
        checkpoint (the NumPy head)."""
        assert self.engine is not None
        state = self.engine.state()
        if state is None:
            return False
        variables, optimizer = state
        checkpoint.save(
            self.run_dir,
            checkpoint.Checkpoint(
                epochs_done=len(self.history),
                phase=self.phase,
                history=[h.to_json() for h in self.history],
                early=self.early.to_json(),
                variables=variables,
                optimizer=optimizer,
                best_weights=self.best_weights,
            ),
        )
        return True

    def post_fit(self) -> tuple[int, list[str], dict[str, Any], dict[str, Any] | None]:
        """After the validated fit: the kept epoch, the ImageNet prior, the refit and the
        averaged heads, in that order, and the final scores. Returns the kept epoch, the
        notes saying how it was all chosen, and the train and validation metrics."""
        assert self.engine is not None
        engine, c = self.engine, self.cfg
        kept, notes = self.keep()
        validated = engine.head() if c.pooled_only and self.has_val else None
        blend = self.fit_prior(validated, notes) if validated is not None else None
        if validated is not None and blend is not None:
            # A composed head is scored in NumPy by either engine (priorsteps).
            head = prior.compose(validated, self.prior_layer(("train",)), blend)
            train_metrics = self.evaluate(head, ("train",))
            val_metrics: dict[str, Any] | None = self.evaluate(head, ("val",))
        else:
            train_metrics = self.scores(("train",))
            val_metrics = self.scores(("val",)) if self.has_val else None
        if validated is None or not self.refits:
            if blend is not None:
                engine.use_head(head)
            return kept, notes, train_metrics, val_metrics
        t0 = time.perf_counter()
        refit_head, logs = engine.refit(kept)
        for log in logs:
            self.history.append(log)
            self.report_epoch(log)
        # The saved model averages the two heads' logits: a free ensemble (the validated
        # head is trained anyway) that steadies the result across seeds.
        head = headfit.side_by_side([validated, refit_head])
        if blend is not None:  # the same blend, the prior's class means from every photo
            head = prior.compose(head, self.prior_layer(("train", "val")), blend)
            engine.use_head(head)
            train_metrics = self.evaluate(head, ("train", "val"))
        else:
            engine.use_head(head)
            train_metrics = self.scores(("train", "val"))
        self.seconds["refit"] = time.perf_counter() - t0
        notes.append(
            f"the saved model was then refit on all {len(self.ds.items)} photos for {kept} "
            "epoch(s), averaging that head with the validated one; the validation scores "
            "are the validated head's alone, which never saw the validation photos"
        )
        return kept, notes, train_metrics, val_metrics

    def scores(self, subsets: tuple[str, ...]) -> dict[str, Any]:
        """Metrics of the engine's current head on the photos of ``subsets``."""
        assert self.engine is not None
        probs = self.engine.probs(subsets)
        # A run without validation photos is checked here, on its final head.
        last = self.history[-1] if self.history else None
        check_outputs(probs, len(self.history), last.learning_rate if last else 0.0, self.run_dir)
        return metrics.summary(probs, self.subset_labels(subsets), self.ds.classes)

    def keep(self) -> tuple[int, list[str]]:
        """Put the kept epoch's weights in place; returns it and how it was chosen, in words."""
        assert self.engine is not None
        c, early, last = self.cfg, self.early, len(self.history)
        notes = []
        if not self.has_val:
            notes.append(
                f"no validation split: trained on all {len(self.ds.items)} photos for "
                f"{last} epoch(s), no early stopping; the model is the last epoch's"
            )
            return last, notes
        kept = last
        if c.patience and self.best_weights is not None:
            self.engine.restore_best()
            kept = early.best_epoch
            notes.append(f"kept epoch {kept} of {last}: the lowest validation loss")
        else:
            notes.append(
                f"kept epoch {last} of {last}, the last (--patience 0 keeps the last); "
                f"the lowest validation loss was at epoch {early.best_epoch}"
            )
        notes += fine_tune_notes(self.history, kept, c.epochs)
        return kept, notes

    def check_data(self, feats: features.Features) -> list[str]:
        """Drop the files that failed, refuse unusable data; the warnings so far."""
        c = self.cfg
        self.ds.drop(feats.failures)
        dataset.check_usable(self.ds)
        warnings = [*self.ds.warnings, *self.base.warnings]
        if not self.has_val:
            self.early.patience = 0  # nothing to stop on
            if c.val_split > 0:
                warnings.append(
                    "no class has 2 or more photos to hold one out: no validation split"
                )
        return warnings

    def ran_on(self) -> str:
        """Where and in what the run computes, as it ran: the frozen base's engine and
        precision (LiteRT int8 is not "float32 tensorflow") and the head's."""
        assert self.engine is not None
        base = self.base
        if self.engine.name == "numpy":
            where = f"CPU ({os.cpu_count()} cores)"
            head = "the head in float32 on NumPy"
        else:
            where = self.devices.description  # backend, devices, strategy, precision
            head = "the head on Keras"
        if not base.extractors:  # nothing frozen ran apart: the base trains with the head
            return f"{where}; {head}"
        by = "LiteRT" if base.engine == "litert" else f"Keras ({runtime.backend_name()})"
        return f"{where}; the frozen base in {base.precision(self.cfg.freeze)} on {by}, {head}"

    def announce(self, cached: str, warnings: list[str]) -> None:
        if self.hooks.on_start is None:
            return
        ds = self.ds
        self.hooks.on_start(
            TrainStart(
                self.run_dir,
                self.ran_on(),
                ds.classes,
                ds.counts("train"),
                ds.counts("val"),
                ds.layout,
                cached,
                list(ds.skipped),
                warnings,
            )
        )

    def write(
        self,
        kept: int,
        notes: list[str],
        train_metrics: dict[str, Any],
        val_metrics: dict[str, Any] | None,
        warnings: list[str],
        t_start: float,
    ) -> TrainResult:
        """Write the run folder (the engine writes the model) and return what it holds."""
        assert self.engine is not None
        base, engine = self.base, self.engine
        cache_stats = {
            **self.cache.stats.to_json(),
            "base_forward_images": sum(e.images for e in base.extractors),
            "base_forward_calls": sum(e.calls for e in base.extractors),
            "base_engine": base.engine if base.extractors else "none",
            "base_precision": base.precision(None),
            "base_converted": base.converted,
            "base_started_early": base.started_early and base.engine == "litert",
            "head_engine": engine.name,
            "model_writer": engine.model_writer,
        }
        t0 = time.perf_counter()
        result = TrainResult(
            classes=self.ds.classes,
            history=self.history,
            kept_epoch=kept,
            best_epoch=self.early.best_epoch if val_metrics else None,
            stopped_early=self.early.stopped_early,
            notes=notes,
            train_metrics=train_metrics,
            val_metrics=val_metrics,
            skipped=list(self.ds.skipped),
            warnings=warnings,
            cache=cache_stats,
            config=self.cfg,
            device=self.ran_on(),
            prior=self.blend.to_json() if self.blend is not None else None,
            run_dir=self.run_dir,
            model_path=self.run_dir / rundir.MODEL_FILE,
            train_counts=self.ds.counts("train"),
            val_counts=self.ds.counts("val"),
            seconds={},
            files=[],
        )
        save: Callable[[Path, dict[str, Any]], None] = engine.save
        written, plot_warnings = rundir.write_run(self.run_dir, save, self.ds, result)
        matrix = self.run_dir / "confusion_matrix.png"
        if matrix.is_file():
            self.events.png("confusion_matrix", matrix.read_bytes())
        self.events.close()
        if self.events.active:
            written.append(rundir.EVENTS_FOLDER + "/")
        self.seconds["write"] = time.perf_counter() - t0
        self.seconds["total"] = time.perf_counter() - t_start
        return dataclasses.replace(
            result,
            warnings=[*warnings, *plot_warnings],
            seconds={k: round(v, 3) for k, v in self.seconds.items()},
            files=written,
        )

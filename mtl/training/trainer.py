"""``mtl train``: a folder-per-class dataset in, a trained classifier and its run folder out.

:func:`train` prepares the run (settings, data, weights, run folder, feature
cache) and hands it to a :class:`Trainer`, whose methods are the steps in the
order they run: build the model, run the frozen base once over every image
(:mod:`mtl.training.basepass`), fit the head (and, optionally, a fine-tuning
phase), checkpoint every epoch, evaluate, and write the run folder
(:mod:`mtl.training.rundir`). Each epoch trains only the part after the
frozen base (:func:`mtl.model.classifier.build_parts`), whose layers are shared
with the saved model, so what is evaluated and saved is exactly what was trained.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtl import runtime
from mtl.assets import weights
from mtl.data import dataset, features
from mtl.errors import MtlError, UsageError
from mtl.locks import folder_lock
from mtl.model import backbones, modelio
from mtl.progress import StageProgressFn
from mtl.report import metrics
from mtl.report.events import EventLog
from mtl.training import checkpoint, headfit, prior, rundir
from mtl.training.basepass import BasePass, base_batch, head_engine
from mtl.training.config import TrainConfig, validate
from mtl.training.priorsteps import PriorSteps, head_of
from mtl.training.tracking import EarlyStopping, EpochLog, fine_tune_notes

FIRST_PASS = "checking images + computing features"


@dataclass
class TrainStart:
    """What is known once every file has been checked, before the first epoch."""

    run_dir: Path
    device: str
    classes: list[str]
    train_counts: list[int]
    val_counts: list[int]
    layout: str
    cached: str  # what the feature cache holds
    skipped: list[tuple[str, str]]
    warnings: list[str]


@dataclass(frozen=True)
class TrainResult(rundir.RunSummary):
    """A finished run: what its folder holds (:class:`~mtl.training.rundir.RunSummary`),
    where, and how long each step took. ``warnings`` holds all of them, those already
    reported by ``on_start`` included."""

    run_dir: Path
    model_path: Path
    train_counts: list[int]
    val_counts: list[int]
    seconds: dict[str, float]
    files: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "model": str(self.model_path),
            "classes": self.classes,
            "train_count": dict(zip(self.classes, self.train_counts, strict=True)),
            "val_count": dict(zip(self.classes, self.val_counts, strict=True)),
            "kept_epoch": self.kept_epoch,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "notes": self.notes,
            "prior": self.prior,
            "train": _brief(self.train_metrics),
            "val": _brief(self.val_metrics) if self.val_metrics else None,
            "test": _brief(self.test_metrics) if self.test_metrics else None,
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
            "warnings": self.warnings,
            "device": self.device,
            "cache": self.cache,
            "seconds": self.seconds,
            "files": self.files,
        }


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    return {"accuracy": m["accuracy"], "loss": m["loss"], "count": m["count"]}


@dataclass
class Hooks:
    """How a caller follows a run: progress, the start summary, each epoch, and Keras
    callbacks of its own (run after mtl's at every epoch, e.g. to log or to stop)."""

    on_progress: StageProgressFn | None = None
    on_start: Callable[[TrainStart], None] | None = None
    on_epoch: Callable[[EpochLog], None] | None = None
    callbacks: Sequence[Any] = ()


def is_finished(run: str | os.PathLike[str]) -> bool:
    """True for a run folder whose training completed (it holds its model)."""
    return (Path(run) / rundir.MODEL_FILE).is_file()


def train(
    data: str | os.PathLike[str] | None,
    config: TrainConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    resume: str | os.PathLike[str] | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    on_download: weights.DownloadProgress | None = None,
    on_progress: StageProgressFn | None = None,
    on_start: Callable[[TrainStart], None] | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train a classifier on the class folders of ``data`` and write a run folder.

    ``out``: the run folder (default: the next free ``runs/train``, ``runs/train2``...).
    ``cache_dir``: a feature cache shared between runs (default: memory, spilling
    into the run folder). ``resume``: an interrupted run folder, continued from
    its last complete epoch with its own config and split (``data`` and
    ``config`` must then be None). ``callbacks``: Keras callbacks run every epoch.
    Raises :class:`~mtl.errors.DataError` or :class:`~mtl.errors.UsageError`
    (exit 2) for unusable data or options.
    """
    t_start = time.perf_counter()
    ckpt = None
    saved_split = None
    if resume is not None:
        data, config, ckpt, saved_split = _resume(resume, data, config, force, out)
        out = resume
    if data is None:
        raise UsageError("no data folder given")
    cfg = validate(config or TrainConfig())
    if resume is None and out is not None:
        rundir.refuse_existing(Path(out), force)
    ds = dataset.scan(Path(data), val_split=cfg.val_split, seed=cfg.seed)
    if saved_split is not None:
        _check_same_split(saved_split, _split_rows(ds), Path(data))
    wfile = weights.resolve(
        backbones.weights_file(cfg.model, cfg.alpha, include_top=False, size=cfg.image_size),
        weights_dir,
        progress=on_download,
    )
    top_file = _prior_weights(cfg, weights_dir, on_download)
    run_dir = Path(resume) if resume is not None else rundir.prepare(out, force=force)
    hooks = Hooks(on_progress, on_start, on_epoch, callbacks)
    # Two runs never share a folder: the second is refused (exit 2) while the first holds it.
    with folder_lock(run_dir, "mtl train"):
        if resume is None:
            rundir.clear_run(run_dir)  # a forced rerun: the old model goes first
            checkpoint.write_run(run_dir, cfg.to_dict(), Path(data), _split_rows(ds))
        return _run(cfg, ds, wfile, run_dir, cache_dir, hooks, ckpt, t_start, top_file)


def _prior_weights(
    cfg: TrainConfig,
    weights_dir: str | os.PathLike[str] | None,
    on_download: weights.DownloadProgress | None,
) -> Path | str:
    """The include-top weights file for the ImageNet prior (:mod:`mtl.training.prior`),
    or why the prior cannot be used, in words."""
    from mtl.model.imagenet import has_top

    if not (cfg.pooled_only and cfg.val_split > 0 and cfg.prior):
        return "off" if not cfg.prior else ""
    if not has_top(cfg.model):
        return f"{cfg.model} has no one-layer ImageNet top here"
    try:
        return weights.resolve(
            backbones.weights_file(cfg.model, cfg.alpha, include_top=True, size=cfg.image_size),
            weights_dir,
            progress=on_download,
        )
    except MtlError as exc:  # offline without the file: train without the prior, and say so
        return f"its weights are unavailable ({exc.message})"


def _run(
    cfg: TrainConfig,
    ds: dataset.Dataset,
    wfile: Path,
    run_dir: Path,
    cache_dir: str | os.PathLike[str] | None,
    hooks: Hooks,
    ckpt: checkpoint.Checkpoint | None,
    t_start: float,
    top_file: Path | str = "",
) -> TrainResult:
    """Set up the devices and the feature cache, then let a :class:`Trainer` do the run."""
    own_cache = cache_dir is None
    cache = features.FeatureCache(
        folder=Path(cache_dir) if cache_dir is not None else run_dir / "cache",
        memory_bytes=cfg.cache_memory_mb << 20,
        persistent=not own_cache,
    )
    base = BasePass(cfg, wfile)
    engine = head_engine(
        cfg, callbacks=bool(hooks.callbacks), resuming=ckpt is not None, photos=len(ds.items)
    )
    # With a converted base on disk, the one pass over every image needs no TensorFlow:
    # start it now (while TensorFlow imports, when the head needs Keras).
    base.start_early([it.path for it in ds.items], cache, importing=engine == "keras")
    try:
        t0 = time.perf_counter()
        trainer: Trainer
        if engine == "numpy":
            from mtl.training.headrun import NumpyTrainer, cpu_devices

            devices = cpu_devices()
            seconds = {"setup": time.perf_counter() - t0}
            trainer = NumpyTrainer(cfg, ds, wfile, devices, run_dir, cache, base, hooks, ckpt)
        else:
            devices = runtime.setup_training(cfg.precision)
            runtime.set_seed(cfg.seed)
            seconds = {"setup": time.perf_counter() - t0}
            trainer = Trainer(cfg, ds, wfile, devices, run_dir, cache, base, hooks, ckpt)
        trainer.top_file = top_file
        result = trainer.run(seconds, t_start)
        # The run is complete (model.keras written): its checkpoint is no longer needed.
        shutil.rmtree(checkpoint.folder(run_dir), ignore_errors=True)
        return result
    finally:
        base.stop_early()
        if own_cache:
            shutil.rmtree(run_dir / "cache", ignore_errors=True)


def _resume(
    run: str | os.PathLike[str],
    data: str | os.PathLike[str] | None,
    config: TrainConfig | None,
    force: bool,
    out: str | os.PathLike[str] | None,
) -> tuple[Path, TrainConfig, checkpoint.Checkpoint | None, list[list[str]] | None]:
    """The data folder, settings, last checkpoint and split of an interrupted run."""
    if config is not None or force or out is not None:
        raise UsageError("--resume continues a run with its own settings; give it alone")
    run = Path(run)
    if (run / rundir.MODEL_FILE).exists():
        raise UsageError(
            f"{run} already finished (it holds {rundir.MODEL_FILE}); nothing to resume"
        )
    saved, saved_data, split = checkpoint.read_run(run)
    if data is not None and Path(data).resolve() != saved_data:
        raise UsageError(f"{run} was trained on {saved_data}, not {data}")
    cfg = TrainConfig.from_dict(saved, str(checkpoint.folder(run) / checkpoint.RUN_FILE))
    ckpt = checkpoint.load(run)
    checkpoint.clean_temp_files(run)
    return saved_data, cfg, ckpt, split


def _split_rows(ds: dataset.Dataset) -> list[list[str]]:
    return [
        [it.path.relative_to(ds.root).as_posix(), ds.classes[it.label], it.subset]
        for it in ds.items
    ]


def _check_same_split(saved: list[list[str]], now: list[list[str]], data: Path) -> None:
    """A resumed run trains on exactly its own photos and split, or not at all."""
    before, after = {tuple(r) for r in saved}, {tuple(r) for r in now}
    if before == after:
        return
    added = sorted(after - before)
    gone = sorted(before - after)
    shown = [f"+{f} ({c}, {s})" for f, c, s in added[:3]] + [
        f"-{f} ({c}, {s})" for f, c, s in gone[:3]
    ]
    raise UsageError(
        f"{data} changed since the run started ({len(added)} photo(s) added or moved, "
        f"{len(gone)} gone: {'; '.join(shown)}{' ...' if len(added) + len(gone) > 6 else ''}); "
        "a resumed run keeps its own photos and split: put them back, or start a new run"
    )


class Trainer(PriorSteps):
    """One training run; its state lives on the object, one method per step.

    :meth:`run` calls, in order: :meth:`build`, :meth:`base_pass` (overlapping
    :meth:`warm_up`), :meth:`fit_phase` for the head (and :meth:`fine_tune`),
    :meth:`final_eval`, then :func:`mtl.training.rundir.write_run`.
    """

    head_engine = "keras"  # what trains the head
    model_writer = "keras"  # what writes model.keras ("skeleton": mtl.model.skeleton)

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
        self.run_dir, self.cache, self.base, self.hooks, self.ckpt = (
            run_dir,
            cache,
            base,
            hooks,
            ckpt,
        )
        self.direct = devices.strategy is not None
        self.history: list[EpochLog] = []
        self.early = EarlyStopping(cfg.patience)
        self.best_weights: list[np.ndarray] | None = None
        if ckpt is not None:
            self.history = [EpochLog(**h) for h in ckpt.history]
            self.early = EarlyStopping.from_json(ckpt.early, cfg.patience)
            self.best_weights = ckpt.best_weights
        self.key_of: dict[Path, str] = {}  # file -> its cache entry for the current phase
        self.views = cfg.run_views
        self.compiled: list[Any] = []  # the tops compiled for their phase
        self.phase = "train"
        self.seconds: dict[str, float] = {}
        self.events = EventLog(run_dir / rundir.EVENTS_FOLDER)

    @property
    def total_epochs(self) -> int:
        return self.cfg.epochs + self.cfg.fine_tune_epochs

    # --- the steps ---------------------------------------------------------------------

    def build(self, freeze: int | None, **reuse: Any) -> Any:
        """The model for training, cut after ``freeze`` base layers (None: the whole base)."""
        from mtl.model.classifier import build_parts

        c = self.cfg
        with self.devices.scope():
            return build_parts(
                self.ds.classes,
                model=c.model,
                alpha=c.alpha,
                size=c.image_size,
                head_units=reuse.pop("head_units", c.head),
                dropout=c.dropout,
                freeze_layers=freeze,
                augment=c.augment,
                views=reuse.pop("views", self.views),
                input_size=c.input_size,
                fit=c.fit,
                **reuse,
            )

    def base_pass(
        self,
        parts: Any,
        freeze: int | None,
        stage: str,
        while_waiting: Callable[[], None] | None = None,
    ) -> features.Features:
        """The frozen part's output for every image, into the cache (once per image)."""
        report = self.hooks.on_progress
        result = self.base.fill(
            parts,
            freeze,
            [it.path for it in self.ds.items],
            self.cache,
            direct=self.direct,
            batch_size=base_batch(self.cfg),
            on_progress=(lambda d, t: report(stage, d, t)) if report else None,
            while_waiting=while_waiting,
        )
        self.key_of = dict(zip(result.paths, result.keys, strict=True))
        return result

    def compile(self, parts: Any, lr: float, first: int) -> None:
        """Compile the trained part; a resumed run gets its variables and optimizer back."""
        from mtl.training import fitting

        with self.devices.scope():
            parts.top.compile(
                optimizer=fitting.optimizer(self.cfg.optimizer, lr),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
            saved_optimizer = self.restore(parts)
            if saved_optimizer is not None and first > 0:
                parts.top.optimizer.build(parts.top.trainable_variables)
                parts.top.optimizer.load_own_variables(saved_optimizer)
        runtime.prepare_fit(parts.top, self.devices)
        self.compiled.append(parts.top)

    def warm_up(self, parts: Any, lr: float) -> None:
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
        batch: tuple[np.ndarray, ...] = (np.zeros((2, *shape), "float32"), np.zeros(2, np.int64))
        if self.cfg.class_weight == "auto":
            batch = (*batch, np.ones(2, np.float32))
        top.fit(fitting.one_batch(batch), epochs=1, verbose=0)
        top.predict_on_batch(np.zeros((fitting.PREDICT_BATCH, *shape), "float32"))
        for v, value in zip(variables, saved, strict=True):
            v.assign(value)

    def restore(self, parts: Any) -> dict[str, np.ndarray] | None:
        """Put the checkpoint's variables into ``parts``; its optimizer state is returned."""
        ckpt = self.ckpt
        if ckpt is None or ckpt.phase != self.phase:
            return None
        variables = parts.top.variables  # what training changes; the frozen rest is rebuilt
        if [tuple(v.shape) for v in variables] != [a.shape for a in ckpt.variables]:
            raise UsageError(f"the checkpoint in {self.run_dir} does not fit this model; retrain")
        for v, a in zip(variables, ckpt.variables, strict=True):
            v.assign(a)
        return ckpt.optimizer

    def fit_phase(self, parts: Any, lr: float, first: int, last: int) -> None:
        """Epochs ``first+1 .. last`` of the current phase (fewer if early stopping ends it)."""
        from mtl.training import fitting

        if self.early.stopped_early:  # a resumed run that had already stopped
            return
        c = self.cfg
        keys_t, keys_v = self.keys("train"), self.keys("val")
        y_train, y_val = self.labels("train"), self.labels("val")
        per_entry = features.stack(self.cache, keys_t[:1]).astype("float32").nbytes
        in_memory = (
            parts.extractor is not None and per_entry * len(self.key_of) <= c.cache_memory_mb << 20
        )
        if not any(top is parts.top for top in self.compiled):
            self.compile(parts, lr, first)
        sample_weights = None
        if c.class_weight == "auto":
            cw = dataset.class_weights(self.ds.counts("train"))
            sample_weights = np.array([cw[y] for y in y_train], dtype=np.float32)

        def validate() -> tuple[float, float]:
            probs = fitting.predict(parts.top, self.cache, keys_v, self.direct, self.n_views(parts))
            return _val_scores(probs, y_val)

        def keep_best(weights: list[np.ndarray]) -> None:
            self.best_weights = weights

        epoch_end = fitting.EpochEnd(
            parts.top,
            self.phase,
            self.total_epochs,
            self.early,
            self.history,
            validate,
            keep_best,
            lambda log: self.end_epoch(parts, log),
        )
        batches = fitting.CachedBatches(
            self.cache,
            keys_t,
            y_train,
            sample_weights,
            c.batch_size,
            c.seed,
            first,
            in_memory,
            self.n_views(parts),
        )
        parts.top.fit(
            batches,
            epochs=last,
            initial_epoch=first,
            callbacks=[epoch_end, *self.hooks.callbacks],
            verbose=0,
        )

    def end_epoch(self, parts: Any, log: EpochLog) -> None:
        """Report the epoch (hooks, TensorBoard), then checkpoint it (a kill after this
        loses nothing)."""
        self.report_epoch(log)
        self.save_checkpoint(parts)

    def report_epoch(self, log: EpochLog) -> None:
        if self.hooks.on_epoch:
            self.hooks.on_epoch(log)
        self.events.scalars(
            log.epoch,
            {
                f"{log.phase}/loss": log.loss,
                f"{log.phase}/accuracy": log.accuracy,
                "val/loss": log.val_loss,
                "val/accuracy": log.val_accuracy,
                f"{log.phase}/learning_rate": log.learning_rate,
            },
        )

    def save_checkpoint(self, parts: Any) -> None:
        store: dict[str, Any] = {}
        parts.top.optimizer.save_own_variables(store)
        checkpoint.save(
            self.run_dir,
            checkpoint.Checkpoint(
                epochs_done=len(self.history),
                phase=self.phase,
                history=[h.to_json() for h in self.history],
                early=self.early.to_json(),
                variables=[np.asarray(runtime.as_numpy(v)) for v in parts.top.variables],
                optimizer={k: np.asarray(runtime.as_numpy(v)) for k, v in store.items()},
                best_weights=self.best_weights,
            ),
        )

    def fine_tune(self, parts: Any, n_base: int) -> Any:
        """The second phase: unfreeze the top ``fine_tune_layers`` of the base, BatchNorm
        kept frozen, starting from the best head of the first phase."""
        c = self.cfg
        resumed_here = self.ckpt is not None and self.ckpt.phase == "fine_tune"
        if not resumed_here:  # a new phase: its own patience, also after an early stop
            self.early.wait, self.early.stopped_early = 0, False
        if self.best_weights is not None and not resumed_here:
            parts.top.set_weights(self.best_weights)  # start from the best head
        current = n_base if c.freeze is None else min(c.freeze, n_base)
        n = min(current, max(0, n_base - c.fine_tune_layers))
        t0 = time.perf_counter()
        self.phase = "fine_tune"
        parts = self.build(
            n,
            weights=None,
            backbone=parts.backbone,
            head=parts.head,
            fine_tune=True,
            views=["image"],
        )
        if self.best_weights is not None and not resumed_here:
            # The best so far, in the layout of the larger part that fine-tuning trains.
            self.best_weights = parts.top.get_weights()
        self.base_pass(parts, n, "computing fine-tuning features")
        self.seconds["fine_tune_features"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.fit_phase(parts, c.fine_tune_lr, len(self.history), self.total_epochs)
        self.seconds["fine_tune_fit"] = time.perf_counter() - t0
        return parts

    def final_eval(
        self, parts: Any, subsets: tuple[str, ...] = ("train",)
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Metrics of the kept model on its training photos (``subsets``) and on the
        validation photos."""
        from mtl.training import fitting

        def summary(names: tuple[str, ...]) -> dict[str, Any]:
            keys = [k for s in names for k in self.keys(s)]
            labels = np.concatenate([self.labels(s) for s in names])
            probs = fitting.predict(parts.top, self.cache, keys, self.direct, self.n_views(parts))
            return metrics.summary(probs, labels, self.ds.classes)

        return summary(subsets), summary(("val",)) if self.ds.subset("val") else None

    def keep(self, parts: Any) -> tuple[int, list[str]]:
        """Put the kept epoch's weights in place; returns it and how it was chosen, in words."""
        c, early, last = self.cfg, self.early, len(self.history)
        notes = []
        if not self.ds.subset("val"):
            notes.append(
                f"no validation split: trained on all {len(self.ds.items)} photos for "
                f"{last} epoch(s), no early stopping; the model is the last epoch's"
            )
            return last, notes
        kept = last
        if c.patience and self.best_weights is not None:
            self.load_best(parts)
            kept = early.best_epoch
            notes.append(f"kept epoch {kept} of {last}: the lowest validation loss")
        else:
            notes.append(
                f"kept epoch {last} of {last}, the last (--patience 0 keeps the last); "
                f"the lowest validation loss was at epoch {early.best_epoch}"
            )
        notes += fine_tune_notes(self.history, kept, c.epochs)
        return kept, notes

    def load_best(self, parts: Any) -> None:
        parts.top.set_weights(self.best_weights)

    def check_data(self, feats: features.Features) -> list[str]:
        """Drop the files that failed, refuse unusable data; the warnings so far."""
        c = self.cfg
        self.ds.drop(feats.failures)
        dataset.check_usable(self.ds)
        warnings = [*self.ds.warnings, *self.base.warnings]
        if self.views != c.views and c.views != TrainConfig().views:  # asked for, not default
            warnings.append(
                f"views {'+'.join(c.views)} need the whole base frozen, no --augment and no "
                "fine-tuning: this run uses the image alone"
            )
        if not self.ds.subset("val"):
            self.early.patience = 0  # nothing to stop on
            if c.val_split > 0:
                warnings.append(
                    "no class has 2 or more photos to hold one out: no validation split"
                )
        return warnings

    def refit_note(self, kept: int) -> str:
        return (
            f"the saved model was then refit on all {len(self.ds.items)} photos for {kept} "
            "epoch(s), averaging that head with the validated one; the validation scores "
            "are the validated head's alone, which never saw the validation photos"
        )

    # --- the whole run -----------------------------------------------------------------

    def run(self, seconds: dict[str, float], t_start: float) -> TrainResult:
        c = self.cfg
        self.seconds = seconds
        self.base.choose(self.devices)
        t0 = time.perf_counter()
        parts = self.build(c.freeze, weights=self.wfile)
        self.seconds["build"] = time.perf_counter() - t0
        n_base = len(parts.backbone.layers)

        t0 = time.perf_counter()
        warm = None
        if self.base.engine == "litert" and self.ckpt is None:
            warm = lambda: self.warm_up(parts, c.learning_rate)  # noqa: E731
        feats = self.base_pass(parts, c.freeze, FIRST_PASS, while_waiting=warm)
        self.seconds["features"] = time.perf_counter() - t0
        warnings = self.check_data(feats)
        self.announce(_describe_cache(parts, n_base, self.base.engine), warnings)

        in_fine_tune = self.ckpt is not None and self.ckpt.phase == "fine_tune"
        t0 = time.perf_counter()
        if not in_fine_tune:
            start = self.ckpt.epochs_done if self.ckpt is not None else 0
            if start < c.epochs:
                self.fit_phase(parts, c.learning_rate, start, c.epochs)
            else:
                self.restore(parts)
        else:
            self.phase = "fine_tune"
        self.seconds["fit"] = time.perf_counter() - t0
        if c.fine_tune_epochs:
            parts = self.fine_tune(parts, n_base)
        kept, notes = self.keep(parts)
        train_metrics, val_metrics = self.final_eval(parts)
        blend = None
        if c.pooled_only and val_metrics is not None:  # the ImageNet prior (priorsteps)
            head = head_of(parts.head.get_weights(), c.dropout)
            blend = self.fit_prior(head, notes)
            if blend is not None:
                composed = prior.compose(head, self.prior_layer(("train",)), blend)
                train_metrics = self.evaluate(composed, ("train",))
                val_metrics = self.evaluate(composed, ("val",))
        refitted = False
        if c.refit and val_metrics is not None and c.pooled_only:
            t0 = time.perf_counter()
            validated = head_of(parts.head.get_weights(), c.dropout)
            parts = self.refit(parts, kept)
            refit_head = head_of(parts.head.get_weights(), c.dropout)
            parts = self.with_head(parts, headfit.side_by_side([validated, refit_head]))
            train_metrics = self.final_eval(parts, subsets=("train", "val"))[0]
            self.seconds["refit"] = time.perf_counter() - t0
            notes.append(self.refit_note(kept))
            refitted = True
        if blend is not None:
            subsets = ("train", "val") if refitted else ("train",)
            head = head_of(parts.head.get_weights(), c.dropout)
            composed = prior.compose(head, self.prior_layer(subsets), blend)
            parts = self.with_head(parts, composed)
            train_metrics = self.evaluate(composed, subsets)
        return self.write(
            lambda path, meta: modelio.save_model(parts.model, path, meta),
            kept, notes, train_metrics, val_metrics, warnings, t_start,
        )  # fmt: skip

    def with_head(self, parts: Any, head: headfit.Head) -> Any:
        """The same model with ``head``'s weights and layout (its widths: the averaged heads
        are twice as wide; the prior's skip) as its head."""
        rebuilt = self.build(
            None, weights=None, backbone=parts.backbone, head_skip=head.skip, head_units=head.units
        )
        rebuilt.head.set_weights(head.weights())
        return rebuilt

    def refit(self, parts: Any, epochs: int) -> Any:
        """Train a fresh head the same way on every photo, validation photos included, for
        the epochs the validated run kept: the saved model learns from all the data, and
        the validation scores stay honest (they come from the run that did not see them)."""
        from mtl.training import fitting

        c = self.cfg
        runtime.set_seed(c.seed)
        fresh = self.build(None, weights=None, backbone=parts.backbone)
        self.compile(fresh, c.learning_rate, 0)
        keys = self.keys("train") + self.keys("val")
        labels = np.concatenate([self.labels("train"), self.labels("val")])
        sample_weights = None
        if c.class_weight == "auto":
            cw = dataset.class_weights([a + b for a, b in zip(
                self.ds.counts("train"), self.ds.counts("val"), strict=True)])  # fmt: skip
            sample_weights = np.array([cw[y] for y in labels], dtype=np.float32)
        batches = fitting.CachedBatches(
            self.cache, keys, labels, sample_weights, c.batch_size, c.seed, 0, True,
            self.n_views(fresh),
        )  # fmt: skip
        refit_history: list[EpochLog] = []
        epoch_end = fitting.EpochEnd(
            fresh.top,
            "refit",
            epochs,
            EarlyStopping(0),
            refit_history,
            lambda: (float("nan"), float("nan")),  # nothing held out any more
            lambda weights: None,
            self.report_epoch,
        )
        fresh.top.fit(
            batches, epochs=epochs, callbacks=[epoch_end, *self.hooks.callbacks], verbose=0
        )
        self.history.extend(refit_history)
        return fresh

    def announce(self, cached: str, warnings: list[str]) -> None:
        if self.hooks.on_start is None:
            return
        ds = self.ds
        self.hooks.on_start(
            TrainStart(
                self.run_dir,
                self.devices.description,
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
        save: Callable[[Path, dict[str, Any]], Any],
        kept: int,
        notes: list[str],
        train_metrics: dict[str, Any],
        val_metrics: dict[str, Any] | None,
        warnings: list[str],
        t_start: float,
    ) -> TrainResult:
        """Write the run folder (``save(path, meta)`` writes the model) and return what it
        holds."""
        base = self.base
        cache_stats = {
            **self.cache.stats.to_json(),
            "base_forward_images": sum(e.images for e in base.extractors),
            "base_forward_calls": sum(e.calls for e in base.extractors),
            "base_engine": base.engine if base.extractors else "none",
            "base_converted": base.converted,
            "base_started_early": base.started_early and base.engine == "litert",
            "head_engine": self.head_engine,
            "model_writer": self.model_writer,
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
            device=self.devices.description,
            prior=self.blend.to_json() if self.blend is not None else None,
            run_dir=self.run_dir,
            model_path=self.run_dir / rundir.MODEL_FILE,
            train_counts=self.ds.counts("train"),
            val_counts=self.ds.counts("val"),
            seconds={},
            files=[],
        )
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

    # --- helpers -----------------------------------------------------------------------

    def n_views(self, parts: Any) -> int:
        """Views per cached entry: several only for pooled features (the extractor's rows)."""
        return len(self.views) if parts.cut < 0 else 1

    def keys(self, subset: str) -> list[str]:
        return [self.key_of[it.path] for it in self.ds.subset(subset)]

    def labels(self, subset: str) -> np.ndarray:
        return np.array([it.label for it in self.ds.subset(subset)], dtype=np.int64)


def _val_scores(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Validation loss and accuracy, computed as ``metrics.json``'s are."""
    if not len(labels):
        return float("nan"), float("nan")
    return metrics.cross_entropy(probs, labels), float((probs.argmax(axis=1) == labels).mean())


def _describe_cache(parts: Any, n_base: int, engine: str) -> str:
    if parts.extractor is None:
        return "decoded images (augmentation or an unfrozen base: the base runs every epoch)"
    by = "LiteRT" if engine == "litert" else "Keras"
    if parts.cut < 0:
        return f"pooled base features (all {n_base} base layers frozen, computed once by {by})"
    return (
        f"base layers [:{parts.cut}] computed once by {by}; layers [{parts.cut}:] train each epoch"
    )

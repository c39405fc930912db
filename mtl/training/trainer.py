"""``mtl train``: a folder-per-class dataset in, a trained classifier and its run folder out.

The frozen part of the network runs once per image (:mod:`mtl.data.features`);
each epoch trains only the rest (:func:`mtl.model.classifier.build_parts`), whose
layers are shared with the saved model, so what is evaluated and saved is
exactly what was trained.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtl import __version__, runtime
from mtl.assets import weights
from mtl.data import dataset, features
from mtl.errors import UsageError
from mtl.model import backbones
from mtl.training import checkpoint, rundir
from mtl.training.basepass import BasePass
from mtl.training.config import TrainConfig, validate

ProgressFn = Callable[[str, int, int], None]
FIRST_PASS = "checking images + computing features"
PREDICT_BATCH = 64  # every predict call gets this many rows (padded): one traced function


@dataclass
class EpochLog:
    phase: str  # "train" (head / unfrozen top) or "fine_tune"
    epoch: int  # 1-based, counted across both phases
    epochs: int  # planned in all
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    learning_rate: float
    seconds: float
    best: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


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


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    classes: list[str]
    train_counts: list[int]
    val_counts: list[int]
    history: list[EpochLog]
    best_epoch: int
    stopped_early: bool
    train_metrics: dict[str, Any]
    val_metrics: dict[str, Any]
    skipped: list[tuple[str, str]]
    warnings: list[str]
    device: str
    cache: dict[str, Any]
    seconds: dict[str, float]
    config: TrainConfig
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "model": str(self.model_path),
            "classes": self.classes,
            "train_count": dict(zip(self.classes, self.train_counts, strict=True)),
            "val_count": dict(zip(self.classes, self.val_counts, strict=True)),
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "train": _brief(self.train_metrics),
            "val": _brief(self.val_metrics),
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
            "warnings": self.warnings,
            "device": self.device,
            "cache": self.cache,
            "seconds": self.seconds,
            "files": self.files,
        }


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    return {"accuracy": m["accuracy"], "loss": m["loss"], "count": m["count"]}


def _check_out(out: str | Path | None, force: bool) -> None:
    if out is not None:
        rundir.refuse_existing(Path(out), force)


class _Data:
    """Training inputs from the cache: NumPy arrays if they fit in memory, else a PyDataset."""

    def __init__(
        self,
        cache: features.FeatureCache,
        keys: Sequence[str],
        labels: np.ndarray,
        sample_weights: np.ndarray | None,
        batch_size: int,
        seed: int,
        in_memory: bool,
        shuffle: bool,
    ) -> None:
        self.cache, self.keys, self.labels = cache, list(keys), labels
        self.sample_weights, self.batch_size = sample_weights, batch_size
        self.seed, self.in_memory, self.shuffle = seed, in_memory, shuffle

    def epoch_order(self, epoch: int) -> np.ndarray:
        """This epoch's sample order, drawn from (seed, epoch) alone, not from Keras' shuffle:
        a run resumed at epoch k then sees exactly the batches an uninterrupted one does."""
        order = np.arange(len(self.keys))
        if self.shuffle:
            np.random.default_rng([self.seed, epoch]).shuffle(order)
        return order

    def batches(self, first_epoch: int) -> Any:
        """Training batches for ``fit(initial_epoch=first_epoch)``, in :meth:`epoch_order`."""
        keras = runtime.keras()
        data = self
        stacked = (
            features.stack(self.cache, self.keys).astype("float32") if self.in_memory else None
        )

        class CachedBatches(keras.utils.PyDataset):  # type: ignore[name-defined]
            def __init__(self) -> None:
                super().__init__()
                self.epoch = first_epoch
                self.order = data.epoch_order(self.epoch)

            def __len__(self) -> int:
                return math.ceil(len(data.keys) / data.batch_size)

            def __getitem__(self, i: int) -> Any:
                idx = self.order[i * data.batch_size : (i + 1) * data.batch_size]
                if stacked is not None:
                    x = stacked[idx]
                else:
                    x = features.stack(data.cache, [data.keys[j] for j in idx]).astype("float32")
                y = data.labels[idx]
                if data.sample_weights is not None:
                    return x, y, data.sample_weights[idx]
                return x, y

            def on_epoch_end(self) -> None:
                self.epoch += 1
                self.order = data.epoch_order(self.epoch)

        return CachedBatches()


def _one_batch(batch: tuple[np.ndarray, ...]) -> Any:
    """A PyDataset of one batch, with the element types of the real training data."""
    keras = runtime.keras()

    class OneBatch(keras.utils.PyDataset):  # type: ignore[name-defined]
        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int) -> tuple[np.ndarray, ...]:
            return batch

    return OneBatch()


def _predict(
    top: Any,
    cache: features.FeatureCache,
    keys: Sequence[str],
    direct: bool,
    batch: int = PREDICT_BATCH,
) -> np.ndarray:
    out = []
    for start in range(0, len(keys), batch):
        x = features.stack(cache, keys[start : start + batch]).astype("float32")
        n = len(x)
        x = features.pad_rows(x, batch)
        y = top(x, training=False) if direct else top.predict_on_batch(x)
        out.append(np.asarray(runtime.as_numpy(y), dtype=np.float64)[:n])
    return np.concatenate(out) if out else np.zeros((0, 0))


def _optimizer(name: str, lr: float) -> Any:
    keras = runtime.keras()
    return {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate, momentum=0.9),
        "rmsprop": keras.optimizers.RMSprop,
    }[name](learning_rate=lr)


def _val_scores(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Validation loss and accuracy, computed as ``metrics.json``'s are."""
    from mtl.report.metrics import cross_entropy

    if not len(labels):
        return float("nan"), float("nan")
    return cross_entropy(probs, labels), float((probs.argmax(axis=1) == labels).mean())


def _callbacks(
    model: Any,
    phase: str,
    total_epochs: int,
    patience: int,
    state: dict[str, Any],
    history: list[EpochLog],
    on_epoch: Callable[[EpochLog], None] | None,
    validate: Callable[[], tuple[float, float]],
) -> list[Any]:
    """Per-epoch logging and early stopping on val_loss that keeps the best weights.

    ``model`` is the part being trained: nothing else changes, so its weights are
    all that the best epoch needs (the whole model's are ~100x more to copy).
    """
    keras = runtime.keras()

    class Track(keras.callbacks.Callback):  # type: ignore[name-defined]
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs if logs is not None else {}
            # Validation here, with the predict function the final metrics use too: Keras'
            # own (validation_data) builds a tf.data iterator every epoch, 0.1 s on 2 cores.
            logs["val_loss"], logs["val_accuracy"] = validate()
            val_loss = float(logs["val_loss"])
            improved = not math.isnan(val_loss) and val_loss < state["best_loss"]
            if improved:
                state.update(best_loss=val_loss, best_epoch=epoch + 1, wait=0)
                if patience:
                    state["best_weights"] = model.get_weights()
            else:
                state["wait"] += 1
            lr = self.model.optimizer.learning_rate
            log = EpochLog(
                phase=phase,
                epoch=epoch + 1,
                epochs=total_epochs,
                loss=float(logs.get("loss", float("nan"))),
                accuracy=float(logs.get("accuracy", float("nan"))),
                val_loss=val_loss,
                val_accuracy=float(logs.get("val_accuracy", float("nan"))),
                learning_rate=float(runtime.as_numpy(lr)),
                seconds=time.perf_counter() - self.t0,
                best=improved,
            )
            history.append(log)
            if on_epoch:
                on_epoch(log)
            last = int((self.params or {}).get("epochs") or 0)
            if patience and state["wait"] >= patience and epoch + 1 < last:
                state["stopped_early"] = True
                self.model.stop_training = True

    return [Track()]


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
    on_progress: ProgressFn | None = None,
    on_start: Callable[[TrainStart], None] | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> TrainResult:
    """Train a classifier on the class folders of ``data`` and write a run folder.

    ``out``: the run folder (default: the next free ``runs/train``, ``runs/train2``...).
    ``cache_dir``: a feature cache shared between runs (default: memory, spilling
    into the run folder). ``resume``: an interrupted run folder, continued from
    its last complete epoch with its own config and split (``data`` and
    ``config`` must then be None). Raises :class:`~mtl.errors.DataError` or
    :class:`~mtl.errors.UsageError` (exit 2) for unusable data or options.
    """
    t_start = time.perf_counter()
    ckpt = None
    if resume is not None:
        if config is not None or force or out is not None:
            raise UsageError("--resume continues a run with its own settings; give it alone")
        out = Path(resume)
        if (out / rundir.MODEL_FILE).exists():
            raise UsageError(
                f"{out} already finished (it holds {rundir.MODEL_FILE}); nothing to resume"
            )
        saved, saved_data = checkpoint.read_run(out)
        if data is not None and Path(data).resolve() != saved_data:
            raise UsageError(f"{out} was trained on {saved_data}, not {data}")
        data = saved_data
        config = TrainConfig(**saved)
        ckpt = checkpoint.load(out)
        checkpoint.clean_temp_files(out)
    if data is None:
        raise UsageError("no data folder given")
    cfg = validate(config or TrainConfig())
    if resume is None:
        _check_out(Path(out) if out is not None else None, force)
    ds = dataset.scan(Path(data), val_split=cfg.val_split, seed=cfg.seed)
    wfile = weights.resolve(
        backbones.weights_file(cfg.model, cfg.alpha, include_top=False, size=cfg.image_size),
        weights_dir,
        progress=on_download,
    )
    if resume is None:
        run_dir = rundir.prepare(Path(out) if out is not None else None, force=force)
        # A forced rerun must never resume into an older run's checkpoint.
        shutil.rmtree(checkpoint.folder(run_dir), ignore_errors=True)
        checkpoint.write_run(run_dir, cfg.to_dict(), Path(data))
    else:
        run_dir = Path(resume)
    own_cache = cache_dir is None
    cache = features.FeatureCache(
        folder=Path(cache_dir) if cache_dir is not None else run_dir / "cache",
        memory_bytes=cfg.cache_memory_mb << 20,
        persistent=not own_cache,
    )
    base = BasePass(cfg, wfile)
    # With a converted base on disk, the one pass over every image needs no TensorFlow:
    # run it while TensorFlow imports (seconds on any machine).
    base.start_early([it.path for it in ds.items], cache)
    try:
        t0 = time.perf_counter()
        devices = runtime.setup_training(cfg.precision)
        runtime.set_seed(cfg.seed)
        setup_seconds = time.perf_counter() - t0
        result = _train(
            cfg,
            ds,
            wfile,
            devices,
            run_dir,
            cache,
            base,
            t_start,
            on_progress,
            on_start,
            on_epoch,
            ckpt,
        )
        result.seconds = {"setup": round(setup_seconds, 3), **result.seconds}
        # The run is complete (model.keras written): its checkpoint is no longer needed.
        shutil.rmtree(checkpoint.folder(run_dir), ignore_errors=True)
        return result
    finally:
        base.stop_early()
        if own_cache:
            shutil.rmtree(run_dir / "cache", ignore_errors=True)


def _train(
    cfg: TrainConfig,
    ds: dataset.Dataset,
    wfile: Path,
    devices: runtime.TrainingDevices,
    run_dir: Path,
    cache: features.FeatureCache,
    base: BasePass,
    t_start: float,
    on_progress: ProgressFn | None,
    on_start: Callable[[TrainStart], None] | None,
    on_epoch: Callable[[EpochLog], None] | None,
    ckpt: checkpoint.Checkpoint | None = None,
) -> TrainResult:
    from mtl.model.classifier import Parts, build_parts

    seconds: dict[str, float] = {}
    info = {"model": cfg.model, "alpha": cfg.alpha, "image_size": cfg.image_size}
    freeze_layers = None if cfg.freeze_all else int(cfg.freeze)

    def build(freeze: int | None, **reuse: Any) -> Parts:
        with devices.scope():
            return build_parts(
                ds.classes,
                model=cfg.model,
                alpha=cfg.alpha,
                size=cfg.image_size,
                head_units=cfg.head,
                dropout=cfg.dropout,
                freeze_layers=freeze,
                augment=cfg.augment,
                info=info,
                **reuse,
            )

    base.choose(devices)
    t0 = time.perf_counter()
    parts = build(freeze_layers, weights=wfile)
    seconds["build"] = time.perf_counter() - t0
    n_base = len(parts.backbone.layers)
    direct = devices.strategy is not None

    def fill(
        p: Parts, freeze: str, stage: str, while_waiting: Callable[[], None] | None = None
    ) -> features.Features:
        progress = (lambda d, t: on_progress(stage, d, t)) if on_progress else None
        return base.fill(
            p,
            freeze,
            [it.path for it in ds.items],
            cache,
            direct=direct,
            batch_size=max(cfg.batch_size, 32),
            on_progress=progress,
            while_waiting=while_waiting,
        )

    history: list[EpochLog] = []
    state: dict[str, Any] = {
        "best_loss": math.inf,
        "best_epoch": 0,
        "wait": 0,
        "stopped_early": False,
        "best_weights": None,
    }
    if ckpt is not None:
        history = [EpochLog(**h) for h in ckpt.history]
        state.update(ckpt.early, best_weights=ckpt.best_weights)
    total_epochs = cfg.epochs + cfg.fine_tune_epochs
    epoch_delay = float(os.environ.get("MTL_TEST_EPOCH_DELAY", "0"))  # tests kill a run mid-way

    def restore(p: Parts) -> dict[str, np.ndarray] | None:
        """Put the checkpoint's variables into ``p``; its optimizer state is returned."""
        if ckpt is None or ckpt.phase != phase_of(p):
            return None
        variables = p.top.variables  # what training changes; the frozen rest is rebuilt as is
        if [tuple(v.shape) for v in variables] != [a.shape for a in ckpt.variables]:
            raise UsageError(f"the checkpoint in {run_dir} does not fit this model; retrain")
        for v, a in zip(variables, ckpt.variables, strict=True):
            v.assign(a)
        return ckpt.optimizer

    def phase_of(p: Parts) -> str:
        return "fine_tune" if p is not parts_train else "train"

    def save_checkpoint(p: Parts, phase: str) -> None:
        store: dict[str, Any] = {}
        p.top.optimizer.save_own_variables(store)
        checkpoint.save(
            run_dir,
            checkpoint.Checkpoint(
                epochs_done=len(history),
                phase=phase,
                history=[h.to_json() for h in history],
                early={k: v for k, v in state.items() if k != "best_weights"},
                variables=[np.asarray(runtime.as_numpy(v)) for v in p.top.variables],
                optimizer={k: np.asarray(runtime.as_numpy(v)) for k, v in store.items()},
                best_weights=state["best_weights"],
            ),
        )
        if epoch_delay:
            time.sleep(epoch_delay)

    compiled: list[Any] = []  # the tops compiled for their phase (and maybe warmed up)

    def compile_top(p: Parts, lr: float, first: int) -> None:
        with devices.scope():
            p.top.compile(
                optimizer=_optimizer(cfg.optimizer, lr),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
            saved_optimizer = restore(p)
            if saved_optimizer is not None and first > 0:
                p.top.optimizer.build(p.top.trainable_variables)
                p.top.optimizer.load_own_variables(saved_optimizer)
        runtime.prepare_fit(p.top, devices)
        compiled.append(p.top)

    def warm_up(p: Parts, lr: float) -> None:
        """Trace the training step and the predict function on a dummy batch while the
        early pass finishes in its thread (LiteRT runs without the GIL), then put every
        variable back, so the run is exactly what it would have been, only sooner."""
        compile_top(p, lr, 0)
        top = p.top
        if not top.optimizer.built:
            top.optimizer.build(top.trainable_variables)
        variables = [*top.variables, *top.optimizer.variables]
        saved = [np.array(runtime.as_numpy(v)) for v in variables]
        shape = tuple(int(d) for d in top.input_shape[1:])
        batch: tuple[np.ndarray, ...] = (np.zeros((2, *shape), "float32"), np.zeros(2, np.int64))
        if cfg.class_weight == "auto":
            batch = (*batch, np.ones(2, np.float32))
        top.fit(_one_batch(batch), epochs=1, verbose=0)
        top.predict_on_batch(np.zeros((PREDICT_BATCH, *shape), "float32"))
        for v, value in zip(variables, saved, strict=True):
            v.assign(value)

    def run_phase(p: Parts, phase: str, lr: float, first: int, last: int) -> None:
        if state["stopped_early"]:  # a resumed run that had already stopped
            return
        keys_t = [key_of[it.path] for it in train_items]
        keys_v = [key_of[it.path] for it in val_items]
        per_entry = features.stack(cache, keys_t[:1]).astype("float32").nbytes
        in_memory = p.extractor is not None and per_entry * len(key_of) <= cfg.cache_memory_mb << 20
        if not any(top is p.top for top in compiled):
            compile_top(p, lr, first)
        callbacks = _callbacks(
            p.top,
            phase,
            total_epochs,
            cfg.patience,
            state,
            history,
            on_epoch,
            lambda: _val_scores(_predict(p.top, cache, keys_v, direct), y_val),
        )
        keras = runtime.keras()
        callbacks.append(
            keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: save_checkpoint(p, phase))
        )
        tr = _Data(cache, keys_t, y_train, sw, cfg.batch_size, cfg.seed, in_memory, True)
        p.top.fit(
            tr.batches(first),
            epochs=last,
            initial_epoch=first,
            callbacks=callbacks,
            verbose=0,
        )

    t0 = time.perf_counter()
    warm = None
    if base.engine == "litert" and ckpt is None:
        warm = lambda: warm_up(parts, cfg.learning_rate)  # noqa: E731
    feats = fill(parts, str(cfg.freeze), FIRST_PASS, while_waiting=warm)
    seconds["features"] = time.perf_counter() - t0
    ds.drop(feats.failures)
    dataset.check_usable(ds)
    warnings = [*ds.warnings, *base.warnings]
    train_counts, val_counts = ds.counts("train"), ds.counts("val")
    if on_start:
        on_start(
            TrainStart(
                run_dir,
                devices.description,
                ds.classes,
                train_counts,
                val_counts,
                ds.layout,
                _describe_cache(parts, n_base, base.engine),
                list(ds.skipped),
                warnings,
            )
        )

    key_of = dict(zip(feats.paths, feats.keys, strict=True))
    train_items, val_items = ds.subset("train"), ds.subset("val")
    y_train = np.array([it.label for it in train_items], dtype=np.int64)
    y_val = np.array([it.label for it in val_items], dtype=np.int64)
    sw = None
    if cfg.class_weight == "auto":
        cw = dataset.class_weights(train_counts)
        sw = np.array([cw[y] for y in y_train], dtype=np.float32)

    parts_train = parts
    in_fine_tune = ckpt is not None and ckpt.phase == "fine_tune"
    t0 = time.perf_counter()
    if not in_fine_tune:
        start = ckpt.epochs_done if ckpt is not None else 0
        if start < cfg.epochs:
            run_phase(parts, "train", cfg.learning_rate, start, cfg.epochs)
        else:
            restore(parts)
    seconds["fit"] = time.perf_counter() - t0
    if cfg.fine_tune_epochs and not (state["stopped_early"] and not in_fine_tune):
        if state["best_weights"] is not None and not in_fine_tune:
            parts.top.set_weights(state["best_weights"])  # start from the best head
        current = n_base if freeze_layers is None else min(freeze_layers, n_base)
        n = min(current, max(0, n_base - cfg.fine_tune_layers))
        t0 = time.perf_counter()
        parts = build(n, weights=None, backbone=parts.backbone, head=parts.head, fine_tune=True)
        if state["best_weights"] is not None and not in_fine_tune:
            # The best so far, in the layout of the larger part that fine-tuning trains.
            state["best_weights"] = parts.top.get_weights()
        feats2 = fill(parts, str(n), "computing fine-tuning features")
        key_of = dict(zip(feats2.paths, feats2.keys, strict=True))
        seconds["fine_tune_features"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_phase(parts, "fine_tune", cfg.fine_tune_lr, len(history), total_epochs)
        seconds["fine_tune_fit"] = time.perf_counter() - t0
    if cfg.patience and state["best_weights"] is not None:
        parts.top.set_weights(state["best_weights"])
    best_epoch = state["best_epoch"] if cfg.patience else len(history)

    keys_t = [key_of[it.path] for it in train_items]
    keys_v = [key_of[it.path] for it in val_items]
    train_metrics = _summary(_predict(parts.top, cache, keys_t, direct), y_train, ds.classes)
    val_metrics = _summary(_predict(parts.top, cache, keys_v, direct), y_val, ds.classes)
    cache_stats = {
        **cache.stats.to_json(),
        "base_forward_images": sum(e.images for e in base.extractors),
        "base_forward_calls": sum(e.calls for e in base.extractors),
        "base_engine": base.engine if base.extractors else "none",
        "base_converted": base.converted,
        "base_started_early": base.started_early and base.engine == "litert",
    }

    t0 = time.perf_counter()
    result = TrainResult(
        run_dir=run_dir,
        model_path=run_dir / rundir.MODEL_FILE,
        classes=ds.classes,
        train_counts=train_counts,
        val_counts=val_counts,
        history=history,
        best_epoch=best_epoch,
        stopped_early=bool(state["stopped_early"]),
        train_metrics=train_metrics,
        val_metrics=val_metrics,
        skipped=list(ds.skipped),
        warnings=[*ds.warnings, *base.warnings],
        device=devices.description,
        cache=cache_stats,
        seconds=seconds,
        config=cfg,
    )
    _write_run(result, parts.model, ds)
    seconds["write"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start
    result.seconds = {k: round(v, 3) for k, v in seconds.items()}
    return result


def _summary(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from mtl.report.metrics import summary

    return summary(probs, labels, classes)


def _describe_cache(parts: Any, n_base: int, engine: str) -> str:
    if parts.extractor is None:
        return "decoded images (augmentation or an unfrozen base: the base runs every epoch)"
    by = "LiteRT" if engine == "litert" else "Keras"
    if parts.cut < 0:
        return f"pooled base features (all {n_base} base layers frozen, computed once by {by})"
    return (
        f"base layers [:{parts.cut}] computed once by {by}; layers [{parts.cut}:] train each epoch"
    )


def _write_run(result: TrainResult, model: Any, ds: dataset.Dataset) -> None:
    from mtl.model.modelio import save_model

    d = result.run_dir
    files = [
        rundir.MODEL_FILE,
        "labels.txt",
        "config.json",
        "split.csv",
        "history.csv",
        "metrics.json",
    ]
    save_model(model, d / rundir.MODEL_FILE)
    rundir.write_text(d / "labels.txt", "".join(c + "\n" for c in result.classes))
    rundir.write_json(
        d / "config.json",
        {
            "config": result.config.to_dict(),
            "data": str(ds.root),
            "layout": ds.layout,
            "backend": runtime.backend_name(),
            "device": result.device,
            "mtl_version": __version__,
        },
    )
    rundir.write_csv(
        d / "split.csv",
        ["file", "class", "subset"],
        [[str(it.path), ds.classes[it.label], it.subset] for it in ds.items],
    )
    rundir.write_csv(
        d / "history.csv",
        [
            "epoch",
            "phase",
            "loss",
            "accuracy",
            "val_loss",
            "val_accuracy",
            "learning_rate",
            "seconds",
        ],
        [
            [
                h.epoch,
                h.phase,
                f"{h.loss:.6f}",
                f"{h.accuracy:.6f}",
                f"{h.val_loss:.6f}",
                f"{h.val_accuracy:.6f}",
                f"{h.learning_rate:.3g}",
                f"{h.seconds:.3f}",
            ]
            for h in result.history
        ],
    )
    rundir.write_json(
        d / "metrics.json",
        {
            "train": result.train_metrics,
            "val": result.val_metrics,
            "classes": result.classes,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "epochs_run": len(result.history),
            "skipped": [{"file": f, "reason": r} for f, r in result.skipped],
            "warnings": result.warnings,
            "cache": result.cache,
        },
    )
    try:
        from mtl.report import plots

        plots.learning_curves([h.to_json() for h in result.history], d / "learning_curves.png")
        plots.confusion_matrix(
            result.val_metrics["confusion_matrix"], result.classes, d / "confusion_matrix.png"
        )
        files += ["learning_curves.png", "confusion_matrix.png"]
    except ImportError:
        result.warnings.append("matplotlib is not installed: no plots were written")
    result.files = files


def dumps(result: TrainResult) -> str:
    return json.dumps(result.to_json(), indent=2)

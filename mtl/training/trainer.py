"""``mtl train``: a folder-per-class dataset in, a trained classifier and its run folder out.

The orchestration, above both engines: :func:`train` prepares the run
(settings, data, weights, run folder, feature cache; or, with ``resume``, an
interrupted run's own), :func:`_run` picks the engine that trains the head
(:func:`mtl.pipeline.basepass.head_engine`: NumPy on one CPU, Keras elsewhere)
and hands both to a :class:`~mtl.training.session.Session`, which does the
steps they share.

Module map of training, top down:

- this module: the orchestration;
- :mod:`mtl.training.kerashead`, :mod:`mtl.training.headrun`: the Keras and the
  NumPy engine (their steps only), with :mod:`~mtl.training.fitting` (Keras'
  batches and callback) and :mod:`~mtl.training.headfit` (NumPy's epoch);
- :mod:`mtl.training.session`: the run both engines share (the end of each epoch,
  the prior, the refit, the run folder) and the engine interface;
- :mod:`mtl.training.results`, :mod:`~mtl.training.tracking`: the vocabulary
  (:class:`TrainResult`, :class:`Hooks`, :class:`~mtl.training.tracking.EpochLog`...).
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mtl import files, runtime
from mtl.assets import weights
from mtl.data import dataset, features
from mtl.errors import DataError, MtlError, TrainingInterrupted, UsageError, interrupt_exit_code
from mtl.locks import folder_lock
from mtl.model import backbones
from mtl.pipeline.basepass import BasePass, head_engine
from mtl.pipeline.config import TrainConfig, validate
from mtl.progress import StageProgressFn
from mtl.training import checkpoint, rundir
from mtl.training.kerashead import KerasEngine
from mtl.training.results import FIRST_PASS, Hooks, TrainResult, TrainStart
from mtl.training.session import Engine, Session
from mtl.training.tracking import EpochLog

# Re-exported: the names callers of ``mtl.training.trainer`` have always imported.
__all__ = [
    "FIRST_PASS",
    "Hooks",
    "TrainResult",
    "TrainStart",
    "is_finished",
    "train",
]


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
    ``config`` must then be None). ``callbacks``: Keras callbacks run at every epoch
    of the validated fit, with Keras' logs (``loss``, ``accuracy``, ``val_loss``,
    ``val_accuracy``); the refit on every photo is not reported to them.
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
    runtime.check_environment()  # before a run folder exists, whichever engine runs
    if resume is None and out is not None:
        rundir.refuse_existing(Path(out), force)
    if not Path(data).is_dir():
        raise DataError(f"no such folder: {data}")
    # DATA is read until the model is saved: a reader's lock, shared with other trains
    # and reviews, so `review --apply`/`--undo` and `fetch` cannot move photos under it.
    with folder_lock(Path(data), "mtl train (reading)", shared=True):
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
        # Two runs never share a folder: the second is refused (exit 2) while the first
        # holds it.
        with folder_lock(run_dir, "mtl train"):
            rundir.refuse_links(run_dir)
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
    """Set up the devices, the feature cache and the engine, then let a
    :class:`~mtl.training.session.Session` do the run with it."""
    own_cache = cache_dir is None
    cache = features.FeatureCache(
        folder=Path(cache_dir) if cache_dir is not None else run_dir / "cache",
        memory_bytes=cfg.cache_memory_mb << 20,
        persistent=not own_cache,
    )
    engine_name = head_engine(
        cfg, callbacks=bool(hooks.callbacks), resuming=ckpt is not None, photos=len(ds.items)
    )
    base = BasePass(cfg, wfile, auto_int8=engine_name == "numpy")
    # With a converted base on disk, the one pass over every image needs no TensorFlow:
    # start it now (while TensorFlow imports, when the head needs Keras).
    base.start_early([it.path for it in ds.items], cache, importing=engine_name == "keras")
    try:
        t0 = time.perf_counter()
        if engine_name == "numpy":
            from mtl.pipeline.basepass import cpu_devices
            from mtl.training.headrun import NumpyEngine

            devices = cpu_devices()
        else:
            devices = runtime.setup_training(cfg.precision)
            runtime.set_seed(cfg.seed)
        seconds = {"setup": time.perf_counter() - t0}
        session = Session(cfg, ds, wfile, devices, run_dir, cache, base, hooks, ckpt)
        session.top_file = top_file
        engine: Engine = NumpyEngine(session) if engine_name == "numpy" else KerasEngine(session)
        try:
            result = session.run(engine, seconds, t_start)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM in the CLI (errors.Interrupted)
            raise TrainingInterrupted(
                _interrupted(session, run_dir), exit_code=interrupt_exit_code(exc)
            ) from None
        # The run is complete (model.keras written): its checkpoint is no longer needed.
        files.remove(checkpoint.folder(run_dir))
        return result
    finally:
        base.stop_early()
        if own_cache:
            files.remove(run_dir / "cache")


def _interrupted(session: Session, run_dir: Path) -> str:
    """What Ctrl-C leaves, in words, and the command that continues: the epochs of the
    validated fit a resume keeps (a Keras head's checkpoint), or that it starts again (a
    NumPy head keeps none: it trains again in seconds); once model.keras is written, the
    run is complete but for its test/ scores (``--resume`` adds them)."""
    resume = f"mtl train --resume {shlex.quote(str(run_dir))}"
    model = run_dir / rundir.MODEL_FILE
    if model.is_file():
        if session.ds.test:
            return f"interrupted after {model} was written: score its test/ photos with {resume}"
        return f"interrupted after {model} was written: the run is complete"
    done = session.epochs_checkpointed
    if done:
        return f"interrupted after epoch {done}: resume with {resume}"
    if session.history:
        return (
            f"interrupted at epoch {len(session.history)}; this run's head trains in NumPy "
            f"and keeps no checkpoint: {resume} trains it again from epoch 1 (seconds)"
        )
    return f"interrupted before the first epoch ended: resume with {resume}"


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

"""mtl: image transfer learning with MobileNet, from a folder of photos to a small classifier.

The Python API is the CLI's: each function below is what one command calls, with
the same defaults, and returns a result object (``.to_json()`` gives what
``--json`` prints). Errors are :class:`mtl.errors.MtlError` subclasses.

    import mtl

    run = mtl.train("data/", out="runs/birds", seed=1)   # settings as in --config
    run.val_metrics["accuracy"], run.model_path
    mtl.predict(run.model_path, "crow.jpg").results[0].predictions[0].label
    mtl.evaluate(run.run_dir, split="val").accuracy
    mtl.export(run.model_path, format="onnx").files
    mtl.classify(["photo.jpg"], top_k=3)
    mtl.fetch(["blue tit", "crow"], out="data/", limit=50)
    mtl.review("data/").to_json()["scores"]     # every photo's scores; mtl.review.undo("data/")
    mtl.serve(run.run_dir, port=8000)            # HTTP until Ctrl-C (the serve extra)

Importing this package is cheap: TensorFlow/Keras load only when a function
needs a model (see :mod:`mtl.runtime`), quietly (no start-up lines on stderr).

``train``, ``predict``, ``evaluate`` and ``classify`` show their progress in a
notebook (bars and the epoch lines, updated in place) or on a terminal;
``progress=False`` turns it off, ``progress=True`` draws it on stderr anywhere
(:mod:`mtl.live`). Results have a one-line ``repr`` and, in Jupyter, an HTML table.
``predict`` and ``classify`` take images in memory too: PIL images, uint8 arrays
(height x width x 3, or a batch n x height x width x 3), or a list mixing them with
paths.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mtl._version import __version__ as __version__

__all__ = ["classify", "evaluate", "export", "fetch", "predict", "review", "serve", "train"]

if TYPE_CHECKING:
    from mtl.crawler.crawl import FetchResult
    from mtl.deploy.export import ExportReport
    from mtl.deploy.server import ServeReport
    from mtl.inference.evaluate import EvaluationReport
    from mtl.inference.predict import PredictReport
    from mtl.inference.results import ImageResults
    from mtl.training.tracking import EpochLog
    from mtl.training.trainer import TrainResult

PathLike = str | os.PathLike[str]


def train(
    data: PathLike | None = None,
    *,
    config: PathLike | None = None,
    out: PathLike | None = None,
    force: bool = False,
    resume: PathLike | None = None,
    weights_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    callbacks: Sequence[Any] = (),
    on_epoch: Callable[[EpochLog], None] | None = None,
    progress: bool | None = None,
    **settings: Any,
) -> TrainResult:
    """``mtl train``: train on the class folders of ``data`` and write a run folder.

    ``settings`` are the config keys (``epochs=30``, ``views=["image"]``, ...), over
    ``config`` (a TOML preset) over the defaults. ``callbacks``: Keras callbacks run
    at every epoch of the validated fit with Keras' logs, ``val_loss`` and
    ``val_accuracy`` included (for example ``keras.callbacks.EarlyStopping(
    monitor="val_loss")``, or your own logger), not during the refit on every photo; a
    run given callbacks trains its head on Keras (else, on a CPU, in NumPy).
    ``on_epoch(log)`` is called after every epoch; ``progress``: see the module.
    """
    _check_train_arguments(data, config, out, resume, weights_dir, cache_dir, callbacks, on_epoch)
    from mtl.inference.heldout import score_test
    from mtl.live import Progress
    from mtl.pipeline.config import resolve
    from mtl.training.trainer import train as run

    cfg = None if resume is not None else resolve(config, settings)
    with Progress(progress) as shown:

        def epoch(log: EpochLog) -> None:
            shown.epoch(log)
            if on_epoch is not None:
                on_epoch(log)

        result = run(
            data,
            cfg,
            out=out,
            force=force,
            resume=resume,
            weights_dir=weights_dir,
            cache_dir=cache_dir,
            on_progress=shown.stage,
            on_epoch=epoch,
            callbacks=callbacks,
        )
        return score_test(result)  # DATA/test/, held out: scored by the saved model


def _check_train_arguments(
    data: object,
    config: object,
    out: object,
    resume: object,
    weights_dir: object,
    cache_dir: object,
    callbacks: object,
    on_epoch: object,
) -> None:
    """Refuse wrong types before anything is written (a run folder, a lock)."""
    from mtl.errors import UsageError

    paths = {"data": data, "config": config, "out": out, "resume": resume}
    paths.update(weights_dir=weights_dir, cache_dir=cache_dir)
    for name, value in paths.items():
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise UsageError(
                f"{name} must be a path (str or os.PathLike). Received {value!r} "
                f"({type(value).__name__})"
            )
    if on_epoch is not None and not callable(on_epoch):
        raise UsageError(f"on_epoch must be callable. Received {on_epoch!r}")
    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Sequence):
        raise UsageError(f"callbacks must be a list of Keras callbacks. Received {callbacks!r}")
    if callbacks:
        from mtl.runtime import keras

        base = keras().callbacks.Callback
        for i, cb in enumerate(callbacks):
            if not isinstance(cb, base):
                raise UsageError(
                    f"callbacks[{i}] is not a keras.callbacks.Callback. Received {cb!r} "
                    f"({type(cb).__name__})"
                )


def predict(
    model: PathLike,
    inputs: Sequence[PathLike | Any] | PathLike | Any,
    *,
    top_k: int = 1,
    progress: bool | None = None,
    **options: Any,
) -> PredictReport:
    """``mtl predict``: label images (files, folders, globs; PIL images or uint8 arrays in
    memory) with a trained model: ``model.keras``, its run folder, a ``.tflite`` or an
    ``.onnx`` export."""
    from mtl.inference.predict import predict as run
    from mtl.live import Progress

    with Progress(progress) as shown:
        options.setdefault("on_progress", shown.task("predicting"))
        return run(model, _as_list(inputs), top_k_count=top_k, **options)


def _as_list(inputs: Any) -> list[Any]:
    """One input (a path, a PIL image, an array) as a list of one; a list as it is."""
    if isinstance(inputs, (str, os.PathLike)):
        return [inputs]
    from mtl.data.images import is_in_memory

    return [inputs] if is_in_memory(inputs) else list(inputs)


def evaluate(
    model: PathLike,
    data: PathLike | None = None,
    *,
    split: str | None = None,
    progress: bool | None = None,
    **options: Any,
) -> EvaluationReport:
    """``mtl evaluate``: accuracy, per-class metrics and the confusion matrix on a
    folder-per-class test set, or (``split="val"``) on a run's held-out photos."""
    from mtl.inference.evaluate import evaluate as run
    from mtl.live import Progress

    with Progress(progress) as shown:
        options.setdefault("on_progress", shown.task("evaluating"))
        return run(model, data, split=split, **options)


def export(model: PathLike, *, format: str = "tflite", **options: Any) -> ExportReport:  # noqa: A002
    """``mtl export``: TFLite (``quantize="none"|"dynamic"|"int8"``), SavedModel or ONNX."""
    from mtl.deploy.export import export_model

    return export_model(model, fmt=format, **options)


def classify(
    inputs: Sequence[PathLike | Any] | PathLike | Any,
    *,
    top_k: int = 5,
    progress: bool | None = None,
    **options: Any,
) -> ImageResults:
    """``mtl classify``: ImageNet top-k with a pretrained MobileNet (files, folders, globs;
    PIL images or uint8 arrays in memory)."""
    from mtl.inference.classify import classify as run
    from mtl.live import Progress

    with Progress(progress) as shown:
        options.setdefault("on_progress", shown.task("classifying"))
        return run(_as_list(inputs), top_k_count=top_k, **options)


def fetch(keywords: Sequence[str] | str, *, out: PathLike = "data", **options: Any) -> FetchResult:
    """``mtl fetch``: one clean, de-duplicated folder of web images per keyword."""
    from pathlib import Path

    from mtl.crawler import FetchRequest
    from mtl.crawler import fetch as run

    if isinstance(keywords, str):
        keywords = [keywords]
    return run(FetchRequest(keywords=list(keywords), out=Path(out), **options))


def serve(
    model: PathLike, *, host: str = "127.0.0.1", port: int = 8000, **options: Any
) -> ServeReport:
    """``mtl serve``: answer HTTP requests with ``model`` (``model.keras``, its run folder, a
    ``.tflite`` or an ``.onnx``) until Ctrl-C or SIGTERM; returns what it served. Options:
    ``max_body``, ``max_files``, ``max_batch``, ``batch_wait`` (seconds), ``labels``,
    ``on_ready(url, service)``. Needs ``pip install 'mtl[serve]'``."""
    from mtl.deploy.server import serve as run

    return run(model, host=host, port=port, **options)


def __getattr__(name: str) -> Any:
    """``mtl.review`` on first use: the package :mod:`mtl.review`, callable as
    ``mtl.review(data, ...)`` (``mtl review``: see :func:`mtl.review.review`)."""
    if name == "review":
        import importlib

        return importlib.import_module("mtl.review")
    raise AttributeError(f"module 'mtl' has no attribute {name!r}")

"""mtl: image transfer learning with MobileNet, from a folder of photos to a small classifier.

The Python API is the CLI's: each function below is what one command calls, with
the same defaults, and returns a result object (``.to_json()`` gives what
``--json`` prints). Errors are :class:`mtl.errors.MtlError` subclasses.

    import mtl

    run = mtl.train("data/", alpha=0.75, out="runs/birds")   # settings as in --config
    run.val_metrics["accuracy"], run.model_path
    mtl.predict(run.model_path, "crow.jpg").results[0].predictions[0].label
    mtl.evaluate(run.run_dir, split="val").accuracy
    mtl.export(run.model_path, format="onnx").files
    mtl.classify(["photo.jpg"], top_k=3)
    mtl.fetch(["blue tit", "crow"], out="data/", limit=50)

Importing this package is cheap: TensorFlow/Keras load only when a function
needs a model (see :mod:`mtl.runtime`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["classify", "evaluate", "export", "fetch", "predict", "train"]

if TYPE_CHECKING:
    from mtl.crawler.crawl import FetchResult
    from mtl.inference.evaluate import EvaluationReport
    from mtl.inference.export import ExportReport
    from mtl.inference.predict import PredictReport
    from mtl.inference.results import ImageResult
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
    **settings: Any,
) -> TrainResult:
    """``mtl train``: train on the class folders of ``data`` and write a run folder.

    ``settings`` are the config keys (``epochs=30``, ``views=["image"]``, ...), over
    ``config`` (a TOML preset) over the defaults. ``callbacks``: Keras callbacks run
    every epoch (for example ``keras.callbacks.EarlyStopping``, or your own logger); a
    run given callbacks trains its head on Keras (else, on a CPU, in NumPy).
    """
    from mtl.inference.heldout import score_test
    from mtl.training.config import resolve
    from mtl.training.trainer import train as run

    cfg = None if resume is not None else resolve(config, settings)
    result = run(
        data,
        cfg,
        out=out,
        force=force,
        resume=resume,
        weights_dir=weights_dir,
        cache_dir=cache_dir,
        on_epoch=on_epoch,
        callbacks=callbacks,
    )
    return score_test(result)  # DATA/test/, held out: scored by the saved model


def predict(
    model: PathLike, inputs: Sequence[PathLike] | PathLike, *, top_k: int = 1, **options: Any
) -> PredictReport:
    """``mtl predict``: label images (files, folders, globs) with a trained model:
    ``model.keras``, its run folder, a ``.tflite`` or an ``.onnx`` export."""
    from mtl.inference.predict import predict as run

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    return run(model, list(inputs), top_k_count=top_k, **options)


def evaluate(
    model: PathLike, data: PathLike | None = None, *, split: str | None = None, **options: Any
) -> EvaluationReport:
    """``mtl evaluate``: accuracy, per-class metrics and the confusion matrix on a
    folder-per-class test set, or (``split="val"``) on a run's held-out photos."""
    from mtl.inference.evaluate import evaluate as run

    return run(model, data, split=split, **options)


def export(model: PathLike, *, format: str = "tflite", **options: Any) -> ExportReport:  # noqa: A002
    """``mtl export``: TFLite (``quantize="none"|"dynamic"|"int8"``), SavedModel or ONNX."""
    from mtl.inference.export import export_model

    return export_model(model, fmt=format, **options)


def classify(
    inputs: Sequence[PathLike] | PathLike, *, top_k: int = 5, **options: Any
) -> list[ImageResult]:
    """``mtl classify``: ImageNet top-k with a pretrained MobileNet."""
    from mtl.inference.classify import classify as run

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    return run(list(inputs), top_k_count=top_k, **options)


def fetch(keywords: Sequence[str] | str, *, out: PathLike = "data", **options: Any) -> FetchResult:
    """``mtl fetch``: one clean, de-duplicated folder of web images per keyword."""
    from pathlib import Path

    from mtl.crawler import FetchRequest
    from mtl.crawler import fetch as run

    if isinstance(keywords, str):
        keywords = [keywords]
    return run(FetchRequest(keywords=list(keywords), out=Path(out), **options))

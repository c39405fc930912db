"""Applying a trained model (``model.keras``, a run folder, an exported ``.tflite`` or
``.onnx``) to images.

The model takes raw RGB 0-255 at its own input size and does its own
preprocessing, and the class names travel inside it (or, for ``.tflite``, in
the labels file written beside it by ``mtl export``). So prediction cannot
disagree with training about pixel scaling, image size or label order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from mtl import files
from mtl.data.images import InMemory, Source, expand_inputs, iter_batches
from mtl.errors import DataError, ModelFileError, UsageError
from mtl.inference.results import ImageResult, results_html, summary, top_k
from mtl.progress import ProgressFn


@dataclass
class Predictor:
    """A model ready to run: uint8 pixels (n, size, size, 3) in, probabilities out."""

    path: Path
    kind: str  # "keras", "tflite" or "onnx"
    class_names: list[str]
    image_size: int
    run: Callable[[np.ndarray], np.ndarray]
    # What runs it: "keras", "litert" (a .keras of mtl's on its LiteRT base and a NumPy
    # head: mtl.inference.litekeras), "tflite" or "onnx".
    engine: str = ""
    fit: str = "squash"  # how photos become its square input (mtl.data.images.FITS)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return np.asarray(self.run(pixels), dtype=np.float32)

    @property
    def description(self) -> str:
        return (
            f"{self.path.name} ({runs_on(self.kind, self.engine)}, {len(self.class_names)} classes)"
        )


# A format run by something other than its own runtime says so: a model.keras of mtl's
# runs on its converted LiteRT base and a NumPy head, not on Keras.
ENGINE_NAMES = {
    "litert": "LiteRT + NumPy",
    "keras": "Keras",
    "tflite": "LiteRT",
    "onnx": "ONNX Runtime",
}


def runs_on(kind: str, engine: str) -> str:
    """``keras``, or ``keras on LiteRT + NumPy`` where the engine is not the format's own."""
    return kind if engine in ("", kind) else f"{kind} on {ENGINE_NAMES.get(engine, engine)}"


MODEL_FILE = "model.keras"  # what a run folder of mtl train holds
S = TypeVar("S", bound=Source)


def resolve_model_path(path: str | os.PathLike[str]) -> Path:
    """A model given as a file, or as the run folder of ``mtl train`` (its ``model.keras``).

    A SavedModel folder (from ``mtl export --format saved_model``) is for TensorFlow
    Serving, not for mtl: it gets a message saying what to use instead.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    if (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    if (path / "saved_model.pb").is_file():
        raise ModelFileError(
            f"{path} is a TensorFlow SavedModel folder (for TF Serving): mtl reads model.keras, "
            ".tflite or .onnx; give the run folder or its model.keras instead"
        )
    if (path / "checkpoint").is_dir():
        raise ModelFileError(
            f"{path} is an unfinished training run (no {MODEL_FILE} yet): "
            f"finish it with `mtl train --resume {path}`"
        )
    raise ModelFileError(f"no {MODEL_FILE} in folder {path} (expected a run folder of mtl train)")


def open_model(
    path: str | os.PathLike[str], labels: str | os.PathLike[str] | None = None
) -> Predictor:
    """Load a ``.keras`` model (or a run folder holding one) from ``mtl train``, or a
    ``.tflite`` / ``.onnx`` from ``mtl export``."""
    path = resolve_model_path(path)
    if path.suffix.lower() == ".tflite":
        return _open_tflite(path, labels)
    if path.suffix.lower() == ".onnx":
        return _open_onnx(path, labels)
    if labels is not None:
        raise UsageError(
            "--labels is only for .tflite and .onnx models; a .keras model carries its labels"
        )
    from mtl.inference.litekeras import open_lite

    lite = open_lite(path)
    if lite is not None:  # no TensorFlow: the same network on LiteRT and NumPy
        return Predictor(
            path, "keras", lite.class_names, lite.image_size, lite, engine="litert", fit=lite.fit
        )
    from mtl.model.modelio import load_model

    loaded = load_model(path)
    model = loaded.model

    def run(pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, len(loaded.class_names)), dtype=np.float32)
        return np.asarray(model.predict_on_batch(pixels.astype(np.float32)))

    return Predictor(
        path, "keras", loaded.class_names, loaded.image_size, run, engine="keras", fit=loaded.fit
    )


def _open_onnx(path: Path, labels: str | os.PathLike[str] | None) -> Predictor:
    """An ``.onnx`` on ONNX Runtime; class names from --labels, else from inside the file,
    else from ``MODEL.labels.txt`` beside it."""
    from mtl.inference.onnx import CLASS_NAMES_KEY, ONNXModel
    from mtl.inference.tflite import labels_path_for, read_labels

    model = ONNXModel(path)
    where = f"the file's metadata ({CLASS_NAMES_KEY})"
    if labels is not None:
        names, where = read_labels(labels), str(labels)
    elif model.class_names is not None:
        names = model.class_names
    elif labels_path_for(path).is_file():
        names, where = read_labels(labels_path_for(path)), str(labels_path_for(path))
    else:
        raise ModelFileError(
            f"no class names for {path}: not in its metadata ({CLASS_NAMES_KEY}, written by "
            f"mtl export) nor in {labels_path_for(path)}; pass --labels FILE"
        )
    if len(names) != model.num_classes:
        raise ModelFileError(
            f"{where} has {len(names)} labels but {path} predicts {model.num_classes} classes"
        )
    return Predictor(path, "onnx", names, model.image_size, model, engine="onnx", fit=model.fit)


def _open_tflite(path: Path, labels: str | os.PathLike[str] | None) -> Predictor:
    """A ``.tflite`` on LiteRT; class names from --labels, else from inside the file (its
    ``mtl`` metadata), else from ``MODEL.labels.txt`` beside it."""
    from mtl.inference.tflite import INFO_METADATA, TFLiteModel, labels_path_for, read_labels

    model = TFLiteModel(path)
    labels_file = Path(labels) if labels is not None else labels_path_for(path)
    where = str(labels_file)
    if labels is None and model.class_names is not None:
        names, where = model.class_names, f"the file's {INFO_METADATA!r} metadata"
    elif labels is None and not labels_file.is_file():
        raise ModelFileError(
            f"no class names for {path}: not in its metadata (written by mtl export) nor in "
            f"{labels_file}; pass --labels FILE"
        )
    else:
        names = read_labels(labels_file)
    if len(names) != model.num_classes:
        raise ModelFileError(
            f"{where} has {len(names)} labels but {path} predicts {model.num_classes} classes"
        )
    return Predictor(path, "tflite", names, model.image_size, model, engine="tflite", fit=model.fit)


@dataclass
class PredictReport:
    model: str
    kind: str
    class_names: list[str]
    results: list[ImageResult]
    csv_file: Path | None = None
    engine: str = ""  # what ran it (Predictor.engine)

    @property
    def runs_on(self) -> str:
        return runs_on(self.kind, self.engine)

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.results)

    def to_json(self) -> list[dict[str, Any]]:
        """What ``mtl predict --json`` prints: one entry per image."""
        return [r.to_json() for r in self.results]

    def __repr__(self) -> str:
        return f"PredictReport({Path(self.model).name} ({self.runs_on}), {summary(self.results)})"

    def _repr_html_(self) -> str:
        return results_html(self.results, f"{Path(self.model).name} ({self.runs_on})")


def predict_paths(
    predictor: Predictor,
    paths: Sequence[S],
    *,
    top_k_count: int = 1,
    batch_size: int = 32,
    on_progress: ProgressFn | None = None,
) -> tuple[list[ImageResult], dict[S, np.ndarray]]:
    """Run ``predictor`` over ``paths`` (files, or images in memory) in batches; also return
    each image's probabilities."""
    by_path: dict[S, ImageResult] = {}
    probs_by_path: dict[S, np.ndarray] = {}
    done = 0
    for batch in iter_batches(paths, predictor.image_size, batch_size, fit=predictor.fit):
        for path, reason in batch.failures:
            by_path[path] = ImageResult(file=str(path), error=reason)
        if len(batch.paths):
            probs = predictor(batch.pixels)
            for path, row in zip(batch.paths, probs, strict=True):
                probs_by_path[path] = row
                preds = top_k(row, predictor.class_names, top_k_count)
                by_path[path] = ImageResult(file=str(path), predictions=preds)
        done += len(batch.paths) + len(batch.failures)
        if on_progress:
            on_progress(done, len(paths))
    return [by_path[p] for p in paths], probs_by_path


def _listed(items: Sequence[str], most: int = 3) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def check_some_exist(paths: Sequence[Source]) -> None:
    """Every input missing is a usage error (exit 2), found before the model loads."""
    if paths and not any(isinstance(p, InMemory) or os.path.lexists(p) for p in paths):
        what = "no such file or folder" if len(paths) == 1 else "no such files or folders"
        raise UsageError(f"{what}: {_listed([str(p) for p in paths])}")


def unusable_inputs(results: Sequence[ImageResult]) -> str:
    """The one-line error when not one input could be read (exit 2, not 1)."""
    reasons = [f"{r.file} ({r.error})" for r in results if not r.ok]
    n = len(results)
    which = "the input is not" if n == 1 else f"none of the {n} inputs is"
    return f"{which} a readable image: {_listed(reasons)}"


def results_csv(results: Sequence[ImageResult]) -> str:
    """One row per (image, rank); a failed image is one row with its error."""
    rows: list[list[Any]] = []
    for r in results:
        if not r.ok:
            rows.append([r.file, "", "", "", r.error])
        rows += [[r.file, p.rank, p.label, f"{p.probability:.6f}", ""] for p in r.predictions]
    return files.csv_text(["file", "rank", "label", "probability", "error"], rows)


def predict(
    model_path: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str] | Any],
    *,
    top_k_count: int = 1,
    batch_size: int = 32,
    labels: str | os.PathLike[str] | None = None,
    csv_path: str | os.PathLike[str] | None = None,
    force: bool = False,
    on_progress: ProgressFn | None = None,
) -> PredictReport:
    """Predict every image in ``inputs`` (files, folders, globs, or PIL images and uint8
    arrays in memory); unreadable files become error results."""

    if top_k_count < 1:
        raise UsageError(f"--top-k must be at least 1. Received top_k={top_k_count}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1. Received batch_size={batch_size}")
    if csv_path is not None:
        files.check_new(csv_path, force=force)
    paths = expand_inputs(inputs)
    if not paths:
        raise UsageError("no images given")
    check_some_exist(paths)
    predictor = open_model(model_path, labels)
    results, _ = predict_paths(
        predictor,
        paths,
        top_k_count=min(top_k_count, len(predictor.class_names)),
        batch_size=batch_size,
        on_progress=on_progress,
    )
    if not any(r.ok for r in results):
        raise DataError(unusable_inputs(results))
    written = None
    if csv_path is not None:
        written = files.write_text(csv_path, results_csv(results), force=force)
    return PredictReport(
        model=str(predictor.path),
        kind=predictor.kind,
        class_names=predictor.class_names,
        results=results,
        csv_file=written,
        engine=predictor.engine,
    )

"""Exporting a trained model for deployment: TFLite (float, dynamic-range or int8),
SavedModel or ONNX.

Every exported model keeps mtl's contract, stated in its metadata (:func:`input_contract`):
raw RGB 0-255 in (float32, NHWC, a square of the model's own size, made from a photo as
its ``fit`` says: the central square resized, or the whole photo squashed), class
probabilities out; the rest of the preprocessing is inside. (``model.keras`` also does
the squaring itself, from any photo; the exports take the square.) Class names travel
inside every export: a ``.tflite``'s ``mtl`` metadata entry (and ``MODEL.labels.txt``
beside it), an ``.onnx``'s ``metadata_props``
(:data:`mtl.inference.onnx.CLASS_NAMES_KEY`), a SavedModel's ``1/assets/labels.txt``
(TF Serving's layout: a version folder). This is the
one core module besides :mod:`mtl.runtime` that uses TensorFlow directly:
conversion to TFLite is TensorFlow's, to ONNX tf2onnx's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mtl import files, reprs
from mtl.errors import DataError, UsageError
from mtl.progress import ProgressFn

QUANTIZATIONS = ("none", "dynamic", "int8")


@dataclass(frozen=True)
class ExportedFile:
    path: Path
    bytes: int
    what: str


@dataclass
class ExportReport:
    source: ExportedFile
    format: str
    quantize: str
    files: list[ExportedFile] = field(default_factory=list)
    calibration_images: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": {"file": str(self.source.path), "bytes": self.source.bytes},
            "format": self.format,
            "quantize": self.quantize,
            "calibration_images": self.calibration_images,
            "files": [{"file": str(f.path), "bytes": f.bytes, "what": f.what} for f in self.files],
        }

    def __repr__(self) -> str:
        return reprs.short_repr(
            "ExportReport",
            {
                "format": self.format,
                "quantize": self.quantize,
                "files": [str(f.path) for f in self.files],
            },
        )

    def _repr_html_(self) -> str:
        rows = [[str(f.path), f.bytes, f.what] for f in self.files]
        caption = f"exported {self.source.path.name} ({self.format}, quantize {self.quantize})"
        return reprs.html_table(caption, ["file", "bytes", "what"], rows)


SERVING_VERSION = "1"  # TF Serving loads MODEL_DIR/<version>/saved_model.pb
ONNX_INPUT, ONNX_OUTPUT = "image", "probabilities"


def input_contract(loaded: Any) -> dict[str, Any]:
    """What an export takes, in words a deployer can act on (in every export's metadata)."""
    how = {
        "center": "the photo's short side resized to the size, then its central square",
        "squash": "the whole photo resized to the square (aspect not kept)",
    }
    return {
        "shape": ["batch", loaded.image_size, loaded.image_size, 3],
        "layout": "NHWC",
        "dtype": "float32",
        "pixels": "RGB, 0-255 (not scaled: the model normalises inside)",
        # Decoded pixels carry no EXIF: the model cannot turn a photo a phone stored sideways.
        "orientation": "upright: apply the photo's EXIF orientation before anything else "
        "(Python: img = PIL.ImageOps.exif_transpose(img))",
        "fit": loaded.fit,
        "resize": f"bilinear, antialiased: {how[loaded.fit]}",
        "output": "class probabilities, in class_names order",
    }


def default_output(model_path: Path, fmt: str, quantize: str) -> Path:
    """model.keras -> model.tflite, model.dynamic.tflite, model.int8.tflite,
    model_saved_model/, model.onnx."""
    return model_path.with_name(model_path.stem + FORMATS[fmt].suffix(quantize))


def labels_text(class_names: list[str]) -> str:
    """One name per line; refuses names the reader could not give back exactly."""
    from mtl.data.dataset import label_problem

    for name in class_names:
        why = label_problem(name)
        if why:
            raise UsageError(f"class name {name!r} cannot be written to a labels file: {why}")
    return "".join(f"{name}\n" for name in class_names)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def representative_images(data_dir: str | os.PathLike[str], count: int) -> tuple[list[Path], int]:
    """Up to ``count`` images spread evenly over ``data_dir`` (recursively), and how many exist."""
    from mtl.data.images import list_images

    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"no representative data folder at {root}")
    found = list_images(root)
    if not found:
        raise DataError(f"no images in {root} to calibrate the int8 model on")
    if len(found) <= count:
        return found, len(found)
    picks = np.linspace(0, len(found) - 1, count).round().astype(int)
    return [found[i] for i in picks], len(found)


def export_model(
    model_path: str | os.PathLike[str],
    *,
    fmt: str = "tflite",
    quantize: str = "none",
    representative: str | os.PathLike[str] | None = None,
    calibration_count: int = 100,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    on_progress: ProgressFn | None = None,
) -> ExportReport:
    """Export ``model_path`` (a model.keras from mtl train, or its run folder); files
    appear only when complete."""
    from mtl.inference.predict import resolve_model_path
    from mtl.model.modelio import load_model

    _check_options(fmt, quantize, representative, calibration_count)
    model_path = resolve_model_path(model_path)
    target = Path(out) if out is not None else default_output(model_path, fmt, quantize)
    labels_file = FORMATS[fmt].check_targets(target, force)
    calibration: list[Path] = []
    if quantize == "int8":
        assert representative is not None
        calibration, _ = representative_images(representative, calibration_count)

    loaded = load_model(model_path)
    base = loaded.info.frozen_base
    if quantize == "int8" and base is not None and base.precision == "int8":
        from mtl.model.int8base import float_network

        loaded = float_network(loaded)
    report = ExportReport(
        source=ExportedFile(model_path, model_path.stat().st_size, "Keras model"),
        format=fmt,
        quantize=quantize,
        calibration_images=len(calibration),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        job = _Export(loaded, quantize, calibration, target, labels_file, work, force, on_progress)
        report.files += FORMATS[fmt].write(job)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_options(
    fmt: str,
    quantize: str,
    representative: str | os.PathLike[str] | None,
    calibration_count: int,
) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}. Received format={fmt!r}")
    if quantize not in QUANTIZATIONS:
        raise UsageError(
            f"--quantize must be one of {', '.join(QUANTIZATIONS)}. Received quantize={quantize!r}"
        )
    if not FORMATS[fmt].quantizable and quantize != "none":
        quantizable = ", ".join(f.name for f in FORMATS.values() if f.quantizable)
        raise UsageError(f"--quantize applies to --format {quantizable} only")
    if quantize == "int8" and representative is None:
        raise UsageError("--quantize int8 needs --representative DATA_DIR (photos to calibrate on)")
    if quantize != "int8" and representative is not None:
        raise UsageError("--representative is used by --quantize int8 only")
    if calibration_count < 1:
        raise UsageError(f"--calibration-images must be at least 1. Received {calibration_count}")


class _Export:
    """What one format's writer gets: the loaded model, where to write, a work folder."""

    def __init__(
        self,
        loaded: Any,
        quantize: str,
        calibration: list[Path],
        target: Path,
        labels_file: Path,
        work: Path,
        force: bool,
        on_progress: ProgressFn | None,
    ) -> None:
        self.loaded, self.quantize, self.calibration = loaded, quantize, calibration
        self.target, self.labels_file, self.work = target, labels_file, work
        self.force, self.on_progress = force, on_progress
        self.labels = labels_text(loaded.class_names)  # refuses names a labels file can't hold

    def saved_model(self) -> Path:
        """The model as a TF Serving SavedModel in the work folder (version folder inside).
        For full-integer quantization its base is bias-corrected as mtl's own int8 base is
        (:func:`mtl.model.calibration.bias_corrected`; the loaded model is unchanged)."""
        from mtl.model import calibration

        saved = self.work / "saved_model" / SERVING_VERSION
        saved.parent.mkdir()
        model = self.loaded.square_model()
        correct = self.quantize == "int8" and calibration.correctable(model)
        with calibration.bias_corrected(model, enabled=correct):
            _export_saved_model(model, saved)
        return saved


def _tflite_targets(target: Path, force: bool) -> Path:
    from mtl.inference.tflite import labels_path_for

    labels_file = labels_path_for(target)
    files.check_new(target, force=force)
    files.check_new(labels_file, force=force)
    return labels_file


def _write_tflite(job: _Export) -> list[ExportedFile]:
    loaded, quantize = job.loaded, job.quantize
    data = _convert_tflite(
        job.saved_model(),
        quantize,
        job.calibration,
        loaded.image_size,
        loaded.fit,
        job.on_progress,
    )
    files.write_bytes(job.target, tflite_with_info(data, loaded), force=job.force)
    files.write_text(job.labels_file, job.labels, force=job.force)
    what = {"none": "TFLite float32", "dynamic": "TFLite dynamic-range", "int8": "TFLite int8"}
    return [
        ExportedFile(job.target, job.target.stat().st_size, what[quantize]),
        ExportedFile(job.labels_file, job.labels_file.stat().st_size, "labels"),
    ]


def _saved_model_targets(target: Path, force: bool) -> Path:
    files.check_new(target, force=force, what="folder")
    return target / SERVING_VERSION / "assets" / "labels.txt"


def _write_saved_model(job: _Export) -> list[ExportedFile]:
    saved = job.saved_model()
    (saved / "assets").mkdir(exist_ok=True)
    (saved / "assets" / "labels.txt").write_text(job.labels, encoding="utf-8")
    meta = {"class_names": job.loaded.class_names, "input": input_contract(job.loaded)}
    (saved / "assets" / "mtl.json").write_text(
        json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    files.replace_dir(saved.parent, job.target, force=job.force)
    return [
        ExportedFile(job.target, _dir_size(job.target), "SavedModel folder"),
        ExportedFile(job.labels_file, job.labels_file.stat().st_size, "labels (inside)"),
    ]


def _onnx_targets(target: Path, force: bool) -> Path:
    files.check_new(target, force=force)
    _check_onnx_tools()
    return target  # the labels are inside, in the metadata


def _write_onnx(job: _Export) -> list[ExportedFile]:
    data = _convert_onnx(job.loaded, job.work / "model.onnx")
    files.write_bytes(job.target, data, force=job.force)
    return [ExportedFile(job.target, job.target.stat().st_size, "ONNX float32, labels inside")]


@dataclass(frozen=True)
class ExportFormat:
    """One row of :data:`FORMATS`: everything mtl knows of an export format."""

    name: str
    help: str  # for --format's help
    suffix: Callable[[str], str]  # quantize -> what follows the model's stem
    quantizable: bool  # takes --quantize dynamic / int8
    check_targets: Callable[[Path, bool], Path]  # refuse existing outputs; -> the labels' place
    write: Callable[[_Export], list[ExportedFile]]


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat(
            "tflite",
            "phones, LiteRT; --quantize dynamic or int8",
            lambda q: ".tflite" if q == "none" else f".{q}.tflite",
            True,
            _tflite_targets,
            _write_tflite,
        ),
        ExportFormat(
            "saved_model",
            "TF Serving: a version folder 1/, labels in assets/",
            lambda q: "_saved_model",
            False,
            _saved_model_targets,
            _write_saved_model,
        ),
        ExportFormat(
            "onnx",
            "ONNX Runtime; labels inside; needs mtl[onnx]",
            lambda q: ".onnx",
            False,
            _onnx_targets,
            _write_onnx,
        ),
    )
}
if TYPE_CHECKING:
    FormatName = str
else:  # the CLI's choices (a Literal Typer shows and checks), built from the table
    FormatName = Literal[tuple(FORMATS)]


def tflite_with_info(flatbuffer: bytes, loaded: Any) -> bytes:
    """The ``.tflite`` with what mtl predict needs besides the labels (how photos are made
    square, :data:`mtl.inference.tflite.INFO_METADATA`) in the file's own metadata."""
    from mtl._version import __version__
    from mtl.inference.tflite import INFO_METADATA
    from mtl.litert import add_metadata

    info = {
        "fit": loaded.fit,
        "image_size": loaded.image_size,
        "mtl_version": __version__,
        "class_names": loaded.class_names,  # a lone .tflite needs no labels file
        "input": input_contract(loaded),
    }
    return add_metadata(flatbuffer, INFO_METADATA, json.dumps(info).encode())


def _export_saved_model(model: Any, folder: Path) -> None:
    """A TF SavedModel with one ``serve`` signature: (n, size, size, 3) float32 -> probabilities."""
    from mtl.runtime import quiet_native_stderr

    with quiet_native_stderr():
        model.export(str(folder), format="tf_saved_model", verbose=False)


def _check_onnx_tools() -> None:
    import importlib.util

    missing = [m for m in ("tf2onnx", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"--format onnx needs {' and '.join(missing)}: pip install 'mtl[onnx]' "
            "(or pip install tf2onnx onnx onnxruntime)"
        )


def _convert_onnx(loaded: Any, path: Path) -> bytes:
    """The model as ONNX (via Keras' own export, tf2onnx underneath), class names inside."""
    import logging
    import warnings

    import onnx

    from mtl._version import __version__
    from mtl.inference.onnx import (
        CLASS_NAMES_KEY,
        FIT_KEY,
        IMAGE_SIZE_KEY,
        INPUT_KEY,
        VERSION_KEY,
    )
    from mtl.runtime import keras, quiet_native_stderr

    k = keras()
    size = loaded.image_size
    # A loaded model was never called, so Keras cannot infer the signature: give it.
    signature = [k.InputSpec(shape=(None, size, size, 3), dtype="float32", name=ONNX_INPUT)]
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    with quiet_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras' tf2onnx patch warns about np.object
        try:
            loaded.square_model().export(
                str(path), format="onnx", verbose=False, input_signature=signature
            )
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UsageError(f"ONNX conversion failed: {first[:300]}") from None
    proto = onnx.load(str(path))
    try:  # an op ONNX lacks is written without complaint, then fails at load
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"ONNX conversion made an invalid model: {first[:300]}") from None
    _rename_io(proto)
    meta = {
        CLASS_NAMES_KEY: json.dumps(loaded.class_names, ensure_ascii=False),
        IMAGE_SIZE_KEY: str(size),
        FIT_KEY: loaded.fit,
        INPUT_KEY: json.dumps(input_contract(loaded)),
        VERSION_KEY: __version__,
    }
    for prop in list(proto.metadata_props):
        if prop.key in meta:
            proto.metadata_props.remove(prop)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = f"mtl {__version__} (tf2onnx)"
    return bytes(proto.SerializeToString())


def _rename_io(proto: Any) -> None:
    """The graph's one input and output named :data:`ONNX_INPUT` and :data:`ONNX_OUTPUT`
    (tf2onnx names them after TensorFlow's tensors: ``Identity:0``, ``unk__797``)."""
    graph = proto.graph
    renames = {}
    for values, name in ((graph.input, ONNX_INPUT), (graph.output, ONNX_OUTPUT)):
        if len(values) == 1 and values[0].name != name:
            renames[values[0].name] = name
    taken = {n for node in graph.node for n in [*node.input, *node.output]}
    taken |= {i.name for i in graph.initializer}
    if any(new in taken for new in renames.values()):
        return  # a tensor of that name inside already: keep tf2onnx's names
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = renames.get(value.name, value.name)
    # the batch dimension by a meaningful name too
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


def _convert_tflite(
    saved: Path,
    quantize: str,
    calibration: list[Path],
    size: int,
    fit: str,
    on_progress: ProgressFn | None,
) -> bytes:
    import tensorflow as tf

    from mtl.data.images import load_image
    from mtl.runtime import quiet_native_stderr

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if quantize in ("dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "int8":

        def samples() -> Iterator[list[np.ndarray]]:
            usable = 0
            for i, path in enumerate(calibration):
                try:
                    pixels = load_image(path, size, fit)
                except Exception:  # an unreadable photo just does not calibrate
                    continue
                usable += 1
                if on_progress:
                    on_progress(i + 1, len(calibration))
                yield [pixels[None].astype(np.float32)]
            if not usable:
                raise DataError("none of the representative images could be read")

        converter.representative_dataset = samples
        # Integer kernels everywhere; input and output stay float32 (raw RGB in,
        # probabilities out), with a quantize / dequantize op at each end.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with quiet_native_stderr():
        try:
            return bytes(converter.convert())
        except DataError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UsageError(f"TFLite conversion failed: {first[:300]}") from None

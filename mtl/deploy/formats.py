"""The export formats, one row each (:data:`FORMATS`): one writer, one reader.

Every export takes what its users hold and carries its preprocessing inside:

| format | input | fit inside | class names |
| --- | --- | --- | --- |
| onnx | uint8 (n, height, width, 3), any size | yes | ``metadata_props`` |
| saved_model | ``serving_default``: encoded image bytes; ``pixels``: uint8 any size | yes | ``label`` output, ``assets/labels.txt`` |
| tflite | float32 (1, height, width, 3), any size, declared (1, size, size, 3); int8: the square | yes (int8: no) | packed ``labels.txt`` (standard metadata) |

The model's facts (:class:`mtl.deploy.facts.ModelFacts`) are built once and every
writer states them. This is, with :mod:`mtl.deploy.tfgraph`, the export code that uses
TensorFlow directly: conversion to TFLite is TensorFlow's, to ONNX tf2onnx's.
"""  # noqa: E501

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mtl import files
from mtl.deploy.facts import NORMALIZATION, ModelFacts
from mtl.errors import DataError, ModelFileError, UsageError
from mtl.progress import ProgressFn

SERVING_VERSION = "1"  # TF Serving loads MODEL_DIR/<version>/saved_model.pb
ONNX_INPUT, ONNX_OUTPUT = "image", "probabilities"
META_FILE = "mtl.json"  # in a SavedModel's assets: the facts (how mtl knows its own folder)


@dataclass(frozen=True)
class ExportedFile:
    path: Path
    bytes: int
    what: str


class Job:
    """What one format's writer gets: the loaded model, its facts, where to write, a work
    folder."""

    def __init__(
        self,
        loaded: Any,
        facts: ModelFacts,
        quantize: str,
        calibration: list[Path],
        target: Path,
        labels_file: Path,
        work: Path,
        force: bool,
        on_progress: ProgressFn | None,
    ) -> None:
        self.loaded, self.facts, self.quantize = loaded, facts, quantize
        self.calibration, self.target, self.labels_file = calibration, target, labels_file
        self.work, self.force, self.on_progress = work, force, on_progress

    def square_saved_model(self) -> Path:
        """The square network (float 0-255 (n, size, size, 3) in) as a SavedModel in the
        work folder: what TFLite converts. For full-integer quantization its base is
        bias-corrected as mtl's own int8 base is (:func:`mtl.model.calibration.bias_corrected`;
        the loaded model is unchanged)."""
        from mtl.model import calibration
        from mtl.runtime import quiet_native_stderr

        saved = self.work / "square_saved_model"
        model = self.loaded.square_model()
        correct = self.quantize == "int8" and calibration.correctable(model)
        with calibration.bias_corrected(model, enabled=correct), quiet_native_stderr():
            model.export(str(saved), format="tf_saved_model", verbose=False)
        return saved


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- TFLite ------------------------------------------------------------------------------


def _tflite_targets(target: Path, force: bool) -> Path:
    from mtl.inference.tflite import labels_path_for

    return labels_path_for(target)


def _write_tflite(job: Job) -> list[ExportedFile]:
    """Float and dynamic-range: one photo of any height and width in (its fit inside, by
    matrix products every TFLite runtime has), declared (1, size, size, 3) for the
    runtimes that resize a photo to the declared input (MediaPipe). int8: the square,
    as full-integer kernels cannot hold the resize's weights."""
    facts = job.facts
    any_size = job.quantize != "int8"
    if any_size:
        from mtl.deploy.tfgraph import write_any_size_saved_model

        saved = job.work / "any_size_saved_model"
        write_any_size_saved_model(job.loaded.square_model(), facts.image_size, facts.fit, saved)
    else:
        saved = job.square_saved_model()
    data = _convert_tflite(
        saved, job.quantize, job.calibration, facts.image_size, facts.fit, job.on_progress
    )
    data = _declared_input(data, facts.image_size, any_size)
    files.write_bytes(job.target, tflite_with_metadata(data, facts, any_size), force=job.force)
    files.write_text(job.labels_file, facts.labels, force=job.force)
    what = {"none": "TFLite float32", "dynamic": "TFLite dynamic-range", "int8": "TFLite int8"}
    photo = "any photo in" if any_size else "square in"
    return [
        ExportedFile(
            job.target, job.target.stat().st_size, f"{what[job.quantize]}, {photo}, labels inside"
        ),
        ExportedFile(job.labels_file, job.labels_file.stat().st_size, "labels"),
    ]


def tflite_with_metadata(flatbuffer: bytes, facts: ModelFacts, any_size: bool) -> bytes:
    """The ``.tflite`` with its facts twice: mtl's own ``mtl`` entry
    (:data:`mtl.inference.tflite.INFO_METADATA`) and the standard TFLite Model Metadata
    that MediaPipe and the Task Library read, with the class names as a packed
    ``labels.txt``."""
    from mtl.deploy import tflitemeta
    from mtl.inference.tflite import INFO_METADATA
    from mtl.litert import add_metadata

    info = {
        **facts.to_json(),
        "input": facts.input_contract(dtype="float32", any_size=any_size),
    }
    data = add_metadata(flatbuffer, INFO_METADATA, json.dumps(info).encode())
    size = facts.image_size
    standard = tflitemeta.metadata_flatbuffer(
        name=f"mtl image classifier ({len(facts.class_names)} classes)",
        description=(
            (
                f"A photo (RGB 0-255) of any height and width in (made {size}x{size} inside: "
                if any_size
                else f"A {size}x{size} photo (RGB 0-255) in ("
            )
            + f"{info['input']['resize']}); class probabilities out."
        ),
        version=f"mtl {facts.mtl_version}; model sha256 {facts.sha256}",
        mean=NORMALIZATION["mean"],
        std=NORMALIZATION["std"],
        low=0.0,
        high=255.0,
        output_description="class probabilities, in the packed labels.txt's order",
    )
    data = add_metadata(data, tflitemeta.METADATA_NAME, standard)
    return tflitemeta.pack_files(data, {tflitemeta.LABELS_NAME: facts.labels})


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
            data = bytes(converter.convert())
        except DataError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UsageError(f"TFLite conversion failed: {first[:300]}") from None
    return data


def _declared_input(flatbuffer: bytes, size: int, any_size: bool) -> bytes:
    """The input declared as it runs: (1, size, size, 3), its shape signature -1 for the
    batch (the square) or for height and width (any size, one photo). A signature of -1
    for height and width over a square graph promised what it could not run: every size
    but its own failed (a RESHAPE of 562,500 != 196,608 elements)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    from mtl.litert import TFLITE_IDENTIFIER

    model = fb.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    graph = model.subgraphs[0]
    signature = [1, -1, -1, 3] if any_size else [-1, size, size, 3]
    for index in graph.inputs:
        tensor = graph.tensors[index]
        tensor.shape = np.array([1, size, size, 3], dtype=np.int32)
        tensor.shapeSignature = np.array(signature, dtype=np.int32)
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _read_tflite(path: Path) -> Any:
    from mtl.inference.predict import open_model

    return open_model(path)


# --- SavedModel (TF Serving) -------------------------------------------------------------


def _saved_model_targets(target: Path, force: bool) -> Path:
    return target / SERVING_VERSION / "assets" / "labels.txt"


def _write_saved_model(job: Job) -> list[ExportedFile]:
    from mtl.deploy.tfgraph import write_saved_model

    facts = job.facts
    folder = job.work / "saved_model"
    folder.mkdir()
    saved = folder / SERVING_VERSION
    write_saved_model(
        job.loaded.square_model(),
        list(facts.class_names),
        facts.image_size,
        facts.fit,
        saved,
    )
    (saved / "assets").mkdir(exist_ok=True)
    (saved / "assets" / "labels.txt").write_text(facts.labels, encoding="utf-8")
    meta = {**facts.to_json(), "input": facts.input_contract(dtype="uint8", any_size=True)}
    (saved / "assets" / META_FILE).write_text(
        json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    files.replace_dir(folder, job.target, force=job.force)
    return [
        ExportedFile(job.target, _dir_size(job.target), "SavedModel folder, image bytes in"),
        ExportedFile(job.labels_file, job.labels_file.stat().st_size, "labels (inside)"),
    ]


@dataclass
class SavedModelPredictor:
    """A SavedModel from ``mtl export`` read with TensorFlow's own loader: its ``pixels``
    signature on decoded uint8 photos (the fit inside)."""

    path: Path
    class_names: list[str]
    image_size: int
    fit: str
    signature: Any

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        from mtl.deploy.tfgraph import PIXELS_INPUT

        if len(pixels) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        out = self.signature(**{PIXELS_INPUT: tf.constant(pixels.astype(np.uint8))})
        return np.asarray(out["probabilities"], dtype=np.float32)


def _read_saved_model(path: Path) -> SavedModelPredictor:
    import tensorflow as tf

    from mtl.deploy.tfgraph import PIXELS_SIGNATURE

    version = path / SERVING_VERSION
    try:
        meta = json.loads((version / "assets" / META_FILE).read_text(encoding="utf-8"))
        loaded = tf.saved_model.load(str(version))
        signature = loaded.signatures[PIXELS_SIGNATURE]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path} is not a SavedModel from mtl export: {exc}") from None
    predictor = SavedModelPredictor(
        path, list(meta["class_names"]), int(meta["image_size"]), str(meta["fit"]), signature
    )
    predictor._keep = loaded  # type: ignore[attr-defined]  # the signature needs its object
    return predictor


# --- ONNX --------------------------------------------------------------------------------


def _onnx_targets(target: Path, force: bool) -> Path:
    _check_onnx_tools()
    return target  # the labels are inside, in the metadata


def _write_onnx(job: Job) -> list[ExportedFile]:
    data = _convert_onnx(job.loaded, job.facts, job.work / "model.onnx")
    files.write_bytes(job.target, data, force=job.force)
    return [
        ExportedFile(job.target, job.target.stat().st_size, "ONNX, any photo in, labels inside")
    ]


def _check_onnx_tools() -> None:
    import importlib.util

    missing = [m for m in ("tf2onnx", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"--format onnx needs {' and '.join(missing)}: pip install 'mtl[onnx]' "
            "(or pip install tf2onnx onnx onnxruntime)"
        )


def _convert_onnx(loaded: Any, facts: ModelFacts, path: Path) -> bytes:
    """The model as ONNX: a uint8 photo of any size in, the fit (crop, antialiased resize)
    in the graph in front of the network (Keras' own export, tf2onnx underneath), class
    names inside."""
    import onnx

    from mtl.deploy.onnxgraph import OPSET, prepend_fit
    from mtl.inference.onnx import (
        CLASS_NAMES_KEY,
        FACTS_KEY,
        FIT_KEY,
        IMAGE_SIZE_KEY,
        INPUT_KEY,
        VERSION_KEY,
    )
    from mtl.runtime import keras, quiet_native_stderr

    k = keras()
    size = facts.image_size
    # A loaded model was never called, so Keras cannot infer the signature: give it.
    signature = [k.InputSpec(shape=(None, size, size, 3), dtype="float32", name=ONNX_INPUT)]
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    with quiet_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras' tf2onnx patch warns about np.object
        try:
            loaded.square_model().export(
                str(path),
                format="onnx",
                verbose=False,
                input_signature=signature,
                opset_version=OPSET,
            )
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UsageError(f"ONNX conversion failed: {first[:300]}") from None
    proto = onnx.load(str(path))
    _rename_io(proto)
    if [i.name for i in proto.graph.input] != [ONNX_INPUT]:
        raise UsageError("ONNX conversion made an unexpected graph (not one input)")
    prepend_fit(proto, ONNX_INPUT, size, facts.fit)
    try:  # an op ONNX lacks is written without complaint, then fails at load
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"ONNX conversion made an invalid model: {first[:300]}") from None
    meta = {
        CLASS_NAMES_KEY: json.dumps(list(facts.class_names), ensure_ascii=False),
        IMAGE_SIZE_KEY: str(size),
        FIT_KEY: facts.fit,
        INPUT_KEY: json.dumps(facts.input_contract(dtype="uint8", any_size=True)),
        VERSION_KEY: facts.mtl_version,
        FACTS_KEY: json.dumps(facts.to_json(), ensure_ascii=False),
    }
    for prop in list(proto.metadata_props):
        if prop.key in meta:
            proto.metadata_props.remove(prop)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = f"mtl {facts.mtl_version} (tf2onnx)"
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
    for value in graph.output:  # the batch dimension by a meaningful name too
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


def _read_onnx(path: Path) -> Any:
    from mtl.inference.predict import open_model

    return open_model(path)


# --- the table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportFormat:
    """One row of :data:`FORMATS`: everything mtl knows of an export format."""

    name: str
    help: str  # for --format's help
    suffix: Callable[[str], str]  # quantize -> what follows the model's stem
    quantizable: bool  # takes --quantize dynamic / int8
    what: str  # "file" or "folder"
    labels_place: Callable[[Path, bool], Path]  # checks its tools; -> where the labels go
    write: Callable[[Job], list[ExportedFile]]
    # -> a callable on uint8 (n, size, size, 3) squares with class_names, image_size, fit
    read: Callable[[Path], Any]


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat(
            "tflite",
            "phones: LiteRT, MediaPipe; standard metadata, labels packed; "
            "--quantize dynamic or int8",
            lambda q: ".tflite" if q == "none" else f".{q}.tflite",
            True,
            "file",
            _tflite_targets,
            _write_tflite,
            _read_tflite,
        ),
        ExportFormat(
            "saved_model",
            "TF Serving: image bytes in, probabilities and label out; a version folder 1/",
            lambda q: "_saved_model",
            False,
            "folder",
            _saved_model_targets,
            _write_saved_model,
            _read_saved_model,
        ),
        ExportFormat(
            "onnx",
            "ONNX Runtime: any photo in (uint8), labels inside; needs mtl[onnx]",
            lambda q: ".onnx",
            False,
            "file",
            _onnx_targets,
            _write_onnx,
            _read_onnx,
        ),
    )
}
if TYPE_CHECKING:
    FormatName = str
else:  # the CLI's choices (a Literal Typer shows and checks), built from the table
    FormatName = Literal[tuple(FORMATS)]

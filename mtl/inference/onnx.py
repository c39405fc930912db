"""Running an exported ``.onnx`` model with ONNX Runtime, without TensorFlow.

``mtl export --format onnx`` writes the class names inside the file, in the
model's ``metadata_props`` (key :data:`CLASS_NAMES_KEY`, a JSON list in output
order), so an ``.onnx`` needs no labels file beside it; :data:`FIT_KEY` says how
a photo becomes its square input (absent: "squash"). Since mtl 0.2 the file takes a
decoded uint8 photo of any height and width and makes it square inside
(:mod:`mtl.deploy.onnxgraph`), its size in :data:`IMAGE_SIZE_KEY`; older files take the
float32 square. Either way this reader feeds mtl's loader's squares, on which the fit
inside is the identity. Nothing here may import TensorFlow or Keras.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mtl import files
from mtl.errors import ModelFileError

CLASS_NAMES_KEY = "mtl.class_names"
IMAGE_SIZE_KEY = "mtl.image_size"
VERSION_KEY = "mtl.version"
FIT_KEY = "mtl.fit"  # mtl.data.images.FITS
INPUT_KEY = "mtl.input"  # JSON: the input contract (mtl.deploy.facts.ModelFacts)
FACTS_KEY = "mtl.facts"  # JSON: the model's facts (mtl.deploy.facts.ModelFacts.to_json)


def class_names_from_metadata(metadata: dict[str, str], path: Path) -> list[str] | None:
    """The class names stored by ``mtl export``, or None when the file has none."""
    raw = metadata.get(CLASS_NAMES_KEY)
    if raw is None:
        return None
    try:
        names = files.loads_json(raw)
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ModelFileError(f"{path} has damaged class names in its metadata ({CLASS_NAMES_KEY})")
    from mtl.model.modelio import check_unique

    check_unique(names, path)
    return names


class ONNXModel:
    """An ONNX Runtime session taking raw RGB 0-255 batches (mtl's loader's uint8 squares)
    and returning probabilities."""

    def __init__(self, path: str | os.PathLike[str], num_threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"no model file at {self.path}")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelFileError(
                "running .onnx models needs onnxruntime (pip install 'mtl[onnx]' or onnxruntime)"
            ) from None
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no "Removing initializer" chatter
        if num_threads:
            options.intra_op_num_threads = num_threads
        try:
            self.session: Any = ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelFileError(
                f"{self.path} is not a readable ONNX model: {first[:200]}"
            ) from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelFileError(f"{self.path} is not an mtl image classifier (not one input)")
        shape = list(inputs[0].shape)
        meta = self.session.get_modelmeta()
        self.metadata: dict[str, str] = dict(meta.custom_metadata_map or {})
        # a photo of any size (uint8, the fit inside), or the float square of older files
        self.any_size = inputs[0].type == "tensor(uint8)"
        if len(shape) != 4 or shape[3] != 3:
            raise ModelFileError(
                f"{self.path} is not an mtl image classifier (input shape {shape})"
            )
        side: object = shape[1]
        if self.any_size:
            try:
                side = int(self.metadata.get(IMAGE_SIZE_KEY, ""))
            except ValueError:
                raise ModelFileError(
                    f"{self.path} takes photos of any size but names no size in its "
                    f"metadata ({IMAGE_SIZE_KEY})"
                ) from None
        elif not isinstance(shape[1], int) or shape[1] != shape[2]:
            raise ModelFileError(
                f"{self.path} is not an mtl image classifier (input shape {shape})"
            )
        assert isinstance(side, int)
        classes = outputs[0].shape[-1] if outputs[0].shape else None
        if not isinstance(classes, int):
            raise ModelFileError(f"{self.path} is not an mtl image classifier (output shape)")
        from mtl.model.modelio import MAX_INPUT_PIXELS

        if side > MAX_INPUT_PIXELS or side < 1:
            raise ModelFileError(
                f"{self.path} is not a usable mtl model: it declares an input of "
                f"{side}x{side} pixels (the limit is {MAX_INPUT_PIXELS} a side)"
            )
        self.input_name = inputs[0].name
        self.image_size = side
        self.num_classes = classes
        self._fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.class_names = class_names_from_metadata(self.metadata, self.path)
        from mtl.model.modelio import fit_of

        self.fit = fit_of({"fit": self.metadata.get(FIT_KEY, "squash")}, str(self.path))

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            dtype = np.uint8 if self.any_size else np.float32
            out = self.session.run(None, {self.input_name: x.astype(dtype)})[0]
        except Exception as exc:  # onnxruntime's own types, and a multi-line log
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelFileError(f"{self.path} failed to run: {first[:200]}") from None
        out = np.asarray(out, dtype=np.float32)
        if out.ndim != 2 or out.shape != (len(x), self.num_classes):
            raise ModelFileError(
                f"{self.path} failed to run: it returned shape {list(out.shape)}, "
                f"not [{len(x)}, {self.num_classes}]"
            )
        return out

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """(n, size, size, 3) RGB 0-255 to (n, classes) probabilities."""
        if len(pixels) == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        if self._fixed_batch == 1 and len(pixels) > 1:
            return np.concatenate([self._run(pixels[i : i + 1]) for i in range(len(pixels))])
        return self._run(pixels)

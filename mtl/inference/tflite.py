"""Running an exported ``.tflite`` model with the LiteRT interpreter, without TensorFlow.

Importing TensorFlow takes seconds; ``ai_edge_litert`` and numpy start in a
fraction of one, so checking a deployed model is quick. Nothing here may
import TensorFlow or Keras.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from mtl import files
from mtl.errors import ModelFileError
from mtl.litert import LiteModel

LABELS_SUFFIX = ".labels.txt"
# The metadata entry ``mtl export`` writes into a .tflite: JSON with "fit" (how photos
# become its square input, mtl.data.images.FITS), "image_size", "mtl_version", and since
# mtl 0.1 "class_names" (so a lone .tflite needs no labels file) and "input" (its contract).
INFO_METADATA = "mtl"
# No tensor of a MobileNet classifier at the largest allowed input comes near this
# (1 GiB of float32); a hostile file declares one to make the interpreter allocate it.
MAX_TENSOR_ELEMENTS = 1 << 28


def labels_path_for(model_path: str | os.PathLike[str]) -> Path:
    """Where the labels of ``model.tflite`` live: ``model.labels.txt`` beside it."""
    path = Path(model_path)
    return path.with_name(path.stem + LABELS_SUFFIX)


def read_labels(path: str | os.PathLike[str]) -> list[str]:
    path = Path(path)
    try:
        text = files.read_text_limited(path, files.RECORD_LIMIT, "a labels file")
    except FileNotFoundError:
        raise ModelFileError(f"no labels file at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"cannot read labels file {path}: {exc}") from None
    # One label per "\n"-terminated line (a "\r\n" file too), exactly as mtl export writes
    # them: not splitlines(), which also breaks on U+2028, U+0085, \x0b, \x0c, ...
    labels = [line.strip() for line in text.split("\n") if line.strip()]
    if len(labels) < 2:
        raise ModelFileError(f"labels file {path} has {len(labels)} labels; expected one per line")
    from mtl.model.modelio import check_unique

    check_unique(labels, path)
    return labels


class TFLiteModel:
    """A LiteRT interpreter taking raw RGB 0-255 batches and returning probabilities.

    Float, dynamic-range and int8 models all keep a float32 input and output
    (``mtl export`` quantizes only the inside); an integer input or output is
    still handled through its quantization parameters.
    """

    def __init__(self, path: str | os.PathLike[str], num_threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"no model file at {self.path}")
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError:  # pragma: no cover - a dependency of mtl
            raise ModelFileError(
                "running .tflite models needs ai-edge-litert (pip install ai-edge-litert)"
            ) from None
        self._check_sizes()
        try:
            self.model = LiteModel(self.path, threads=num_threads)
        except (ValueError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelFileError(
                f"{self.path} is not a readable TFLite model: {first[:200]}"
            ) from None
        shape = [int(s) for s in self.model.input["shape"]]
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
            raise ModelFileError(
                f"{self.path} is not an mtl image classifier (input shape {shape})"
            )
        self.image_size = shape[1]
        self.num_classes = int(self.model.output["shape"][-1])
        self.fit, self.class_names = self._read_info()
        signature = self.model.input.get("shape_signature")
        self._dynamic_batch = signature is not None and len(signature) and int(signature[0]) == -1

    def _check_sizes(self) -> None:
        """Refuse a file declaring an input over :data:`~mtl.model.modelio.MAX_INPUT_PIXELS`
        a side, or any tensor over :data:`MAX_TENSOR_ELEMENTS`, before the interpreter
        allocates them (a 1.6 KB file can declare a 30000x30000 input)."""
        import mmap

        from mtl.litert import tensor_shapes
        from mtl.model.modelio import MAX_INPUT_PIXELS

        try:
            with (
                open(self.path, "rb") as fh,
                mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m,
            ):
                inputs, every = tensor_shapes(m)  # type: ignore[arg-type]
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{self.path} is not a readable TFLite model: {exc}") from None
        for dims in inputs:
            if any(d > MAX_INPUT_PIXELS for d in dims[1:3]):
                raise ModelFileError(
                    f"{self.path} is not a usable mtl model: it declares an input of "
                    f"{'x'.join(str(d) for d in dims[1:3])} pixels (the limit is "
                    f"{MAX_INPUT_PIXELS} a side)"
                )
        for dims in every:
            if math.prod(max(d, 1) for d in dims) > MAX_TENSOR_ELEMENTS:
                raise ModelFileError(
                    f"{self.path} is not a usable mtl model: it declares a tensor of shape "
                    f"{dims} (more than {MAX_TENSOR_ELEMENTS} values)"
                )

    def _read_info(self) -> tuple[str, list[str] | None]:
        """The fit ``mtl export`` recorded ("squash" for a file without one) and the class
        names (None for a file without them)."""
        import mmap

        from mtl.litert import read_metadata
        from mtl.model.modelio import fit_of

        try:
            with (
                open(self.path, "rb") as fh,
                mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m,
            ):
                raw = read_metadata(m, INFO_METADATA)  # type: ignore[arg-type]
            info = files.loads_json(raw) if raw is not None else {}
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{self.path} has damaged mtl metadata: {exc}") from None
        if not isinstance(info, dict):
            raise ModelFileError(f"{self.path} has damaged mtl metadata (not a JSON object)")
        names = info.get("class_names")
        if names is not None and (
            not isinstance(names, list)
            or not all(isinstance(n, str) and n.strip() for n in names)
            or len(set(names)) != len(names)
        ):
            raise ModelFileError(f"{self.path} has damaged class names in its mtl metadata")
        return fit_of(info, str(self.path)), names

    @property
    def input_dtype(self) -> str:
        return np.dtype(self.model.input["dtype"]).name

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self.model.input["dtype"])
        if dtype == np.float32:
            return x.astype(np.float32)
        scale, zero = self.model.input["quantization"]
        info = np.iinfo(dtype)
        q = np.round(x.astype(np.float32) / scale + zero)
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        if y.dtype == np.float32:
            return y
        scale, zero = self.model.output["quantization"]
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.model.resize(len(x), strict=True)
        return self._dequantize(self.model.run(self._quantize(x)))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """(n, size, size, 3) RGB 0-255 to (n, classes) probabilities."""
        if len(pixels) == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        if self._dynamic_batch:
            return self._run(pixels)
        return np.concatenate([self._run(pixels[i : i + 1]) for i in range(len(pixels))])

"""The frozen base on LiteRT: the CPU engine for training's one pass over every image.

On a CPU, LiteRT's XNNPACK kernels run MobileNet's frozen base about twice as
fast as TensorFlow's (80 vs 45 img/s on 2 cores), with features within 1e-4.
The base is converted once per machine and setting (TensorFlow's converter,
a few seconds) and kept in mtl's cache folder. A cached base needs neither
TensorFlow nor Keras, so training runs it in a thread while TensorFlow is
still importing: on two cores the slowest part of a small run hides in the
import.

Nothing here imports TensorFlow or Keras; the conversion is
:func:`mtl.runtime.tflite_flatbuffer`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl import files
from mtl.assets.cache import cache_root
from mtl.data.features import pad_rows
from mtl.errors import MtlError
from mtl.litert import LiteModel

# Images per LiteRT invocation in training's base pass: XNNPACK on 2 cores runs batches of
# 8-16 about 20% faster than batches of 32 (65 vs 54 photos/s for the two-view base,
# measured on busy cores; alone, bench/litert_batch.py: 143 at 8, 134 at 16, 127 at 32).
# Whole runs on 735 photos did not tell 8, 16 and 32 apart. The features do not depend
# on it (checked in tests).
BATCH = 16
FORMAT = 1  # bump when the converted file's meaning changes: old files are then ignored


@dataclass(frozen=True)
class BaseSpec:
    """Everything the frozen part's output depends on; known before Keras is imported."""

    model: str
    alpha: float
    size: int
    freeze: int | None  # None: the whole base (pooled features); else the cut
    weights_digest: str  # SHA-256 of the ImageNet no-top weights file
    keras_version: str  # the architecture comes from keras.applications
    views: tuple[str, ...] = ("image",)  # the extractor's output has one row per view
    input_size: int = 0  # the extractor's input side (0: ``size``; see TrainConfig.input_size)
    precision: str = "float32"  # or "int8": mtl.model.calibration (--base-precision)
    calibration: int = 0  # int8: how it was converted (mtl.model.calibration.VERSION)

    @property
    def input_side(self) -> int:
        return self.input_size or self.size

    def text(self) -> str:
        """Names the cached features too: a LiteRT feature is never mixed with a Keras one."""
        freeze = "all" if self.freeze is None else self.freeze
        return (
            f"litert{FORMAT}|{self.model}|alpha={float(self.alpha)}|size={self.size}|"
            f"freeze={freeze}|{self._precision_text()}|weights={self.weights_digest[:16]}|"
            f"keras={self.keras_version}"
            + ("" if self.views == ("image",) else f"|views={'+'.join(self.views)}")
            + ("" if self.input_side == self.size else f"|input={self.input_side}")
        )

    def _precision_text(self) -> str:
        if self.precision == "float32":
            return "float32"
        return f"{self.precision}-calibration{self.calibration}"

    def to_json(self) -> dict[str, object]:
        """The fields, as ``mtl.json`` keeps them (:meth:`from_json` reads them back)."""
        values = dataclasses.asdict(self)
        values["views"] = list(self.views)
        return values

    @classmethod
    def from_json(cls, values: object) -> BaseSpec | None:
        """The spec ``to_json`` wrote; None for anything else (a file may hold anything).
        A spec written before ``input_size`` existed has none: the base's side; before
        ``precision``, float32; before ``calibration``, an int8 base was version 1."""
        if isinstance(values, dict):
            values = {"input_size": 0, "precision": "float32", **values}
            old_int8 = values["precision"] == "int8"
            values = {"calibration": 1 if old_int8 else 0, **values}
        if not isinstance(values, dict) or set(values) != {f.name for f in dataclasses.fields(cls)}:
            return None
        views = values["views"]
        freeze = values["freeze"]
        if not (
            isinstance(views, list)
            and all(isinstance(v, str) for v in views)
            and all(isinstance(values[k], str) for k in ("model", "weights_digest"))
            and isinstance(values["keras_version"], str)
            and isinstance(values["alpha"], int | float)
            and isinstance(values["size"], int)
            and isinstance(values["input_size"], int)
            and 0 <= values["input_size"] <= 4096
            and values["precision"] in ("float32", "int8")
            and isinstance(values["calibration"], int)
            and 0 <= values["calibration"] <= 1000
            and (freeze is None or isinstance(freeze, int))
        ):
            return None
        return cls(**{**values, "views": tuple(views)})

    def path(self) -> Path:
        key = hashlib.sha256(self.text().encode()).hexdigest()[:32]
        return cache_root() / "bases" / f"{self.model}-{key}.tflite"


def keras_version() -> str:
    """The installed Keras version, read without importing Keras (that takes seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keras")
    except PackageNotFoundError:  # pragma: no cover - keras is a dependency
        return "unknown"


def store(spec: BaseSpec, flatbuffer: bytes) -> Path | None:
    """Keep a converted base for later runs; None when the cache folder is not writable."""
    try:
        return files.write_bytes(spec.path(), flatbuffer, force=True)
    except (OSError, MtlError):  # MtlError: mtl.files found the folder unwritable first
        return None


class LiteExtractor:
    """The converted frozen part under LiteRT: raw RGB 0-255 in, features out.

    The same interface as :class:`mtl.data.features.Extractor` (``spec``, ``batch``,
    ``calls``, ``images``). XNNPACK's results do not depend on the thread count
    or the batch size (checked in tests), so a run that starts the pass during
    the import (one thread) and one that does not (all cores) get the same bits.
    """

    def __init__(
        self, source: Path | bytes, spec: str, *, threads: int | None = None, batch: int = 0
    ) -> None:
        self.model = LiteModel(source, threads=threads)
        self.spec = spec
        self.batch = batch
        self.calls = 0
        self.images = 0

    def set_threads(self, threads: int) -> None:
        self.model.set_threads(threads)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.images += len(pixels)
        n = len(pixels)
        x = pad_rows(pixels.astype(np.float32), self.batch)
        self.model.resize(len(x))
        return self.model.run(x).astype(np.float32)[:n]

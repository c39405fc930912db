"""The one LiteRT wrapper: a ``.tflite`` model of one input and one output, run from NumPy.

Training runs the frozen base on it (:mod:`mtl.model.litebase`) and
``mtl predict`` runs exported models on it (:mod:`mtl.inference.tflite`).
``ai_edge_litert`` and NumPy start in a fraction of a second; nothing here
imports TensorFlow or Keras.
"""

from __future__ import annotations

import os
from pathlib import Path
from struct import error as struct_error
from typing import Any

import numpy as np


class LiteModel:
    """A LiteRT interpreter over ``source`` (a file or the model's bytes).

    Raises ``ValueError``/``RuntimeError`` (LiteRT's own) for an unreadable model
    and ``ValueError`` for one without exactly one input and one output.
    """

    def __init__(self, source: Path | bytes, *, threads: int | None = None) -> None:
        self.source = source
        self.threads = threads or os.cpu_count() or 1
        self._open()
        inputs = self.interp.get_input_details()
        if len(inputs) != 1 or len(self.interp.get_output_details()) != 1:
            raise ValueError("expected a model with one input and one output")

    def _open(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        from mtl.runtime import quiet_native_stderr  # imports no TensorFlow

        with quiet_native_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
            if isinstance(self.source, bytes):
                self.interp: Any = Interpreter(model_content=self.source, num_threads=self.threads)
            else:
                self.interp = Interpreter(model_path=str(self.source), num_threads=self.threads)
            self.interp.allocate_tensors()
        self._opened_with = self.threads
        self.input: dict[str, Any] = self.interp.get_input_details()[0]
        self.output: dict[str, Any] = self.interp.get_output_details()[0]

    def set_threads(self, threads: int) -> None:
        """Use ``threads`` from the next call on (safe to call from another thread)."""
        self.threads = threads

    def resize(self, n: int, *, strict: bool = False) -> None:
        """Make the batch dimension ``n``."""
        if int(self.input["shape"][0]) != n:
            shape = [n, *(int(s) for s in self.input["shape"][1:])]
            self.interp.resize_tensor_input(self.input["index"], shape, strict=strict)
            self.interp.allocate_tensors()
            self.input = self.interp.get_input_details()[0]
            self.output = self.interp.get_output_details()[0]

    def run(self, x: np.ndarray) -> np.ndarray:
        """One invocation on ``x`` (already of the input's dtype and shape)."""
        if self.threads != self._opened_with:  # the cores freed up: reopen with more threads
            self._open()
            self.resize(len(x))
        self.interp.set_tensor(self.input["index"], x)
        self.interp.invoke()
        return np.array(self.interp.get_tensor(self.output["index"]))


# --- metadata: named byte strings inside the flatbuffer (the schema's Model.metadata) -----

TFLITE_IDENTIFIER = b"TFL3"


def add_metadata(flatbuffer: bytes, name: str, value: bytes) -> bytes:
    """``flatbuffer`` with the metadata entry ``name`` set to ``value`` (a new buffer)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    buffer = fb.BufferT()
    buffer.data = np.frombuffer(value, dtype=np.uint8)
    model.buffers = [*(model.buffers or []), buffer]
    entry = fb.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    kept = [m for m in (model.metadata or []) if _text(m.name) != name]
    model.metadata = [*kept, entry]
    builder = flatbuffers.Builder(len(flatbuffer) + len(value) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def read_metadata(flatbuffer: bytes, name: str) -> bytes | None:
    """The metadata entry ``name`` of a ``.tflite``'s bytes; None when it has none.

    Raises ``ValueError`` for a file whose entry points outside it."""
    from ai_edge_litert import schema_py_generated as fb

    try:
        model = fb.Model.GetRootAs(flatbuffer, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if _text(entry.Name()) != name:
                continue
            if entry.Buffer() >= model.BuffersLength():
                raise ValueError("metadata points to a missing buffer")
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            return b"" if isinstance(data, int) else bytes(np.asarray(data, np.uint8))
    except (IndexError, struct_error, TypeError) as exc:  # a truncated or foreign file
        raise ValueError(f"cannot read its metadata ({exc})") from None
    return None


def tensor_shapes(flatbuffer: bytes) -> tuple[list[list[int]], list[list[int]]]:
    """(the first subgraph's input shapes, every tensor's shape) as the file declares
    them, read without an interpreter (which would allocate them all).

    Raises ``ValueError`` for a file that is not a readable flatbuffer."""
    from ai_edge_litert import schema_py_generated as fb

    def shape(tensor: Any) -> list[int]:
        dims = [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
        if tensor.ShapeSignatureLength():
            signature = [int(d) for d in tensor.ShapeSignatureAsNumpy()]
            dims = [max(a, b) for a, b in zip(dims, signature, strict=False)] or dims
        return dims

    try:
        model = fb.Model.GetRootAs(flatbuffer, 0)
        inputs: list[list[int]] = []
        every: list[list[int]] = []
        for g in range(model.SubgraphsLength()):
            graph = model.Subgraphs(g)
            tensors = [shape(graph.Tensors(i)) for i in range(graph.TensorsLength())]
            every += tensors
            if g == 0:
                inputs = [tensors[graph.Inputs(i)] for i in range(graph.InputsLength())]
    except (IndexError, struct_error, TypeError, AttributeError) as exc:
        raise ValueError(f"cannot read its tensors ({exc})") from None
    return inputs, every


def _text(value: bytes | str | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")

"""TensorBoard event files for a run (``tensorboard --logdir runs/``), without TensorFlow.

The records are those ``tf.summary`` writes (scalars and PNG images as tensors with
their plugin's metadata), built with the ``tensorboard`` package's protos and
record writer on a plain file: its ``EventFileWriter`` would import TensorFlow
(5 s) for its file layer. So a run logs on every backend, and training with the
head in NumPy never imports TensorFlow for it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any


class EventLog:
    """Per-epoch scalars and images in ``folder``; opened by the first write, so nothing
    is created unasked. Logging never fails a run: an unwritable folder or a missing
    ``tensorboard`` package turns it off."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._writer: Any = None
        self.failed = False

    @property
    def active(self) -> bool:
        return self._writer is not None

    def _open(self) -> bool:
        if self._writer is None and not self.failed:
            try:
                from tensorboard.compat.proto import event_pb2
                from tensorboard.summary.writer.record_writer import RecordWriter

                self.folder.mkdir(parents=True, exist_ok=True)
                name = (
                    f"events.out.tfevents.{time.time():.0f}.{socket.gethostname()}."
                    f"{os.getpid()}.0.v2"
                )
                self._writer = RecordWriter(open(self.folder / name, "wb"))  # noqa: SIM115
                first = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
                self._writer.write(first.SerializeToString())
            except (ImportError, OSError, ValueError):
                self.failed = True
        return self._writer is not None and not self.failed

    def _add(self, values: list[Any], step: int) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        summary = summary_pb2.Summary(value=values)
        event = event_pb2.Event(wall_time=time.time(), step=step, summary=summary)
        try:
            self._writer.write(event.SerializeToString())
            self._writer.flush()
        except OSError:  # a full disk: the run goes on without its logs
            self.failed = True

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self._open():
            return
        import numpy as np
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.scalar import metadata
        from tensorboard.util import tensor_util

        protos = [
            summary_pb2.Summary.Value(
                tag=tag,
                metadata=metadata.create_summary_metadata(display_name=tag, description=""),
                tensor=tensor_util.make_tensor_proto(np.float32(v)),
            )
            for tag, v in values.items()
            if v == v  # NaN (no validation) is left out
        ]
        self._add(protos, step)

    def png(self, tag: str, data: bytes, step: int = 0) -> None:
        """A PNG as ``tf.summary.image`` stores one: the strings [width, height, png]."""
        if not self._open() or data[:8] != b"\x89PNG\r\n\x1a\n":
            return
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.image import metadata
        from tensorboard.util import tensor_util

        width, height = struct.unpack(">II", data[16:24])
        tensor = tensor_util.make_tensor_proto([str(width).encode(), str(height).encode(), data])
        meta = metadata.create_summary_metadata(display_name=tag, description="")
        self._add([summary_pb2.Summary.Value(tag=tag, metadata=meta, tensor=tensor)], step)

    def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.close()

"""TensorBoard event files for a run (``tensorboard --logdir runs/``), without TensorFlow.

A run's folder ``tensorboard/`` holds one folder named by the run (so a run shows by
its name, however ``--logdir`` is given) with Keras' layout: ``train`` and
``validation`` runs sharing the tags ``epoch_loss`` and ``epoch_accuracy`` (one chart
each, two lines), ``refit`` for the refit on every photo, and the run's settings as an
hparams entry (the HParams tab compares runs that differ in ``--head`` or ``--views``).

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mtl import files
from mtl.errors import MtlError


class EventLog:
    """Per-epoch scalars and images in ``folder``; opened by the first write, so nothing
    is created unasked. Logging never fails a run: an unwritable folder or a missing
    ``tensorboard`` package turns it off, and so does a link on the way from ``under``
    (never written through)."""

    def __init__(self, folder: Path, under: Path | None = None) -> None:
        self.folder = folder
        self.under = under
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

                files.owned_dir(self.folder, under=self.under)
                name = (
                    f"events.out.tfevents.{time.time():.0f}.{socket.gethostname()}."
                    f"{os.getpid()}.0.v2"
                )
                self._writer = RecordWriter(open(self.folder / name, "wb"))  # noqa: SIM115
                first = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
                self._writer.write(first.SerializeToString())
            except (ImportError, OSError, ValueError, MtlError):
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

    def summary(self, proto: Any) -> None:
        """A ready ``Summary`` proto (the hparams plugin's), at step 0."""
        if self._open():
            self._add(list(proto.value), 0)

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


# The runs of one training run, as Keras' TensorBoard callback names them (and "refit",
# whose epochs count from 1 again: on the train line it would jump back).
TRAIN, VALIDATION, REFIT, TEST = "train", "validation", "refit", "test"


FOLDER = "tensorboard"  # in each run folder: tensorboard --logdir runs/


def session_name(folder: Path, name: str, resuming: bool = False) -> str:
    """The TensorBoard run name of a training run: its folder's name and its start time,
    so ``--logdir runs/`` never shows two runs under one name (``runs/a/train`` and
    ``runs/b/train``, or a folder trained again with ``--force``). A resumed run goes on
    under the name it started with."""
    started = find_session(folder) if resuming else None
    if started is not None:
        return started.name
    name = name or folder.resolve().parent.name or "run"  # a run folder given as "."
    now = time.time()
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}.{int(now % 1 * 1000):03d}"


def find_session(folder: Path) -> Path | None:
    """The newest run's folder under ``RUN/tensorboard`` (None: nothing was logged)."""
    with contextlib.suppress(OSError):
        found = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
        if found:
            return found[-1]
    return None


def log_test_scores(folder: Path, step: int, scores: Mapping[str, float]) -> bool:
    """The held-out test photos' scores (``DATA/test/``, scored once the model is written)
    as the ``test`` run beside ``train`` and ``validation``, on their charts
    (``epoch_accuracy``, ``epoch_loss``) at the kept epoch; False when nothing was logged."""
    session = find_session(folder)
    if session is None:
        return False
    log = EventLog(session / TEST, under=folder)
    log.scalars(step, {f"epoch_{k}": float(v) for k, v in scores.items()})
    log.close()
    return not log.failed


class RunEvents:
    """The event files of one training run under ``folder`` (``RUN/tensorboard``):
    ``folder/name/{train,validation,refit}``, the hparams entry and images in
    ``folder/name``. Each file is created by its first write."""

    def __init__(self, folder: Path, name: str, hparams: Mapping[str, Any]) -> None:
        self.root = folder
        self.folder = folder / name
        self.name = name
        self.hparams = dict(hparams)
        self._logs: dict[str, EventLog] = {}

    def log(self, run: str = "") -> EventLog:
        """The event file of ``run`` ("" for the session folder itself)."""
        if run not in self._logs:
            path = self.folder / run if run else self.folder
            self._logs[run] = EventLog(path, under=self.root)
        return self._logs[run]

    @property
    def active(self) -> bool:
        return any(log.active for log in self._logs.values())

    def epoch(self, log: Mapping[str, Any]) -> None:
        """One epoch of ``EpochLog.to_json()`` shape: its train numbers (to ``refit`` in
        the refit phase), its validation numbers and the learning rate."""
        if not self._logs:
            session = self.log()
            with contextlib.suppress(ImportError):  # no tensorboard: nothing is logged
                session.summary(hparams_summary(self.hparams, self.name))
        step = int(log["epoch"])
        scores = {"epoch_loss": log["loss"], "epoch_accuracy": log["accuracy"]}
        if log.get("phase") == REFIT:
            self.log(REFIT).scalars(step, scores)
            return
        self.log(TRAIN).scalars(step, {**scores, "epoch_learning_rate": log["learning_rate"]})
        val = {"epoch_loss": log["val_loss"], "epoch_accuracy": log["val_accuracy"]}
        if any(v == v for v in val.values()):  # NaN: no validation split
            self.log(VALIDATION).scalars(step, val)

    def png(self, tag: str, data: bytes) -> None:
        self.log().png(tag, data)

    def close(self) -> None:
        for log in self._logs.values():
            log.close()


def hparams_summary(config: Mapping[str, Any], trial: str) -> Any:
    """The hparams plugin's session-start entry for one run's settings (``config.json``):
    numbers and flags as they are, lists (``head``, ``views``) and None as text, since the
    plugin holds only numbers, flags and strings."""
    from tensorboard.plugins.hparams import summary_v2

    def value(v: Any) -> bool | int | float | str:
        if isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, (list, tuple)):
            return ",".join(str(x) for x in v) if v else "none"
        return "none" if v is None else str(v)

    return summary_v2.hparams_pb({k: value(v) for k, v in config.items()}, trial_id=trial)

"""Loading Keras and its backend: the one module that knows about TensorFlow.

Everything else writes plain Keras 3 (``keras.layers``, ``keras.ops``), so mtl
also runs with ``KERAS_BACKEND=jax`` or ``torch``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from types import ModuleType
from typing import Any

# TensorFlow's C++ start-up chatter (oneDNN notes, "no CUDA driver") is noise
# for a CLI user; it is kept and shown only when the import itself fails.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    if os.environ.get("MTL_DEBUG"):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # pytest capture, notebooks
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), fd)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            if not ok:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))


def backend_name() -> str:
    return os.environ.get("KERAS_BACKEND", "tensorflow")


@cache
def keras() -> ModuleType:
    """Import Keras (and its backend) once, quietly, and initialise the devices."""
    with _quiet_native_stderr():
        import keras as k

        if k.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.get_logger().setLevel("ERROR")
            gpus = tf.config.list_physical_devices("GPU")
            for gpu in gpus:
                # Share the GPU politely instead of grabbing all its memory up front.
                with contextlib.suppress(RuntimeError, ValueError):
                    tf.config.experimental.set_memory_growth(gpu, True)
    return k


def accelerators() -> list[str]:
    """Human-readable names of the accelerators the current backend can use."""
    k = keras()
    name = k.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform != "cpu"]
    if name == "torch":
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def describe_device() -> str:
    devices = accelerators()
    backend = keras().backend.backend()
    if devices:
        return f"{backend} on {len(devices)} accelerator(s): {', '.join(devices)}"
    return f"{backend} on CPU ({os.cpu_count()} cores)"


def as_numpy(x: Any) -> Any:
    import numpy as np

    return np.asarray(keras().ops.convert_to_numpy(x))

"""Loading Keras and its backend: the one module that knows about TensorFlow.

Everything else writes plain Keras 3 (``keras.layers``, ``keras.ops``), so mtl
also runs with ``KERAS_BACKEND=jax`` or ``torch``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

# TensorFlow's C++ start-up chatter (oneDNN notes, "no CUDA driver") is noise
# for a CLI user; it is kept and shown only when the import itself fails.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Native code's lines on stderr (TensorFlow's start-up notes, LiteRT's "Created
    TensorFlow Lite XNNPACK delegate") held back, shown only if the block fails.

    File descriptor 2 itself, not ``sys.stderr``: C++ writes there whatever Python's
    stream is, and a Jupyter kernel forwards it to the notebook as red text (its
    ``sys.stderr`` is a kernel stream whose ``fileno`` is not fd 2)."""
    if os.environ.get("MTL_DEBUG"):
        yield
        return
    fd = 2
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no fd 2 (a daemon): nothing to hide
        yield
        return
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


# KERAS_BACKEND -> the module it needs (what a missing one is called in the message).
BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def backend_name() -> str:
    # Empty is unset, as Keras reads it.
    return os.environ.get("KERAS_BACKEND") or "tensorflow"


def check_environment() -> None:
    """Refuse bad KERAS_BACKEND, MTL_CPU_DEVICES and TF_CONFIG values before importing
    anything, each named with what it may be (else: Keras' ValueError, an int() error
    or a JSON error, all "unexpected")."""
    from mtl.errors import UsageError

    name = backend_name()
    if name not in BACKENDS:
        raise UsageError(f"KERAS_BACKEND must be one of {', '.join(BACKENDS)}. Received {name!r}")
    cpu_devices()
    tf_config()


def cpu_devices() -> int:
    """``MTL_CPU_DEVICES``: 1 to the number of cores here (at least 2, so the tests of
    the multi-device path run on a one-core machine too)."""
    from mtl.errors import UsageError

    raw = os.environ.get("MTL_CPU_DEVICES", "").strip()
    cores = max(os.cpu_count() or 1, 2)
    if not raw:
        return 1
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= cores:
        raise UsageError(
            f"MTL_CPU_DEVICES must be a whole number from 1 to {cores} (the CPU cores "
            f"here). Received {raw[:40]!r}"
        )
    return n


def tf_config() -> dict[str, Any] | None:
    """``TF_CONFIG`` (multi-worker training), checked: a JSON object whose ``cluster``
    lists its ``worker`` addresses and whose ``task`` is one of them."""
    from mtl import files
    from mtl.errors import UsageError

    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = files.loads_json(raw)
    except ValueError as exc:
        raise UsageError(f"TF_CONFIG is not valid JSON ({exc})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    workers = cluster.get("worker") if isinstance(cluster, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if (
        not isinstance(workers, list)
        or not workers
        or not all(isinstance(w, str) and w for w in workers)
        or not isinstance(cluster, dict)
        or not isinstance(task, dict)
        or task.get("type") not in cluster
        or not isinstance(task.get("index"), int)
        or not 0 <= task["index"] < len(cluster.get(task["type"]) or [])
    ):
        raise UsageError(
            'TF_CONFIG must be {"cluster": {"worker": ["host:port", ...]}, "task": '
            '{"type": "worker", "index": N}} with N one of the workers. Received '
            f"{raw[:120]!r}"
        )
    return config


@cache
def keras() -> ModuleType:
    """Import Keras (and its backend) once, quietly, and initialise the devices."""
    check_environment()
    with quiet_native_stderr():
        try:
            import keras as k
        except ImportError as exc:
            from mtl.errors import UsageError

            backend = backend_name()
            if exc.name and exc.name.split(".")[0] == BACKENDS[backend] != "tensorflow":
                raise UsageError(
                    f"KERAS_BACKEND={backend} needs {exc.name.split('.')[0]}, which this "
                    f"install lacks: pip install {BACKENDS[backend]}, or unset KERAS_BACKEND"
                ) from None
            raise UsageError(
                f"this needs Keras and TensorFlow, which this install lacks ({exc.name}): "
                "pip install 'mtl[train]' (the light install runs exported .tflite and "
                ".onnx models only)"
            ) from None

        if k.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.get_logger().setLevel("ERROR")
            _split_cpu(tf)
            gpus = tf.config.list_physical_devices("GPU")
            for gpu in gpus:
                # Share the GPU politely instead of grabbing all its memory up front.
                with contextlib.suppress(RuntimeError, ValueError):
                    tf.config.experimental.set_memory_growth(gpu, True)
    return k


def _split_cpu(tf: Any) -> None:
    """``MTL_CPU_DEVICES=N``: show the CPU as N logical devices (tests of the multi-device path)."""
    n = cpu_devices()
    if n > 1:
        cpus = tf.config.list_physical_devices("CPU")
        with contextlib.suppress(RuntimeError):  # already initialised: keep what is there
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
            )


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


def describe_device(devices: list[str] | None = None) -> str:
    devices = accelerators() if devices is None else devices
    backend = keras().backend.backend()
    if devices:
        return f"{backend} on {len(devices)} accelerator(s): {', '.join(devices)}"
    return f"{backend} on CPU ({os.cpu_count()} cores)"


def as_numpy(x: Any) -> Any:
    import numpy as np

    return np.asarray(keras().ops.convert_to_numpy(x))


@dataclass
class TrainingDevices:
    """Where and how training runs: the distribution strategy (TensorFlow) and the precision."""

    description: str
    strategy: Any | None  # a tf.distribute.Strategy, or None for the backend's default device
    mixed_precision: bool
    accelerated: bool = False  # a GPU (or other accelerator) is in use

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


def _tf_compute_capability(tf: Any) -> float:
    best = 0.0
    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(Exception):
            cc = tf.config.experimental.get_device_details(gpu).get("compute_capability")
            if cc:
                best = max(best, cc[0] + cc[1] / 10)
    return best


def _tf_strategy(tf: Any) -> tuple[Any | None, str]:
    """MultiWorkerMirrored with TF_CONFIG, Mirrored over several GPUs (or logical CPUs)."""
    config = tf_config()
    if config is not None:
        workers = len(config["cluster"]["worker"])
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except (ValueError, KeyError, RuntimeError) as exc:
            from mtl.errors import UsageError

            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise UsageError(f"TF_CONFIG does not describe a usable cluster: {first}") from None
        return strategy, f"MultiWorkerMirroredStrategy, {workers} workers"
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(), f"MirroredStrategy over {len(gpus)} GPUs"
    cpus = tf.config.list_logical_devices("CPU")
    if not gpus and len(cpus) > 1:
        devices = [d.name for d in cpus]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        return strategy, f"MirroredStrategy over {len(cpus)} logical CPUs"
    return None, ""


def setup_training(precision: str = "auto") -> TrainingDevices:
    """Pick the strategy and precision; call before building any model."""
    k = keras()
    backend = k.backend.backend()
    strategy: Any | None = None
    how = ""
    benefit = False
    if backend == "tensorflow":
        import tensorflow as tf

        strategy, how = _tf_strategy(tf)
        benefit = _tf_compute_capability(tf) >= 7.0
    # Only now: listing logical devices starts TensorFlow's runtime, and a
    # MultiWorkerMirroredStrategy must be created before that.
    found = accelerators()
    if backend == "jax":
        benefit = bool(found)
    mixed = precision == "mixed" or (precision == "auto" and benefit)
    k.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    parts = [describe_device(found)]
    if how:
        parts.append(how)
    parts.append("mixed float16" if mixed else "float32")
    return TrainingDevices(", ".join(parts), strategy, mixed, bool(found))


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and the backend; on a CPU-only TensorFlow also make ops deterministic."""
    k = keras()
    k.utils.set_random_seed(int(seed))
    if k.backend.backend() == "tensorflow" and not accelerators():
        import tensorflow as tf

        with contextlib.suppress(Exception):
            tf.config.experimental.enable_op_determinism()


def prepare_fit(model: Any, devices: TrainingDevices) -> None:
    """Work around Keras 3 under ``MultiWorkerMirroredStrategy``: its first ``fit`` step
    averages a data batch with an eager cross-worker ``strategy.reduce``, which fails
    ("Attempt to convert a value (PerReplica...)"). Only the batch's shapes are needed,
    so take this worker's local part instead."""
    if devices.strategy is None:
        return
    import types

    import tensorflow as tf

    strategy = devices.strategy
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return

    def local(value: Any) -> Any:
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(local, next(it))
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = types.MethodType(build, model)
    _patch_multiworker_reduce()


@cache
def _patch_multiworker_reduce() -> None:
    """Keras 3 averages each step's logs across workers with ``reduce("MEAN", v, axis=0)``,
    which fails on scalar logs (loss, accuracy); average scalars with ``axis=None``."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: Any, reduction: str = "auto") -> Any:
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or reduction not in (
            "auto",
            "mean",
        ):
            return original(values, strategy, reduction)

        def mean(v: Any) -> Any:
            return strategy.reduce("MEAN", v, axis=None)

        return tf.nest.map_structure(mean, values)

    trainer.reduce_per_replica = reduce_per_replica


def tflite_flatbuffer(
    model: Any,
    input_shape: tuple[int, ...],
    quantize: str = "none",
    calibration: Callable[[], Iterable[Any]] | None = None,
) -> bytes:
    """Convert a float32 Keras model (TensorFlow backend) to a LiteRT flatbuffer.

    The variables are folded into constants first: converting the traced
    function directly keeps them as resources, and LiteRT then reads them
    uninitialised. Going through a SavedModel would work too but takes about
    three times as long.

    ``quantize``: "none" (float32), "dynamic" (int8 weights, float activations) or
    "int8" (int8 weights and activations; the input and output stay float32, with a
    quantize/dequantize op at each end), whose activation ranges come from the
    images ``calibration()`` yields (one float32 HWC array each).
    """
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec([None, *input_shape], tf.float32)
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    # The converter also warns through absl's Python logger (its "deprecated conversion
    # path" note): noise for a user, and red text in a notebook.
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with quiet_native_stderr():
            frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
            converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
            if quantize in ("dynamic", "int8"):
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if quantize == "int8":
                if calibration is None:
                    raise ValueError("int8 conversion needs calibration images")
                images = calibration

                def samples() -> Iterator[list[Any]]:
                    for image in images():
                        yield [np.asarray(image, np.float32)[None]]

                converter.representative_dataset = samples
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            return bytes(converter.convert())
    finally:
        absl.setLevel(level)

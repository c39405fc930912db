"""The frozen base's one pass over every image: which engine runs it, and starting it early.

``auto`` runs the pass with LiteRT (:mod:`mtl.model.litebase`) when training is on a
CPU with the TensorFlow backend, in float32 on one device, and with Keras
everywhere else (a GPU is far faster than any CPU engine). The choice is
made from the settings and devices alone, never from what happens to be
cached, so a run's features do not depend on the machine's history.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mtl import runtime
from mtl.data import features
from mtl.errors import UsageError
from mtl.model import calibration, litebase
from mtl.pipeline.config import TrainConfig
from mtl.progress import ProgressFn


def base_batch(cfg: TrainConfig) -> int:
    """Images per forward pass of the frozen base: not the training batch size, which may
    be huge (every batch is padded to this size, and memory grows with it)."""
    return min(max(cfg.batch_size, 32), 256)


def cpu_devices() -> runtime.TrainingDevices:
    """One plain CPU (the device of a NumPy-head run), described as training prints it."""
    return runtime.TrainingDevices(
        f"{runtime.backend_name()} on CPU ({os.cpu_count()} cores), float32; head on NumPy",
        None,
        False,
    )


def build_parts(
    cfg: TrainConfig,
    classes: Sequence[str],
    devices: runtime.TrainingDevices,
    freeze: int | None,
    **reuse: Any,
) -> Any:
    """The Keras model for ``cfg`` cut after ``freeze`` base layers (None: the whole base),
    in the devices' scope (imports TensorFlow): :class:`mtl.model.classifier.Parts`."""
    from mtl.model.classifier import build_parts as build

    with devices.scope():
        return build(
            list(classes),
            model=cfg.model,
            alpha=cfg.alpha,
            size=cfg.image_size,
            head_units=reuse.pop("head_units", cfg.head),
            dropout=cfg.dropout,
            freeze_layers=freeze,
            augment=cfg.augment,
            views=reuse.pop("views", cfg.run_views),
            input_size=cfg.input_size,
            fit=cfg.fit,
            **reuse,
        )


def _needs_strategy() -> bool:
    """Whether :func:`mtl.runtime.setup_training` will pick a multi-device strategy."""
    return runtime.tf_config() is not None or runtime.cpu_devices() > 1


def decide_engine(
    cfg: TrainConfig,
    backend: str,
    multi_device: bool,
    mixed_precision: bool,
    accelerated: bool = False,
    devices: str = "",
) -> str:
    """The one place that decides what runs the frozen base: "litert" or "keras".

    ``--base-engine litert`` where LiteRT cannot run is a usage error.
    """
    # A run that never imports Keras (LiteRT base, NumPy head; review) still refuses a
    # bad KERAS_BACKEND, MTL_CPU_DEVICES or TF_CONFIG, as Keras' import would.
    runtime.check_environment()
    # An int8 base exists on LiteRT only (config.validate refuses it with Keras).
    want = "litert" if cfg.base_precision == "int8" else cfg.base_engine
    if want == "keras" or cfg.augment:
        return "keras"
    if backend != "tensorflow":
        if want == "litert":
            raise UsageError(
                "--base-engine litert converts the base with TensorFlow; it needs "
                f"KERAS_BACKEND=tensorflow. Received KERAS_BACKEND={backend}"
            )
        return "keras"
    if multi_device or mixed_precision:
        if want == "litert":
            raise UsageError(
                "--base-engine litert runs the base in float32 on one device; use "
                f"--base-engine keras here. Received devices: {devices or 'several or mixed'}"
            )
        return "keras"
    if accelerated and want == "auto":
        return "keras"  # a GPU is far faster than any CPU engine
    return "litert"


def gpu_visible() -> bool:
    """Whether an NVIDIA or AMD GPU is visible to this process, known without importing
    a framework (TensorFlow would train on it)."""
    hidden = ("", "-1")
    nvidia = os.environ.get("CUDA_VISIBLE_DEVICES") not in hidden and (
        Path("/dev/nvidiactl").exists() or any(Path("/dev").glob("nvidia[0-9]*"))
    )
    amd = os.environ.get("HIP_VISIBLE_DEVICES") not in hidden and Path("/dev/kfd").exists()
    return nvidia or amd


# Pooled features a photo and view hold at most (MobileNet v3 large: 1280 floats, kept
# as float16: mtl.data.features.POOLED_DTYPE).
MAX_FEATURE_BYTES = 1280 * 2


def head_engine(cfg: TrainConfig, *, callbacks: bool, resuming: bool, photos: int = 0) -> str:
    """What trains the head: "numpy" (:mod:`mtl.training.headrun`) or "keras"
    (:mod:`mtl.training.kerashead`); the one place that decides it.

    Why two engines: on pooled features the head is a small dense network over a
    few thousand rows, which NumPy trains in milliseconds an epoch, while importing
    TensorFlow to do the same costs about 5 s on two cores. Measured on the 245
    hymenoptera photos, a whole run goes from 12.4 s (Keras head) to 4.8 s (NumPy
    head) on a CPU. Keras keeps what NumPy cannot do or would do slower: a GPU,
    several devices, mixed precision, training inside the base, callbacks.

    NumPy when the run trains on pooled features (the whole base frozen, no
    augmentation or fine-tuning) on one CPU in float32, decided from the settings
    and the machine alone, like :func:`decide_engine`: a GPU, several devices or
    mixed precision train on Keras, and so do Keras callbacks (the API's
    ``callbacks=``) and a resumed Keras checkpoint. The NumPy head holds every
    feature in memory: ``photos`` beyond ``cache_memory_mb`` train on Keras, which
    streams them from the cache.
    """
    why = ""
    if not cfg.pooled_only or callbacks or resuming or cfg.augment:
        why = "Keras callbacks or a resumed Keras checkpoint"
    elif photos * len(cfg.run_views) * MAX_FEATURE_BYTES > cfg.cache_memory_mb << 20:
        why = f"more features than --cache-memory-mb {cfg.cache_memory_mb} holds"
    elif _needs_strategy() or cfg.precision == "mixed" or gpu_visible():
        why = "several devices, mixed precision or a GPU"
    if why and cfg.base_precision == "int8":
        # Only a NumPy-trained model records its base for predict (mtl.inference.litekeras):
        # a Keras-trained one would be predicted on the float32 base it never trained on.
        raise UsageError(
            f"--base-precision int8 trains the head in NumPy on one CPU; this run would "
            f"train it on Keras ({why}). Use --base-precision float32"
        )
    return "keras" if why else "numpy"


class BasePass:
    """Runs the frozen part once per image for one training run, on the chosen engine."""

    def __init__(self, cfg: TrainConfig, weights_file: Path, *, auto_int8: bool = False) -> None:
        """``auto_int8``: whether ``--base-precision auto`` may choose int8 (a run whose head
        trains in NumPy, and `mtl review` where train's would: they share features)."""
        self.cfg = cfg
        self.auto_int8 = auto_int8
        self.weights_file = weights_file
        self.engine = ""  # "litert" or "keras", once :meth:`choose` has seen the devices
        self.converted = 0  # bases converted for LiteRT by this run
        self.started_early = False
        self.extractors: list[features.FeatureExtractor] = []
        self.warnings: list[str] = []
        self._digest = ""
        self._early: features.Background | None = None
        self._early_extractor: litebase.LiteExtractor | None = None
        self._early_spec: litebase.BaseSpec | None = None
        self._unstored: dict[str, bytes] = {}  # converted bases the cache could not keep
        self._int8_failed = False  # "auto" then runs float32

    def source(self, freeze: int | None) -> Path | bytes:
        """The converted base this run ran for ``freeze`` (the int8 one: its saved model
        carries it, :mod:`mtl.model.int8keras`)."""
        spec = self.spec(freeze)
        return self._unstored.get(spec.text(), spec.path())

    def precision(self, freeze: int | None) -> str:
        """The base's precision in this run: ``--base-precision``, or for "auto" int8 where
        LiteRT runs the whole base and :attr:`TrainConfig.int8_fits`, else float32."""
        c = self.cfg
        if c.base_precision != "auto":
            return c.base_precision
        litert = self.engine in ("", "litert")  # "": not chosen yet, LiteRT assumed
        fits = self.auto_int8 and not self._int8_failed and c.int8_fits
        return "int8" if freeze is None and litert and fits else "float32"

    def spec(self, freeze: int | None) -> litebase.BaseSpec:
        if not self._digest:
            self._digest = features.file_digest(self.weights_file)
        c = self.cfg
        views = tuple(c.run_views) if freeze is None else ("image",)
        side = c.input_size if freeze is None else c.image_size
        precision = self.precision(freeze)
        return litebase.BaseSpec(
            c.model,
            c.alpha,
            c.image_size,
            freeze,
            self._digest,
            litebase.keras_version(),
            views,
            0 if side == c.image_size else side,
            precision,
            calibration.VERSION if precision == "int8" else 0,
        )

    def start_early(
        self, paths: Sequence[Path], cache: features.FeatureCache, *, importing: bool = True
    ) -> None:
        """Start the pass in a thread now if a converted base is on disk and LiteRT may run it
        (``importing``: while this thread imports TensorFlow, on one core)."""
        c = self.cfg
        if c.freeze == 0:  # nothing frozen: nothing to compute once
            return
        # Before TensorFlow is up the devices are not known: assume one plain CPU. Should
        # they turn out otherwise, :meth:`choose` stops the pass.
        try:
            engine = decide_engine(
                c, runtime.backend_name(), _needs_strategy(), c.precision == "mixed"
            )
        except UsageError:
            return  # reported by :meth:`choose`, once the devices are known
        if engine != "litert":
            return
        spec = self.spec(c.freeze)
        path = spec.path()
        if not path.is_file():
            return
        # The import keeps one core busy; the pass gets the others.
        threads = max(1, (os.cpu_count() or 2) - importing)
        try:
            extractor = litebase.LiteExtractor(path, spec.text(), threads=threads)
        except (ValueError, RuntimeError, OSError):
            path.unlink(missing_ok=True)  # unreadable: converted again once Keras is up
            return
        self._early = features.start(
            paths,
            extractor,
            cache,
            spec.input_side,
            batch_size=litebase.BATCH,
            fit=c.fit,
        )
        self._early_extractor = extractor
        self._early_spec = spec
        self.started_early = True

    def stop_early(self) -> None:
        if self._early is not None:
            self._early.cancel()
            self._early = None

    def choose(self, devices: runtime.TrainingDevices) -> str:
        """Decide the engine once the devices are known (an early pass not wanted is stopped)."""
        self.engine = decide_engine(
            self.cfg,
            runtime.backend_name(),
            devices.strategy is not None,
            devices.mixed_precision,
            devices.accelerated,
            devices.description,
        )
        if self.engine != "litert":
            self.stop_early()
        return self.engine

    def fill(
        self,
        parts: Any,
        freeze: int | None,
        paths: Sequence[Path],
        cache: features.FeatureCache,
        *,
        direct: bool,
        batch_size: int,
        on_progress: ProgressFn | None,
        while_waiting: Callable[[], None] | None = None,
    ) -> features.Features:
        """Features (or decoded pixels, when nothing is frozen) for ``paths`` in ``cache``.

        ``while_waiting`` runs first if the early pass is still going.
        """
        if parts.extractor is not None and self.engine == "litert":
            result = self.fill_lite(
                lambda: parts,
                freeze,
                paths,
                cache,
                on_progress=on_progress,
                while_waiting=while_waiting,
            )
            if result is not None:
                return result
        return self.fill_keras(parts, paths, cache, direct, batch_size, on_progress)

    def fill_pooled(
        self,
        paths: Sequence[Path],
        cache: features.FeatureCache,
        get_parts: Callable[[], Any],
        devices: runtime.TrainingDevices | None,
        on_progress: ProgressFn | None,
    ) -> features.Features:
        """The whole frozen base's pooled features for ``paths``: the pass of a run whose head
        trains on them, and of `mtl review`. ``devices`` None: one plain CPU, TensorFlow
        not set up (LiteRT runs it unless the settings forbid); ``get_parts()`` builds the
        Keras model (:func:`build_parts`) only when Keras must convert or run the base."""
        c = self.cfg
        if devices is None:
            self.engine = decide_engine(c, runtime.backend_name(), False, False)
        else:
            self.choose(devices)
        result = None
        if self.engine == "litert":
            result = self.fill_lite(get_parts, None, paths, cache, on_progress=on_progress)
        if result is None:  # --base-engine keras, another backend, or LiteRT failed
            self.engine = "keras"
            direct = devices is not None and devices.strategy is not None
            result = self.fill_keras(get_parts(), paths, cache, direct, base_batch(c), on_progress)
        return result

    @staticmethod
    def _input_side(parts: Any) -> int:
        """The side of the pixels ``parts`` takes (the saved model's input)."""
        return int(parts.input_side)

    def fill_keras(
        self,
        parts: Any,
        paths: Sequence[Path],
        cache: features.FeatureCache,
        direct: bool,
        batch_size: int,
        on_progress: ProgressFn | None,
    ) -> features.Features:
        """The pass on Keras (or the decoded pixels, when nothing is frozen)."""
        extractor: features.FeatureExtractor | None = None
        if parts.extractor is not None:
            extractor = features.Extractor(parts.extractor, parts.spec, direct=direct)
            self.extractors.append(extractor)
        return features.compute(
            paths,
            extractor,
            cache,
            self._input_side(parts),
            batch_size=batch_size,
            on_progress=on_progress,
            fit=self.cfg.fit,
        )

    def fill_lite(
        self,
        get_parts: Callable[[], Any],
        freeze: int | None,
        paths: Sequence[Path],
        cache: features.FeatureCache,
        *,
        on_progress: ProgressFn | None,
        while_waiting: Callable[[], None] | None = None,
    ) -> features.Features | None:
        """The pass on LiteRT: the early one if it matches, else the converted base from
        disk, else converted now (``get_parts()`` builds the Keras model only then).
        None: LiteRT cannot run it (:attr:`engine` is then "keras", with a warning)."""
        spec = self.spec(freeze)
        if self._early is not None and self._early_spec == spec:
            early, self._early = self._early, None
            if while_waiting is not None and not early.future.done():
                while_waiting()  # main-thread work that overlaps the pass
            if self._early_extractor is not None:
                self._early_extractor.set_threads(os.cpu_count() or 1)  # this thread waits
            try:
                result = early.result(on_progress)
            except Exception:  # noqa: BLE001 - e.g. a LiteRT failure: run the pass below
                pass
            else:
                assert self._early_extractor is not None
                self.extractors.append(self._early_extractor)
                return result
        extractor = self._lite(get_parts, spec)
        if extractor is None:
            return None
        self.extractors.append(extractor)
        return features.compute(
            paths,
            extractor,
            cache,
            spec.input_side,
            batch_size=litebase.BATCH,
            on_progress=on_progress,
            fit=self.cfg.fit,
        )

    def _lite(
        self, get_parts: Callable[[], Any], spec: litebase.BaseSpec
    ) -> litebase.LiteExtractor | None:
        """The converted base (from disk, or converted now); None: Keras runs it after all."""
        path = spec.path()
        if path.is_file():
            try:
                return litebase.LiteExtractor(path, spec.text())
            except (ValueError, RuntimeError, OSError):
                path.unlink(missing_ok=True)  # a damaged file is converted again
        try:
            flatbuffer = calibration.convert(
                get_parts().extractor, spec.input_side, spec.precision, spec.calibration
            )
            self.converted += 1
            stored = litebase.store(spec, flatbuffer)
            if stored is None:
                self._unstored[spec.text()] = flatbuffer
            return litebase.LiteExtractor(stored or flatbuffer, spec.text())
        except Exception as exc:  # noqa: BLE001 - LiteRT is an optimisation: fall back to Keras
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            if spec.precision == "int8" and self.cfg.base_precision == "auto":
                self._int8_failed = True
                self.warnings.append(f"could not convert the base to int8 ({first}); float32 runs")
                return self._lite(get_parts, self.spec(None))
            if spec.precision != "float32":  # Keras has no int8 base to fall back on
                raise UsageError(
                    f"could not convert the base to {spec.precision} ({first}); "
                    "use --base-precision float32"
                ) from None
            self.warnings.append(f"could not run the base with LiteRT ({first}); Keras runs it")
            self.engine = "keras"
            return None

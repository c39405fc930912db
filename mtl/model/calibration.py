"""The fixed calibration images of the int8 frozen base (``--base-precision int8``).

Full-integer quantization needs each activation's range. MobileNet's activations are
ReLU6-bounded, so what calibration has to get right is how much of [0, 6] each
layer uses on photographs, not the photos' content. The set is generated here,
never taken from the user's photos: the same images on every machine and for every
dataset, so a converted base depends on the settings alone (like the float one),
and conversion needs no photos at hand (``mtl predict`` may convert it too).

What is generated, and why: photographs have a roughly 1/f amplitude spectrum,
correlated colour channels, hard edges between regions and smooth shading. Each
image mixes those: coloured 1/f noise (texture at every scale), a linear or radial
gradient (shading, sky), and a few filled rectangles and ellipses (objects with
edges), at contrasts from flat to saturated so that the raw 0-255 input's full
range is seen. ``bench/int8_base.py`` compares it with calibrating on real photos
(cosine of pooled features to float32 on four real datasets).

Since version 2 the converted network is also bias-corrected (Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", ICCV 2019): rounding
a layer's weights to int8 shifts each output channel's mean by the rounding error
times the mean input, a systematic error that the next layers carry on. MobileNet's
depthwise 3x3 kernels have nine weights per channel, too few for the errors to cancel,
and on photos this shift was 35-50% of the early layers' int8 error. The expected shift
on the calibration images is subtracted from each layer's bias before conversion (the
float network itself is left unchanged), which costs nothing at run time. Bias
correction needs Keras; generating the images needs NumPy only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

# Bump when the images or the conversion change: it is recorded with a model trained on
# the int8 base (``BaseSpec.calibration``) and is part of the converted base's cache key.
# 1: the images alone; 2: the images, then bias correction.
VERSION = 2
VERSIONS = (1, 2)
COUNT = 64  # images: bench/int8_base.py saw no gain from 128
SHIFT_BATCH = 8  # images at a time when measuring the bias shifts (bounded memory)
SEED = 20251129


def images(side: int, count: int = COUNT) -> Iterator[np.ndarray]:
    """``count`` float32 RGB images of ``side`` x ``side``, values 0-255, always the same."""
    rng = np.random.default_rng(SEED)
    for _ in range(count):
        yield _image(rng, side)


def _image(rng: np.random.Generator, side: int) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    img = _pink_noise(rng, side) * rng.uniform(0.2, 1.0)
    img += _gradient(rng, xx, yy) * rng.uniform(0.3, 1.0)
    for _ in range(int(rng.integers(0, 6))):
        mask = _shape(rng, xx, yy)
        colour = rng.uniform(-1, 1, 3).astype(np.float32)
        img = np.where(mask[..., None], colour + 0.3 * img, img)
    # Contrast and brightness as photos vary: from dull to clipped.
    img = img * rng.uniform(0.4, 1.6) + rng.uniform(-0.3, 0.3)
    return np.clip((img + 1.0) * 127.5, 0, 255).astype(np.float32)


def _pink_noise(rng: np.random.Generator, side: int) -> np.ndarray:
    """Colour noise with a 1/f^beta spectrum, channels correlated, roughly in [-1, 1]."""
    fy = np.fft.fftfreq(side)[:, None]
    fx = np.fft.rfftfreq(side)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0 / side
    beta = rng.uniform(0.8, 1.6)
    shared = rng.normal(size=(side, side // 2 + 1)) + 1j * rng.normal(size=(side, side // 2 + 1))
    mix = rng.uniform(0.3, 0.9)  # how strongly the channels move together
    channels = []
    for _ in range(3):
        own = rng.normal(size=shared.shape) + 1j * rng.normal(size=shared.shape)
        spectrum = (mix * shared + (1 - mix) * own) / f**beta
        channel = np.fft.irfft2(spectrum, s=(side, side))
        channels.append(channel / (np.abs(channel).max() + 1e-9))
    return np.stack(channels, axis=-1).astype(np.float32)


def _gradient(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    a, b = rng.uniform(-1, 1, 3).astype(np.float32), rng.uniform(-1, 1, 3).astype(np.float32)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) * np.sqrt(2) + 0.5
    else:
        cx, cy = rng.uniform(0, 1, 2)
        t = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / np.sqrt(2)
    t = np.clip(t, 0, 1)[..., None]
    return (a * (1 - t) + b * t).astype(np.float32)


def _shape(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    cx, cy = rng.uniform(0, 1, 2)
    rx, ry = rng.uniform(0.05, 0.35, 2)
    if rng.random() < 0.5:
        return (np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry)
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1


def convert(extractor: Any, side: int, precision: str, version: int = VERSION) -> bytes:
    """The frozen part ``extractor`` (a Keras model, raw RGB at ``side`` in) as a LiteRT
    flatbuffer in ``precision``: "float32", "dynamic" (int8 weights only; measured in
    ``bench/int8_base.py``, not offered by ``mtl train``) or "int8" (calibrated on
    :func:`images`, as calibration ``version`` did: a model records the one it was
    trained on). Needs TensorFlow."""
    from mtl import runtime

    shape = (side, side, 3)
    if precision == "float32":
        return runtime.tflite_flatbuffer(extractor, shape)
    if precision == "int8" and version not in VERSIONS:
        raise ValueError(
            f"unknown int8 calibration version {version} (this mtl makes {VERSIONS}): "
            "a newer mtl made this base"
        )
    with bias_corrected(extractor, enabled=precision == "int8" and version >= 2):
        return runtime.tflite_flatbuffer(
            extractor, shape, quantize=precision, calibration=lambda: images(side)
        )


@contextmanager
def bias_corrected(extractor: Any, enabled: bool = True) -> Iterator[None]:
    """Within the block, each convolution of ``extractor``'s backbone has its bias (its
    BatchNormalization's beta) lowered by the mean output shift that rounding its
    BN-folded kernel to int8 causes on :func:`images`; afterwards every weight is as it
    was. The rounding is LiteRT's: symmetric, per output channel, to [-127, 127]."""
    if not enabled:
        yield
        return
    backbone, pre = _backbone(extractor)
    convs = _convolutions(backbone)
    kept = [(target, [np.asarray(w) for w in target.get_weights()]) for _, target in convs]
    try:
        for (_, target), shift in zip(convs, _shifts(backbone, pre, convs), strict=True):
            _lower_bias(target, shift)
        yield
    finally:
        for target, weights in kept:
            target.set_weights(weights)


def correctable(model: Any) -> bool:
    """Whether :func:`bias_corrected` finds a backbone in ``model`` (a frozen part, or a
    whole classifier as exports convert it)."""
    try:
        _backbone(model)
    except ValueError:
        return False
    return True


def _backbone(model: Any) -> tuple[Any, Any]:
    """The one nested Keras model holding convolutions with a bias to correct, and the
    preprocessing layer that feeds it (None: the backbone preprocesses itself)."""
    import keras

    models = [
        layer for layer in model.layers if isinstance(layer, keras.Model) and _convolutions(layer)
    ]
    if len(models) != 1:
        raise ValueError(f"expected one backbone inside the model, found {len(models)}")
    pre = next((layer for layer in model.layers if layer.name == "preprocess"), None)
    return models[0], pre


def _convolutions(backbone: Any) -> list[tuple[Any, Any]]:
    """(convolution, the layer whose bias follows it): its BatchNormalization (Keras'
    applications name it after the convolution), else the convolution itself."""
    import keras

    names = {layer.name: layer for layer in backbone.layers}
    out = []
    for layer in backbone.layers:
        if not isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
            continue
        bn = names.get(f"{layer.name}_bn") or names.get(f"{layer.name}_BN")
        if isinstance(bn, keras.layers.BatchNormalization) and bn.center:
            out.append((layer, bn))
        elif layer.use_bias:
            out.append((layer, layer))
    return out


def _shifts(backbone: Any, pre: Any, convs: list[tuple[Any, Any]]) -> list[np.ndarray]:
    """Each convolution's mean output shift (per channel) on the calibration images, its
    inputs computed by the float network: one compiled model whose outputs are each
    rounding twin's per-image channel means, so memory stays that of a few images."""
    import keras

    side = int(backbone.input_shape[1])
    means = [
        keras.ops.mean(_rounding_twin(layer, target)(layer.input), axis=(1, 2))
        for layer, target in convs
    ]
    probe = keras.Model(backbone.input, means)
    pixels = np.stack(list(images(side)))
    x = np.asarray(pre(pixels)) if pre is not None else pixels
    per_image = probe.predict(x, batch_size=SHIFT_BATCH, verbose=0)
    per_image = per_image if isinstance(per_image, list | tuple) else [per_image]
    # every image has the same number of positions: the mean of means is the mean
    return [np.asarray(m, np.float64).mean(axis=0) for m in per_image]


def _rounding_twin(layer: Any, target: Any) -> Any:
    """A copy of convolution ``layer`` without bias whose kernel is the rounding error of
    the kernel LiteRT rounds (the BatchNormalization ``target`` folded in)."""
    import keras

    depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
    kernel = np.asarray(layer.get_weights()[0], np.float64)
    if target is not layer:
        gamma = np.asarray(target.gamma, np.float64) if target.scale else 1.0
        fold = gamma / np.sqrt(np.asarray(target.moving_variance, np.float64) + target.epsilon)
        kernel = kernel * (fold.reshape(-1, 1) if depthwise else fold)
    # Output channels: the last axis of a Conv2D kernel; a depthwise kernel (h, w, c, 1)
    # with a multiplier of 1 has one per input channel.
    axes = (0, 1, 3) if depthwise else (0, 1, 2)
    step = np.abs(kernel).max(axis=axes, keepdims=True) / 127.0
    error = np.round(kernel / np.where(step > 0, step, 1.0)) * step - kernel
    config = {**layer.get_config(), "name": f"{layer.name}_rounding", "use_bias": False}
    config.pop("activation", None)
    twin = type(layer).from_config(config)
    twin.build(layer.input.shape)
    twin.set_weights([error.astype(np.float32)])
    return twin


def _lower_bias(target: Any, shift: np.ndarray) -> None:
    import keras

    bias = target.beta if isinstance(target, keras.layers.BatchNormalization) else target.bias
    bias.assign((np.asarray(bias, np.float64) - shift).astype(np.float32))

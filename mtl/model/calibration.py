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
(cosine of pooled features to float32 on four real datasets). NumPy only.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# Bump when the images change: it is part of the converted base's cache key.
VERSION = 1
COUNT = 64  # images: bench/int8_base.py saw no gain from 128
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


def convert(extractor: object, side: int, precision: str) -> bytes:
    """The frozen part ``extractor`` (a Keras model, raw RGB at ``side`` in) as a LiteRT
    flatbuffer in ``precision``: "float32", "dynamic" (int8 weights only; measured in
    ``bench/int8_base.py``, not offered by ``mtl train``) or "int8" (calibrated on
    :func:`images`). Needs TensorFlow."""
    from mtl import runtime

    shape = (side, side, 3)
    if precision == "float32":
        return runtime.tflite_flatbuffer(extractor, shape)
    return runtime.tflite_flatbuffer(
        extractor, shape, quantize=precision, calibration=lambda: images(side)
    )

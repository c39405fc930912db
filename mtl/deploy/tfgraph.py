"""The fit of a photo in TensorFlow ops, and the SavedModel that TF Serving feeds JPEG bytes.

Export code that must use TensorFlow itself (as :mod:`mtl.runtime` does): decoding
encoded images and the serving signatures have no Keras API.

The crop and resize are those of mtl's loader (:mod:`mtl.data.images`: Pillow's
antialiased bilinear resize of the central box, at fractional positions), rounded to
whole 0-255 values as the loader's uint8 pixels are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BYTES_INPUT = "image_bytes"  # TF Serving's REST API base64-decodes {"b64": ...} into it
PIXELS_INPUT = "image"
PIXELS_SIGNATURE = "pixels"  # the second signature: decoded uint8 photos of any size
OUTPUTS = ("probabilities", "label")


def fit_photos(photos: Any, size: int, fit: str) -> Any:
    """(n, h, w, 3) uint8 photos, all of one size, to (n, size, size, 3) float32 0-255, as
    mtl's loader makes them (:func:`mtl.data.images._cover`): Pillow's box (fractional)
    resized with its antialiased bilinear filter, which ``ScaleAndTranslate``'s triangle
    kernel is (the same sample positions, the same clipped, renormalised window)."""
    import tensorflow as tf

    hw = tf.cast(tf.shape(photos)[1:3], tf.float64)
    side = tf.constant(float(size), tf.float64)
    if fit == "center":  # the covering size, rounded as Python rounds, and its central box
        cover = tf.maximum(tf.round(hw * tf.reduce_max(side / hw)), side)
        step = hw / cover
        start = tf.floor((cover - side) / 2.0) * step
    else:  # the whole photo
        step = hw / side
        start = tf.zeros_like(hw)
    x = tf.raw_ops.ScaleAndTranslate(
        images=tf.cast(photos, tf.float32),
        size=tf.constant([size, size], tf.int32),
        scale=tf.cast(1.0 / step, tf.float32),
        translation=tf.cast(-start / step, tf.float32),
        kernel_type="triangle",
        antialias=True,
    )
    return tf.clip_by_value(tf.round(x), 0.0, 255.0)


def decode(encoded: Any) -> Any:
    """One encoded JPEG, PNG, WebP, BMP or GIF (its first frame) to (h, w, 3) uint8."""
    import tensorflow as tf

    def jpeg() -> Any:  # the accurate DCT, as Pillow's libjpeg decodes
        return tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")

    def other() -> Any:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return tf.ensure_shape(image, [None, None, 3])

    return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def write_saved_model(
    model: Any, class_names: list[str], size: int, fit: str, folder: Path
) -> None:
    """``model`` (the square network, float 0-255 in) as a SavedModel with two signatures:
    ``serving_default`` ({image_bytes: string[n]} -> probabilities, label) and
    :data:`PIXELS_SIGNATURE` ({image: uint8[n, h, w, 3]} -> the same)."""
    import tensorflow as tf

    from mtl.runtime import keras, quiet_native_stderr

    names = tf.constant(class_names)

    def outputs(square: Any) -> dict[str, Any]:
        probs = model(square, training=False)
        return {"probabilities": probs, "label": tf.gather(names, tf.argmax(probs, axis=-1))}

    def from_bytes(image_bytes: Any) -> dict[str, Any]:
        def one(encoded: Any) -> Any:
            return fit_photos(decode(encoded)[None], size, fit)[0]

        squares = tf.map_fn(
            one, image_bytes, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32)
        )
        return outputs(squares)

    def from_pixels(image: Any) -> dict[str, Any]:
        return outputs(fit_photos(image, size, fit))

    archive = keras().export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        tf.function(from_bytes),
        input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)],
    )
    archive.add_endpoint(
        PIXELS_SIGNATURE,
        tf.function(from_pixels),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=PIXELS_INPUT)],
    )
    with quiet_native_stderr():
        archive.write_out(str(folder), verbose=False)


def _axis_weights(length: Any, start: Any, step: Any, size: int) -> Any:
    """(size, length) weights of Pillow's antialiased bilinear resize along one axis: output
    ``i`` is centred at ``start + (i + 0.5) * step`` in the photo, its triangle filter
    widened by ``step`` when shrinking, clipped to the photo and renormalised."""
    import tensorflow as tf

    centers = start + (tf.range(size, dtype=tf.float32) + 0.5) * step
    pixels = tf.range(length, dtype=tf.float32) + 0.5
    widen = tf.maximum(step, 1.0)
    weights = tf.maximum(0.0, 1.0 - tf.abs(pixels[None, :] - centers[:, None]) / widen)
    return weights / tf.reduce_sum(weights, axis=1, keepdims=True)


def fit_photo_by_products(photo: Any, size: int, fit: str) -> Any:
    """(1, h, w, 3) float32 0-255 to (1, size, size, 3): :func:`fit_photos` in ops every
    TFLite runtime has (two matrix products with weights made from the photo's size, no
    ``ScaleAndTranslate``), in Pillow's order (across, rounded, then down, rounded).
    Costs ``3 * h * w * size`` multiply-adds: shrink a photo of tens of megapixels first."""
    import tensorflow as tf

    shape = tf.shape(photo)
    h, w = shape[1], shape[2]
    hw = tf.cast(tf.stack([h, w]), tf.float32)
    side = float(size)
    if fit == "center":
        cover = tf.maximum(tf.round(hw * tf.reduce_max(side / hw)), side)
        step = hw / cover
        start = tf.floor((cover - side) / 2.0) * step
    else:
        step = hw / side
        start = tf.zeros_like(hw)
    down = _axis_weights(h, start[0], step[0], size)  # (size, h)
    across = _axis_weights(w, start[1], step[1], size)  # (size, w)
    rows = tf.reshape(tf.transpose(photo[0], [0, 2, 1]), [h * 3, w])  # (h*3, w)
    x = tf.clip_by_value(tf.round(tf.matmul(rows, across, transpose_b=True)), 0.0, 255.0)
    x = tf.reshape(x, [h, 3 * size])  # (h, 3*size): row, channel, column
    x = tf.clip_by_value(tf.round(tf.matmul(down, x)), 0.0, 255.0)  # (size, 3*size)
    x = tf.transpose(tf.reshape(x, [size, 3, size]), [0, 2, 1])
    return x[None]


def write_any_size_saved_model(model: Any, size: int, fit: str, folder: Path) -> None:
    """``model`` (the square network) behind :func:`fit_photo_by_products`, one photo of
    any size in, as a SavedModel for the TFLite converter."""
    import tensorflow as tf

    from mtl.runtime import keras, quiet_native_stderr

    def serve(image: Any) -> Any:
        return model(fit_photo_by_products(image, size, fit), training=False)

    archive = keras().export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        tf.function(serve),
        input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32, name=PIXELS_INPUT)],
    )
    with quiet_native_stderr():
        archive.write_out(str(folder), verbose=False)

"""The trained model: raw RGB in, preprocessing, a MobileNet base, a dense head, class names.

Layout (so the frozen part can be cached and the head trained alone):
``image -> fit -> [augmentation] -> preprocess -> views -> backbone -> pool -> head``
``-> average over views -> class_names``

The saved model takes a photo as it is decoded: any height and width, RGB 0-255
(``keras.utils.load_img(path)`` -> ``np.array(img)[None]`` -> ``model.predict``). Its
first layer, *fit* (:func:`fit_layer`), makes it the model's square input as mtl's loader
does (:data:`mtl.data.images.FITS`): the central square resized ("center") or the whole
photo resized ("squash"). mtl's own loader hands it that square already, where the
layer is the identity, so training and its features do not change.

*Views* are fixed transforms of the input (the image itself, its mirror, a
central crop): training sees every view of every photo as a training row
(augmentation at the price of one more base pass, not one per epoch), and the
saved model averages its class probabilities over the same views, so every
consumer of ``model.keras`` (and of its TFLite export) gets the test-time
averaging. All of it is built from Keras' own layers: no custom code to load.

:func:`build_parts` also returns, for training, the frozen part up to a cut
(the *extractor*, whose outputs are cached) and the trainable rest (the
*top*), which share their layers with the saved model: training the top
trains the saved model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtl.errors import UsageError
from mtl.model import backbones
from mtl.model.modelio import FIT_LAYER  # the saved model's first layer
from mtl.runtime import keras as _keras

VIEWS = ("image", "flip", "crop", "crop_flip")
CROP = 0.875  # the crop views keep the central 87.5% (as 224 of 256), resized back

# Augmentation: small, label-preserving changes; Keras layers that are identity at inference.
FLIP = "horizontal"
ROTATION = 0.05  # fraction of a full turn: +-18 degrees
ZOOM = 0.1


def build_head(
    feature_dim: int,
    num_classes: int,
    units: Sequence[int] = (),
    dropout: float = 0.2,
    name: str = "head",
    skip: bool = False,
) -> Any:
    """Dense layers on pooled features, ending in a softmax over the classes.

    ``skip``: the last layer also reads the features beside the last hidden layer (the
    ImageNet prior blended in, :mod:`mtl.training.prior`; its weights are composed, not
    trained here)."""
    if num_classes < 2:
        raise UsageError(f"need at least 2 classes. Received num_classes={num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise UsageError(f"dropout must be in [0, 1). Received dropout={dropout}")
    keras = _keras()
    inputs = keras.Input((feature_dim,), name="features")
    x = inputs
    for i, n in enumerate(units):
        x = keras.layers.Dense(int(n), activation="relu", name=f"dense_{i}")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    if skip and units:
        x = keras.layers.Concatenate(name="with_features")([x, inputs])
    # float32 probabilities even under a mixed-precision policy (numerically stable softmax).
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", name="probabilities", dtype="float32"
    )(x)
    return keras.Model(inputs, outputs, name=name)


def fit_layer(fit: str, side: int) -> Any:
    """A photo of any size (RGB 0-255) to the ``side`` x ``side`` input, as
    :func:`mtl.data.images.load_image` makes it with ``fit``: the largest central square
    (``center``) or the whole photo (``squash``), resized bilinearly with antialiasing
    (Pillow's resampling, to within rounding). The identity on a ``side``-square input."""
    from mtl.data.images import check_fit

    return _keras().layers.Resizing(
        side,
        side,
        interpolation="bilinear",
        crop_to_aspect_ratio=check_fit(fit) == "center",
        antialias=True,
        name=FIT_LAYER,
    )


def augmentation_layers() -> list[Any]:
    keras = _keras()
    return [
        keras.layers.RandomFlip(FLIP, name="augment_flip"),
        keras.layers.RandomRotation(ROTATION, fill_mode="reflect", name="augment_rotate"),
        keras.layers.RandomZoom(ZOOM, fill_mode="reflect", name="augment_zoom"),
    ]


def check_views(views: Sequence[str]) -> list[str]:
    views = list(views)
    unknown = [v for v in views if v not in VIEWS]
    if not views or unknown or len(set(views)) != len(views):
        raise UsageError(
            f"views must be distinct names among {', '.join(VIEWS)}. Received views={views!r}"
        )
    return views


def view_layers(
    views: Sequence[str], size: int, input_size: int | None = None
) -> dict[str, list[Any]]:
    """Keras' own layers for each view, from the model's input (``input_size``, default
    ``size``) to the base's ``size`` (built once: the extractor and the saved model
    share them). A crop view is the input's central 87.5%, resized to ``size`` unless it
    is that already; the other views are the whole input, resized when it is larger. A
    mirror is a fixed permutation matrix applied along the width (Permute + Dense),
    since Keras has no deterministic flip layer."""
    keras = _keras()
    input_size = input_size or size
    out: dict[str, list[Any]] = {}
    for view in check_views(views):
        layers = []
        side = round(input_size * CROP) if view.startswith("crop") else input_size
        if view.startswith("crop"):
            layers.append(keras.layers.CenterCrop(side, side, name=f"view_{view}_crop"))
        if side != size:
            layers.append(
                keras.layers.Resizing(
                    size, size, interpolation="bilinear", name=f"view_{view}_resize"
                )
            )
        if view.endswith("flip"):
            mirror = keras.layers.Dense(
                size, use_bias=False, trainable=False, name=f"view_{view}_mirror"
            )
            mirror.build((None, size, 3, size))
            mirror.set_weights([np.eye(size, dtype="float32")[::-1]])
            layers += [
                keras.layers.Permute((1, 3, 2), name=f"view_{view}_to_hcw"),
                mirror,
                keras.layers.Permute((1, 3, 2), name=f"view_{view}_to_hwc"),
            ]
        out[view] = layers
    return out


def _through(layers: Sequence[Any], x: Any, training: bool | None = None) -> Any:
    for layer in layers:
        x = layer(x) if training is None else layer(x, training=training)
    return x


def assemble(
    backbone: Any,
    head: Any,
    class_names: Sequence[str],
    model: str,
    size: int,
    augment: bool = False,
    views: dict[str, list[Any]] | None = None,
    input_size: int | None = None,
    fit: str = "center",
    int8: Any = None,
) -> tuple[Any, Any]:
    """Join fit, preprocessing, views, backbone and head into the one model that is saved
    (any photo in), and its twin on the square input (the same layers: training it trains
    the saved model; Keras needs a known input shape to train).

    ``int8`` (an :class:`mtl.model.int8keras.Emulation`): the frozen base that the head
    trained on is the int8 one, so its layers replace preprocessing, views, backbone
    and pooling.

    Only Keras' own layers: the class names travel beside the network in the same file
    (:func:`mtl.model.modelio.save_model`), so plain Keras loads ``model.keras``.
    """
    keras = _keras()
    side = input_size or size
    shared = [
        fit_layer(fit, side),
        *(augmentation_layers() if augment else []),
        *([pre] if (pre := backbones.preprocessing(model)) is not None else []),
    ]
    if int8 is not None:
        shared = [shared[0], *int8.prefix]
    pool = keras.layers.GlobalAveragePooling2D(name="pool")
    average = keras.layers.Average(name="views_average") if len(views or {}) > 1 else None
    names = keras.layers.Identity(name="class_names", dtype="float32")

    def graph(inputs: Any) -> Any:
        # The fit and view layers are called with training=False: Resizing and CenterCrop
        # default to training=True, which Keras would pass on to the head's Dropout at
        # prediction time. The augmentation layers follow Keras' training flag.
        x = shared[0](inputs, training=False)
        x = _through(shared[1:], x)
        if int8 is not None:
            probs = [head(_through(tower, x, training=False)) for tower in int8.towers.values()]
        else:
            probs = [
                head(pool(backbone(_through(v, x, training=False))))
                for v in (views or {"image": []}).values()
            ]
        return names(probs[0] if average is None else average(probs))

    photo = keras.Input((None, None, 3), name="image")
    square = keras.Input((side, side, 3), name="image")
    saved = keras.Model(photo, graph(photo), name="mtl_classifier")
    return saved, keras.Model(square, graph(square), name="mtl_classifier_square")


def freeze(backbone: Any, n: int, *, keep_batchnorm_frozen: bool = False) -> None:
    """Freeze ``backbone.layers[:n]`` (as the blog's ``model.layers[:20]``), unfreeze the rest.

    Frozen BatchNormalization layers run in inference mode (Keras 3 semantics of
    ``trainable=False``). With ``keep_batchnorm_frozen`` (fine-tuning) every BN
    layer stays frozen, as the Keras transfer-learning guide advises.
    """
    keras = _keras()
    backbone.trainable = True
    for i, layer in enumerate(backbone.layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = i >= n and not (keep_batchnorm_frozen and is_bn)


@dataclass
class Parts:
    """The saved model and, for training, its frozen part and trainable rest."""

    model: Any  # the complete model that is saved
    backbone: Any
    head: Any
    extractor: Any | None  # raw pixels -> cached tensor; None: nothing cached (pixels are)
    top: Any  # cached tensor (or raw pixels) -> probabilities; trained by fit
    cut: int  # base layers before the cut are computed once and cached; -1: pooled features
    spec: str  # what the cached tensor depends on (part of the cache key)
    input_side: int = 0  # the square pixels training feeds (the saved model takes any photo)


def cut_point(backbone: Any, n: int) -> int:
    """The largest k <= n such that ``backbone.layers[k-1]``'s output alone feeds the rest.

    MobileNet v1 is a chain, so k == n; in v2/v3 a cut inside a residual block
    moves down to the block's input (those few frozen layers then run each epoch).
    """
    keras = _keras()
    for k in range(min(n, len(backbone.layers) - 1), 0, -1):
        try:
            keras.Model(backbone.layers[k - 1].output, backbone.output)
        except (ValueError, KeyError):
            continue
        return k
    return 0


def _check_layout(
    views: list[str], augment: bool, freeze_layers: int | None, size: int, input_size: int
) -> None:
    """Several views and a larger input are computed once per photo: whole base frozen."""
    if len(views) > 1 and (augment or freeze_layers is not None):
        raise UsageError(
            "several views need the whole base frozen and no augmentation. "
            f"Received views={views!r}, freeze={freeze_layers!r}, augment={augment!r}"
        )
    if input_size != size and (augment or freeze_layers is not None):
        raise UsageError(
            "an input larger than the base's needs the whole base frozen and no augmentation. "
            f"Received input_size={input_size}, size={size}"
        )


def _base_spec(model: str, alpha: float, size: int, views: list[str], input_size: int) -> str:
    """What the cached tensor depends on besides the cut (part of the cache key)."""
    keras = _keras()
    spec = f"{model}|alpha={float(alpha)}|size={size}|{keras.mixed_precision.dtype_policy().name}"
    if views != ["image"]:
        spec += f"|views={'+'.join(views)}"
    if input_size != size:
        spec += f"|input={input_size}"
    return spec


def _preprocessed(model: str, x: Any) -> Any:
    pre = backbones.preprocessing(model)
    return pre(x) if pre is not None else x


def _pooled_parts(
    full: Any,
    backbone: Any,
    head: Any,
    layers: dict[str, list[Any]],
    model: str,
    input_size: int,
    spec: str,
) -> Parts:
    """The whole base frozen: pixels -> pooled features (one row per view) are cached."""
    keras = _keras()
    image = keras.Input((input_size, input_size, 3), name="image")
    x = _preprocessed(model, image)
    pool = keras.layers.GlobalAveragePooling2D(name="pool")
    dim = int(backbone.output_shape[-1])
    pooled = [pool(backbone(_through(v, x, training=False))) for v in layers.values()]
    if len(pooled) > 1:  # (n, views, features): one cache entry per photo, all views
        stack = [keras.layers.Reshape((1, dim))(p) for p in pooled]
        pooled = [keras.layers.Concatenate(axis=1, name="views")(stack)]
    extractor = keras.Model(image, pooled[0], name="frozen_base")
    feats = keras.Input((dim,), name="features")
    top = keras.Model(feats, head(feats), name="trainable_head")
    return Parts(full, backbone, head, extractor, top, -1, f"{spec}|pooled")


def _cut_parts(
    full: Any, square: Any, backbone: Any, head: Any, n: int, model: str, size: int, spec: str
) -> Parts:
    """The first ``n`` base layers frozen: their output is cached, the rest trains
    (``square``: the saved model on square pixels, trained when nothing is cached)."""
    keras = _keras()
    k = cut_point(backbone, n)
    if k == 0:
        return Parts(full, backbone, head, None, square, 0, f"{spec}|pixels")
    lower = keras.Model(backbone.input, backbone.layers[k - 1].output, name="frozen_layers")
    upper = keras.Model(backbone.layers[k - 1].output, backbone.output, name="trainable_layers")
    image = keras.Input((size, size, 3), name="image")
    extractor = keras.Model(image, lower(_preprocessed(model, image)), name="frozen_base")
    cached = keras.Input(tuple(lower.output.shape[1:]), name="cached")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(upper(cached))
    top = keras.Model(cached, head(pooled), name="trainable_top")
    name = backbone.layers[k - 1].name
    return Parts(full, backbone, head, extractor, top, k, f"{spec}|cut={k}:{name}")


def build_parts(
    class_names: Sequence[str],
    *,
    model: str,
    alpha: float,
    weights: Path | None,
    size: int,
    head_units: Sequence[int],
    dropout: float,
    freeze_layers: int | None,  # None: the whole base
    augment: bool = False,
    backbone: Any = None,
    head: Any = None,
    fine_tune: bool = False,
    views: Sequence[str] = ("image",),
    head_skip: bool = False,
    input_size: int | None = None,
    fit: str = "center",
    int8_base: Path | bytes | None = None,
) -> Parts:
    """Build (or re-cut, given ``backbone`` and ``head``) the model for training.

    With several ``views`` (whole base frozen, no augmentation), the extractor
    returns ``(views, features)`` per image and the saved model averages over them.
    ``input_size`` (default ``size``): the model's input side, larger than the base's
    only in that case (:func:`view_layers`). ``fit``: how the saved model makes a photo
    square (:func:`fit_layer`). ``int8_base``: the converted int8 base (``.tflite``) the
    head trains on, which the saved model then carries (:mod:`mtl.model.int8keras`).
    """
    views = check_views(views)
    input_size = input_size or size
    _check_layout(views, augment, freeze_layers, size, input_size)
    if backbone is None:
        backbone = backbones.build(model, alpha, include_top=False, weights=weights, size=size)
    n_layers = len(backbone.layers)
    n = n_layers if freeze_layers is None else min(int(freeze_layers), n_layers)
    freeze(backbone, n, keep_batchnorm_frozen=fine_tune)
    if head is None:
        head = build_head(
            int(backbone.output_shape[-1]), len(class_names), head_units, dropout, skip=head_skip
        )
    layers = view_layers(views, size, input_size)
    int8 = None
    if int8_base is not None:
        from mtl.model import int8keras

        int8 = int8keras.emulate(int8_base, backbone, layers, model)
    full, square = assemble(
        backbone, head, class_names, model, size, augment, layers, input_size, fit, int8
    )
    spec = _base_spec(model, alpha, size, views, input_size)
    if augment:  # augmentation changes the pixels every epoch: nothing can be cached
        parts = Parts(full, backbone, head, None, square, 0, f"{spec}|pixels")
    elif n >= n_layers:
        parts = _pooled_parts(full, backbone, head, layers, model, input_size, spec)
    else:
        parts = _cut_parts(full, square, backbone, head, n, model, size, spec)
    return dataclasses.replace(parts, input_side=input_size)

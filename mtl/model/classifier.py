"""The trained model: raw RGB in, preprocessing, a MobileNet base, a dense head, class names.

Layout (so the frozen part can be cached and the head trained alone):
``image -> [augmentation] -> preprocess -> backbone -> pool -> head -> class_names``

:func:`build_parts` also returns, for training, the frozen part up to a cut
(the *extractor*, whose outputs are cached) and the trainable rest (the
*top*), which share their layers with the saved model: training the top
trains the saved model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtl.errors import UsageError
from mtl.model import backbones
from mtl.runtime import keras as _keras

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
) -> Any:
    """Dense layers on pooled features, ending in a softmax over the classes."""
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
    # float32 probabilities even under a mixed-precision policy (numerically stable softmax).
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", name="probabilities", dtype="float32"
    )(x)
    return keras.Model(inputs, outputs, name=name)


def augmentation_layers() -> list[Any]:
    keras = _keras()
    return [
        keras.layers.RandomFlip(FLIP, name="augment_flip"),
        keras.layers.RandomRotation(ROTATION, fill_mode="reflect", name="augment_rotate"),
        keras.layers.RandomZoom(ZOOM, fill_mode="reflect", name="augment_zoom"),
    ]


def assemble(
    backbone: Any,
    head: Any,
    class_names: Sequence[str],
    model: str,
    size: int,
    info: dict[str, Any] | None = None,
    augment: bool = False,
) -> Any:
    """Join preprocessing, backbone and head into the one model that is saved."""
    from mtl.model.layers import ClassNames

    keras = _keras()
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    if augment:
        for layer in augmentation_layers():
            x = layer(x)
    pre = backbones.preprocessing(model)
    x = pre(x) if pre is not None else x
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = head(x)
    outputs = ClassNames(list(class_names), info=info, dtype="float32")(x)
    return keras.Model(inputs, outputs, name="mtl_classifier")


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
    info: dict[str, Any] | None = None,
    backbone: Any = None,
    head: Any = None,
    fine_tune: bool = False,
) -> Parts:
    """Build (or re-cut, given ``backbone`` and ``head``) the model for training."""
    keras = _keras()
    if backbone is None:
        backbone = backbones.build(model, alpha, include_top=False, weights=weights, size=size)
    n_layers = len(backbone.layers)
    n = n_layers if freeze_layers is None else min(int(freeze_layers), n_layers)
    freeze(backbone, n, keep_batchnorm_frozen=fine_tune)
    if head is None:
        head = build_head(int(backbone.output_shape[-1]), len(class_names), head_units, dropout)
    full = assemble(backbone, head, class_names, model, size, info, augment)
    base_spec = (
        f"{model}|alpha={float(alpha)}|size={size}|{keras.mixed_precision.dtype_policy().name}"
    )
    pre = backbones.preprocessing(model)

    def preprocessed(x: Any) -> Any:
        return pre(x) if pre is not None else x

    if augment:  # augmentation changes the pixels every epoch: nothing can be cached
        return Parts(full, backbone, head, None, full, 0, f"{base_spec}|pixels")
    if n >= n_layers:
        image = keras.Input((size, size, 3), name="image")
        pooled = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(preprocessed(image)))
        extractor = keras.Model(image, pooled, name="frozen_base")
        feats = keras.Input((int(backbone.output_shape[-1]),), name="features")
        top = keras.Model(feats, head(feats), name="trainable_head")
        return Parts(full, backbone, head, extractor, top, -1, f"{base_spec}|pooled")
    k = cut_point(backbone, n)
    if k == 0:
        return Parts(full, backbone, head, None, full, 0, f"{base_spec}|pixels")
    lower = keras.Model(backbone.input, backbone.layers[k - 1].output, name="frozen_layers")
    upper = keras.Model(backbone.layers[k - 1].output, backbone.output, name="trainable_layers")
    image = keras.Input((size, size, 3), name="image")
    extractor = keras.Model(image, lower(preprocessed(image)), name="frozen_base")
    cached = keras.Input(tuple(lower.output.shape[1:]), name="cached")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(upper(cached))
    top = keras.Model(cached, head(pooled), name="trainable_top")
    name = backbone.layers[k - 1].name
    return Parts(full, backbone, head, extractor, top, k, f"{base_spec}|cut={k}:{name}")

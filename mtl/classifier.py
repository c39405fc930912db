"""The trained model: raw RGB in, preprocessing, a MobileNet base, a dense head, class names.

Layout (so the frozen part can be cached and the head trained alone):
``image -> preprocess -> backbone -> pool -> head -> class_names``
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtl import backbones
from mtl.errors import UsageError
from mtl.runtime import keras as _keras


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
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def assemble(
    backbone: Any,
    head: Any,
    class_names: Sequence[str],
    model: str,
    size: int,
    info: dict[str, Any] | None = None,
) -> Any:
    """Join preprocessing, backbone and head into the one model that is saved."""
    from mtl.layers import ClassNames

    keras = _keras()
    inputs = keras.Input((size, size, 3), name="image")
    pre = backbones.preprocessing(model)
    x = pre(inputs) if pre is not None else inputs
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = head(x)
    outputs = ClassNames(list(class_names), info=info)(x)
    return keras.Model(inputs, outputs, name="mtl_classifier")


def build_classifier(
    class_names: Sequence[str],
    *,
    model: str = backbones.DEFAULT_MODEL,
    alpha: float = backbones.DEFAULT_ALPHA,
    weights: Path | None = None,
    size: int = backbones.DEFAULT_SIZE,
    head_units: Sequence[int] = (),
    dropout: float = 0.2,
) -> Any:
    """A classifier with a frozen ImageNet base (``weights``: the no-top file) and a new head."""
    backbone = backbones.build(model, alpha, include_top=False, weights=weights, size=size)
    backbone.trainable = False
    head = build_head(int(backbone.output_shape[-1]), len(class_names), head_units, dropout)
    info = {"model": model, "alpha": alpha, "image_size": size}
    return assemble(backbone, head, class_names, model, size, info)

"""The MobileNet family: names, checks, weight files, and one builder.

References:
- MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
  Applications (Howard et al., 2017, https://arxiv.org/abs/1704.04861)
- MobileNetV2: Inverted Residuals and Linear Bottlenecks (Sandler et al., 2018)
- Searching for MobileNetV3 (Howard et al., 2019)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mtl import runtime
from mtl.assets.weights import RemoteFile
from mtl.errors import UsageError, WeightsUnavailable

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Family:
    keras_name: str
    alphas: tuple[float, ...]
    sizes: tuple[int, ...]
    # MobileNetV3 carries its own Rescaling layer; v1/v2 need ours.
    builtin_preprocessing: bool
    # The include-top file's layer that maps the pooled features to ImageNet's 1000
    # logits (mtl.model.imagenet.read_top); None: no such single layer (v3's top is two).
    top_layer: str | None = None


FAMILIES: dict[str, Family] = {
    "mobilenet": Family(
        "MobileNet", (0.25, 0.5, 0.75, 1.0), (128, 160, 192, 224), False, "conv_preds"
    ),
    "mobilenet_v2": Family(
        "MobileNetV2",
        (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
        (96, 128, 160, 192, 224),
        False,
        "predictions",
    ),
    "mobilenet_v3_small": Family("MobileNetV3Small", (0.75, 1.0), (224,), True),
    "mobilenet_v3_large": Family("MobileNetV3Large", (0.75, 1.0), (224,), True),
}
if TYPE_CHECKING:
    ModelName = str
else:  # the CLI's choices (a Literal Typer shows and checks), built from the table
    ModelName = Literal[tuple(FAMILIES)]
DEFAULT_MODEL = "mobilenet"
DEFAULT_ALPHA = 1.0
DEFAULT_SIZE = 224


def check(model: str, alpha: float, size: int = DEFAULT_SIZE) -> Family:
    """Validate a backbone choice up front, echoing the bad value."""
    family = FAMILIES.get(model)
    if family is None:
        import difflib

        close = difflib.get_close_matches(str(model), list(FAMILIES), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(
            f"unknown model; choose one of {', '.join(FAMILIES)}. Received model={model!r}{hint}"
        )
    if float(alpha) not in family.alphas:
        choices = ", ".join(str(a) for a in family.alphas)
        raise UsageError(
            f"{model} has ImageNet weights for alpha in {choices}. Received alpha={alpha}"
        )
    if size not in family.sizes:
        choices = ", ".join(str(s) for s in family.sizes)
        raise UsageError(f"{model} has ImageNet weights for sizes {choices}. Received size={size}")
    return family


def weights_file(
    model: str, alpha: float, include_top: bool, size: int = DEFAULT_SIZE
) -> RemoteFile:
    """The file Keras itself would download for this backbone (same name, same URL)."""
    check(model, alpha, size)
    if model == "mobilenet":
        alpha_text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[float(alpha)]
        name = f"mobilenet_{alpha_text}_{size}_tf{'' if include_top else '_no_top'}.h5"
        return RemoteFile(name, _BASE + "mobilenet/" + name)
    if model == "mobilenet_v2":
        stem = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{size}"
        name = stem + ("" if include_top else "_no_top") + ".h5"
        return RemoteFile(name, _BASE + "mobilenet_v2/" + name)
    kind = model.removeprefix("mobilenet_v3_")
    stem = f"weights_mobilenet_v3_{kind}_224_{float(alpha)}_float"
    name = stem + (".h5" if include_top else "_no_top_v2.h5")
    return RemoteFile(name, _BASE + "mobilenet_v3/" + name)


def build(
    model: str = DEFAULT_MODEL,
    alpha: float = DEFAULT_ALPHA,
    *,
    include_top: bool = False,
    weights: Path | None = None,
    size: int = DEFAULT_SIZE,
) -> Any:
    """Build a Keras MobileNet taking preprocessed input (v1/v2) or raw 0-255 (v3).

    ``weights`` is a local weights file (see :func:`mtl.assets.weights.resolve`) or
    None for random initialisation, so tests of the architecture run offline.
    """
    family = check(model, alpha, size)
    keras = runtime.keras()

    builder = getattr(keras.applications, family.keras_name)
    kwargs: dict[str, Any] = {
        "input_shape": (size, size, 3),
        "alpha": alpha,
        "include_top": include_top,
        "weights": None,
    }
    if family.builtin_preprocessing:
        kwargs["include_preprocessing"] = True
    net = builder(**kwargs)
    if weights is not None:
        try:
            net.load_weights(str(weights))
        except (ValueError, OSError, KeyError) as exc:  # Keras' errors name no file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:150]
            raise WeightsUnavailable(
                f"{weights} does not load into {model} alpha {alpha} ({first}); delete it "
                "(mtl downloads a good copy into the Keras cache) or replace it"
            ) from None
    return net


def preprocessing(model: str) -> Any | None:
    """The layer that maps raw RGB 0-255 to the backbone's input range, or None.

    A Rescaling layer (not a Lambda) so saved models load in Keras safe mode;
    it computes exactly ``mobilenet.preprocess_input``: x / 127.5 - 1.
    """
    if FAMILIES[model].builtin_preprocessing:
        return None
    keras = runtime.keras()

    return keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="preprocess")

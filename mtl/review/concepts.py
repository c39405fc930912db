"""ImageNet concepts for pooled features: the pretrained MobileNet's own classifier layer.

The frozen base's pooled features are exactly what MobileNet's ImageNet top
reads, so its 1,000 probabilities cost one matrix product over features already
cached (no second pass). The top's weights are read from Keras' include-top
weights file (found as every other weights file is: ``--weights-dir``,
``MTL_WEIGHTS_DIR``, the Keras cache, or one download).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mtl.assets import weights
from mtl.model import backbones

# The dense layer over the pooled features in each family's include-top file.
_TOP_LAYER = {"mobilenet": "conv_preds", "mobilenet_v2": "predictions"}


def supported(model: str) -> bool:
    return model in _TOP_LAYER


def top_layer(
    model: str,
    alpha: float,
    size: int,
    *,
    weights_dir: str | os.PathLike[str] | None = None,
    on_download: weights.DownloadProgress | None = None,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The ImageNet top's kernel (d, 1000) and bias (1000,), float64, from the include-top
    weights file (``download=False``: only a file already here)."""
    path = weights.resolve(
        backbones.weights_file(model, alpha, include_top=True, size=size),
        weights_dir,
        progress=on_download,
        download=download,
    )
    return read_top(path, model)


def read_top(path: Path, model: str) -> tuple[np.ndarray, np.ndarray]:
    """The ImageNet top's kernel and bias from an include-top weights file."""
    import h5py  # a Keras dependency

    layer = _TOP_LAYER[model]
    with h5py.File(path, "r") as f:
        group = f[layer]
        found: dict[str, np.ndarray] = {}

        def keep(name: str, obj: object) -> None:  # visititems stops at a non-None return
            if isinstance(obj, h5py.Dataset):
                found.setdefault(name.rsplit("/", 1)[-1].split(":")[0], obj[()])

        group.visititems(keep)
    kernel = np.asarray(found["kernel"], dtype=np.float64)
    kernel = kernel.reshape(-1, kernel.shape[-1])  # (1, 1, d, 1000) or (d, 1000)
    return kernel, np.asarray(found["bias"], dtype=np.float64)


def imagenet_probabilities(
    x: np.ndarray,
    model: str,
    alpha: float,
    size: int,
    *,
    weights_dir: str | os.PathLike[str] | None = None,
    on_download: weights.DownloadProgress | None = None,
) -> np.ndarray:
    """(n, 1000) ImageNet probabilities for pooled features ``x`` (n, d)."""
    kernel, bias = top_layer(model, alpha, size, weights_dir=weights_dir, on_download=on_download)
    if kernel.shape[0] != x.shape[1]:
        raise ValueError(
            f"the {model} ImageNet top takes {kernel.shape[0]} features, not {x.shape[1]}"
        )
    logits = np.asarray(x, dtype=np.float64) @ kernel + bias
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return np.asarray(e / e.sum(axis=1, keepdims=True))

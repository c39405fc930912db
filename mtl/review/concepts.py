"""ImageNet concepts for pooled features: the pretrained MobileNet's own classifier layer.

The frozen base's pooled features are exactly what MobileNet's ImageNet top
reads, so its 1,000 probabilities cost one matrix product over features already
cached (no second pass). The top's weights are read from Keras' include-top
weights file (found as every other weights file is: ``--weights-dir``,
``MTL_WEIGHTS_DIR``, the Keras cache, or one download).
"""

from __future__ import annotations

import os

import numpy as np

from mtl.assets import weights
from mtl.model import backbones
from mtl.model.concepts import concept_probs
from mtl.model.imagenet import read_top


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
    path = weights.resolve(
        backbones.weights_file(model, alpha, include_top=True, size=size),
        weights_dir,
        progress=on_download,
    )
    kernel, bias = read_top(path, model)
    if kernel.shape[0] != x.shape[1]:
        raise ValueError(
            f"the {model} ImageNet top takes {kernel.shape[0]} features, not {x.shape[1]}"
        )
    return concept_probs(kernel, bias, x)

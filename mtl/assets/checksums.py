"""Checking downloaded files before they are kept: SHA-256 digests and file signatures.

Used by :mod:`mtl.assets.weights` (a bad weights file must never land in the Keras
cache) and :mod:`mtl.assets.datasets`. Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from mtl import files

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

# Only files whose exact bytes are known. The class index is byte-identical to the
# file Keras' decode_predictions downloads (Keras pins its md5,
# c2c37ea517e94d9795004a39431a14cb). The MobileNet .h5 files in ../shared/weights
# hold the same tensors as Keras' downloads but are not the same bytes, so their
# digests cannot be pinned from here: those files get the HDF5 signature check.
KNOWN_SHA256 = {
    "imagenet_class_index.json": (
        "a1e7a966a1f601d39e4b43e119b3e7dd4a2ad3ea08cf69847cbaf021013767bc"
    ),
}


def sha256_file(path: str | os.PathLike[str]) -> str:
    return files.sha256(path)


def hdf5_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a whole HDF5 file, or None; reads 64 bytes, no h5py.

    Checks the signature and that the file is at least as long as the
    end-of-file address its superblock records, so a download cut short
    (which still starts with the signature) is caught without a Content-Length.
    """
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if not head.startswith(HDF5_SIGNATURE):
        return "not an HDF5 file (no HDF5 signature)"
    version = head[8] if len(head) > 8 else -1
    if version in (0, 1):
        offsets, start = (head[13] if len(head) > 13 else 0), 24 + (4 if version == 1 else 0)
        eof_at = start + 2 * offsets  # base address, free-space address, end-of-file address
    elif version in (2, 3):
        offsets, start = (head[9] if len(head) > 9 else 0), 12
        eof_at = start + 2 * offsets  # base address, extension address, end-of-file address
    else:
        return f"an HDF5 superblock of unknown version {version}"
    if offsets not in (2, 4, 8) or len(head) < eof_at + offsets:
        return "a damaged HDF5 superblock"
    base = int.from_bytes(head[start : start + offsets], "little")
    end = int.from_bytes(head[eof_at : eof_at + offsets], "little")
    if base + end > size:
        return f"truncated: {size} bytes of the {base + end} its header promises"
    return None


KNOWN_SIZES = {"imagenet_class_index.json": 35363}
OTHER_WEIGHTS_BYTES = 32 << 20  # MobileNetV2/V3 files: the largest (V2 1.4, top) is ~25 MB

# MobileNet v1's pointwise filters, block by block (Howard et al. 2017, table 1),
# before the width multiplier alpha; the first convolution has 32.
V1_BLOCKS = (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
V1_ALPHAS = {"1_0": 1.0, "7_5": 0.75, "5_0": 0.5, "2_5": 0.25}
V1_NAME = re.compile(r"mobilenet_(\d_\d)_(\d+)_tf(_no_top)?\.h5")


def mobilenet_v1_layout(name: str) -> dict[str, list[tuple[int, ...]]] | None:
    """Layer name -> weight shapes that Keras' MobileNet v1 file ``name`` must hold
    (None for other files): what ``keras.applications.MobileNet`` builds for its alpha."""
    match = V1_NAME.fullmatch(name)
    if not match or match.group(1) not in V1_ALPHAS:
        return None
    alpha = V1_ALPHAS[match.group(1)]
    c = int(32 * alpha)
    layout: dict[str, list[tuple[int, ...]]] = {"conv1": [(3, 3, 3, c)], "conv1_bn": [(c,)] * 4}
    for i, filters in enumerate(V1_BLOCKS, 1):
        out = int(filters * alpha)
        layout[f"conv_dw_{i}"] = [(3, 3, c, 1)]
        layout[f"conv_dw_{i}_bn"] = [(c,)] * 4
        layout[f"conv_pw_{i}"] = [(1, 1, c, out)]
        layout[f"conv_pw_{i}_bn"] = [(out,)] * 4
        c = out
    if not match.group(3):
        layout["conv_preds"] = [(1, 1, c, 1000), (1000,)]
    return layout


def expected_size(name: str) -> int:
    """About how many bytes ``name`` is: its downloads' cap and deadline come from it."""
    layout = mobilenet_v1_layout(name)
    if layout is not None:
        floats = sum(math.prod(shape) for shapes in layout.values() for shape in shapes)
        return 4 * floats + (512 << 10)  # float32 tensors plus HDF5's headers
    return KNOWN_SIZES.get(name, OTHER_WEIGHTS_BYTES)


def keras_layout_problem(name: str, path: str | os.PathLike[str]) -> str | None:
    """Why the HDF5 file ``path`` is not Keras weights for ``name``, or None.

    Every file needs Keras' ``layer_names`` and float weights, all finite; a MobileNet v1
    file must hold exactly the layers and shapes :func:`mobilenet_v1_layout` lists (any
    valid HDF5 passes the signature check; Keras then fails on it with "Layer count
    mismatch", naming no file)."""
    try:
        import h5py
        import numpy as np
    except ImportError:  # pragma: no cover - the light install loads no weights
        return None
    found: dict[str, list[tuple[int, ...]]] = {}
    try:
        with h5py.File(path, "r") as f:
            group = f.get("model_weights", f)
            raw = group.attrs.get("layer_names")
            if raw is None:
                return "not Keras weights (no layer_names)"
            for layer in raw:
                layer = layer.decode() if isinstance(layer, bytes) else str(layer)
                names = group[layer].attrs.get("weight_names", [])
                shapes = []
                for weight in names:
                    weight = weight.decode() if isinstance(weight, bytes) else str(weight)
                    data = group[layer][weight]
                    if data.dtype.kind != "f" or data.size > 1 << 26:
                        return f"{layer} holds {data.dtype} {data.shape}, not float weights"
                    if not np.isfinite(data[()]).all():
                        return f"{layer} holds NaN or infinite weights"
                    shapes.append(tuple(int(d) for d in data.shape))
                if shapes:
                    found[layer] = shapes
    except (OSError, KeyError, ValueError, TypeError) as exc:
        return f"not readable as Keras weights ({str(exc).splitlines()[0][:100]})"
    if not found:
        return "no layer holds weights"
    expected = mobilenet_v1_layout(name)
    if expected is not None and found != expected:
        missing = [k for k in expected if k not in found]
        extra = [k for k in found if k not in expected]
        wrong = [k for k in expected if k in found and found[k] != expected[k]]
        for what, names in (("lacks", missing), ("has unexpected", extra), ("has wrong", wrong)):
            if names:
                more = f" and {len(names) - 1} more" if len(names) > 1 else ""
                return (
                    f"not the MobileNet weights {name} must hold: it {what} layer {names[0]}{more}"
                )
    return None


def check_weights_file(name: str, path: str | os.PathLike[str]) -> None:
    """Raise ``ValueError`` (with the reason) if ``path`` is not a good ``name``."""
    path = Path(path)
    if name.endswith(".h5"):
        why = hdf5_problem(path) or keras_layout_problem(name, path)
        if why:
            raise ValueError(why)
    expected = KNOWN_SHA256.get(name)
    if expected is not None and sha256_file(path) != expected:
        raise ValueError(f"the download's SHA-256 is not {expected[:16]}...")


def download_failure(exc: BaseException) -> object:
    """Why a download failed, in a few words: the HTTP status, or the network's reason."""
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    return getattr(exc, "reason", None) or exc

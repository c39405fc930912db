"""Checking downloaded files before they are kept: SHA-256 digests and file signatures.

Used by :mod:`mtl.assets.weights` (a bad weights file must never land in the Keras
cache) and :mod:`mtl.assets.datasets`. Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

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
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_weights_file(name: str, path: str | os.PathLike[str]) -> None:
    """Raise ``ValueError`` (with the reason) if the downloaded ``path`` is not a good ``name``."""
    path = Path(path)
    if name.endswith(".h5"):
        with open(path, "rb") as fh:
            head = fh.read(len(HDF5_SIGNATURE))
        if head != HDF5_SIGNATURE:
            raise ValueError("the download is not an HDF5 file")
    expected = KNOWN_SHA256.get(name)
    if expected is not None and sha256_file(path) != expected:
        raise ValueError(f"the download's SHA-256 is not {expected[:16]}...")

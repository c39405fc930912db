"""Checking downloaded files before they are kept: SHA-256 digests and file signatures.

Used by :mod:`mtl.assets.weights` (a bad weights file must never land in the Keras
cache) and :mod:`mtl.assets.datasets`. Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

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


def check_weights_file(name: str, path: str | os.PathLike[str]) -> None:
    """Raise ``ValueError`` (with the reason) if ``path`` is not a good ``name``."""
    path = Path(path)
    if name.endswith(".h5"):
        why = hdf5_problem(path)
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


def copy_download(response: Any, fh: Any, name: str, progress: Any = None) -> None:
    """Copy an HTTP response body into ``fh``, reporting ``progress(name, done, total)``;
    a body shorter or longer than its Content-Length is refused (ValueError)."""
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    done = 0
    while chunk := response.read(1 << 16):
        fh.write(chunk)
        done += len(chunk)
        if progress:
            progress(name, done, total)
    if total is not None and done != total:
        raise ValueError(f"download ended after {done} of {total} bytes")

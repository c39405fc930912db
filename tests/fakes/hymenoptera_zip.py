"""A stand-in for PyTorch's ``hymenoptera_data.zip`` built from the real training photos.

``train/`` is the real training split, byte for byte (the photos mtl pins). The
real validation photos are not available here, so ``val/`` holds 70 ants and
83 bees taken from the training photos: the real split's size, which is all
mtl can check of it (it pins only the training photos).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

VAL = {"ants": 70, "bees": 83}


def members(train: Path) -> dict[str, bytes]:
    """``hymenoptera_data/<split>/<class>/<file>`` -> bytes."""
    out: dict[str, bytes] = {}
    for cls, n_val in VAL.items():
        files = sorted(f for f in (train / cls).iterdir() if f.is_file())
        for f in files:
            out[f"hymenoptera_data/train/{cls}/{f.name}"] = f.read_bytes()
        for f in files[:n_val]:
            out[f"hymenoptera_data/val/{cls}/{f.name}"] = f.read_bytes()
    return out


def build(
    train: Path,
    edit: Callable[[dict[str, bytes]], object] | None = None,
) -> bytes:
    """The zip's bytes (stored, not deflated: photos do not shrink); ``edit`` may change
    the members first."""
    files = members(train)
    if edit is not None:
        edit(files)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        dirs = sorted({name.rsplit("/", 1)[0] + "/" for name in files})
        for d in ["hymenoptera_data/"] + dirs:
            zf.writestr(d, b"")
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()

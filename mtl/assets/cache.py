"""mtl's cache folder: converted bases, verified datasets (never inside the checkout)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$MTL_CACHE_DIR``, else ``$XDG_CACHE_HOME/mtl``, else ``~/.cache/mtl``."""
    if os.environ.get("MTL_CACHE_DIR"):
        return Path(os.environ["MTL_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mtl"

"""Cheap image statistics: very dark, blurry, odd aspect ratio.

Each photo is decoded once more at reduced size (JPEG draft mode: the decoder
skips most of the work), a few milliseconds a photo; measured against
cleanvision (which would add pandas, imagehash, fsspec and a full-size
decode per check) in bench/review_noise.py's notes.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl.progress import ProgressFn

SIDE = 256


@dataclass(frozen=True)
class Stats:
    brightness: float  # mean luminance, 0 (black) to 1 (white)
    sharpness: float  # variance of the Laplacian of the luminance at SIDE px, 0-1 scale
    aspect: float  # long side / short side
    width: int
    height: int


def image_stats(path: Path) -> Stats | None:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            width, height = img.size
            img.draft("L", (SIDE, SIDE))
            gray = ImageOps.exif_transpose(img).convert("L")
            gray.thumbnail((SIDE, SIDE))
            a = np.asarray(gray, dtype=np.float32) / 255.0
    except Exception:  # noqa: BLE001 - the base pass already reported unreadable files
        return None
    lap = (
        -4 * a[1:-1, 1:-1] + a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:]
        if min(a.shape) > 2
        else np.zeros(1)
    )
    return Stats(
        brightness=float(a.mean()),
        sharpness=float(lap.var()),
        aspect=max(width, height) / max(1, min(width, height)),
        width=width,
        height=height,
    )


def all_stats(paths: Sequence[Path], on_progress: ProgressFn | None = None) -> list[Stats | None]:
    out: list[Stats | None] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for i, s in enumerate(pool.map(image_stats, paths)):
            out.append(s)
            if on_progress and (i % 16 == 15 or i + 1 == len(paths)):
                on_progress(i + 1, len(paths))
    return out

"""Cheap image statistics: very dark, blurry, odd aspect ratio, a tiny subject.

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
GRID = 16  # cells a side, for where the detail is
DETAIL_FLOOR = 0.01  # |Laplacian| below this is smooth background (sky, blur), not detail
DETAIL_SHARE = 0.8  # detail_area: the fewest cells that hold this share of the detail


@dataclass(frozen=True)
class Stats:
    brightness: float  # mean luminance, 0 (black) to 1 (white)
    sharpness: float  # variance of the Laplacian of the luminance at SIDE px, 0-1 scale
    aspect: float  # long side / short side
    width: int
    height: int
    # The share of the image (GRID x GRID cells) that holds DETAIL_SHARE of its detail:
    # small for a small subject on a plain or blurred background (real photos of the
    # shared datasets: 0.14 and up; a subject a fifth of the width on a plain or blurred
    # background: under 0.08). Says nothing about a small subject in clutter.
    detail_area: float = 1.0


def image_stats(path: Path) -> Stats | None:
    from PIL import Image

    from mtl.data.images import upright

    try:
        with Image.open(path) as img:
            width, height = img.size
            img.draft("L", (SIDE, SIDE))
            gray = upright(img).convert("L")
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
        detail_area=detail_area(lap),
    )


def detail_area(lap: np.ndarray) -> float:
    """The share of GRID x GRID cells needed to hold DETAIL_SHARE of the image's detail
    (|Laplacian| above DETAIL_FLOOR); 1.0 when there is no detail at all."""
    detail = np.maximum(np.abs(lap) - DETAIL_FLOOR, 0.0)
    if detail.ndim != 2 or min(detail.shape) < GRID:
        return 1.0
    rows = np.linspace(0, detail.shape[0], GRID, endpoint=False).astype(int)
    cols = np.linspace(0, detail.shape[1], GRID, endpoint=False).astype(int)
    cells = np.add.reduceat(np.add.reduceat(detail, rows, axis=0), cols, axis=1).ravel()
    total = float(cells.sum())
    if total <= 1e-6:
        return 1.0
    held = np.cumsum(np.sort(cells)[::-1]) / total
    return float(np.searchsorted(held, DETAIL_SHARE) + 1) / cells.size


def all_stats(paths: Sequence[Path], on_progress: ProgressFn | None = None) -> list[Stats | None]:
    out: list[Stats | None] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for i, s in enumerate(pool.map(image_stats, paths)):
            out.append(s)
            if on_progress and (i % 16 == 15 or i + 1 == len(paths)):
                on_progress(i + 1, len(paths))
    return out

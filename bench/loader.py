"""Image loading: mtl's loader (JPEG draft decode + threads) against a full decode then resize.

    python bench/loader.py --data ../shared/data/hymenoptera/train

Both arms decode the same files in the same process; prints img/s and the ratio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mtl.data.images import iter_batches, list_images, load_image


def naive(path: Path, size: int) -> np.ndarray:
    """Keras-style: decode the full image, then resize."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
        return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/hymenoptera/train"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    paths = list_images(args.data)
    n = len(paths)
    arms = {
        "full decode + resize, 1 thread": lambda: [naive(p, args.size) for p in paths],
        "mtl load_image, 1 thread": lambda: [load_image(p, args.size) for p in paths],
        "mtl iter_batches (threads)": lambda: list(iter_batches(paths, args.size, 32)),
    }
    times = {name: timed(fn, args.repeat) for name, fn in arms.items()}
    base = times["full decode + resize, 1 thread"]
    print(f"{n} images from {args.data}, best of {args.repeat}")
    print("| arm | img/s | speed-up |\n| --- | ---: | ---: |")
    for name, t in times.items():
        print(f"| {name} | {n / t:.0f} | {base / t:.2f}x |")


if __name__ == "__main__":
    main()

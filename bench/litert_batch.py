"""LiteRT throughput of a converted frozen base by batch size, the base alone.

Runs a base that ``mtl train`` converted (mtl's cache folder, ``bases/``) on random
pixels, each batch size for a few seconds, twice, and prints photos/s relative to
the largest batch. Measure on idle cores: a busy core slows XNNPACK's whole pool.
Alone, small batches win (143 photos/s at 8 against 127 at 32 for the two-view
base on 2 cores); beside the decoding threads of a real run they do not (`mtl
predict`: 90 photos/s at 32, 65 at 8), so whole runs choose the batch sizes.

    python -m mtl train ../shared/data/hymenoptera/train --alpha 0.75   # converts it once
    python bench/litert_batch.py                  # the newest converted base with 2 views
    python bench/litert_batch.py --base PATH.tflite --sizes 1,4,8,16,32
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def newest_base(views: int) -> Path:
    from mtl.assets.cache import cache_root
    from mtl.litert import LiteModel

    found = sorted((cache_root() / "bases").glob("*.tflite"), key=lambda p: p.stat().st_mtime)
    for path in reversed(found):
        shape = LiteModel(path, threads=1).output["shape"]
        if (len(shape) == 3 and shape[1] == views) or (views == 1 and len(shape) == 2):
            return path
    raise SystemExit(f"no converted base with {views} view(s) in {cache_root() / 'bases'}")


def rate(model, batch: int, seconds: float) -> float:
    model.resize(batch)
    shape = [batch, *(int(s) for s in model.input["shape"][1:])]
    x = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    model.run(x)  # first call: allocation
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.run(x)
        n += batch
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, help="a converted base (.tflite)")
    ap.add_argument("--views", type=int, default=2, help="without --base: views of the base")
    ap.add_argument("--sizes", default="2,4,8,16,24,32")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=0, help="0: every core")
    args = ap.parse_args()

    import os

    from mtl.litert import LiteModel

    path = args.base or newest_base(args.views)
    threads = args.threads or os.cpu_count() or 1
    model = LiteModel(path, threads=threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"base: {path.name}  output {list(model.output['shape'])}  threads {threads}")
    runs = {b: [rate(model, b, args.seconds) for _ in range(2)] for b in sizes}
    ref = max(runs[max(sizes)])
    print("| batch | photos/s (2 runs) | vs batch", max(sizes), "|")
    print("|---|---|---|")
    for b, r in runs.items():
        print(f"| {b} | {r[0]:.1f}, {r[1]:.1f} | {max(r) / ref:.2f}x |")


if __name__ == "__main__":
    main()

"""`mtl classify --fit center` vs `--fit squash`: how often ImageNet's own class comes first.

The ants/bees photos are ImageNet concepts (``ant`` n02219486, ``bee`` n02206856), so
each photo has a true ImageNet class among the 1000. For each fit, this runs mtl's
classify (the real code path, real weights) and prints the share of photos whose true
class is ranked first and within the top 5, and the mean negative log-probability.

    MTL_WEIGHTS_DIR=../shared/weights python bench/classify_fit.py --alpha 0.75
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
CLASSES = {"ants": "n02219486", "bees": "n02206856"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=0.75)
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "hymenoptera" / "train")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from mtl.data.images import list_images
    from mtl.inference.classify import classify

    truth = {str(p): wnid for name, wnid in CLASSES.items() for p in list_images(args.data / name)}
    print(f"{len(truth)} photos, MobileNet v1 alpha {args.alpha}")
    print("| fit | top-1 | top-5 | mean -log p(true) | seconds |")
    print("|---|---|---|---|---|")
    for fit in ("squash", "center"):
        t0 = time.perf_counter()
        results = classify(list(truth), alpha=args.alpha, top_k_count=1000, fit=fit)
        seconds = time.perf_counter() - t0
        top1 = top5 = nll = 0.0
        for r in results:
            ranked = [p.wnid for p in r.predictions]
            rank = ranked.index(truth[r.file])
            top1 += rank == 0
            top5 += rank < 5
            nll -= math.log(max(r.predictions[rank].probability, 1e-12))
        n = len(results)
        print(f"| {fit} | {top1 / n:.3f} | {top5 / n:.3f} | {nll / n:.3f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()

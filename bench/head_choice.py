"""Which default head? Val accuracy / loss of candidate heads on the same cached features.

Every candidate runs through `mtl.training.trainer.train` (the product path) with a shared
feature cache, over several seeds (each seed changes both the split and the init).

    python bench/head_choice.py --data ../shared/data/hymenoptera/train --alpha 0.75
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

CANDIDATES = [
    ("linear (none), dropout 0.2", "none", 0.2),
    ("256, dropout 0.5", "256", 0.5),
    ("512, dropout 0.5", "512", 0.5),
    ("1024,1024,512, no dropout (blog)", "1024,1024,512", 0.0),
    ("1024,1024,512, dropout 0.5", "1024,1024,512", 0.5),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", default=str(Path(__file__).parents[2] / "shared/data/hymenoptera/train")
    )
    ap.add_argument("--alpha", type=float, default=0.75)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()

    from mtl.pipeline.config import resolve
    from mtl.training.trainer import train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        for label, head, dropout in CANDIDATES:
            acc, loss, acc_best = [], [], []
            t0 = time.perf_counter()
            for seed in range(args.seeds):
                for patience in (0, 5):
                    cfg = resolve(None, {"alpha": args.alpha, "head": head, "dropout": dropout,
                                         "epochs": args.epochs, "seed": seed,
                                         "patience": patience})  # fmt: skip
                    out = Path(tmp) / f"{head}-{dropout}-{seed}-{patience}"
                    r = train(args.data, cfg, out=out, cache_dir=cache)
                    if patience == 0:
                        acc.append(r.val_metrics["accuracy"])
                        loss.append(r.val_metrics["loss"])
                    else:
                        acc_best.append(r.val_metrics["accuracy"])
            rows.append((label, acc, loss, acc_best, time.perf_counter() - t0))
    print(f"{args.seeds} seeds x {args.epochs} epochs, alpha {args.alpha}, data {args.data}\n")
    print("| head | val acc, last epoch (mean ± sd) | val loss, last epoch | "
          "val acc, early stopping (patience 5) |")  # fmt: skip
    print("|---|---|---|---|")
    for label, acc, loss, best, _ in rows:
        print(
            f"| {label} | {statistics.mean(acc):.3f} ± {statistics.stdev(acc):.3f} "
            f"| {statistics.mean(loss):.3f} ± {statistics.stdev(loss):.3f} "
            f"| {statistics.mean(best):.3f} ± {statistics.stdev(best):.3f} |"
        )


if __name__ == "__main__":
    main()

"""The refit head alone against the refit head averaged with the validated head.

mtl trains two heads anyway: the validated fit (on the 80% that is not held out) and
the refit (on every training photo). This measures what averaging them buys, on
the cached features of the default model's two views (``sq256r``, ``crop256``: see
bench/acc_features.py), with mtl's own NumPy head (Dense 512, dropout 0.5, Adam 1e-3,
batch 32, 30 epochs), the protocol of bench/accuracy.py (folds, seeds, test photos)
and no ImageNet prior. Per seed it prints test accuracy for:

- ``refit``: the refit head alone (mtl before the ensemble);
- ``validated``: the head trained without the validation photos;
- ``average``: the mean of the two heads' logits (what mtl saves now:
  ``mtl.training.headfit.side_by_side``).

    MTL_WEIGHTS_DIR=../shared/weights PYTHONPATH=. python bench/head_ensemble.py --seeds 12
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as acc  # noqa: E402

VIEWS = ("sq256r", "crop256")


def train(data: acc.Data, rows: np.ndarray, seed: int):
    from mtl.training import headfit

    x = np.concatenate([data.views[v][rows] for v in VIEWS])
    y = np.tile(data.labels[rows], len(VIEWS))
    head = headfit.Head.fresh(x.shape[1], len(data.classes), (512,), 0.5, seed)
    opt = headfit.Optimizer("adam", 1e-3)
    for epoch in range(30):
        headfit.train_epoch(head, opt, x, y, None, 32, seed, epoch)
    return head


def hits(data: acc.Data, head, test: np.ndarray) -> int:
    """Correct test photos, the views' probabilities averaged (as the saved model does)."""
    probs = np.mean([head.probs(data.views[v][test]) for v in VIEWS], axis=0)
    return int(np.sum(probs.argmax(1) == data.labels[test]))


def run_seed(data: acc.Data, seed: int) -> dict[str, float]:
    from mtl.training import headfit

    correct = {"refit": 0, "validated": 0, "average": 0}
    total = 0
    for j, (train_rows, test) in enumerate(acc.folds(data.name, data.n_all, data.labels, seed)):
        s = seed * 100 + j
        fit_i, _ = acc.val_split(data.labels[train_rows], s)
        validated = train(data, train_rows[fit_i], s)
        refit = train(data, train_rows, s)
        both = headfit.side_by_side([validated, refit])
        for name, head in (("refit", refit), ("validated", validated), ("average", both)):
            correct[name] += hits(data, head, test)
        total += len(test)
    return {name: n / total for name, n in correct.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=0.75)
    ap.add_argument("--datasets", default="hymenoptera,clothing,digits")
    ap.add_argument("--seeds", type=int, default=12)
    args = ap.parse_args()
    from mtl.training import headfit

    for name in args.datasets.split(","):
        data = acc.Data.load(name, args.alpha)
        with headfit.one_blas_thread():
            per_seed = [run_seed(data, seed) for seed in range(args.seeds)]
        print(f"### {name}\n\n| head | mean | std | worst | per seed |\n|---|---|---|---|---|")
        for arm in ("refit", "validated", "average"):
            accs = [r[arm] for r in per_seed]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            seeds = " ".join(f"{a:.3f}" for a in accs)
            print(f"| {arm} | {statistics.mean(accs):.4f} | {sd:.4f} | {min(accs):.4f} | {seeds} |")
        print(flush=True)


if __name__ == "__main__":
    main()

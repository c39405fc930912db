"""The NumPy head on centred vs raw pooled features, and its epochs (issue 33's re-choice).

mtl's own head (:mod:`mtl.training.headfit`: Dense 512, dropout 0.5, Adam 1e-3, batch 32)
trained on cached features of mtl's two views (``sq256r`` + ``crop256``: what the default
256 input gives), every view a row, test probabilities averaged over the views. No
validation split, refit or prior: the head's training alone, on the same folds and
seeds as bench/accuracy.py (hymenoptera 5-fold, digits a new 500-photo split per seed,
the others their own train/test). Arms: ``raw`` / ``centred`` (features minus the
training rows' mean, what ``mtl train`` does on a CPU since issue 33), ``_eN`` epochs.

    export MTL_WEIGHTS_DIR=/work/shared/weights
    python bench/head_centring.py --alpha 1.0 --seeds 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import accuracy as acc  # noqa: E402

from mtl.training import headfit  # noqa: E402
from mtl.training.headrun import mean_row  # noqa: E402

VIEWS = ("sq256r", "crop256")
DATASETS = ("hymenoptera", "clothing", "eurosat", "sign_digits", "digits")


def correct(data: acc.Data, train: np.ndarray, test: np.ndarray, seed: int, arm: str) -> int:
    """Right answers on ``test`` of a head trained on ``train`` as ``arm`` says."""
    kind, epochs = arm.split("_e")
    x = np.stack([data.views[v][train] for v in VIEWS], 1).astype(np.float32)
    photos, views, dim = x.shape
    rows, labels = x.reshape(photos * views, dim), np.repeat(data.labels[train], views)
    centre = mean_row(rows) if kind == "centred" else None
    head = headfit.Head.fresh(dim, len(data.classes), [512], 0.5, seed)
    opt = headfit.Optimizer("adam", 1e-3)
    with headfit.one_blas_thread():
        for epoch in range(int(epochs)):
            headfit.train_epoch(head, opt, rows, labels, None, 32, seed, epoch, centre)
    plain = head if centre is None else head.centred(centre)
    t = np.stack([data.views[v][test] for v in VIEWS], 1).astype(np.float32)
    probs = plain.probs(t.reshape(-1, dim)).reshape(len(test), views, -1).mean(axis=1)
    return int((probs.argmax(axis=1) == data.labels[test]).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--arms", default="raw_e30,raw_e20,centred_e30,centred_e20,centred_e15")
    args = ap.parse_args()
    arms = args.arms.split(",")
    means: dict[str, list[float]] = {a: [] for a in arms}
    print("| dataset | " + " | ".join(arms) + " |")
    print("|---|" + "---|" * len(arms))
    for name in args.datasets.split(","):
        data = acc.Data.load(name, args.alpha)
        scores: dict[str, list[float]] = {a: [] for a in arms}
        for seed in range(args.seeds):
            for arm in arms:
                right = total = 0
                for train, test in acc.folds(name, data.n_all, data.labels, seed):
                    right += correct(data, train, test, seed, arm)
                    total += len(test)
                scores[arm].append(right / total)
        for arm in arms:
            means[arm].append(float(np.mean(scores[arm])))
        cells = " | ".join(f"{np.mean(s):.4f} / {np.min(s):.4f}" for s in scores.values())
        print(f"| {name} | {cells} |", flush=True)
    print("| mean of means | " + " | ".join(f"{np.mean(m):.4f}" for m in means.values()) + " |")


if __name__ == "__main__":
    main()

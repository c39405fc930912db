"""The head trained in NumPy against the same head trained by Keras, on the same features.

mtl trains its head in NumPy on a CPU (mtl/training/headfit.py). Its updates equal
Keras' step for step (tests/test_headfit.py); this checks that nothing else differs:
per seed, both train Dense 512 + dropout 0.5, Adam 1e-3, batch 32, 30 epochs on the
same two-view features (image + central crop) in the same batch order, and are
scored on clothing/test with the views averaged. Only their random draws (initial
weights, dropout masks) differ.

    MTL_WEIGHTS_DIR=../shared/weights PYTHONPATH=. python bench/head_engine_ab.py --seeds 6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acc_features as af  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--alpha", type=float, default=0.75)
    args = ap.parse_args()

    import keras

    from mtl.model.classifier import build_head
    from mtl.training import headfit

    splits = af.dataset_splits("clothing")
    feats = af.all_features("clothing", args.alpha)
    x_train = np.stack([feats["train"]["resize"], feats["train"]["mcrop"]], 1).astype("float32")
    x_test = np.stack([feats["test"]["resize"], feats["test"]["mcrop"]], 1).astype("float32")
    y_train, y_test = splits["train"].labels, splits["test"].labels
    classes = len(splits["train"].classes)
    _, views, dim = x_train.shape
    rows, row_labels = x_train.reshape(-1, dim), np.repeat(y_train, views)

    def accuracy(probs: np.ndarray) -> float:
        averaged = probs.reshape(len(y_test), views, -1).mean(axis=1)
        return float((averaged.argmax(axis=1) == y_test).mean())

    results: dict[str, list[float]] = {"numpy": [], "keras": []}
    for seed in range(args.seeds):
        head = headfit.Head.fresh(dim, classes, [512], 0.5, seed)
        opt = headfit.Optimizer("adam", 1e-3)
        with headfit.one_blas_thread():
            for epoch in range(30):
                headfit.train_epoch(head, opt, rows, row_labels, None, 32, seed, epoch)
        results["numpy"].append(accuracy(head.probs(x_test.reshape(-1, dim))))
        keras.utils.set_random_seed(seed)
        model = build_head(dim, classes, [512], 0.5)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        for epoch in range(30):
            order = headfit.epoch_order(len(rows), seed, epoch)
            model.fit(rows[order], row_labels[order], batch_size=32, epochs=1, shuffle=False,
                      verbose=0)  # fmt: skip
        probs = np.asarray(model.predict(x_test.reshape(-1, dim), batch_size=256, verbose=0))
        results["keras"].append(accuracy(probs))
        print(f"seed {seed}: numpy {results['numpy'][-1]:.4f}  keras {results['keras'][-1]:.4f}")
    for name, accs in results.items():
        print(f"{name}: mean {np.mean(accs):.4f} worst {np.min(accs):.4f} std {np.std(accs):.4f}")


if __name__ == "__main__":
    main()

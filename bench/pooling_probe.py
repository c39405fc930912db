"""Which reading of the same base passes pays: how block 13's map is pooled and how the
pooled features are scaled before mtl's head. Feature-level probes, no extra base pass.

Every photo is read as `mtl train` reads it (``load_image(path, 256, fit="center")``),
seen as mtl's two views (``image``: the 256 square resized to 224; ``crop``: its central
224) and goes once through one LiteRT float32 model (Keras' MobileNet v1, ``x / 127.5 -
1``) that returns, per view, block 13's 7x7 map pooled three ways:

| pooling | what |
|---|---|
| ``avg`` | the mean (mtl's default) |
| ``max`` | the maximum |
| ``gem`` | the generalised mean, p = 3 (Radenovic et al., 2018) |

Arms (transforms use the training rows' statistics only):

| arm | features |
|---|---|
| ``default`` | avg |
| ``std`` | avg, standardised per feature (foldable into the first Dense layer) |
| ``sqrt`` | the square root of avg (power normalisation) |
| ``sqrt_std`` | sqrt, then standardised |
| ``l2`` | avg scaled to unit length, times the training rows' median length |
| ``gem`` | gem |
| ``max`` | max |
| ``avgmax`` | avg and max concatenated (1,536 floats) |

Head and protocol as bench/views_probe.py: mtl's NumPy head (Dense 512 relu, dropout
0.5, Adam 1e-3, batch 32, 30 epochs), train rows = both views of every training photo,
a test photo's probabilities the mean over its two views.

    MTL_WEIGHTS_DIR=../shared/weights PYTHONPATH=. python bench/pooling_probe.py --seeds 3
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acc_features as af  # noqa: E402
import accuracy as acc  # noqa: E402
import views_probe as vp  # noqa: E402

DIM = 768  # MobileNet 0.75, block 13 channels
VIEWS = ("image", "crop")
POOLS = ("avg", "max", "gem")
CACHE = Path(os.environ.get("MTL_BENCH_CACHE", "/tmp/acc-cache")) / "pooling_probe"


def extractor(alpha: float):
    """Keras: 256x256 RGB 0-255 in, (view, pooling) features of the table concatenated out."""
    import keras

    weights = Path(os.environ.get("MTL_WEIGHTS_DIR", af.SHARED / "weights"))
    tag = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}[alpha]
    base = keras.applications.MobileNet(
        input_shape=(224, 224, 3), alpha=alpha, include_top=False,
        weights=str(weights / f"mobilenet_{tag}_224_tf_no_top.h5"),
    )  # fmt: skip
    x_in = keras.Input((256, 256, 3))
    x = x_in / 127.5 - 1.0
    views = {
        "image": keras.layers.Resizing(224, 224)(x),
        "crop": keras.layers.CenterCrop(224, 224)(x),
    }
    outs = []
    for name in VIEWS:
        fmap = base(views[name])
        outs.append(keras.ops.mean(fmap, axis=(1, 2)))
        outs.append(keras.ops.max(fmap, axis=(1, 2)))
        cube = keras.ops.mean(keras.ops.power(keras.ops.maximum(fmap, 1e-6), 3.0), axis=(1, 2))
        outs.append(keras.ops.power(cube, 1.0 / 3.0))
    return keras.Model(x_in, keras.ops.concatenate(outs, axis=1))


def features(name: str, alpha: float) -> tuple[acc.Data, dict[tuple[str, str], np.ndarray]]:
    data, flat = vp.cached(CACHE, name, alpha, extractor)
    keys = [(v, p) for v in VIEWS for p in POOLS]
    return data, {k: flat[:, i * DIM : (i + 1) * DIM] for i, k in enumerate(keys)}


def _standardise(train: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (x - train.mean(0)) / (train.std(0) + 1e-6)


def _l2(train: np.ndarray, x: np.ndarray) -> np.ndarray:
    scale = np.median(np.linalg.norm(train, axis=1))
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-9) * scale


# arm -> (pooling(s), transform(train rows, rows))
ARMS: dict[str, tuple[tuple[str, ...], Callable[[np.ndarray, np.ndarray], np.ndarray] | None]] = {
    "default": (("avg",), None),
    "std": (("avg",), _standardise),
    "sqrt": (("avg",), lambda t, x: np.sqrt(x)),
    "sqrt_std": (("avg",), lambda t, x: _standardise(np.sqrt(t), np.sqrt(x))),
    "l2": (("avg",), _l2),
    "gem": (("gem",), None),
    "max": (("max",), None),
    "avgmax": (("avg", "max"), None),
}


def score(data: acc.Data, parts: dict, arm: str, seed: int, units: tuple[int, ...]) -> float:
    from mtl.training import headfit

    pools, transform = ARMS[arm]
    rows = [np.concatenate([parts[(v, p)] for p in pools], axis=1) for v in VIEWS]
    correct = total = 0
    for j, (train, test) in enumerate(acc.folds(data.name, data.n_all, data.labels, seed)):
        s = seed * 100 + j
        x = np.concatenate([r[train] for r in rows])
        tests = [r[test] for r in rows]
        if transform is not None:
            x, tests = transform(x, x), [transform(x, t) for t in tests]
        y = np.tile(data.labels[train], len(rows))
        head = headfit.Head.fresh(x.shape[1], len(data.classes), units, 0.5 if units else 0.0, s)
        opt = headfit.Optimizer("adam", 1e-3)
        for epoch in range(30):
            headfit.train_epoch(head, opt, x.astype(np.float32), y, None, 32, s, epoch)
        probs = np.mean([head.probs(t.astype(np.float32)) for t in tests], axis=0)
        correct += int(np.sum(probs.argmax(1) == data.labels[test]))
        total += len(test)
    return correct / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=0.75)
    ap.add_argument("--datasets", default="hymenoptera,clothing,eurosat,sign_digits,digits")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--head", default="512", help="hidden widths, comma-separated; '' linear")
    ap.add_argument("--features-only", action="store_true")
    args = ap.parse_args()
    from mtl.training import headfit

    units = tuple(int(u) for u in args.head.split(",") if u)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    arms = args.arms.split(",")
    table: dict[str, dict[str, list[float]]] = {}
    for name in args.datasets.split(","):
        data, parts = features(name, args.alpha)
        if args.features_only:
            continue
        with headfit.one_blas_thread():
            table[name] = {arm: [score(data, parts, arm, s, units) for s in seeds] for arm in arms}
        for arm, accs in table[name].items():
            print(f"{name} {arm}: {' '.join(f'{a:.4f}' for a in accs)}", flush=True)
    if not table:
        return
    print(f"\nmean / worst over seeds {list(seeds)}\n")
    vp.print_table(table, arms)


if __name__ == "__main__":
    main()

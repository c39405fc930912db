"""Which extra base passes pay: more views per photo, a higher-resolution view, pooled
features of an earlier block. Feature-level probes with mtl's own NumPy head.

Every photo is read as `mtl train` reads it by default (``load_image(path, 256,
fit="center")``) and goes through one LiteRT float32 model (converted here from
Keras' MobileNet, alpha 0.75, ``x / 127.5 - 1``) that returns, per photo:

| feature | what |
|---|---|
| ``image`` | the whole 256 input resized to 224 (mtl's ``image`` view), block 13 pooled |
| ``crop`` | the central 224 (87.5%) of the 256 input (mtl's ``crop`` view) |
| ``image_flip``, ``crop_flip`` | their mirrors (mtl's ``flip``, ``crop_flip`` views) |
| ``crop75`` | a third crop: the central 75% (192) resized to 224 |
| ``hires`` | the whole 256 input through the base at 256 (an 8x8 map), pooled |
| ``image_b11``, ``crop_b11`` | block 11 (``conv_pw_11_relu``) pooled, of the image and crop views |

Arms (train rows = every listed view of every training photo; a test photo's
probabilities are averaged over its views, as mtl's saved model does):

| arm | views | features | epochs |
|---|---|---|---:|
| ``default`` | image, crop | block 13 (mtl's default) | 30 |
| ``mirrors`` | image, crop, image_flip, crop_flip | block 13 | 30 |
| ``mirrors_e15`` | image, crop, image_flip, crop_flip | block 13 | 15 |
| ``mirrored`` | image_flip, crop (the default's views, one mirrored) | block 13 | 30 |
| ``mirrored_crop`` | image, crop_flip (the other one mirrored) | block 13 | 30 |
| ``crop3`` | image, crop, crop75 | block 13 | 30 |
| ``hires`` | image, crop, hires | block 13 | 30 |
| ``b11+13`` | image, crop | block 13 and block 11 concatenated (1152 floats) | 30 |

``mirrors_e15`` takes as many optimiser steps as the default (twice the rows, half
the epochs). ``mirrored`` and ``mirrored_crop`` cost what the default costs and are
mirror images of each other (each is the other on the mirrored photos): no better a
choice a priori, so the distance between them measures the noise between two equally
good sets of views.

Head: mtl's NumPy head (Dense 512 relu, dropout 0.5, Adam 1e-3, batch 32, 30
epochs unless the arm says otherwise, no validation split: bench/head_ensemble.py's
``train``), protocol of
bench/accuracy.py (hymenoptera: 5 folds pooled; digits: 500 train, a new split
per seed; the others: their train/ and test/ folders).

    MTL_WEIGHTS_DIR=../shared/weights PYTHONPATH=. python bench/views_probe.py --seeds 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acc_features as af  # noqa: E402
import accuracy as acc  # noqa: E402

DIM, DIM11 = 768, 384  # MobileNet 0.75: block 13 and block 11 channels
ORDER = ("image", "crop", "image_flip", "crop_flip", "crop75", "hires")  # block 13 parts


@dataclass(frozen=True)
class Arm:
    views: tuple[str, ...]
    b11: bool = False  # block 11's pooled features beside block 13's
    epochs: int = 30


MIRRORS = ("image", "crop", "image_flip", "crop_flip")
ARMS = {
    "default": Arm(("image", "crop")),
    "mirrors": Arm(MIRRORS),
    "mirrors_e15": Arm(MIRRORS, epochs=15),
    "mirrored": Arm(("image_flip", "crop")),
    "mirrored_crop": Arm(("image", "crop_flip")),
    "crop3": Arm(("image", "crop", "crop75")),
    "hires": Arm(("image", "crop", "hires")),
    "b11+13": Arm(("image", "crop"), b11=True),
}
CACHE = Path(os.environ.get("MTL_BENCH_CACHE", "/tmp/acc-cache")) / "views_probe"


def extractor(alpha: float):
    """Keras: 256x256 RGB 0-255 in, every feature of the table above concatenated out."""
    import keras

    weights = Path(os.environ.get("MTL_WEIGHTS_DIR", af.SHARED / "weights"))
    tag = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}[alpha]
    base = keras.applications.MobileNet(
        input_shape=(None, None, 3), alpha=alpha, include_top=False,
        weights=str(weights / f"mobilenet_{tag}_224_tf_no_top.h5"),
    )  # fmt: skip
    both = keras.Model(base.input, [base.get_layer("conv_pw_11_relu").output, base.output])
    pool = keras.layers.GlobalAveragePooling2D()
    x_in = keras.Input((256, 256, 3))
    x = x_in / 127.5 - 1.0
    resize = keras.layers.Resizing(224, 224, interpolation="bilinear")
    image = resize(x)
    crop = keras.layers.CenterCrop(224, 224)(x)
    crop75 = resize(keras.layers.CenterCrop(192, 192)(x))
    flip = keras.layers.Lambda(lambda t: keras.ops.flip(t, axis=2))
    views = {"image": image, "crop": crop, "image_flip": flip(image), "crop_flip": flip(crop),
             "crop75": crop75, "hires": x}  # fmt: skip
    out13, out11 = {}, {}
    for name, v in views.items():
        b11, b13 = both(v)
        out13[name] = pool(b13)
        if name in ("image", "crop"):
            out11[name] = pool(b11)
    flat = keras.layers.Concatenate()([out13[n] for n in ORDER] + [out11["image"], out11["crop"]])
    return keras.Model(x_in, flat)


def lite_features(model, files: list[Path]) -> np.ndarray:
    """``model`` (Keras, 256x256 RGB 0-255 in) converted to LiteRT float32, run on every
    photo as `mtl train` reads it by default."""
    from mtl import runtime
    from mtl.data.images import iter_batches
    from mtl.litert import LiteModel

    lite = LiteModel(runtime.tflite_flatbuffer(model, (256, 256, 3)))
    out = []
    for batch in iter_batches(files, 256, 32, fit="center"):
        assert not batch.failures, batch.failures
        lite.resize(len(batch.pixels))
        out.append(lite.run(batch.pixels.astype(np.float32)))
    return np.concatenate(out)


def code_tag(model_fn) -> str:
    """A digest of the code that makes the features: ``model_fn`` and mtl's photo loader.
    A cache named only by dataset and alpha once served features of an older extractor
    (docs/benchmarks.md, the views' correction); a change to either now misses it."""
    import inspect

    from mtl.data import images

    code = inspect.getsource(model_fn) + inspect.getsource(images)
    return hashlib.sha256(code.encode()).hexdigest()[:10]


def cached(folder: Path, name: str, alpha: float, model_fn) -> tuple[acc.Data, np.ndarray]:
    """Dataset ``name`` and ``model_fn(alpha)``'s features of it, kept in ``folder``."""
    data = acc.Data.load(name, alpha, features=False)
    folder.mkdir(parents=True, exist_ok=True)
    npy = folder / f"{name}-alpha{alpha}-{code_tag(model_fn)}.npy"
    if npy.exists():
        flat = np.load(npy)
    else:
        t0 = time.perf_counter()
        flat = lite_features(model_fn(alpha), data.files)
        np.save(npy, flat)
        print(f"features {name}: {len(data.files)} photos, {time.perf_counter() - t0:.0f}s",
              flush=True)  # fmt: skip
    assert len(flat) == len(data.files)
    return data, flat


def features(name: str, alpha: float) -> tuple[acc.Data, dict[str, np.ndarray]]:
    data, flat = cached(CACHE, name, alpha, extractor)
    parts = {n: flat[:, i * DIM : (i + 1) * DIM] for i, n in enumerate(ORDER)}
    k = len(ORDER) * DIM
    parts["image_b11"], parts["crop_b11"] = flat[:, k : k + DIM11], flat[:, k + DIM11 :]
    return data, parts


def view_rows(parts: dict[str, np.ndarray], arm: str) -> list[np.ndarray]:
    a = ARMS[arm]
    if not a.b11:
        return [parts[v] for v in a.views]
    return [np.concatenate([parts[v], parts[f"{v}_b11"]], axis=1) for v in a.views]


def score(data: acc.Data, rows: list[np.ndarray], seed: int, epochs: int = 30) -> float:
    from mtl.training import headfit

    correct = total = 0
    for j, (train, test) in enumerate(acc.folds(data.name, data.n_all, data.labels, seed)):
        s = seed * 100 + j
        x = np.concatenate([r[train] for r in rows])
        y = np.tile(data.labels[train], len(rows))
        head = headfit.Head.fresh(x.shape[1], len(data.classes), (512,), 0.5, s)
        opt = headfit.Optimizer("adam", 1e-3)
        for epoch in range(epochs):
            headfit.train_epoch(head, opt, x, y, None, 32, s, epoch)
        probs = np.mean([head.probs(r[test]) for r in rows], axis=0)
        correct += int(np.sum(probs.argmax(1) == data.labels[test]))
        total += len(test)
    return correct / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=0.75)
    ap.add_argument("--datasets", default="hymenoptera,clothing,eurosat,sign_digits,digits")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--features-only", action="store_true")
    args = ap.parse_args()
    from mtl.training import headfit

    arms = args.arms.split(",")
    table: dict[str, dict[str, list[float]]] = {}
    for name in args.datasets.split(","):
        data, parts = features(name, args.alpha)
        if args.features_only:
            continue
        with headfit.one_blas_thread():
            table[name] = {
                arm: [
                    score(data, view_rows(parts, arm), seed, ARMS[arm].epochs)
                    for seed in range(args.seeds)
                ]
                for arm in arms
            }
        for arm, accs in table[name].items():
            print(f"{name} {arm}: {' '.join(f'{a:.4f}' for a in accs)}", flush=True)
    if not table:
        return
    names = list(table)
    print(f"\nmean / worst over {args.seeds} seeds (seed-to-seed spread of the default: "
          "max - min)\n")  # fmt: skip
    print_table(table, arms)
    spread = [
        max(table[n]["default"]) - min(table[n]["default"]) for n in names if "default" in table[n]
    ]
    print("| default's spread | " + " | ".join(f"{s:.3f}" for s in spread) + " | |")


def print_table(table: dict[str, dict[str, list[float]]], arms: list[str]) -> None:
    """One row per arm: mean / worst per dataset, and the mean over datasets."""
    names = list(table)
    print("| arm | " + " | ".join(names) + " | mean over datasets |")
    print("|---|" + "---|" * (len(names) + 1))
    for arm in arms:
        cells = [f"{statistics.mean(table[n][arm]):.3f} / {min(table[n][arm]):.3f}" for n in names]
        overall = statistics.mean(statistics.mean(table[n][arm]) for n in names)
        print(f"| {arm} | " + " | ".join(cells) + f" | {overall:.4f} |")


if __name__ == "__main__":
    main()

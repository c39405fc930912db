"""Held-out accuracy of mtl's training defaults vs the Keras recipe, a linear probe and candidates.

What it measures: test accuracy on photos no arm ever sees while training or choosing
settings, per dataset, over several seeds, and the wall time of head training.

- hymenoptera (245 photos, 2 classes): stratified 5-fold per seed; a seed's accuracy is
  pooled over its 5 test folds (245 predictions), like one run on a ~150-photo test set.
- clothing (8 classes): train on clothing/train (520), test on clothing/test (397);
  eurosat (10, 800 / 500) and sign_digits (10, 580 / 400) the same way.
- digits (sklearn 8x8, written as PNGs, upsized by mtl's loader): 500 train / 1297 test,
  a new stratified split per seed.

Arms:

- ``mtl``: the real CLI (``python -m mtl train ... --alpha A --seed S --json``, then
  ``python -m mtl evaluate``) with its own defaults, on symlinked folder-per-class trees.
- ``probe``: sklearn LogisticRegression (C=1) on pooled features; ``probe_cv``: C chosen
  by 5-fold CV on the training rows only.
- ``recipe``: the plain Keras recipe on frozen pooled features: Dense 1024-1024-512 ReLU,
  softmax, Adam 1e-3, batch 32, 10 epochs, no validation.
- every other arm: a Keras head on cached pooled features (see ``ARMS``), optionally
  trained on extra cached views (mirror) and averaging probabilities over test views.
- ``mtl_int8``: ``mtl`` with ``--base-precision int8`` (what the defaults run on a CPU
  since issue 25), scored by both consumers of its model: mtl's LiteRT path (the int8
  base it trained on; ``mtl_int8``) and ``model.keras`` on plain Keras, which carries
  the int8 network (``mtl_int8@keras``).
- ``mtl_float32``: ``mtl`` with ``--base-precision float32`` (the default before).
- ``mtl_best``: ``mtl`` with ``--patience 30``: the epoch of lowest validation loss is
  kept instead of the last (30 epochs never stop early), and the refit trains as long.
- ``mtl_mirrors``: ``mtl`` with ``--views image,flip,crop,crop_flip`` (both views and
  their mirrors: twice the base passes; on the int8 base, as auto picks for them).

Features come from bench/acc_features.py (Keras MobileNet v1, cached under /tmp/acc-cache).

    export MTL_WEIGHTS_DIR=/work/shared/weights TF_CPP_MIN_LOG_LEVEL=2
    python bench/accuracy.py --alpha 0.75 --datasets hymenoptera,clothing,digits --seeds 3 \
        --arms probe,probe_cv,recipe,mtl,best
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import acc_features as af  # noqa: E402

Fold = tuple[np.ndarray, np.ndarray]  # indices of train rows, test rows
ArmFn = Callable[[Any, np.ndarray, np.ndarray, int], int]  # -> correct test predictions


@dataclass(frozen=True)
class Head:
    """A Keras head trained on cached features, and how its epochs are chosen."""

    units: tuple[int, ...] = (512,)
    dropout: float = 0.5
    lr: float = 1e-3
    weight_decay: float = 0.0  # > 0: AdamW (decoupled), else Adam
    smoothing: float = 0.0
    l2norm: bool = False  # unit-normalise features before the first layer
    batch: int = 32
    epochs: int = 10
    policy: str = "fixed"  # fixed | early (mtl: 20% val, patience, keep best) | refit
    patience: int = 5
    train_views: tuple[str, ...] = ("resize",)
    test_views: tuple[str, ...] = ("resize",)
    cosine: bool = False  # the learning rate decays to 0 along a half cosine over the run


R = ("resize",)
V2 = ("resize", "crop256")  # whole image + central 87.5% crop, no mirror
VF = ("resize", "resize_flip", "crop256", "crop256_flip")
V2M = ("resize", "mcrop")
V2F = ("resize", "resize_flip")
VFM = ("resize", "resize_flip", "mcrop", "mcrop_flip")
V2C = ("crop", "crop256")  # both from the photo's central square at 256 (one input)
V2S = ("sresize", "scrop")  # what a model with a 256x256 squashed input computes
V2CM = ("crop", "cmcrop")  # mtl's views of the central square (mtl train --fit center)
F1 = ("f256",)  # one base pass on the whole 256 square, all 8x8 cells pooled
FW = ("f256", "w256")  # two views from that one pass: all cells, the central 6x6
FWW = ("f256", "w256w")  # all cells, the central 7x7 box (what a 224 crop covers)
VM = ("sq256r", "crop256")  # exactly mtl's two views of its 256 input (fit center)
BASELINE = Head(policy="early")  # mtl's defaults, in feature space
RECIPE = Head(units=(1024, 1024, 512), dropout=0.0, epochs=10)
ARMS: dict[str, Head] = {
    "recipe": RECIPE,
    "mtl_feat": BASELINE,
    "h512_e10": Head(),
    "h512_e20": Head(epochs=20),
    "lin_e30": Head(units=(), dropout=0.0, epochs=30),
    "mtl_feat_v2": replace(BASELINE, train_views=V2, test_views=V2),
    "recipe_v2": replace(RECIPE, train_views=V2, test_views=V2),
    "h512_v2": Head(train_views=V2, test_views=V2),
    "h256_v2": Head(units=(256,), train_views=V2, test_views=V2),
    "h1024_v2": Head(units=(1024,), train_views=V2, test_views=V2),
    "lin_v2_e30": Head(units=(), dropout=0.0, epochs=30, train_views=V2, test_views=V2),
    "h512_v2_ls": Head(smoothing=0.1, train_views=V2, test_views=V2),
    "h512_v2_wd": Head(weight_decay=0.05, train_views=V2, test_views=V2),
    "h512_v2_refit": Head(policy="refit", epochs=30, train_views=V2, test_views=V2),
    "h512_vf": Head(train_views=VF, test_views=VF),
    "h512_v2_e20": Head(epochs=20, train_views=V2, test_views=V2),
    "best": Head(epochs=30, train_views=V2, test_views=V2),  # the recommendation
    # What mtl's saved model can compute from its 224x224 input (mcrop: see acc_features).
    "h512_v2m_e30": Head(epochs=30, train_views=V2M, test_views=V2M),
    "h512_v2m_e30_cos": Head(epochs=30, cosine=True, train_views=V2M, test_views=V2M),
    "h512_v2m_e20_cos": Head(epochs=20, cosine=True, train_views=V2M, test_views=V2M),
    "h512_v2c_e30_cos": Head(epochs=30, cosine=True, train_views=V2C, test_views=V2C),
    "h512_v2c_e30": Head(epochs=30, train_views=V2C, test_views=V2C),
    "h512_v2cm_e30": Head(epochs=30, train_views=V2CM, test_views=V2CM),
    "h512_vm_e30": Head(epochs=30, train_views=VM, test_views=VM),
    "h512_f1_e30": Head(epochs=30, train_views=F1, test_views=F1),
    "h512_fw_e30": Head(epochs=30, train_views=FW, test_views=FW),
    "h512_fww_e30": Head(epochs=30, train_views=FWW, test_views=FWW),
    "h512_c1_e30": Head(epochs=30, train_views=("crop",), test_views=("crop",)),
    "h512_v2s_e30": Head(epochs=30, train_views=V2S, test_views=V2S),
    "h512_v2f_e30": Head(epochs=30, train_views=V2F, test_views=V2F),
    "h512_v2m_e40": Head(epochs=40, train_views=V2M, test_views=V2M),
    "h512_vfm_e20": Head(epochs=20, train_views=VFM, test_views=VFM),
    "h512_vfm_e30": Head(epochs=30, train_views=VFM, test_views=VFM),
    "h512_v2_e30": Head(epochs=30, train_views=V2, test_views=V2),
    "h512_v2_ls_e20": Head(smoothing=0.1, epochs=20, train_views=V2, test_views=V2),
    "h1024_v2_e20": Head(units=(1024,), epochs=20, train_views=V2, test_views=V2),
    "h1024_v2_ls_e20": Head(units=(1024,), smoothing=0.1, epochs=20, train_views=V2, test_views=V2),
    "lin_v2_e60": Head(units=(), dropout=0.0, epochs=60, train_views=V2, test_views=V2),
    "h512_vf_e20": Head(epochs=20, train_views=VF, test_views=VF),
}


# ---------------------------------------------------------------- data and splits


def folds(dataset: str, n_all: int, labels: np.ndarray, seed: int) -> Iterator[Fold]:
    from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

    if dataset == "hymenoptera":
        yield from StratifiedKFold(5, shuffle=True, random_state=seed).split(labels, labels)
    elif dataset == "digits":
        yield from StratifiedShuffleSplit(1, train_size=500, random_state=seed).split(
            labels, labels
        )
    else:  # clothing: a fixed train/test split; rows are train then test
        yield np.arange(n_all), np.arange(n_all, len(labels))


@dataclass
class Data:
    """One dataset with every row's features per view (train and test parts concatenated)."""

    name: str
    files: list[Path]
    labels: np.ndarray
    classes: list[str]
    views: dict[str, np.ndarray]
    n_all: int  # clothing: rows before this are train/, after are test/

    @staticmethod
    def load(name: str, alpha: float, features: bool = True) -> Data:
        """``features`` False: the files alone (the CLI arms need no cached features)."""
        splits = af.dataset_splits(name)
        parts = list(splits)
        files = [f for p in parts for f in splits[p].files]
        labels = np.concatenate([splits[p].labels for p in parts])
        views = {}
        if features:
            feats = af.all_features(name, alpha)
            views = {v: np.concatenate([feats[p][v] for p in parts]) for v in af.views_for(name)}
        n_first = len(splits[parts[0]].files)
        return Data(name, files, labels, splits[parts[0]].classes, views, n_first)


# ---------------------------------------------------------------- Keras heads


def build(h: Head, dim: int, n_classes: int, steps: int = 0):
    import keras

    x = inp = keras.Input((dim,))
    if h.l2norm:
        x = keras.layers.UnitNormalization()(x)
    for n in h.units:
        x = keras.layers.Dense(n, activation="relu")(x)
    if h.dropout:
        x = keras.layers.Dropout(h.dropout)(x)
    out = keras.layers.Dense(n_classes, activation="softmax")(x)
    model = keras.Model(inp, out)
    lr = keras.optimizers.schedules.CosineDecay(h.lr, steps) if h.cosine and steps else h.lr
    opt = (
        keras.optimizers.AdamW(lr, weight_decay=h.weight_decay)
        if h.weight_decay
        else keras.optimizers.Adam(lr)
    )
    if h.smoothing:  # Keras 3 sparse CE has no smoothing: one-hot targets
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=h.smoothing)
    else:
        loss = "sparse_categorical_crossentropy"
    model.compile(optimizer=opt, loss=loss, metrics=["accuracy"])
    return model


def rows(h: Head, data: Data, idx: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Training rows: every training view of every image in ``idx``, and their targets."""
    x = np.concatenate([data.views[v][idx] for v in h.train_views])
    y = np.tile(data.labels[idx], len(h.train_views))
    if h.smoothing:
        y = np.eye(n_classes, dtype=np.float32)[y]
    return x, y


def val_split(labels: np.ndarray, seed: int) -> Fold:
    from sklearn.model_selection import StratifiedShuffleSplit

    sss = StratifiedShuffleSplit(1, test_size=0.2, random_state=seed)
    return next(sss.split(labels, labels))


def fit_head(h: Head, data: Data, train: np.ndarray, seed: int):
    """Train a head on the images ``train``; returns the model (and the epochs it ran)."""
    import keras

    k = len(data.classes)
    keras.utils.set_random_seed(seed)
    if h.policy == "fixed":
        steps = h.epochs * -(-len(train) * len(h.train_views) // h.batch)
        model = build(h, data.views["resize"].shape[1], k, steps)
        model.fit(*rows(h, data, train, k), batch_size=h.batch, epochs=h.epochs, verbose=0)
        return model, h.epochs
    fit_i, val_i = val_split(data.labels[train], seed)
    fit_i, val_i = train[fit_i], train[val_i]
    model = build(h, data.views["resize"].shape[1], k)
    stop = keras.callbacks.EarlyStopping(
        "val_loss", patience=h.patience or h.epochs, restore_best_weights=True
    )
    val = rows(replace(h, train_views=("resize",)), data, val_i, k)
    hist = model.fit(
        *rows(h, data, fit_i, k), batch_size=h.batch, epochs=h.epochs, verbose=0,
        validation_data=val, callbacks=[stop],
    )  # fmt: skip
    best = int(np.argmin(hist.history["val_loss"])) + 1
    if h.policy == "early":
        return model, best
    keras.utils.set_random_seed(seed)  # refit: all training images, the chosen epoch count
    model = build(h, data.views["resize"].shape[1], k)
    model.fit(*rows(h, data, train, k), batch_size=h.batch, epochs=best, verbose=0)
    return model, best


def keras_arm(h: Head) -> ArmFn:
    def run(data: Data, train: np.ndarray, test: np.ndarray, seed: int) -> int:
        model, _ = fit_head(h, data, train, seed)
        probs = [
            model.predict(data.views[v][test], verbose=0, batch_size=256) for v in h.test_views
        ]
        return int(np.sum(np.mean(probs, axis=0).argmax(1) == data.labels[test]))

    return run


# ---------------------------------------------------------------- baselines


def probe(data: Data, train: np.ndarray, test: np.ndarray, seed: int, cv: bool = False):
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    x = data.views["resize"]
    if cv:
        clf = LogisticRegressionCV(Cs=[0.01, 0.03, 0.1, 0.3, 1, 3, 10], cv=5, max_iter=3000)
    else:
        clf = LogisticRegression(C=1.0, max_iter=3000)
    clf.fit(x[train], data.labels[train])
    return int(np.sum(clf.predict(x[test]) == data.labels[test]))


def link_tree(root: Path, data: Data, idx: np.ndarray) -> Path:
    """A folder-per-class tree of symlinks to the images ``idx``."""
    for i in idx:
        f = data.files[i]
        d = root / data.classes[data.labels[i]]
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:05d}_{f.name}").symlink_to(f)
    return root


def mtl_cli(alpha: float, *options: str, keras_too: bool = False) -> ArmFn:
    """The real ``mtl train`` (defaults, plus ``options``) + ``mtl evaluate``; returns the
    test predictions' correctness. ``keras_too``: also evaluate ``model.keras`` on plain
    Keras in float32 (``MTL_PREDICT_ENGINE=keras``), returned as the ``@keras`` consumer."""

    def run(data: Data, train: np.ndarray, test: np.ndarray, seed: int) -> Any:
        cache = af.CACHE / f"mtl-cli-cache-a{alpha}"
        with tempfile.TemporaryDirectory() as tmp:
            tr = link_tree(Path(tmp) / "train", data, train)
            te = link_tree(Path(tmp) / "test", data, test)
            cmd = [sys.executable, "-m", "mtl"]
            subprocess.run(
                [*cmd, "train", str(tr), "--alpha", str(alpha), "--seed", str(seed),
                 "--out", f"{tmp}/run", "--json", "--cache-dir", str(cache), *options],
                check=True, capture_output=True,
            )  # fmt: skip

            def hits(**env: str) -> int:
                out = subprocess.run(
                    [*cmd, "evaluate", f"{tmp}/run/model.keras", str(te), "--json"],
                    check=True, capture_output=True, text=True, env={**os.environ, **env},
                )  # fmt: skip
                return round(json.loads(out.stdout)["accuracy"] * len(test))

            if keras_too:
                return hits(), {"keras": hits(MTL_PREDICT_ENGINE="keras")}
            return hits()

    return run


# The real CLI's arms: name -> (mtl train's options, whether plain Keras scores it too).
CLI_OPTIONS: dict[str, tuple[tuple[str, ...], bool]] = {
    "mtl": ((), False),
    "mtl_noprior": (("--no-prior",), False),  # without the ImageNet prior
    "mtl_squash": (("--fit", "squash"), False),  # the whole photo squashed (the old input)
    "mtl_int8": (("--base-precision", "int8"), True),  # the int8 base, both consumers
    "mtl_float32": (("--base-precision", "float32"), False),  # the CPU default before issue 25
    "mtl_mirrors": (("--views", "image,flip,crop,crop_flip"), False),  # 4 passes
    "mtl_ft5": (("--fine-tune-epochs", "5"), False),  # then the top of the base unfrozen
    "mtl_best": (("--patience", "30"), False),  # the best epoch by val loss (never stops)
    "mtl_e30": (("--epochs", "30"), False),  # 30 epochs (the default before 2026-12-07)
    "mtl_norefit": (("--no-refit",), False),  # the validated head alone (80% of the photos)
}
CLI_ARMS = tuple(CLI_OPTIONS)


def arm_function(name: str, alpha: float):
    if name == "probe":
        return probe
    if name == "probe_cv":
        return lambda d, tr, te, s: probe(d, tr, te, s, cv=True)
    if name in CLI_OPTIONS:
        options, keras_too = CLI_OPTIONS[name]
        return mtl_cli(alpha, *options, keras_too=keras_too)
    return keras_arm(ARMS[name])


# ---------------------------------------------------------------- running and reporting


@dataclass
class Result:
    accs: list[float] = field(default_factory=list)  # one per seed
    seconds: list[float] = field(default_factory=list)  # per fit


def evaluate_arm(name: str, data: Data, seeds: list[int], alpha: float) -> dict[str, Result]:
    """``{name: result}``, plus ``name@consumer`` for an arm that also scores its model
    another way (mtl_int8: model.keras on plain Keras)."""
    run = arm_function(name, alpha)
    out: dict[str, Result] = {name: Result()}
    for seed in seeds:
        hits: dict[str, int] = {}
        total = 0
        for j, (train, test) in enumerate(folds(data.name, data.n_all, data.labels, seed)):
            t0 = time.perf_counter()
            got = run(data, train, test, seed * 100 + j)
            out[name].seconds.append(time.perf_counter() - t0)
            main, extra = got if isinstance(got, tuple) else (got, {})
            for key, value in {name: main, **{f"{name}@{k}": v for k, v in extra.items()}}.items():
                hits[key] = hits.get(key, 0) + value
            total += len(test)
        for key, value in hits.items():
            out.setdefault(key, Result(seconds=out[name].seconds)).accs.append(value / total)
    return out


def table(dataset: str, results: dict[str, Result]) -> str:
    lines = [
        f"### {dataset}",
        "",
        "| arm | mean | std | worst | per seed | head s/fit |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        sd = statistics.stdev(r.accs) if len(r.accs) > 1 else 0.0
        per = " ".join(f"{a:.3f}" for a in r.accs)
        lines.append(
            f"| {name} | {statistics.mean(r.accs):.4f} | {sd:.4f} | {min(r.accs):.4f} "
            f"| {per} | {statistics.median(r.seconds):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--datasets", default="hymenoptera,clothing,digits")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="to add seeds to an earlier run")
    ap.add_argument("--arms", default="probe,probe_cv,recipe,mtl,mtl_feat,best")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=FutureWarning)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    for ds in args.datasets.split(","):
        arms = args.arms.split(",")
        data = Data.load(ds, args.alpha, features=not set(arms) <= set(CLI_ARMS))
        results: dict[str, Result] = {}
        for arm in arms:
            for key, r in evaluate_arm(arm, data, seeds, args.alpha).items():
                results[key] = r
                print(
                    f"  {ds} {key}: {statistics.mean(r.accs):.4f} ({time.strftime('%X')})",
                    flush=True,
                )
        print(table(ds, results), "\n", flush=True)


if __name__ == "__main__":
    main()

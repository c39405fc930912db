"""`mtl train` vs the naive Keras recipe: wall time, validation accuracy, peak RSS.

The naive arm is what a tutorial does: ``image_dataset_from_directory`` +
``preprocess_input`` + a frozen MobileNet base + the blog's head (Dense 1024,
1024, 512) + ``model.fit`` for 10 epochs, so every epoch decodes every JPEG and
runs the whole base again. The mtl arm is ``mtl train`` from the command line.

Both arms train on the same files and are scored on the same held-out files
(mtl's stable split, materialised as symlinked train/ and val/ folders for the
naive arm), each in its own subprocess so its peak RSS can be read with
``os.wait4``. Wall time includes each process's start-up (importing TensorFlow).

    python bench/train_vs_naive.py --data ../shared/data/hymenoptera/train --alpha 1.0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOAT32 = "mtl train --base-precision float32 (the float32 base, converted once)"

NAIVE = r"""
import json, os, sys, time
t0 = time.perf_counter()
import keras
import tensorflow as tf
from mtl.model import backbones
from mtl.assets import weights
train_dir, val_dir = sys.argv[1], sys.argv[2]
alpha, epochs, seed = float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
keras.utils.set_random_seed(seed)
size = 224
wfile = weights.resolve(backbones.weights_file("mobilenet", alpha, include_top=False, size=size))
pre = keras.applications.mobilenet.preprocess_input
def load(d, shuffle):
    ds = keras.utils.image_dataset_from_directory(
        d, image_size=(size, size), batch_size=32, label_mode="categorical",
        shuffle=shuffle, seed=seed)
    return ds.map(lambda x, y: (pre(x), y))
train_ds, val_ds = load(train_dir, True), load(val_dir, False)
base = keras.applications.MobileNet(
    input_shape=(size, size, 3), alpha=alpha, include_top=False, weights=None)
base.load_weights(str(wfile))
base.trainable = False
x = keras.layers.GlobalAveragePooling2D()(base.output)
x = keras.layers.Dense(1024, activation="relu")(x)
x = keras.layers.Dense(1024, activation="relu")(x)
x = keras.layers.Dense(512, activation="relu")(x)
out = keras.layers.Dense(2, activation="softmax")(x)
model = keras.Model(base.input, out)
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
t1 = time.perf_counter()
model.fit(train_ds, epochs=epochs, verbose=0)
t2 = time.perf_counter()
loss, acc = model.evaluate(val_ds, verbose=0)
print("RESULT " + json.dumps({"val_accuracy": float(acc), "val_loss": float(loss),
                              "train_seconds": t2 - t1, "startup_seconds": t1 - t0}))
"""


def run_arm(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (bytes) and stdout of one subprocess."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        sys.exit(f"{cmd[:4]} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss * 1024, stdout


def replicate(data: Path, dest: Path, k: int) -> Path:
    """K distinct variants of every photo (mirrored and/or cropped, re-encoded).

    Distinct bytes matter: mtl's feature cache is keyed by file content, and
    identical copies would be computed once, flattering mtl.
    """
    from PIL import Image, ImageOps

    for photo in sorted(data.glob("*/*")):
        with Image.open(photo) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
        for i in range(k):
            variant = ImageOps.mirror(img) if i % 2 else img
            shrink = 1.0 - 0.04 * (i // 2)
            w, h = variant.size
            variant = variant.crop((0, 0, max(1, int(w * shrink)), max(1, int(h * shrink))))
            out = dest / photo.parent.name / f"v{i}_{photo.stem}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            variant.save(out, quality=90)
    return dest


def trim(dest: Path, n: int) -> None:
    """Keep ``n`` photos of a replicated set: whole variants first, then the next variant
    a photo of each class in turn (the classes stay balanced)."""
    order = []
    for folder in sorted(p for p in dest.iterdir() if p.is_dir()):
        photos = sorted(folder.iterdir(), key=lambda f: (f.name.split("_")[0], f.name))
        for j, photo in enumerate(photos):
            order.append((photo.name.split("_")[0], j, folder.name, photo))
    for *_, photo in sorted(order, key=lambda t: (len(t[0]), t[0], t[1], t[2]))[n:]:
        photo.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared/data/hymenoptera/train"
    ap.add_argument("--data", default=str(default))
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the naive arm and mtl's default arm N times each, alternating, and "
        "compare medians (the machine's noise is +-10%% between runs)",
    )
    ap.add_argument("--quick", action="store_true", help="only the first run and the default arm")
    ap.add_argument(
        "--replicate",
        type=int,
        default=1,
        help="use K linked copies of every photo: a larger set for timing only "
        "(copies fall on both sides of the split, so accuracy means nothing then)",
    )
    ap.add_argument(
        "--photos",
        type=int,
        default=0,
        help="exactly N photos: replicated as --replicate does, as many times as needed, "
        "then trimmed (e.g. the issue's 780 and 3120)",
    )
    ap.add_argument(
        "--mtl-only",
        action="store_true",
        help="skip the naive arm (e.g. to time mtl alone on thousands of photos)",
    )
    args = ap.parse_args()
    if args.photos:
        count = sum(1 for _ in Path(args.data).glob("*/*"))
        args.replicate = max(args.replicate, -(-args.photos // max(1, count)))

    from mtl.data import dataset

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="3")
    with tempfile.TemporaryDirectory() as tmp:
        if args.replicate > 1:
            args.data = str(replicate(Path(args.data), Path(tmp) / "replicated", args.replicate))
            if args.photos:
                trim(Path(args.data), args.photos)
        ds = dataset.scan(args.data, seed=args.seed)
        split = Path(tmp) / "split"
        for it in ds.items:
            link = split / it.subset / ds.classes[it.label] / it.path.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(it.path.resolve())

        cache = str(Path(tmp) / "feature_cache")
        # A fresh mtl cache folder: the first run converts the base for LiteRT, as the
        # first run on any machine does (once per backbone, like the weights download).
        env["MTL_CACHE_DIR"] = str(Path(tmp) / "mtl_cache")
        defaults = "mtl train (defaults: int8 base, 2 views, 20 epochs, refit on every photo)"
        variants = [
            (
                "mtl train, first run on this machine (converts the int8 base, keeps the "
                "model skeleton: once)",
                [],
            ),
            (
                "mtl train --base-precision float32, first run (converts the float32 base: once)",
                ["--base-precision", "float32"],
            ),
            # The float32 runs follow the default ones in turn: their passes/s see the same load.
            *[(defaults, []), (FLOAT32, ["--base-precision", "float32"])] * args.repeat,
            *(
                []
                if args.quick
                else [
                    ("mtl train --views image (one view: the photo alone)", ["--views", "image"]),
                    (
                        "mtl train --base-engine keras (the base pass on Keras)",
                        ["--base-engine", "keras"],
                    ),
                    ("mtl train --cache-dir C (first run fills the cache)", ["--cache-dir", cache]),
                    (
                        "mtl train --cache-dir C (rerun: features from the cache)",
                        ["--cache-dir", cache],
                    ),
                ]
            ),
        ]
        naive_cmd = [sys.executable, "-c", NAIVE, str(split / "train"), str(split / "val"),
                     str(args.alpha), str(args.epochs), str(args.seed)]  # fmt: skip
        arms: dict[str, list[tuple[float, int, dict]]] = {}
        naive_runs: list[tuple[float, int, dict]] = []
        for i, (name, extra) in enumerate(variants):
            if name == defaults and not args.mtl_only:  # alternate: both see the same noise
                wall, rss, out = run_arm(naive_cmd, env)
                result = next(x for x in out.splitlines() if x.startswith("RESULT "))[7:]
                naive_runs.append((wall, rss, json.loads(result)))
            # mtl runs with its own defaults (epochs included): what a user gets.
            cmd = [sys.executable, "-m", "mtl", "train", args.data, "--alpha", str(args.alpha),
                   "--seed", str(args.seed), "--out", str(Path(tmp) / f"run{i}"), "--json",
                   *extra]  # fmt: skip
            wall, rss, out = run_arm(cmd, env)
            result = json.loads(out)
            config = json.loads((Path(result["run_dir"]) / "config.json").read_text())
            result["views"] = config["config"]["views"]
            arms.setdefault(name, []).append((wall, rss, result))

    n_train, n_val = len(ds.subset("train")), len(ds.subset("val"))
    print(f"data: {args.data} ({n_train} train / {n_val} val photos, same split for both arms)")
    print(
        f"MobileNet alpha {args.alpha}; naive: {args.epochs} epochs; mtl: its defaults; "
        f"CPU: {os.cpu_count()} cores"
    )
    print("wall: whole process incl. start-up (and TensorFlow's import where it happens);")
    print("train: image decoding, base forward passes and fit (naive: model.fit; mtl:")
    print("features + fit + refit). mtl's runs after the first import neither TensorFlow")
    print("nor Keras: LiteRT base, NumPy head, model.keras from the kept skeleton.")
    if args.repeat > 1 and naive_runs:
        walls = ", ".join(f"{w:.1f}" for w, _, _ in naive_runs)
        mine = ", ".join(f"{w:.1f}" for w, _, _ in arms[defaults])
        print(f"median of {args.repeat} alternating runs: naive {walls} s; mtl defaults {mine} s")
    print()
    print("base passes/s: photos x views through the base / the run's features seconds (the")
    print("pass's wall time, decoding and hashing included; on a first run, converting the")
    print("base too).")
    print()
    print("| arm | wall (s) | train (s) | wall speed-up | train speed-up | base passes/s "
          "| val acc | val loss | peak RSS (MiB) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    naive_wall = nf = float("nan")  # --mtl-only: no ratios
    if naive_runs:
        naive_wall, naive_rss, naive = median_run(naive_runs)
        nf = naive["train_seconds"]
        print(f"| naive Keras recipe (blog head, {args.epochs} epochs) | {naive_wall:.1f} "
              f"| {nf:.1f} | 1.0x | 1.0x | | {naive['val_accuracy']:.3f} "
              f"| {naive['val_loss']:.3f} | {naive_rss / 2**20:.0f} |")  # fmt: skip
    for name, runs in arms.items():
        wall, rss, m = median_run(runs)
        fit = float(sum(m["seconds"].get(k, 0.0) for k in ("features", "fit", "refit")))
        print(f"| {name} | {wall:.1f} | {fit:.1f} | {ratio(naive_wall, wall)} | {ratio(nf, fit)} "
              f"| {passes_per_second(m)} | {m['val']['accuracy']:.3f} | {m['val']['loss']:.3f} "
              f"| {rss / 2**20:.0f} |")  # fmt: skip


def ratio(baseline: float, mine: float) -> str:
    return "-" if baseline != baseline else f"{baseline / mine:.1f}x"  # NaN: --mtl-only


def passes_per_second(m: dict) -> str:
    """The base engine's passes/s in one run: every view of every computed photo is one
    pass (one call runs a photo's views), over the run's features seconds."""
    seconds = m["seconds"].get("features", 0.0)
    if not seconds or not m["cache"].get("base_forward_images"):
        return "-"  # every feature from the cache: no pass ran
    return f"{m['cache']['base_forward_images'] * len(m['views']) / seconds:.0f}"


def median_run(runs: list[tuple[float, int, dict]]) -> tuple[float, int, dict]:
    """The run with the median wall time (the upper one of an even count)."""
    return sorted(runs, key=lambda r: r[0])[len(runs) // 2]


if __name__ == "__main__":
    main()

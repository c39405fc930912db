"""How `mtl train`, `predict` and `review` scale with the number of photos: time, photos/s
and peak memory at two (or more) sizes, and the ratios between them.

Each size is a dataset of N photos built from re-encodings of the real photos in
``../shared/data/clothing`` (train + test, 8 classes, 917 photos): every copy is the
photo resized to a different scale and saved at a different JPEG quality, so no two
files share their bytes (the feature cache, keyed by a file's SHA-256, must compute
each one) while every one is still a real photograph of its class. Datasets are kept
in ``--workdir`` and reused by later runs.

Each command runs as its own process (``python -m mtl``, this checkout's code); its
peak memory is that process's peak resident set (``ru_maxrss`` of ``wait4``), its time
the wall time of the whole command (start-up included). The sizes run in turn, small
first; the commands of one size in the order train, predict, review (predict and
review read the dataset train just used, from the page cache, as the other sizes do).

``--simulate N`` adds a row for N photos without photos: the memory and time of the
steps of `mtl train` that grow with the photos once features exist (the feature store
and the NumPy head's epochs, the prior's class means, the scores), measured on random
features of the real shape, plus the base pass extrapolated from the measured
photos/s. It is what a machine without the disk for N re-encoded photos can say.

    python bench/scale.py --sizes 500 2000            # development: a few minutes
    python bench/scale.py --sizes 2500 10000          # the targets (about 10 minutes on 2 cores)
    python bench/scale.py --sizes 1000 --simulate 100000
    python bench/scale.py --precision clothing sign_digits --seeds 1 2 3   # float16 vs float32
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
# The targets of issue 35, from the smallest size to the largest: growth allowed.
TARGETS = {"train": 0.10, "review": 0.25, "predict": 0.25}
TRAIN_MEMORY_MB = 100  # train's peak may grow this much from 2.5k to 10k photos


def source_photos(source: Path) -> dict[str, list[Path]]:
    """The photos of each class of ``source`` (its class folders, or those of train/ and test/)."""
    splits = [source / s for s in ("train", "test", "val") if (source / s).is_dir()] or [source]
    found: dict[str, list[Path]] = {}
    for split in splits:
        for folder in sorted(p for p in split.iterdir() if p.is_dir()):
            found.setdefault(folder.name, []).extend(
                sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            )
    return found


def variant(photo: Path, copy: int) -> bytes:
    """``photo`` re-encoded the ``copy``-th way: scale 0.55-1.0, JPEG quality 60-95."""
    from PIL import Image

    h = hashlib.sha256(f"{photo.name}:{copy}".encode()).digest()
    scale = 0.55 + 0.45 * h[0] / 255 if copy else 1.0
    quality = 60 + h[1] % 36
    with Image.open(photo) as img:
        img = img.convert("RGB")
        if scale < 1.0:
            w, h2 = img.size
            img = img.resize((max(32, round(w * scale)), max(32, round(h2 * scale))))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def build(n: int, source: Path, workdir: Path) -> Path:
    """A dataset of ``n`` re-encoded photos (classes in turn), built once and kept."""
    dest = workdir / f"photos_{n}"
    done = dest / ".complete"
    if done.is_file():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    photos = source_photos(source)
    classes = sorted(photos)
    t0 = time.perf_counter()
    for i in range(n):
        c = classes[i % len(classes)]
        j = i // len(classes)
        photo = photos[c][j % len(photos[c])]
        copy = j // len(photos[c])
        out = dest / c / f"{photo.stem}_{copy:03d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(variant(photo, copy))
    done.write_text(f"{n} photos from {source}\n")
    print(f"built {n} photos in {dest} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return dest


def run(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """One mtl command in its own process: wall time, peak RSS and its ``--json``."""
    cmd = [sys.executable, "-m", "mtl", "-q", *args, "--json"]
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        # wait4: this child's own rusage (RUSAGE_CHILDREN would be the max of all so far).
        out_chunks = []
        assert proc.stdout is not None
        while chunk := proc.stdout.read(1 << 16):
            out_chunks.append(chunk)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode() if proc.stderr else ""
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    try:
        result = json.loads(b"".join(out_chunks))
    except ValueError:
        result = {}
    return {"wall": wall, "peak_mb": usage.ru_maxrss / 1024, "json": result}


def measure(n: int, data: Path, workdir: Path, commands: list[str], alpha: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if (SHARED / "weights").is_dir():
        env.setdefault("MTL_WEIGHTS_DIR", str(SHARED / "weights"))
    env.pop("MTL_PROGRESS", None)
    row: dict[str, Any] = {"photos": n}
    run_dir = workdir / f"run_{n}"
    common = ["--alpha", alpha]
    if "train" in commands or "predict" in commands:
        shutil.rmtree(run_dir, ignore_errors=True)
        row["train"] = run(["train", str(data), "--out", str(run_dir), *common], env)
    if "predict" in commands:
        row["predict"] = run(["predict", str(run_dir), str(data)], env)
    if "review" in commands:
        shutil.rmtree(data / "_review", ignore_errors=True)
        row["review"] = run(["review", str(data), *common], env)
        shutil.rmtree(data / "_review", ignore_errors=True)
    return row


def simulate(n: int, alpha: float, views: int, epochs: int, classes: int = 8) -> dict[str, Any]:
    """`mtl train`'s steps after the base pass on ``n`` photos of random features, in a
    child process: the real Session and NumPy engine (hold, the validated fit and the
    refit beside it, the ImageNet prior when its weights are in ../shared, the scores) on features
    put in the cache as the base pass puts them. Its peak RSS, time and seconds an epoch
    (the base pass is not run)."""
    code = f"""
import json, tempfile, time
from pathlib import Path
import numpy as np
from mtl.data import dataset, features
from mtl.pipeline.basepass import BasePass, cpu_devices
from mtl.pipeline.config import TrainConfig, validate
from mtl.training.headrun import NumpyEngine
from mtl.training.results import Hooks
from mtl.training.session import Session
n, views, dim, classes = {n}, {views}, {int(1024 * alpha)}, {classes}
tmp = Path(tempfile.mkdtemp())
top = Path({str(SHARED / "weights" / "mobilenet_1_0_224_tf.h5")!r})
cfg = validate(TrainConfig(epochs={epochs}, patience=0, prior=top.is_file()))
items = [dataset.Item(tmp / f"{{i}}.jpg", i % classes, "val" if i % 5 == 0 else "train")
         for i in range(n)]
ds = dataset.Dataset(tmp, [f"c{{i}}" for i in range(classes)], items, "split")
cache = features.FeatureCache(memory_bytes=1 << 40)
rng = np.random.default_rng(0)
centers = rng.random((classes, 1, dim), np.float32) * 3
for it in items:
    cache.put(str(it.path), centers[it.label] + rng.random((views, dim), np.float32))
session = Session(cfg, ds, tmp, cpu_devices(), tmp / "run", cache,
                  BasePass(cfg, tmp / "w.h5"), Hooks())
session.key_of = {{it.path: str(it.path) for it in items}}
session.top_file = top if top.is_file() else "off"
engine = NumpyEngine(session)
session.engine = engine
t0 = time.perf_counter()
with engine.training():
    engine.fit()
    session.post_fit()
fit = [h.seconds for h in session.history if h.phase == "train"]
print(json.dumps({{"train_seconds": time.perf_counter() - t0, "epoch_seconds": fit}}))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    cmd = [sys.executable, "-c", code]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"the simulation of {n} photos failed ({proc.returncode})")
    return {
        "wall": time.perf_counter() - t0,
        "peak_mb": usage.ru_maxrss / 1024,
        **json.loads(out.decode().strip().splitlines()[-1]),
    }


def precision(datasets: list[str], seeds: list[int], alpha: float, out: Path) -> None:
    """The head trained on float16 features (what the cache keeps) against float32, the
    same seeds and photos: validation accuracy and loss (on each arm's own features) and
    accuracy on the dataset's test/ photos (the saved model: float32 features both)."""
    import numpy as np

    sys.path.insert(0, str(ROOT))  # this checkout's mtl, not an installed one
    import mtl
    from mtl.data import features

    assert Path(mtl.__file__).is_relative_to(ROOT), mtl.__file__

    print("| dataset | seed | features | val accuracy | val loss | test accuracy |")
    print("|---|---:|---|---:|---:|---:|")
    gaps = []
    for name in datasets:
        data = SHARED / "data" / name
        for seed in seeds:
            accs = {}
            for dtype in (np.float32, np.float16):
                features.POOLED_DTYPE = dtype  # what FeatureCache.put keeps
                run = out / f"{name}_{seed}_{np.dtype(dtype).name}"
                shutil.rmtree(run, ignore_errors=True)
                r = mtl.train(data, alpha=alpha, seed=seed, out=run, progress=False)
                val, test = r.val_metrics or {}, r.test_metrics or {}
                accs[dtype] = (val.get("accuracy", 0.0), test.get("accuracy", 0.0))
                print(
                    f"| {name} | {seed} | {np.dtype(dtype).name} | {val.get('accuracy', 0):.4f} "
                    f"| {val.get('loss', 0):.4f} | {test.get('accuracy', 0):.4f} |",
                    flush=True,
                )
            gaps.append(accs[np.float16][1] - accs[np.float32][1])
    features.POOLED_DTYPE = np.float16
    print(
        f"\ntest accuracy, float16 minus float32: mean {np.mean(gaps):+.4f}, "
        f"worst {min(gaps):+.4f} over {len(gaps)} runs"
    )


def table(rows: list[dict[str, Any]], commands: list[str]) -> None:
    print(f"| photos | {' | '.join(f'{c} s | {c} photos/s | {c} peak MB' for c in commands)} |")
    print(f"|---:|{'---:|---:|---:|' * len(commands)}")
    for r in rows:
        cells = []
        for c in commands:
            m = r.get(c)
            cells += (
                [f"{m['wall']:.1f}", f"{r['photos'] / m['wall']:.0f}", f"{m['peak_mb']:.0f}"]
                if m
                else ["", "", ""]
            )
        print(f"| {r['photos']} | {' | '.join(cells)} |")


def ratios(rows: list[dict[str, Any]], commands: list[str]) -> bool:
    """Growth from the first size to the last, against the targets; False if one is missed."""
    small, big = rows[0], rows[-1]
    ok = True
    grow = big["photos"] / small["photos"]
    print(f"\nfrom {small['photos']} to {big['photos']} photos ({grow:.1f}x):")
    for c in commands:
        if c not in small or c not in big:
            continue
        per_small = small[c]["wall"] / small["photos"]
        per_big = big[c]["wall"] / big["photos"]
        growth = per_big / per_small - 1
        extra_mb = big[c]["peak_mb"] - small[c]["peak_mb"]
        per_photo_kb = extra_mb * 1024 / (big["photos"] - small["photos"])
        target = TARGETS.get(c)
        verdict = ""
        if target is not None:
            hit = growth <= target
            ok &= hit
            verdict = f" (target <= {target:+.0%}: {'met' if hit else 'MISSED'})"
        line = (
            f"  {c}: time per photo {per_small * 1000:.1f} -> {per_big * 1000:.1f} ms "
            f"({growth:+.1%}){verdict}; peak memory {small[c]['peak_mb']:.0f} -> "
            f"{big[c]['peak_mb']:.0f} MB ({extra_mb:+.0f} MB, {per_photo_kb:.1f} KB a photo)"
        )
        if c == "train":
            scaled = extra_mb * 7500 / max(1, big["photos"] - small["photos"])
            hit = scaled <= TRAIN_MEMORY_MB
            ok &= hit
            line += (
                f"; scaled to 2.5k -> 10k: {scaled:+.0f} MB "
                f"(target <= {TRAIN_MEMORY_MB} MB: {'met' if hit else 'MISSED'})"
            )
        print(line)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[500, 2000])
    parser.add_argument("--commands", nargs="+", default=["train", "predict", "review"])
    parser.add_argument("--source", type=Path, default=SHARED / "data" / "clothing")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mtl-scale"))
    parser.add_argument("--alpha", default="1.0")
    parser.add_argument("--simulate", type=int, nargs="*", default=[])
    parser.add_argument("--simulate-epochs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="Also write every measurement here.")
    parser.add_argument(
        "--precision",
        nargs="*",
        metavar="DATASET",
        help="Instead: float16 vs float32 features on these shared datasets "
        "(default clothing sign_digits eurosat), --seeds each.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.precision is not None:
        if (SHARED / "weights").is_dir():
            os.environ.setdefault("MTL_WEIGHTS_DIR", str(SHARED / "weights"))
        sets = args.precision or ["clothing", "sign_digits", "eurosat"]
        precision(sets, args.seeds, float(args.alpha), args.workdir / "precision")
        return
    rows = []
    # Once per machine mtl converts the base for LiteRT and keeps a model skeleton
    # (minutes with TensorFlow's import): done here first, so no size pays for it.
    if args.sizes:
        warm = build(48, args.source, args.workdir)
        warm_row = measure(48, warm, args.workdir, ["train"], args.alpha)
        print(f"warm-up: {warm_row['train']['wall']:.1f} s", file=sys.stderr)
    for n in sorted(args.sizes):
        data = build(n, args.source, args.workdir)
        print(f"measuring {n} photos...", file=sys.stderr)
        rows.append(measure(n, data, args.workdir, args.commands, args.alpha))
    if rows:
        table(rows, args.commands)
    ok = ratios(rows, args.commands) if len(rows) > 1 else True
    sims = []
    for n in args.simulate:
        sim = simulate(n, float(args.alpha), 2, args.simulate_epochs)
        sims.append({"photos": n, **sim})
        epoch = statistics.median(sim["epoch_seconds"])
        line = (
            f"\nsimulated {n} photos (random features, no photos: the steps after the base "
            f"pass, {args.simulate_epochs} epochs): peak {sim['peak_mb']:.0f} MB, "
            f"{sim['train_seconds']:.1f} s, {epoch:.1f} s an epoch (the default 30: "
            f"{30 * epoch / 60:.1f} min)"
        )
        if rows and "train" in rows[-1]:
            r = rows[-1]
            seconds = r["train"]["json"].get("seconds", {})
            rate = r["photos"] / seconds.get("features", r["train"]["wall"])
            line += (
                f"; the base pass at this machine's {rate:.0f} photos/s: {n / rate / 60:.0f} min"
            )
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "simulated": sims}, indent=1, default=str))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""The frozen base on LiteRT in float32, dynamic-range and full int8: passes/s and features.

Converts the default run's frozen part (MobileNet, the photo's central square at 256,
two views: the square resized to 224 and its central 224 crop) four ways, then in
one process:

- speed: the engines run interleaved, ``--rounds`` rounds of ``--batches`` batches
  of 16 photos each, so machine load hits all of them alike; photos/s and base
  passes/s (photos x views) per engine, and each against float32;
- quality: pooled features of real photos from every dataset in ``$MTL_DATA_DIR``
  (up to ``--photos`` per dataset, test split where there is one; digits from
  scikit-learn), cosine similarity to float32 per photo and view: mean, 1st
  percentile and worst.

The int8 base mtl ships is calibrated on generated images, then bias-corrected
(``mtl.model.calibration``, version 2); ``int8-v1`` is the same without bias correction
(calibration version 1, what models trained before it run), and ``int8-photos`` is
calibrated on 64 real photos (clothing/train, the issue's reference), also without
it, to show what real calibration would buy.

    export MTL_WEIGHTS_DIR=../shared/weights MTL_DATA_DIR=../shared/data
    PYTHONPATH=. python bench/int8_base.py --alpha 1.0
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from mtl.data.images import list_images, load_image
from mtl.litert import LiteModel
from mtl.model import calibration

BATCH = 16
SIDE = 256


def photos(root: Path, limit: int, seed: int = 0) -> list[Path]:
    found = list_images(root)
    rng = np.random.default_rng(seed)
    return [found[i] for i in sorted(rng.permutation(len(found))[:limit])]


def datasets(data: Path, limit: int) -> dict[str, list[Path]]:
    out = {}
    for name in ("hymenoptera", "clothing", "eurosat", "sign_digits"):
        folder = data / name / "test"
        if not folder.is_dir():
            folder = data / name / "train"
        if folder.is_dir():
            out[name] = photos(folder, limit)
    try:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        import acc_features as af

        out["digits"] = photos(af.digits_tree(), limit)
    except Exception as exc:  # noqa: BLE001 - digits need scikit-learn; the rest still runs
        print(f"(no digits: {exc})")
    return out


def load(paths: list[Path]) -> np.ndarray:
    return np.stack([load_image(p, SIDE, "center") for p in paths]).astype(np.float32)


def run(model: LiteModel, x: np.ndarray) -> np.ndarray:
    out = []
    for i in range(0, len(x), BATCH):
        chunk = x[i : i + BATCH]
        model.resize(len(chunk))
        out.append(model.run(chunk).astype(np.float32))
    return np.concatenate(out)


def convert_all(alpha: float, calib_photos: list[Path]) -> dict[str, tuple[bytes, float]]:
    from mtl import runtime
    from mtl.assets import weights
    from mtl.model import backbones
    from mtl.model.classifier import build_parts

    wfile = weights.resolve(backbones.weights_file("mobilenet", alpha, include_top=False))
    parts = build_parts(
        ["a", "b"], model="mobilenet", alpha=alpha, weights=wfile, size=224, head_units=[],
        dropout=0.0, freeze_layers=None, views=["image", "crop"], input_size=SIDE,
    )  # fmt: skip
    real = load(calib_photos)
    out = {}
    for name, fn in {
        "float32": lambda: calibration.convert(parts.extractor, SIDE, "float32"),
        "dynamic": lambda: calibration.convert(parts.extractor, SIDE, "dynamic"),
        "int8": lambda: calibration.convert(parts.extractor, SIDE, "int8"),
        "int8-v1": lambda: calibration.convert(parts.extractor, SIDE, "int8", 1),
        "int8-photos": lambda: runtime.tflite_flatbuffer(
            parts.extractor, (SIDE, SIDE, 3), quantize="int8", calibration=lambda: iter(real)
        ),
    }.items():
        t0 = time.perf_counter()
        out[name] = (fn(), time.perf_counter() - t0)
        print(f"converted {name}: {len(out[name][0]) / 2**20:.1f} MiB, {out[name][1]:.1f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--photos", type=int, default=150, help="per dataset, for the cosines")
    args = ap.parse_args()
    data = Path(os.environ.get("MTL_DATA_DIR", "../shared/data"))
    sets = datasets(data, args.photos)
    converted = convert_all(args.alpha, photos(data / "clothing" / "train", 64, seed=1))
    models = {k: LiteModel(v[0], threads=args.threads) for k, v in converted.items()}

    # Speed: interleaved, the same photos for every engine.
    x = load(sets["clothing"][: BATCH * args.batches])
    views = run(models["float32"], x[:1]).shape[1]
    seconds = dict.fromkeys(models, 0.0)
    for name in models:  # warm-up
        run(models[name], x[:BATCH])
    for _ in range(args.rounds):
        for name, model in models.items():
            t0 = time.perf_counter()
            run(model, x)
            seconds[name] += time.perf_counter() - t0
    n = len(x) * args.rounds
    print(f"\nspeed: {args.threads} threads, batch {BATCH}, {views} views a photo, {n} photos")
    print("| base | photos/s | base passes/s | vs float32 | file MiB | convert s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in models:
        rate = n / seconds[name]
        ratio = seconds["float32"] / seconds[name]
        size, took = len(converted[name][0]) / 2**20, converted[name][1]
        print(
            f"| {name} | {rate:.1f} | {rate * views:.1f} | {ratio:.2f}x | {size:.1f} | {took:.1f} |"
        )

    # Quality: cosine of pooled features to float32, per photo and view.
    print("\ncosine of pooled features to float32 (per photo and view): mean / 1st pct / worst")
    print("| dataset | photos | " + " | ".join(k for k in models if k != "float32") + " |")
    print("|---|---:|" + "---|" * (len(models) - 1))
    for ds, paths in sets.items():
        px = load(paths)
        ref = run(models["float32"], px).reshape(-1, run(models["float32"], px[:1]).shape[-1])
        cells = []
        for name, model in models.items():
            if name == "float32":
                continue
            got = run(model, px).reshape(ref.shape)
            cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
            cells.append(f"{cos.mean():.4f} / {np.percentile(cos, 1):.4f} / {cos.min():.4f}")
        print(f"| {ds} | {len(paths)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""`mtl predict` against the blog's loop, and the exported TFLite models, in one run.

    python bench/predict_vs_naive.py --data ../shared/data/hymenoptera/train --alpha 0.75

The blog's loop loads one image and calls ``model.predict`` on it, image after
image. mtl decodes in threads and runs batches of 32. Both arms use the same
trained model (frozen ImageNet MobileNet + a head trained on half the photos,
unless --model is given) and the same pixels (mtl's loader), so the labels
must be identical; the run fails if they are not. Then the same photos go
through the exported float and int8 TFLite models (LiteRT, no TensorFlow), and
fresh processes show the cold start of `mtl predict` on model.keras and on
model.tflite for one photo. A model.keras from `mtl train` (``--model``) with its whole
base frozen also runs without Keras (its LiteRT base and a NumPy head,
:mod:`mtl.inference.litekeras`): both ways are timed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run the checkout's mtl, and reach tests/trained_model.py

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if (ROOT.parent / "shared" / "weights").is_dir():
    os.environ.setdefault("MTL_WEIGHTS_DIR", str(ROOT.parent / "shared" / "weights"))


def naive_loop(
    model, paths: list[Path], size: int, class_names: list[str], fit: str = "squash"
) -> list[str]:  # type: ignore[no-untyped-def]
    """The blog's loop: one image, one model.predict, repeat (the model's own fit)."""
    from mtl.data.images import load_image

    labels = []
    for path in paths:
        x = np.expand_dims(load_image(path, size, fit).astype("float32"), 0)
        probs = model.predict(x, verbose=0)
        labels.append(class_names[int(np.argmax(probs[0]))])
    return labels


def cold_start(model: Path, photo: Path, engine: str = "auto") -> float:
    """Wall time of a fresh `python -m mtl predict MODEL PHOTO --json` process."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mtl", "predict", str(model), str(photo), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "MTL_PREDICT_ENGINE": engine},
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"mtl predict {model} failed: {done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/hymenoptera/train")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument(
        "--model", type=Path, help="a model.keras from mtl train (default: make one)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from mtl.data.images import list_images
    from mtl.deploy.export import export_model
    from mtl.inference.predict import open_model, predict_paths

    paths = list_images(args.data)
    if len(paths) < 150:
        raise SystemExit(f"need at least 150 photos, {args.data} has {len(paths)}")
    work = Path(tempfile.mkdtemp(prefix="mtl-bench-"))
    if args.model is None:
        from tests.trained_model import make_trained_model

        print(f"training a head on half of {args.data} ...", file=sys.stderr)
        args.model = make_trained_model(args.data, work, alpha=args.alpha).path
    print("exporting float and int8 TFLite ...", file=sys.stderr)
    lite = work / "model.tflite"
    lite8 = work / "model.int8.tflite"
    export_model(args.model, out=lite)
    export_model(args.model, quantize="int8", representative=args.data, out=lite8)

    # Keras runs any model.keras; a model from `mtl train` with its base frozen also runs on
    # its LiteRT base and a NumPy head when this machine converted that base.
    os.environ["MTL_PREDICT_ENGINE"] = "keras"
    keras_predictor = open_model(args.model)
    os.environ["MTL_PREDICT_ENGINE"] = "auto"
    lite_keras = open_model(args.model)
    names = keras_predictor.class_names
    size = keras_predictor.image_size
    from mtl.model.modelio import load_model

    model = load_model(args.model).model
    # Warm both arms up (graph tracing) outside the timings.
    naive_loop(model, paths[:2], size, names, keras_predictor.fit)
    predict_paths(keras_predictor, paths[:2], batch_size=args.batch_size)

    rows = []
    start = time.perf_counter()
    naive_labels = naive_loop(model, paths, size, names, keras_predictor.fit)
    t_naive = time.perf_counter() - start
    rows.append(("blog loop: load 1, model.predict, repeat", t_naive, naive_labels))

    def timed_mtl(predictor) -> tuple[float, list[str]]:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        results, _ = predict_paths(predictor, paths, batch_size=args.batch_size)
        elapsed = time.perf_counter() - start
        return elapsed, [r.predictions[0].label for r in results]

    t, labels = timed_mtl(keras_predictor)
    rows.append((f"mtl predict model.keras on Keras (batches of {args.batch_size})", t, labels))
    if lite_keras.engine == "litert":
        predict_paths(lite_keras, paths[:2])
        t, labels = timed_mtl(lite_keras)
        rows.append(("mtl predict model.keras on its LiteRT base + NumPy head", t, labels))
    for path, what in ((lite, "float32"), (lite8, "int8")):
        predictor = open_model(path)
        predict_paths(predictor, paths[:2])
        t, labels = timed_mtl(predictor)
        rows.append(
            (f"mtl predict model{'.int8' if what == 'int8' else ''}.tflite ({what})", t, labels)
        )

    n = len(paths)
    print(
        f"\n{n} photos from {args.data}; MobileNet v1 alpha {args.alpha}, {size}x{size}; "
        f"{os.cpu_count()} CPU cores"
    )
    print("\n| arm | seconds | images/s | speed-up | labels equal to blog loop |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, seconds, labels in rows:
        same = sum(a == b for a, b in zip(labels, naive_labels, strict=True))
        print(
            f"| {name} | {seconds:.2f} | {n / seconds:.1f} | {t_naive / seconds:.1f}x | "
            f"{same}/{n} |"
        )
    if rows[1][2] != naive_labels:
        raise SystemExit("FAIL: mtl predict and the blog loop disagree on some labels")

    photo = paths[0]
    cold = [
        ("mtl predict model.keras one.jpg (Keras)", cold_start(args.model, photo, "keras")),
        *(
            [("mtl predict model.keras one.jpg (LiteRT + NumPy)", cold_start(args.model, photo))]
            if lite_keras.engine == "litert"
            else []
        ),
        ("mtl predict model.tflite one.jpg", cold_start(lite, photo)),
        ("mtl predict model.int8.tflite one.jpg", cold_start(lite8, photo)),
    ]
    print("\n| cold start (fresh process, one photo) | seconds |")
    print("| --- | ---: |")
    for name, seconds in cold:
        print(f"| {name} | {seconds:.2f} |")
    sizes = [(p.name, p.stat().st_size) for p in (Path(args.model), lite, lite8)]
    print("\n| file | size |\n| --- | ---: |")
    for name, size_bytes in sizes:
        print(f"| {name} | {size_bytes / 2**20:.1f} MiB |")


if __name__ == "__main__":
    main()

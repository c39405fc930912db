"""`model.keras` in plain Keras, per photo, against a float Keras MobileNet of the same alpha.

    python bench/keras_speed.py --model runs/x/model.keras
    python bench/keras_speed.py            # trains a short default run on 8 photos a class

What a user of plain Keras does (``keras.models.load_model`` + ``predict`` on one
decoded photo at a time), timed for the model from `mtl train` and for
``keras.applications.MobileNet`` (float32, the same alpha and size, its ImageNet top)
in the same process, on the same photos. Prints both medians and their ratio (the
issue's aim: at most 2x). The model carries its views (``image`` and ``crop`` by
default: the base runs once per view) and, for an int8-base run, the int8 network as
float arithmetic on its grids (mtl/model/int8keras.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SHARED = ROOT.parent / "shared"
if (SHARED / "weights").is_dir():
    os.environ.setdefault("MTL_WEIGHTS_DIR", str(SHARED / "weights"))


def per_photo(model, photos: list[np.ndarray], repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of ``model.predict`` on one photo (after one warm-up call)."""
    model.predict(photos[0][None], verbose=0)
    times = []
    for _ in range(repeat):
        for photo in photos:
            start = time.perf_counter()
            model.predict(photo[None], verbose=0)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="a model.keras (default: train one)")
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    data = SHARED / "data" / "hymenoptera" / "train"
    model_path = args.model
    if model_path is None:
        from typer.testing import CliRunner

        from mtl.cli import app
        from tests.test_train import subset

        work = Path(tempfile.mkdtemp(prefix="keras_speed."))
        small = subset(work / "data", 8)
        run = work / "run"
        result = CliRunner().invoke(
            app, ["train", str(small), "--epochs", "3", "--out", str(run), "--json"]
        )
        assert result.exit_code == 0, result.stderr
        model_path = run / "model.keras"
    with zipfile.ZipFile(model_path) as z:
        info = json.loads(z.read("mtl.json"))["info"]
    alpha, size = float(info.get("alpha", 1.0)), int(info.get("image_size", 224))
    base = info.get("frozen_base") or {}

    import keras
    from PIL import Image

    from mtl.data.images import list_images

    files = list_images(data)[:: max(1, len(list_images(data)) // args.photos)][: args.photos]
    photos = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    squares = [np.asarray(Image.open(f).convert("RGB").resize((size, size))) for f in files]

    model = keras.models.load_model(model_path)
    # random weights: a network's speed does not depend on its weights' values
    baseline = keras.applications.MobileNet(
        input_shape=(size, size, 3), alpha=alpha, weights=None, include_top=True
    )
    mtl_s = per_photo(model, photos, args.repeat)
    float_s = per_photo(baseline, squares, args.repeat)
    print(
        f"model.keras ({base.get('precision', 'float32')} base, views "
        f"{'+'.join(base.get('views', ['image']))}): {mtl_s * 1000:.1f} ms a photo; "
        f"float Keras MobileNet alpha {alpha} at {size}: {float_s * 1000:.1f} ms; "
        f"ratio {mtl_s / float_s:.2f}x (aim: <= 2x)"
    )


if __name__ == "__main__":
    main()

"""Do int8 base features train as good a head as float32 ones? A feature-level probe.

Every photo read as `mtl train` reads it (the central square at 256), through three
LiteRT bases converted here exactly as mtl converts them (``calibration.convert``):

| base | what |
|---|---|
| ``float32`` | the float32 base (``--base-precision float32``) |
| ``int8`` | the int8 base mtl trains on by default (pooling inside the int8 graph) |
| ``int8 pool-float`` | the same int8 network up to the last block, pooled in float32 |
|  | outside the graph (does rounding the pooled features to int8 cost anything?) |

Then mtl's NumPy head on the two views' features (bench/views_probe.py's ``score``:
Dense 512, dropout 0.5, Adam 1e-3, batch 32, 30 epochs, no validation split, prior or
refit), bench/accuracy.py's splits, ``--seeds`` seeds: mean, worst and per seed.

    MTL_WEIGHTS_DIR=../shared/weights MTL_DATA_DIR=../shared/data PYTHONPATH=. \\
        python bench/int8_probe.py --datasets digits,clothing --seeds 6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import views_probe as vp  # noqa: E402


def bases(alpha: float) -> dict[str, tuple[bytes, bool]]:
    """name -> (flatbuffer, whether its output is maps to pool here)."""
    from mtl.assets import weights
    from mtl.model import backbones, calibration, classifier
    from mtl.runtime import keras

    k = keras()
    wfile = weights.resolve(backbones.weights_file("mobilenet", alpha, include_top=False))
    views = ("image", "crop")
    parts = classifier.build_parts(
        ["a", "b"], model="mobilenet", alpha=alpha, weights=wfile, size=224, head_units=[],
        dropout=0.0, freeze_layers=None, views=views, input_size=256,
    )  # fmt: skip
    image = k.Input((256, 256, 3))
    x = backbones.preprocessing("mobilenet")(image)
    maps = []
    for layers in classifier.view_layers(views, 224, 256).values():
        y = x
        for layer in layers:
            y = layer(y, training=False)
        y = parts.backbone(y)
        maps.append(k.layers.Reshape((1, *y.shape[1:]))(y))
    unpooled = k.Model(image, k.layers.Concatenate(axis=1)(maps))
    return {
        "float32": (calibration.convert(parts.extractor, 256, "float32"), False),
        "int8": (calibration.convert(parts.extractor, 256, "int8"), False),
        "int8 pool-float": (calibration.convert(unpooled, 256, "int8"), True),
    }


def run(source: bytes, files: list[Path], pool: bool) -> np.ndarray:
    from mtl.data.images import iter_batches
    from mtl.litert import LiteModel

    lite, out = LiteModel(source), []
    for batch in iter_batches(files, 256, 32, fit="center"):
        assert not batch.failures, batch.failures
        lite.resize(len(batch.pixels))
        got = lite.run(batch.pixels.astype(np.float32))
        out.append(got.mean(axis=(2, 3)) if pool else got)
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=0.75)
    ap.add_argument("--datasets", default="digits,clothing")
    ap.add_argument("--seeds", type=int, default=6)
    args = ap.parse_args()
    import accuracy as acc

    converted = bases(args.alpha)
    print("| dataset | base | mean | worst | per seed |")
    print("|---|---|---:|---:|---|")
    for name in args.datasets.split(","):
        data = acc.Data.load(name, args.alpha, features=False)
        for base, (source, pool) in converted.items():
            feats = run(source, data.files, pool)
            rows = [feats[:, 0], feats[:, 1]]
            scores = [vp.score(data, rows, seed) for seed in range(args.seeds)]
            per = " ".join(f"{s:.3f}" for s in scores)
            print(f"| {name} | {base} | {np.mean(scores):.4f} | {min(scores):.4f} | {per} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

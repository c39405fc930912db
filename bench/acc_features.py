"""Pooled MobileNet v1 features of every image, per dataset and per view, cached as .npy.

Used by bench/accuracy.py. A *view* is how a file becomes 224x224 RGB pixels:

- ``resize``: ``mtl.data.images.load_image`` (whole image, bilinear antialiased, aspect not kept)
- ``crop``: short side resized to 224 (bilinear), then the central 224x224
- ``crop256``: short side resized to 256, then the central 224x224 (ImageNet eval style)
- ``<view>_flip``: the same pixels mirrored left-right
- ``sq256r``: the central square at 256, resized to 224 by Keras' ``Resizing`` (exactly
  the image view of mtl's default 256 input; its crop view is ``crop256``)
- ``f256``, ``w256``, ``w256w``: one base pass on the whole 256 square (an 8x8 map),
  pooled over all cells, the central 6x6, or the central 7x7 box (see :func:`pooled`):
  two views for the price of 1.3 passes instead of 2

The base is ``keras.applications.MobileNet(alpha, include_top=False)`` on
``x / 127.5 - 1`` with global average pooling: what ``mtl train`` caches.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SIZE = 224
SHARED = Path(__file__).resolve().parents[2] / "shared"  # ../shared beside the checkout
DATA = Path(os.environ.get("MTL_BENCH_DATA", SHARED / "data"))
CACHE = Path(os.environ.get("MTL_BENCH_CACHE", "/tmp/acc-cache"))
PHOTO_VIEWS = ("resize", "resize_flip", "crop", "crop_flip", "crop256", "crop256_flip", "mcrop",
               "mcrop_flip", "sresize", "scrop", "cmcrop", "map256",
               "sq256r")  # fmt: skip
# map256: the base's (8, 8, d) feature map of the central 256x256 square, not pooled;
# POOLED_VIEWS derive from it without another base pass (see pooled()).
POOLED_VIEWS = ("f256", "w256", "w256w")
# mcrop: what mtl's saved model computes (mtl.model.classifier.view_layers): the central
# 87.5% of the 224x224 input (the whole photo, squashed), resized back with Keras' Resizing.


@dataclass
class Split:
    """Files and integer labels of one folder-per-class tree."""

    files: list[Path]
    labels: np.ndarray
    classes: list[str]


def read_tree(root: Path) -> Split:
    from mtl.data.images import list_images

    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, labels = [], []
    for i, name in enumerate(classes):
        for f in list_images(root / name):
            files.append(f)
            labels.append(i)
    return Split(files, np.array(labels), classes)


def digits_tree() -> Path:
    """sklearn's 8x8 digits as 8x8 RGB PNGs, one folder per class (mtl's loader upsizes them)."""
    from sklearn.datasets import load_digits

    root = CACHE / "digits-png"
    done = root / ".complete"
    if done.exists():
        return root
    d = load_digits()
    for i, (img, y) in enumerate(zip(d.images, d.target, strict=True)):
        folder = root / f"d{y}"
        folder.mkdir(parents=True, exist_ok=True)
        grey = np.clip(img / 16.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
        Image.fromarray(grey).convert("RGB").save(folder / f"{i:04d}.png")
    done.touch()
    return root


def dataset_splits(name: str) -> dict[str, Split]:
    """The folder trees of a dataset: ``all`` (split by the benchmark) or ``train``/``test``."""
    if name == "hymenoptera":
        return {"all": read_tree(DATA / "hymenoptera/train")}
    if name in ("clothing", "eurosat", "sign_digits"):
        return {p: read_tree(DATA / name / p) for p in ("train", "test")}
    if name == "digits":
        return {"all": read_tree(digits_tree())}
    raise SystemExit(f"unknown dataset {name}")


def views_for(name: str) -> tuple[str, ...]:
    """The views bench/accuracy.py can use (map256 is only pooled). On square digits
    ``crop`` equals ``resize``; kept for uniformity."""
    return tuple(v for v in PHOTO_VIEWS if v != "map256") + POOLED_VIEWS


def load_view(path: Path, view: str) -> np.ndarray:
    """uint8 (224, 224, 3) pixels of ``path`` as ``view`` sees it."""
    from mtl.data.images import load_image, to_rgb

    base = view.removesuffix("_flip")
    if base in ("map256", "sq256r"):  # the central square at 256, whole
        base = "sq256"
    if base == "cmcrop":  # mtl's crop view of the central square (cropped in compute())
        base = "crop"
    if base in ("resize", "mcrop"):
        px = load_image(path, SIZE)  # mcrop: cropped in compute(), as the model does
    elif base in ("sresize", "scrop"):  # the whole photo squashed to 256x256
        px = load_image(path, 256)
        if base == "scrop":  # its central 224x224 (87.5%): no resampling
            px = px[16:240, 16:240]
    else:
        short = {"crop": SIZE, "crop256": 256, "sq256": 256}[base]
        side = 256 if base == "sq256" else SIZE
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (short, short))
            img.seek(0)
            img.load()
            img = to_rgb(ImageOps.exif_transpose(img))
            w, h = img.size
            s = short / min(w, h)
            nw, nh = max(short, round(w * s)), max(short, round(h * s))
            img = img.resize((nw, nh), Image.Resampling.BILINEAR)
            left, top = (nw - side) // 2, (nh - side) // 2
            px = np.asarray(img.crop((left, top, left + side, top + side)), dtype=np.uint8)
    return px[:, ::-1] if view.endswith("_flip") else px


_BASES: dict = {}


def base_model(alpha: float, side: int = SIZE, pooling: str | None = "avg"):
    key = (alpha, side, pooling)
    if key not in _BASES:
        import keras

        weights = Path(os.environ.get("MTL_WEIGHTS_DIR", SHARED / "weights"))
        tag = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}[alpha]
        file = weights / f"mobilenet_{tag}_224_tf_no_top.h5"
        _BASES[key] = keras.applications.MobileNet(
            input_shape=(side, side, 3), alpha=alpha, include_top=False, weights=str(file),
            pooling=pooling,
        )  # fmt: skip
    return _BASES[key]


def pooled(fmap: np.ndarray, view: str) -> np.ndarray:
    """A pooled view of (n, 8, 8, d) maps: ``f256`` all cells, ``w256`` the central 6x6,
    ``w256w`` the central 7x7 box (edge cells half weight: what a 224 window covers)."""
    if view == "f256":
        return fmap.mean(axis=(1, 2))
    if view == "w256":
        return fmap[:, 1:7, 1:7].mean(axis=(1, 2))
    w = np.array([0.5, 1, 1, 1, 1, 1, 1, 0.5], dtype=np.float32)
    w2 = np.outer(w, w) / np.outer(w, w).sum()
    return np.einsum("nhwd,hw->nd", fmap, w2)


def model_crop(x: np.ndarray) -> np.ndarray:
    import keras

    side = round(SIZE * 0.875)
    x = keras.layers.CenterCrop(side, side)(x, training=False)
    return np.asarray(
        keras.layers.Resizing(SIZE, SIZE, interpolation="bilinear")(x, training=False)
    )


def compute(files: list[Path], view: str, alpha: float, batch: int = 32) -> np.ndarray:
    from concurrent.futures import ThreadPoolExecutor

    net = base_model(alpha, 256, None) if view == "map256" else base_model(alpha)
    out = []
    with ThreadPoolExecutor(2) as pool:
        for i in range(0, len(files), batch):
            px = np.stack(list(pool.map(lambda f: load_view(f, view), files[i : i + batch])))
            x = px.astype(np.float32) / 127.5 - 1.0
            if view.startswith(("mcrop", "cmcrop")):
                x = model_crop(x)
            elif view in ("sresize", "sq256r"):  # 256 -> 224 as the model's Resizing layer
                import keras

                x = np.asarray(keras.layers.Resizing(SIZE, SIZE, interpolation="bilinear")(x))
            out.append(np.asarray(net(x, training=False)))
    return np.concatenate(out).astype(np.float32)


def features(dataset: str, part: str, view: str, alpha: float, split: Split) -> np.ndarray:
    """Cached (n, d) pooled features of ``split``'s files under ``view``."""
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = f"{dataset}-{part}-{view}-alpha{alpha}"
    npy, index = CACHE / f"{stem}.npy", CACHE / f"{stem}.json"
    names = [str(f) for f in split.files]
    if npy.exists() and index.exists() and json.loads(index.read_text()) == names:
        return np.load(npy)
    x = compute(split.files, view, alpha)
    np.save(npy, x)
    index.write_text(json.dumps(names))
    return x


def all_features(dataset: str, alpha: float) -> dict[str, dict[str, np.ndarray]]:
    """``{part: {view: features}}`` for a dataset, computing what is not cached."""
    import time

    out: dict[str, dict[str, np.ndarray]] = {}
    for part, split in dataset_splits(dataset).items():
        out[part] = {}
        for view in PHOTO_VIEWS:
            t0 = time.perf_counter()
            out[part][view] = features(dataset, part, view, alpha, split)
            if view == "map256":
                fmap = out[part].pop(view)
                out[part].update({v: pooled(fmap, v) for v in POOLED_VIEWS})
            dt = time.perf_counter() - t0
            if dt > 1:
                print(f"  features {dataset}/{part}/{view}: {len(split.files)} images, {dt:.0f}s")
    return out


if __name__ == "__main__":
    import sys

    for ds in sys.argv[1:] or ["hymenoptera", "clothing", "digits"]:
        all_features(ds, 0.75)

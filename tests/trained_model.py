"""A real trained model for the predict/evaluate/export tests and the benchmark.

Real ImageNet MobileNet weights (frozen), and a dense head really trained on
pooled features of a deterministic half of the hymenoptera photos; the other
half is the validation set. Features are computed once, so this takes about
as long as one forward pass over the photos.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASSES = ["ants", "bees"]


@dataclass
class TrainedModel:
    path: Path  # model.keras
    class_names: list[str]
    train_files: list[Path]
    train_labels: np.ndarray
    val_files: list[Path]
    val_labels: np.ndarray
    val_probabilities: np.ndarray  # the Keras model's output on val_files
    train_dir: Path  # folder-per-class links to train_files
    val_dir: Path  # folder-per-class links to val_files


def split(data: Path) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Every 2nd photo of each class to train, the rest to validation (stratified, fixed)."""
    from mtl.data.images import list_images

    train, val = [], []
    for label, name in enumerate(CLASSES):
        files = list_images(data / name)
        train += [(f, label) for f in files[0::2]]
        val += [(f, label) for f in files[1::2]]
    return train, val


def _link_tree(items: list[tuple[Path, int]], root: Path) -> Path:
    for f, label in items:
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f.name).symlink_to(f.resolve())
    return root


def make_trained_model(
    data: Path, out_dir: Path, alpha: float = 1.0, epochs: int = 30, seed: int = 0
) -> TrainedModel:
    from mtl.assets import weights
    from mtl.data.images import load_image
    from mtl.model import backbones
    from mtl.model.classifier import build_parts
    from mtl.model.modelio import ModelInfo, model_meta, save_model
    from mtl.runtime import keras

    k = keras()
    k.utils.set_random_seed(seed)
    wfile = weights.resolve(
        backbones.weights_file("mobilenet", alpha, include_top=False),
        os.environ.get("MTL_WEIGHTS_DIR"),
        download=False,
    )
    info = ModelInfo(model="mobilenet", alpha=alpha, image_size=224, fit="center")
    model = build_parts(
        CLASSES, model="mobilenet", alpha=alpha, weights=wfile, size=224,
        head_units=(), dropout=0.2, freeze_layers=None,
    ).model  # fmt: skip
    size = 224  # the model takes any photo; mtl's loader hands it this square
    features = k.Model(model.input, model.get_layer("pool").output)
    train, val = split(data)

    def embed(items: list[tuple[Path, int]]) -> np.ndarray:
        chunks = []
        for i in range(0, len(items), 32):
            pixels = np.stack([load_image(f, size, "center") for f, _ in items[i : i + 32]])
            chunks.append(np.asarray(features.predict_on_batch(pixels.astype("float32"))))
        return np.concatenate(chunks)

    x_train, x_val = embed(train), embed(val)
    y_train = np.array([y for _, y in train])
    y_val = np.array([y for _, y in val])
    head = model.get_layer("head")
    head.compile(
        optimizer=k.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    head.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    val_probs = np.asarray(head.predict_on_batch(x_val))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = save_model(model, out_dir / "model.keras", model_meta(list(CLASSES), info))
    return TrainedModel(
        path=path,
        class_names=list(CLASSES),
        train_files=[f for f, _ in train],
        train_labels=y_train,
        val_files=[f for f, _ in val],
        val_labels=y_val,
        val_probabilities=val_probs,
        train_dir=_link_tree(train, out_dir / "train"),
        val_dir=_link_tree(val, out_dir / "val"),
    )

"""What every export says about its model, built once for all formats (:class:`ModelFacts`).

A format's writer takes its class names, fit, size, normalization, mtl version and the
source's SHA-256 from here, so no two exports of one model can tell different stories.
Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtl import files
from mtl.errors import UsageError

# What the photo's pixels are scaled by before the network (inside every export): none,
# the network normalises inside. In TFLite metadata's terms (x - mean) / std.
NORMALIZATION = {"mean": [0.0], "std": [1.0]}
HOW = {
    "center": "the central square (the short side's length) cut out, then resized to the size",
    "squash": "the whole photo resized to the square (aspect not kept)",
}


def labels_text(class_names: list[str]) -> str:
    """One name per line; refuses names the reader could not give back exactly."""
    from mtl.data.dataset import label_problem

    for name in class_names:
        why = label_problem(name)
        if why:
            raise UsageError(f"class name {name!r} cannot be written to a labels file: {why}")
    return "".join(f"{name}\n" for name in class_names)


@dataclass(frozen=True)
class ModelFacts:
    """The model as every export describes it."""

    class_names: tuple[str, ...]
    fit: str  # mtl.data.images.FITS
    image_size: int  # the square side the network sees
    mtl_version: str
    sha256: str  # of the source model.keras
    labels: str  # labels_text(class_names): refused at build time when a name can't be one

    @classmethod
    def of(cls, loaded: Any, source: Path) -> ModelFacts:
        from mtl._version import __version__

        names = list(loaded.class_names)
        return cls(
            class_names=tuple(names),
            fit=loaded.fit,
            image_size=int(loaded.image_size),
            mtl_version=__version__,
            sha256=files.sha256(source),
            labels=labels_text(names),
        )

    def input_contract(self, *, dtype: str, any_size: bool) -> dict[str, Any]:
        """What an export takes, in words a deployer can act on (in its metadata).
        ``any_size``: a decoded photo of any height and width, the fit inside; else the
        square the fit makes, made by the caller (or a photo resized to it)."""
        size = self.image_size
        shape: list[Any] = ["batch", "height", "width", 3] if any_size else ["batch", size, size, 3]
        return {
            "shape": shape,
            "layout": "NHWC",
            "dtype": dtype,
            "pixels": "RGB, 0-255 (not scaled: the model normalises inside)",
            # Decoded pixels carry no EXIF: the model cannot turn a photo a phone stored sideways.
            "orientation": "upright: apply the photo's EXIF orientation before anything else "
            "(Python: img = PIL.ImageOps.exif_transpose(img))",
            "fit": self.fit,
            "size": size,
            "resize": (
                f"inside the model: {HOW[self.fit]} ({size}x{size}), bilinear, antialiased"
                if any_size
                else f"by the caller: {HOW[self.fit]} ({size}x{size}), bilinear, antialiased"
            ),
            "output": "class probabilities, in class_names order",
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "class_names": list(self.class_names),
            "fit": self.fit,
            "image_size": self.image_size,
            "normalization": NORMALIZATION,
            "mtl_version": self.mtl_version,
            "model_sha256": self.sha256,
        }

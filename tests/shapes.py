"""Photos of every shape a deployed model meets, made from real photos: a landscape, a
portrait, a 3:1 panorama (central crops of the photo at those aspects, full resolution)
and a 48x36 thumbnail (the whole photo, shrunk). For the export agreement tests and
bench/export_agreement.py."""

from __future__ import annotations

from pathlib import Path

SHAPES = ("landscape", "portrait", "panorama", "thumbnail")
_ASPECTS = {"landscape": 4 / 3, "portrait": 3 / 4, "panorama": 3.0}


def _central(img, aspect: float):  # type: ignore[no-untyped-def]
    """The largest central crop of ``img`` of width / height ``aspect``."""
    w, h = img.size
    if w / h > aspect:
        cw, ch = round(h * aspect), h
    else:
        cw, ch = w, round(w / aspect)
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def odd_shapes(sources: list[Path], out: Path) -> dict[str, list[Path]]:
    """Each source photo in each of :data:`SHAPES`, as JPEG files under ``out``."""
    from PIL import Image, ImageOps

    made: dict[str, list[Path]] = {s: [] for s in SHAPES}
    out.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(sources):
        with Image.open(source) as opened:
            img = ImageOps.exif_transpose(opened).convert("RGB")
        for shape in SHAPES:
            if shape == "thumbnail":
                view = img.resize((48, 36), Image.Resampling.LANCZOS)
            else:
                view = _central(img, _ASPECTS[shape])
            path = out / f"{i:04d}-{source.stem[:40]}-{shape}.jpg"
            view.save(path, quality=92)
            made[shape].append(path)
    return made

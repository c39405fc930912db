"""Finding and decoding images: the one loader every command shares.

Every image goes through :func:`load_image`, so classify, train and predict
see exactly the same pixels for the same file.
"""

from __future__ import annotations

import collections
import glob
import io
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from mtl.errors import ImageError, UsageError
from mtl.files import NotRegularFile, file_kind, open_regular  # the one way to open a file

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Photos `mtl review --apply` set aside (and its record): inside a data folder, never a
# class and never an input of any folder scan (train, evaluate, predict, export).
REVIEW_FOLDER = "_review"

# Pillow warns at ~89 MP and refuses at twice that; a photo larger than this is
# almost surely a decompression bomb, so refuse it before decoding a byte.
MAX_PIXELS = 100_000_000

# A truncated file must fail loudly, never train on half a grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# How a photo becomes a model's square input. "center": the short side resized to the
# size, then the central square (the aspect kept, as MobileNet saw ImageNet; mtl train's
# default, and so `mtl review`'s, which shares train's features). "squash": the whole
# photo resized to the square (the aspect lost; models made before the choice existed,
# the blog preset (mtl/configs/blog.toml), and `mtl classify`).
FITS = ("center", "squash")


def is_image_name(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def not_regular(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` (links followed) is not a regular file, or None if it is one (or is gone).

    Checked from ``stat`` without opening: opening a FIFO blocks until a writer comes.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # reported by whoever opens it (no such file, permission denied, ...)
    return None if stat.S_ISREG(mode) else f"is {file_kind(mode)}, not an image file"


def list_images(folder: Path) -> list[Path]:
    """Every image file below ``folder``, sorted, never following symlinked folders and
    never inside review's :data:`REVIEW_FOLDER` (``folder`` itself may be one, when named).

    Not following links keeps a symlink loop from hanging the walk. Files named
    like images that are not regular files (a FIFO, a device) are listed too, so
    their reader reports them as skipped with the reason; they are never opened.
    """
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != REVIEW_FOLDER)
        for name in files:
            if is_image_name(name) and not name.startswith("."):
                found.append(Path(root) / name)
    return sorted(found)


@dataclass(eq=False)  # hashed by identity: each is its own input, like a file
class InMemory:
    """A decoded image given in memory (``mtl.predict(model, pil_image)`` in a notebook): a
    PIL image or a uint8 array, height x width x 3 (RGB), or x 4, or height x width. Named
    by its place among the inputs, ``<image 0>``, where a file would show its path."""

    image: Any
    index: int

    def __str__(self) -> str:
        return f"<image {self.index}>"


Source = Path | InMemory  # what the loader reads: a file, or an image in memory


def is_in_memory(value: object) -> bool:
    return isinstance(value, (Image.Image, np.ndarray))


def expand_inputs(inputs: Sequence[str | os.PathLike[str] | Any]) -> list[Source]:
    """Files, folders and quoted globs to a sorted, de-duplicated list of files; images in
    memory (:class:`InMemory`; a 4-D array: one per row) kept in their place.

    A path that does not exist stays in the list, so it is reported as a
    failed image rather than silently dropped.
    """
    out: list[Source] = []
    for i, raw in enumerate(inputs):
        if isinstance(raw, np.ndarray) and raw.ndim == 4:
            out.extend(InMemory(row, i) for row in raw)  # a batch: every row <image i>
            continue
        if is_in_memory(raw):
            out.append(InMemory(raw, i))
            continue
        if not isinstance(raw, (str, os.PathLike)):
            raise UsageError(
                f"input {i} is a {type(raw).__name__}: give file or folder paths, PIL images "
                "or uint8 arrays (height x width x 3)"
            )
        path = Path(raw)
        if path.is_dir():
            images = list_images(path)
            if not images:
                raise UsageError(
                    f"no images in folder {path} (looked for {', '.join(IMAGE_EXTENSIONS)})"
                )
            out.extend(images)
        elif not path.exists() and glob.has_magic(str(raw)):
            matches = sorted(Path(m) for m in glob.glob(str(raw), recursive=True))
            matches = [m for m in matches if m.is_file() and is_image_name(m)]
            if not matches:
                raise UsageError(f"no images match {raw}")
            out.extend(matches)
        else:
            out.append(path)
    seen: set[Source] = set()
    unique = []
    for p in out:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB, keeping the picture a person would see."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit (and 32-bit) grayscale: scale to 8 bits instead of letting
        # Pillow clip everything above 255 to white.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels are undefined colour; show them on white, as a viewer does.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


_MAGIC = {
    b"\x89PNG": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"RIFF": "WebP",
}


def _sniff(path: Path) -> str | None:
    """The format a file's first bytes claim, to tell "corrupt PNG" from "not an image"."""
    with open_regular(path) as fh:
        return _claimed(fh.read(16))


def _claimed(head: bytes) -> str | None:
    for magic, name in _MAGIC.items():
        if head.startswith(magic) and (name != "WebP" or head[8:12] == b"WEBP"):
            return name
    return None


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None  # gone meanwhile: "unrecognised" is what was seen


def _sniff_or_none(path: Path) -> str | None:
    try:
        return _sniff(path)
    except OSError:
        return None


def check_fit(fit: str) -> str:
    if fit not in FITS:
        raise UsageError(f"fit must be one of {', '.join(FITS)}. Received fit={fit!r}")
    return fit


def load_image(
    path: str | os.PathLike[str], size: int | tuple[int, int], fit: str = "squash"
) -> np.ndarray:
    """Decode ``path`` fully and return uint8 RGB pixels of shape (height, width, 3).

    EXIF orientation is applied, any colour mode is converted to RGB, and the
    image is resized (bilinear, antialiased) to ``size``: the whole image
    (``fit="squash"``) or, keeping its aspect, so that it covers ``size`` and
    then its central part (``fit="center"``; see :data:`FITS`). Raises
    :class:`ImageError` with a one-line reason for anything unusable.
    """
    check_fit(fit)
    path = Path(path)
    try:
        if path.is_dir():
            raise ImageError("is a directory, not an image")
        why = not_regular(path)
        if why:
            raise ImageError(why)
        with open_regular(path) as fh:
            return _decode(fh, size, fit)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except IsADirectoryError:
        raise ImageError("is a directory, not an image") from None
    except NotRegularFile as exc:
        raise ImageError(str(exc.strerror)) from None
    except UnidentifiedImageError:
        raise _unidentified(_size(path) == 0, lambda: _sniff_or_none(path)) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this one file's
        raise decode_error(exc) from None


def load_bytes(data: bytes, size: int | tuple[int, int], fit: str = "squash") -> np.ndarray:
    """:func:`load_image` for an encoded file held in memory (an HTTP upload: ``mtl serve``):
    the same decoder, limits, orientation, colour conversion, fit and error messages, and
    nothing written to disk."""
    check_fit(fit)
    try:
        with io.BytesIO(data) as fh:
            return _decode(fh, size, fit)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise _unidentified(len(data) == 0, lambda: _claimed(bytes(data[:16]))) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this one upload's
        raise decode_error(exc) from None


def _decode(fh: BinaryIO, size: int | tuple[int, int], fit: str) -> np.ndarray:
    """The one decoder behind :func:`load_image` and :func:`load_bytes`."""
    width, height = (size, size) if isinstance(size, int) else (size[1], size[0])
    with Image.open(fh) as img:
        if img.width * img.height > MAX_PIXELS:
            raise ImageError(
                f"image too large ({img.width}x{img.height} pixels; the limit is "
                f"{MAX_PIXELS // 1_000_000} megapixels)"
            )
        if img.format == "JPEG":
            # Decode at the smallest DCT scale still >= the target: much faster on photos.
            img.draft("RGB", (width, height))
        img.seek(0)  # first frame of an animation
        img.load()
        return _pixels(img, width, height, fit)


def _unidentified(empty: bool, claimed: Callable[[], str | None]) -> ImageError:
    """Why Pillow recognised no format: empty, a known format's damaged header, or not an image."""
    if empty:
        return ImageError("empty file (0 bytes)")
    name = claimed()
    if name:
        return ImageError(f"cannot decode image: corrupt {name} header")
    return ImageError("not an image (unrecognised format)")


def decode_error(exc: BaseException) -> ImageError:
    """The one-line reason a decoder's exception gives, as the :class:`ImageError` of that
    one file. Pillow's plugins raise more than ``OSError`` (a DDS file with an unusual
    pixel format named ``.jpg`` raises ``NotImplementedError``; others ``struct.error``,
    ``IndexError``, ``ZeroDivisionError``, ``MemoryError``): whatever the type, it is one
    file's problem, skipped with its name, never the end of a whole command."""
    if isinstance(exc, Image.DecompressionBombError):
        return ImageError(f"image too large ({exc})")
    reason = str(exc) or type(exc).__name__
    if "truncated" in reason.lower():
        return ImageError("truncated or incomplete image data")
    if not isinstance(exc, (OSError, SyntaxError, ValueError, EOFError)):
        reason = f"{type(exc).__name__}: {reason}" if str(exc) else reason
    return ImageError(f"cannot decode image: {' '.join(reason.split())}")


def upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says (a phone stores a portrait photo
    sideways and tags it): the one place mtl applies orientation, for every command
    (train, predict, evaluate, review, classify, fetch, the server) and a PIL image given
    to the API. A model cannot do it: it receives decoded pixels, which carry no EXIF.
    So the input contract of ``model.keras`` and every export is the photo upright, and
    code outside mtl writes this same line (docs/images.md)."""
    return ImageOps.exif_transpose(img)


def _pixels(img: Image.Image, width: int, height: int, fit: str) -> np.ndarray:
    """A decoded image as the model sees it: upright (EXIF), RGB, fitted to width x height."""
    img = upright(img)
    img = to_rgb(img)
    if fit == "center":
        img = _cover(img, width, height)
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def load_in_memory(
    image: Image.Image | np.ndarray, size: int | tuple[int, int], fit: str = "squash"
) -> np.ndarray:
    """:func:`load_image` for an image already in memory (:class:`InMemory`): the same
    orientation, colour conversion and fit, so a photo gets the same pixels either way."""
    check_fit(fit)
    width, height = (size, size) if isinstance(size, int) else (size[1], size[0])
    if isinstance(image, np.ndarray):
        shape = "x".join(map(str, image.shape))
        if image.dtype != np.uint8:
            raise ImageError(
                f"an array image must be uint8 (0-255), not {image.dtype} (shape {shape}); "
                "for floats in 0-1: (x * 255).round().astype('uint8')"
            )
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise ImageError(f"an array image must be height x width x 3 (RGB), not {shape}")
        if image.size == 0:
            raise ImageError(f"an empty array image ({shape})")
        image = Image.fromarray(np.ascontiguousarray(image))
    if image.width * image.height > MAX_PIXELS:
        raise ImageError(f"image too large ({image.width}x{image.height} pixels)")
    try:
        return _pixels(image, width, height, fit)
    except Exception as exc:  # noqa: BLE001 - a closed image, a mode Pillow cannot convert
        reason = decode_error(exc).message.removeprefix("cannot decode image: ")
        raise ImageError(f"cannot use image: {reason}") from None


def _cover(img: Image.Image, width: int, height: int) -> Image.Image:
    """``img`` resized, its aspect kept, to cover width x height, cropped to the centre.

    Only the central region of the source is resampled (Pillow's ``box``): resizing the
    whole image first would make a 60000x2 strip a 2-gigapixel (5.9 GB) intermediate. The
    pixels are those of resize-then-crop, up to rounding (at most 1 of 255)."""
    scale = max(width / img.width, height / img.height)
    w = max(width, round(img.width * scale))  # the covering size, as if resized whole
    h = max(height, round(img.height * scale))
    left, top = (w - width) // 2, (h - height) // 2
    sx, sy = img.width / w, img.height / h
    box = (left * sx, top * sy, (left + width) * sx, (top + height) * sy)
    return img.resize((width, height), Image.Resampling.BILINEAR, box=box)


S = TypeVar("S", bound=Source)


@dataclass
class Batch(Generic[S]):
    """Decoded images of one batch, plus the files of that batch that failed."""

    paths: list[S]
    pixels: np.ndarray  # (n, h, w, 3) uint8
    failures: list[tuple[S, str]]


def _load_or_error(path: Source, size: int | tuple[int, int], fit: str) -> np.ndarray | str:
    try:
        if isinstance(path, InMemory):
            return load_in_memory(path.image, size, fit)
        return load_image(path, size, fit)
    except ImageError as exc:
        return exc.message


def iter_batches(
    paths: Iterable[S],
    size: int | tuple[int, int],
    batch_size: int = 32,
    workers: int | None = None,
    fit: str = "squash",
) -> Iterator[Batch[S]]:
    """Decode ``paths`` in parallel threads (Pillow releases the GIL) and yield batches.

    One thread a core (a bigger machine decodes faster, no option needed), and enough
    batches decoding ahead to keep every thread busy while the caller runs the model
    on this one: memory holds a fixed number of decoded photos, whatever the count.
    Failed files are reported in each batch's ``failures``, in input order.
    """
    paths = list(paths)
    h, w = (size, size) if isinstance(size, int) else size
    workers = workers or (os.cpu_count() or 2)
    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    ahead = max(1, -(-2 * workers // max(1, batch_size)))  # two photos a thread in flight
    with ThreadPoolExecutor(max_workers=workers) as pool:

        def submit(chunk: list[S]) -> list[Future[np.ndarray | str]]:
            return [pool.submit(_load_or_error, p, size, fit) for p in chunk]

        pending = collections.deque(submit(c) for c in chunks[:ahead])
        for i, chunk in enumerate(chunks):
            decoded = [f.result() for f in pending.popleft()]
            if i + ahead < len(chunks):
                pending.append(submit(chunks[i + ahead]))
            ok = [(p, a) for p, a in zip(chunk, decoded, strict=True) if isinstance(a, np.ndarray)]
            bad = [(p, a) for p, a in zip(chunk, decoded, strict=True) if isinstance(a, str)]
            pixels = np.stack([a for _, a in ok]) if ok else np.zeros((0, h, w, 3), dtype=np.uint8)
            yield Batch(paths=[p for p, _ in ok], pixels=pixels, failures=bad)

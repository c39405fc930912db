"""A corpus of awkward and broken image files, generated from a real photo.

``make_corpus(folder)`` writes the files and returns what each one is, so
every command's tests can feed the same corpus and check the same verdicts.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import HYMENOPTERA

SOURCE = HYMENOPTERA / "ants" / "0013035.jpg"


@dataclass(frozen=True)
class Entry:
    path: Path
    good: bool  # True: a usable image that every command must accept
    reason: str = ""  # for a bad one: words its error message must contain


def _photo() -> Image.Image:
    with Image.open(SOURCE) as img:
        return img.convert("RGB").resize((320, 240))


def _jpeg_bytes(img: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


def _bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A few hundred bytes that declare a 2.5-gigapixel greyscale image."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + (_png_chunk(b"IEND", b""))
    )


def _corrupt_body(jpeg: bytes) -> bytes:
    """Valid markers and header, random entropy-coded data: libjpeg gives up mid-scan."""
    body = bytearray(jpeg)
    start = jpeg.rfind(b"\xff\xda") + 200
    end = len(body) - 100
    body[start:end] = (
        np.random.RandomState(0).randint(0, 256, end - start).astype(np.uint8).tobytes()
    )
    return bytes(body)


def make_corpus(folder: Path) -> dict[str, Entry]:
    """Write the corpus into ``folder`` (created) and describe each entry by name."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = _photo()
    jpeg = _jpeg_bytes(photo)
    entries: dict[str, Entry] = {}

    def write(name: str, data: bytes, good: bool, reason: str = "") -> None:
        (folder / name).write_bytes(data)
        entries[name] = Entry(folder / name, good, reason)

    def save(name: str, img: Image.Image, **kwargs: object) -> None:
        img.save(folder / name, **kwargs)
        entries[name] = Entry(folder / name, True)

    write("empty.jpg", b"", False, "empty")
    write("text.jpg", b"just some notes, not a picture\n", False, "not an image")
    write("truncated.jpg", jpeg[: len(jpeg) // 2], False, "truncated")
    write("corrupt_body.jpg", _corrupt_body(jpeg), False, "cannot decode")
    png = io.BytesIO()
    photo.save(png, "PNG")
    raw = bytearray(png.getvalue())
    raw[29:33] = b"\x00\x00\x00\x00"  # the IHDR chunk's CRC
    write("bad_crc.png", bytes(raw), False, "cannot decode")
    write("bomb.png", _bomb_png(), False, "too large")

    save("cmyk.jpg", photo.convert("CMYK"), quality=90)
    gray16 = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    save("gray16.png", Image.fromarray(gray16))
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.new("L", photo.size, 200))
    save("rgba.png", rgba)
    save("palette.gif", photo.convert("P", palette=Image.Palette.ADAPTIVE))
    frames = [photo.convert("P"), photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("P")]
    save("animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=100, loop=0)
    save("photo.webp", photo, quality=90)
    # Stored turned 90 degrees; EXIF orientation 6 tells viewers to turn it back.
    exif = Image.Exif()
    exif[0x0112] = 6
    save("rotated.jpg", photo.transpose(Image.Transpose.ROTATE_90), exif=exif, quality=90)
    save("tiny_1x1.png", Image.new("RGB", (1, 1), (120, 90, 60)))
    save("ünïcode name 名前.jpg", photo, quality=90)

    (folder / "folder.jpg").mkdir()  # a directory named like an image: not a file to read
    os.symlink(".", folder / "loop")  # a symlink loop: a walk must not follow it forever
    if os.geteuid() != 0:  # root reads anything, so the case only exists for other users
        write("unreadable.jpg", jpeg, False, "permission denied")
        (folder / "unreadable.jpg").chmod(0)
    return entries


def reference_pixels(size: int) -> np.ndarray:
    """What a correct loader returns for the corpus' source photo (as stored in cmyk/webp...)."""
    from mtl.data.images import load_image

    return load_image(_save_tmp_png(), size)


def _save_tmp_png() -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "reference.png"
    _photo().save(path)
    return path

"""Reliability round 4 (issue 34), classes A, C, D, F and J, without TensorFlow or weights.

A: nothing written or deleted through a link mtl did not make. C: one table of split
folder names. D: one reader for user-supplied files. F: any decoder error skips one file.
J: ``mtl train`` holds DATA's lock, shared with readers, exclusive against writers.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtl.data.images import iter_batches, load_image
from mtl.errors import ImageError


def odd_dds() -> bytes:
    """A DDS header whose pixel-format flags name nothing Pillow knows: ``Image.open``
    raises NotImplementedError (not an OSError) on it."""
    header = bytearray(124)
    struct.pack_into("<IIIII", header, 0, 124, 0x1007, 8, 8, 0)
    struct.pack_into("<II", header, 72, 32, 0)
    return b"DDS " + bytes(header) + bytes(256)


def photo(path: Path, value: int = 90, size: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    pixels[..., 0] = value
    Image.fromarray(pixels).save(path, "JPEG")
    return path


# --- F: one odd image never stops a command -------------------------------------------


def test_a_decoder_raising_not_implemented_skips_that_file_only(tmp_path):
    odd = tmp_path / "odd.jpg"
    odd.write_bytes(odd_dds())
    good = photo(tmp_path / "good.jpg")
    with pytest.raises(ImageError, match="NotImplementedError"):
        load_image(odd, 32)
    batches = list(iter_batches([odd, good], 32))
    assert [p for b in batches for p in b.paths] == [good]
    failures = [f for b in batches for f in b.failures]
    assert [p for p, _ in failures] == [odd]
    assert "cannot decode image" in failures[0][1]


def test_any_exception_type_from_a_decoder_is_one_files_problem(tmp_path, monkeypatch):
    """Whatever a Pillow plugin raises (struct.error, IndexError, ZeroDivisionError...)."""
    from mtl.data import images

    good = photo(tmp_path / "good.jpg")

    def broken(*_args: object, **_kw: object) -> None:
        raise ZeroDivisionError("division by zero in a plugin")

    monkeypatch.setattr(images, "_pixels", broken)
    with pytest.raises(ImageError, match="ZeroDivisionError: division by zero"):
        load_image(good, 32)


def test_fetch_rejects_an_odd_dds_as_not_an_image(tmp_path):
    from mtl.crawler.reasons import Rejected
    from mtl.crawler.validate import inspect_image

    odd = tmp_path / "odd.jpg"
    odd.write_bytes(odd_dds())
    with pytest.raises(Rejected) as info:
        inspect_image(odd, (10, 10))
    assert info.value.reason == "not_image"

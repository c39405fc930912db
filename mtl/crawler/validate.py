"""Is a downloaded file a whole, big-enough image? Pillow decodes every pixel to find out.

icrawler only reads the header, which passes a JPEG cut off halfway; a full
``load()`` does not.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import imagehash
from PIL import Image, UnidentifiedImageError

from mtl.crawler.reasons import Rejected
from mtl.data.images import (
    MAX_PIXELS,
    NotRegularFile,
    decode_error,
    open_regular,
    to_rgb,
    upright,
)

# Pillow format name -> the extension a kept file gets, whatever the URL said.
FORMAT_EXTENSIONS = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "GIF": ".gif",
    "WEBP": ".webp",
    "BMP": ".bmp",
}


@dataclass(frozen=True)
class ImageInfo:
    format: str
    extension: str
    width: int
    height: int
    phash: str  # 16 hex digits


def inspect_image(path: Path, min_size: tuple[int, int]) -> ImageInfo:
    """Decode ``path`` completely; raise :class:`Rejected` with the reason it cannot be kept."""
    try:
        with warnings.catch_warnings():
            # Oversized images are refused below by our own pixel limit, not by a warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open_regular(path) as fh, Image.open(fh) as img:
                return _check(img, min_size)
    except Rejected:
        raise
    except NotRegularFile as exc:
        raise Rejected("not_image", str(exc.strerror)) from None
    except UnidentifiedImageError:
        raise Rejected("not_image", "not an image") from None
    except Image.DecompressionBombError:
        raise Rejected("too_large", "too many pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # The header parsed but the pixel data did not: cut off or corrupt.
        raise Rejected("truncated", str(exc) or type(exc).__name__) from None
    except Exception as exc:  # noqa: BLE001 - any other decoder failure: this file only
        raise Rejected("not_image", decode_error(exc).message) from None


def _check(img: Image.Image, min_size: tuple[int, int]) -> ImageInfo:
    fmt = img.format or ""
    if fmt not in FORMAT_EXTENSIONS:
        raise Rejected("not_image", f"unsupported format {fmt or 'unknown'}")
    if img.width * img.height > MAX_PIXELS:
        raise Rejected("too_large", f"{img.width}x{img.height} pixels")
    img.load()
    # Judge and hash the picture as training will see it: upright (EXIF) and in
    # 8-bit RGB, so a rotated or 16-bit copy of a photo is still its duplicate.
    turned = to_rgb(upright(img))
    width, height = turned.size
    if width < min_size[0] or height < min_size[1]:
        raise Rejected("too_small", f"{width}x{height}")
    return ImageInfo(
        format=fmt,
        extension=FORMAT_EXTENSIONS[fmt],
        width=width,
        height=height,
        phash=str(imagehash.phash(turned)),
    )

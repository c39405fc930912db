"""Keywords to class folder names, refusing anything that could escape ``--out`` or collide."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from mtl.errors import UsageError

# Long enough for any real label, short enough to stay far below NAME_MAX (255 bytes)
# even when every character is a 4-byte UTF-8 letter.
MAX_SLUG_CHARS = 60

# Runs of anything but letters, digits and "-" (underscores included) become one "_".
_NOT_WORD = re.compile(r"(?:[^\w-]|_)+")


@dataclass(frozen=True)
class Keyword:
    """A search keyword and the folder (class) it fills."""

    text: str
    slug: str


def slugify(text: str) -> str:
    """``"Blue tit"`` -> ``"blue_tit"``; unicode letters survive, everything else becomes ``_``.

    NFKC first, so visually identical spellings (full-width letters, ligatures)
    land in the same folder and are caught as a collision.
    """
    norm = unicodedata.normalize("NFKC", text).casefold()
    return _NOT_WORD.sub("_", norm).strip("_-")[:MAX_SLUG_CHARS].strip("_-")


def _refusal(text: str) -> str | None:
    if not text.strip():
        return "empty keyword"
    if "/" in text or "\\" in text:
        return f"keyword {text!r}: it contains a path separator"
    if text.strip() in (".", ".."):
        return f"keyword {text!r}: it is not a name"
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        return f"keyword {text!r}: it contains control characters"
    if not slugify(text):
        return f"keyword {text!r}: no letters or digits to name a folder"
    return None


def parse_keywords(texts: list[str]) -> list[Keyword]:
    """Validate every keyword before anything is downloaded; raise :class:`UsageError`."""
    by_slug: dict[str, str] = {}
    keywords: list[Keyword] = []
    for text in texts:
        why = _refusal(text)
        if why:
            raise UsageError(f"refusing {why}")
        slug = slugify(text)
        if slug in by_slug:
            if by_slug[slug] == text:
                continue  # the same keyword twice is harmless: fetch it once
            raise UsageError(f"keywords {by_slug[slug]!r} and {text!r} share the folder {slug!r}")
        by_slug[slug] = text
        keywords.append(Keyword(text=text, slug=slug))
    return keywords


def parse_size(text: str) -> tuple[int, int]:
    """``"400x300"`` -> ``(400, 300)`` (width, height)."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*", text)
    if not match:
        raise UsageError(f"--min-size must look like WIDTHxHEIGHT, e.g. 400x300 (got {text!r})")
    return int(match.group(1)), int(match.group(2))

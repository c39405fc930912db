"""`mtl fetch`: a folder-per-class training set from an image search, checked and de-duplicated.

The CLI calls :func:`fetch` only; the modules below each do one thing. The crawler
itself (requests, the engines, the downloader) loads on first use, so reading the
settings (:mod:`mtl.crawler.request`) at start-up costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mtl.crawler.request import FetchRequest

if TYPE_CHECKING:
    from mtl.crawler.crawl import ClassResult, FetchResult, fetch

__all__ = ["ClassResult", "FetchRequest", "FetchResult", "fetch"]


def __getattr__(name: str) -> Any:
    if name in ("ClassResult", "FetchResult", "fetch"):
        from mtl.crawler import crawl

        return getattr(crawl, name)
    raise AttributeError(f"module 'mtl.crawler' has no attribute {name!r}")

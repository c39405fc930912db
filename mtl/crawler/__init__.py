"""`mtl fetch`: a folder-per-class training set from an image search, checked and de-duplicated.

The CLI calls :func:`fetch` only; the modules below each do one thing.
"""

from mtl.crawler.crawl import ClassResult, FetchResult, fetch
from mtl.crawler.plan import FetchRequest

__all__ = ["ClassResult", "FetchRequest", "FetchResult", "fetch"]

"""What `mtl fetch` is asked: its settings, defaults, choices and bounds, in one place.

The CLI's options and :func:`mtl.fetch`'s keywords read these; :mod:`mtl.crawler.plan`
checks them. Nothing here imports more than the standard library, so the CLI can read
it at start-up without loading the crawler (``mtl --help`` stays fast).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from mtl.errors import UsageError

ENGINES = ("bing", "google", "baidu", "flickr")

# Search engines serve at most ~1,000 results a keyword; a URL list can be longer, but a
# class of more than 100,000 photos is a dataset to build otherwise (docs/fetch.md).
MAX_LIMIT = 100_000
MAX_MB = 1024  # one download; the decoder refuses more than 100 megapixels anyway
MAX_THREADS = 64
MAX_TIMEOUT = 3600.0
MAX_DEADLINE = 7 * 86400.0


@dataclass(frozen=True)
class FetchRequest:
    """What the user asked for, as given on the command line."""

    keywords: list[str]
    out: Path = Path("data")
    engine: str = "bing"
    urls_file: Path | None = None
    limit: int = 100
    min_size: str = "224x224"
    threads: int = 4
    timeout: float = 10.0
    deadline: float = 600.0
    max_mb: float = 20.0


DEFAULT = FetchRequest(keywords=[])  # every setting's default, for the CLI's options


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        close = difflib.get_close_matches(str(engine), ENGINES, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown --engine {engine!r}; choose one of {', '.join(ENGINES)}{hint}")
    return engine


def check_numbers(req: FetchRequest) -> None:
    """Every numeric setting within its bounds (:class:`UsageError` naming the option)."""
    if not 1 <= req.limit <= MAX_LIMIT:
        raise UsageError(f"--limit must be 1 to {MAX_LIMIT} (got {req.limit})")
    if not 1 <= req.threads <= MAX_THREADS:
        raise UsageError(f"--threads must be between 1 and {MAX_THREADS} (got {req.threads})")
    if not req.timeout > 0 or not req.deadline > 0:
        raise UsageError("--timeout and --deadline must be positive numbers of seconds")
    if not 0 < req.max_mb <= MAX_MB:
        raise UsageError(f"--max-mb must be above 0 and at most {MAX_MB} (got {req.max_mb})")
    if not (req.timeout <= MAX_TIMEOUT and req.deadline <= MAX_DEADLINE):
        raise UsageError(
            f"--timeout must be at most {MAX_TIMEOUT:g} s and --deadline at most {MAX_DEADLINE:g} s"
        )

"""Every argument checked, and turned into a plan, before a single byte is downloaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mtl.crawler.engines import check_engine, engine_base, flickr_key
from mtl.crawler.keywords import Keyword, parse_keywords, parse_size
from mtl.crawler.urllist import read_url_list
from mtl.errors import UsageError


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


@dataclass
class Plan:
    """A validated request: classes in order, and where their URLs come from."""

    keywords: list[Keyword]
    out: Path
    engine: str  # "urls" for --urls
    limit: int
    min_size: tuple[int, int]
    threads: int
    timeout: float
    deadline: float
    max_bytes: int
    engine_base: tuple[str, str] | None = None
    api_key: str = ""
    url_lists: dict[str, list[str]] = field(default_factory=dict)  # slug -> urls


# Search engines serve at most ~1,000 results a keyword; a URL list can be longer, but a
# class of more than 100,000 photos is a dataset to build otherwise (docs/fetch.md).
MAX_LIMIT = 100_000
MAX_MB = 1024  # one download; the decoder refuses more than 100 megapixels anyway


def _check_numbers(req: FetchRequest) -> None:
    if not 1 <= req.limit <= MAX_LIMIT:
        raise UsageError(f"--limit must be 1 to {MAX_LIMIT} (got {req.limit})")
    if not 1 <= req.threads <= 64:
        raise UsageError(f"--threads must be between 1 and 64 (got {req.threads})")
    if not req.timeout > 0 or not req.deadline > 0:
        raise UsageError("--timeout and --deadline must be positive numbers of seconds")
    if not 0 < req.max_mb <= MAX_MB:
        raise UsageError(f"--max-mb must be above 0 and at most {MAX_MB} (got {req.max_mb})")
    if not (req.timeout <= 3600 and req.deadline <= 7 * 86400):
        raise UsageError("--timeout must be at most 3600 s and --deadline at most 604800 s")
    if req.out.exists() and not req.out.is_dir():
        raise UsageError(f"--out {req.out} exists and is not a folder")


def make_plan(req: FetchRequest) -> Plan:
    """Validate ``req``; raise :class:`UsageError` for anything wrong."""
    _check_numbers(req)
    plan = Plan(
        keywords=[],
        out=req.out,
        engine="urls" if req.urls_file else check_engine(req.engine),
        limit=req.limit,
        min_size=parse_size(req.min_size),
        threads=req.threads,
        timeout=req.timeout,
        deadline=req.deadline,
        max_bytes=int(req.max_mb * 1024 * 1024),
    )
    if req.urls_file is None:
        if not req.keywords:
            raise UsageError("give at least one KEYWORD, or --urls FILE (or --dataset NAME)")
        plan.keywords = parse_keywords(req.keywords)
        plan.engine_base = engine_base()
        plan.api_key = flickr_key(plan.engine)
        return plan
    pairs = read_url_list(req.urls_file, req.keywords)
    labels = list(dict.fromkeys([*req.keywords, *(label for label, _ in pairs)]))
    plan.keywords = parse_keywords(labels)
    slug_of = {k.text: k.slug for k in plan.keywords}
    for kw in plan.keywords:
        plan.url_lists[kw.slug] = []
    for label, url in pairs:
        urls = plan.url_lists[slug_of[label]]
        if url not in urls:
            urls.append(url)
    return plan

"""Every argument checked, and turned into a plan, before a single byte is downloaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mtl.crawler.engines import engine_base, flickr_key
from mtl.crawler.keywords import Keyword, parse_keywords, parse_size
from mtl.crawler.request import FetchRequest, check_engine, check_numbers
from mtl.crawler.urllist import read_url_list
from mtl.errors import UsageError


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


def _check_numbers(req: FetchRequest) -> None:
    check_numbers(req)
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

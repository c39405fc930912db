"""Image URLs from a search engine, found by icrawler's own feeders and parsers.

Only the page fetching is ours (deadline, byte cap, ``MTL_ENGINE_URL``);
which pages to ask for stays icrawler's, so its fixes for engine changes
apply here too. The Bing and Google parsers are our subclasses: icrawler's
keep only URLs ending in ``.jpg`` (Bing) or ``.jpg/.png/.bmp`` (Google), which
throws away PNG, WebP and extension-less image URLs; ours keep every image URL
the page lists (the download check decides what is an image).
"""

from __future__ import annotations

import html
import os
import queue
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlsplit, urlunsplit

import requests

from mtl import files
from mtl.crawler.download import USER_AGENT, fetch_bytes
from mtl.crawler.reasons import Rejected
from mtl.errors import UsageError

ENGINE_URL_ENV = "MTL_ENGINE_URL"
FLICKR_KEY_ENV = "FLICKR_API_KEY"
PAGE_MAX_BYTES = 10 * 1024 * 1024
# Pages in a row that bring no new URL before the engine counts as exhausted.
STALE_PAGES = 2


def engine_base() -> tuple[str, str] | None:
    """``MTL_ENGINE_URL`` as (scheme, host[:port]), or None when unset."""
    raw = os.environ.get(ENGINE_URL_ENV, "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{ENGINE_URL_ENV} must look like http://127.0.0.1:8765 (got {raw!r})")
    return parts.scheme, parts.netloc


def rewrite_url(url: str, base: tuple[str, str] | None) -> str:
    """Swap the scheme and host of an engine URL for ``base``, keeping path and query."""
    if base is None:
        return url
    parts = urlsplit(url)
    return urlunsplit((base[0], base[1], parts.path, parts.query, parts.fragment))


class EngineSession(requests.Session):
    """A session that sends engine requests to ``MTL_ENGINE_URL`` and never waits forever.

    icrawler's Flickr parser calls ``session.get`` itself without a timeout.
    """

    def __init__(self, base: tuple[str, str] | None, timeout: float) -> None:
        super().__init__()
        self.base = base
        self.default_timeout = timeout
        self.headers["User-Agent"] = USER_AGENT

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.default_timeout)
        text = url.decode() if isinstance(url, bytes) else url
        verb = method.decode() if isinstance(method, bytes) else method
        return super().request(verb, rewrite_url(text, self.base), *args, **kwargs)


@dataclass
class _Page:
    """What icrawler's parsers read from a response."""

    content: bytes
    url: str


# Google lists each picture as ["URL",height,width]; its own thumbnails live on gstatic.
_GOOGLE_ITEM = re.compile(r'\["(https?://(?:[^"\\]|\\.)+)",\d+,\d+\]')
_THUMBNAIL_HOSTS = ("gstatic.com",)


def bing_urls(page: bytes) -> tuple[list[str], int]:
    """Every full-size image URL (``murl``) of a Bing result page, any extension or none,
    and how many result entries the page had."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page.decode("utf-8", "ignore"), "lxml")
    entries = soup.find_all("div", class_="imgpt")
    urls = []
    for div in entries:
        link = div.find("a", attrs={"m": True})
        if link is None:
            continue
        url = _murl(str(link["m"])) or _murl(html.unescape(str(link["m"])))
        if isinstance(url, str) and url:
            urls.append(url)
    return urls, len(entries)


def _murl(raw: str) -> str | None:
    """The ``murl`` of a Bing result's ``m`` attribute (JSON; a regex if it is not quite)."""
    try:
        meta = files.loads_json(raw)
        url = meta.get("murl") if isinstance(meta, dict) else None
    except ValueError:
        found = re.search(r'"murl"\s*:\s*"((?:[^"\\]|\\.)*)"', raw)
        try:
            url = files.loads_json(f'"{found.group(1)}"') if found else None
        except ValueError:
            url = None
    return url if isinstance(url, str) and url else None


def google_urls(page: bytes) -> tuple[list[str], int]:
    """Every full-size image URL of a Google result page (``["URL",h,w]`` items), any
    extension or none, thumbnails left out."""
    text = page.decode("utf-8", "ignore")
    urls = []
    for match in _GOOGLE_ITEM.finditer(text):
        try:
            url = files.loads_json(f'"{match.group(1)}"')  # \u003d and friends
        except ValueError:
            continue
        host = urlsplit(url).hostname or ""
        if not any(host == h or host.endswith("." + h) for h in _THUMBNAIL_HOSTS):
            urls.append(url)
    return list(dict.fromkeys(urls)), len(urls)


def _own_parser(base: Any, read: Any) -> Any:
    """icrawler's parser ``base`` with its ``parse`` replaced by ``read`` (page -> URLs);
    ``entries`` tells how many results the last page listed, readable or not."""

    class Parser(base):
        entries = 0

        def parse(self, response: Any, **_: Any) -> Iterable[dict[str, Any]]:
            urls, self.entries = read(response.content)
            return [{"file_url": u} for u in urls]

    Parser.__name__ = f"Mtl{base.__name__}"
    return Parser


def _components(engine: str) -> tuple[Any, Any]:
    # Imported here: icrawler pulls in bs4/lxml, which `mtl --help` does not need.
    from icrawler.builtin import baidu, bing, flickr, google

    return {
        "bing": (bing.BingFeeder, _own_parser(bing.BingParser, bing_urls)),
        "google": (google.GoogleFeeder, _own_parser(google.GoogleParser, google_urls)),
        "baidu": (baidu.BaiduFeeder, baidu.BaiduParser),
        "flickr": (flickr.FlickrFeeder, flickr.FlickrParser),
    }[engine]


def _feed_args(engine: str, keyword: str, api_key: str) -> dict[str, Any]:
    # Bing and Baidu paste the keyword into the URL unquoted; quote it so
    # "a&b" or unicode stay one query value.
    if engine == "google":
        return {"keyword": keyword, "offset": 0, "max_num": 1000}
    if engine == "flickr":
        return {"apikey": api_key, "max_num": 4000, "text": keyword}
    return {"keyword": quote_plus(keyword), "offset": 0, "max_num": 1000}


def _parse_args(engine: str, api_key: str) -> dict[str, Any]:
    if engine == "flickr":
        return {"apikey": api_key, "size_preference": ["large", "medium 800", "medium", "original"]}
    return {}


@dataclass
class EngineSource:
    """Candidate image URLs for one keyword, one result page at a time."""

    engine: str
    keyword: str
    session: EngineSession
    timeout: float
    skip: set[str] = field(default_factory=set)
    api_key: str = ""
    exhausted: bool = False
    why: str = ""
    _pages: deque[str] | None = None
    _buffer: deque[str] = field(default_factory=deque)
    _seen: set[str] = field(default_factory=set)
    _stale: int = 0
    _asked: int = 0
    _parser: Any = None

    def stop(self, why: str) -> None:
        self.exhausted, self.why = True, why

    def take(self, n: int, end: float) -> list[str]:
        """Up to ``n`` new URLs; fewer (and ``exhausted``) when the engine has no more."""
        while len(self._buffer) < n and not self.exhausted:
            if time.monotonic() >= end:
                self.stop("ran out of time (--deadline)")
                break
            self._next_page(end)
        return [self._buffer.popleft() for _ in range(min(n, len(self._buffer)))]

    def _setup(self) -> deque[str]:
        from icrawler.utils import Signal

        feeder_cls, parser_cls = _components(self.engine)
        signal = Signal()
        signal.set(feeder_exited=False, parser_exited=False, reach_max_num=False)
        feeder = feeder_cls(1, signal, self.session)
        feeder.out_queue = queue.Queue()  # unbounded: the feeder runs here, not in a thread
        feeder.feed(**_feed_args(self.engine, self.keyword, self.api_key))
        self._parser = parser_cls(1, signal, self.session)
        pages = deque(feeder.out_queue.get_nowait() for _ in range(feeder.out_queue.qsize()))
        self._asked = len(pages)
        return pages

    def _next_page(self, end: float) -> None:
        if self._pages is None:
            self._pages = self._setup()
        if not self._pages:
            self.stop(f"reached the last result page mtl asks the engine for ({self._asked})")
            return
        url = self._pages.popleft()
        try:
            limit = min(time.monotonic() + self.timeout, end)
            content = fetch_bytes(self.session, url, end=limit, max_bytes=PAGE_MAX_BYTES)
            found = self._parse(_Page(content=content, url=url))
        except Rejected as exc:
            self.stop(f"the search page failed ({exc.detail})")
            return
        self._add(found)

    def _parse(self, page: _Page) -> list[str]:
        try:
            items: Iterable[dict[str, Any]] | None = self._parser.parse(
                page, **_parse_args(self.engine, self.api_key)
            )
            return [str(i["file_url"]) for i in items or [] if isinstance(i, dict)]
        except Exception as exc:  # icrawler parsers raise anything on an unexpected page
            raise Rejected("not_image", f"unreadable result page: {type(exc).__name__}") from None

    def _add(self, found: list[str]) -> None:
        new = [u for u in found if u not in self._seen and u.startswith(("http://", "https://"))]
        if not found:
            listed = int(getattr(self._parser, "entries", 0) or 0)
            if listed:  # results on the page, but not one image URL read from them
                self.stop(
                    f"the engine's page listed {listed} result(s) without a readable image URL "
                    "(its page layout changed?)"
                )
            elif not self._seen:
                self.stop("the engine returned no results (no hits, or its page layout changed)")
            else:  # an empty page after pages of results: the engine's list ended
                self.stop("the engine has no more results")
            return
        self._stale = 0 if new else self._stale + 1
        if self._stale >= STALE_PAGES:
            self.stop("the engine returns no new results")
        for url in new:
            self._seen.add(url)
            if url not in self.skip:
                self._buffer.append(url)


@dataclass
class ListSource:
    """Candidate URLs from ``--urls``, in file order."""

    urls: deque[str]
    exhausted: bool = False
    why: str = ""

    def stop(self, why: str) -> None:
        self.exhausted, self.why = True, why

    def take(self, n: int, end: float) -> list[str]:
        if time.monotonic() >= end:
            self.stop("ran out of time (--deadline)")
            return []
        taken = [self.urls.popleft() for _ in range(min(n, len(self.urls)))]
        if not self.urls:
            self.stop("the URL list has no more entries")
        return taken


def flickr_key(engine: str) -> str:
    """Flickr needs an API key; fail before anything is downloaded if it is missing."""
    if engine != "flickr":
        return ""
    key = os.environ.get(FLICKR_KEY_ENV, "").strip()
    if not key:
        raise UsageError(f"--engine flickr needs an API key in {FLICKR_KEY_ENV}")
    return key

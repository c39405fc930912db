"""A loopback HTTP server that plays an image search engine and the hosts it points at.

Search pages come in each engine's real format, so icrawler's real parsers
read them: Bing ``/images/async`` (HTML with ``m`` attributes), Google
``/search`` (URLs inside ``<script>``), Baidu ``/search/acjson`` (JSON).
Any other path is served from what tests register with :meth:`FakeEngine.add`.

    with FakeEngine() as engine:
        url = engine.add("/img/a.jpg", jpeg_bytes)
        engine.set_results("blue tit", [url])
        os.environ["MTL_ENGINE_URL"] = engine.base
"""

from __future__ import annotations

import html
import io
import json
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

from tests.fakes.loopback import LoopbackServer


@dataclass
class Resource:
    body: bytes
    content_type: str = "image/jpeg"
    status: int = 200
    # Seconds over which the body trickles out, a few bytes at a time: a slow host
    # that a between-bytes timeout never catches.
    trickle: float = 0.0


class FakeEngine(LoopbackServer):
    """The server plus what it serves; use as a context manager."""

    def __init__(self, page_size: int = 20) -> None:
        self.page_size = page_size
        self.resources: dict[str, Resource] = {}
        self.results: dict[str, list[str]] = {}
        self.hits: Counter[str] = Counter()
        self.queries: list[str] = []
        super().__init__(_handler(self))

    def add(
        self,
        path: str,
        body: bytes,
        content_type: str = "image/jpeg",
        status: int = 200,
        trickle: float = 0.0,
    ) -> str:
        """Serve ``body`` at ``path`` (overriding a search route too); returns the full URL."""
        self.resources[path] = Resource(body, content_type, status, trickle)
        return self.url(path)

    def set_results(self, keyword: str, urls: list[str]) -> None:
        """The image URLs every engine's search page lists for ``keyword``, in order."""
        self.results[keyword] = list(urls)

    # --- what a request gets -------------------------------------------------

    def respond(self, path: str, query: dict[str, list[str]]) -> Resource:
        with self._lock:
            self.hits[path] += 1
        if path in self.resources:
            return self.resources[path]
        pages = {"/images/async": _bing, "/search": _google, "/search/acjson": _baidu}
        if path in pages:
            keyword = (query.get("q") or query.get("word") or [""])[0]
            with self._lock:
                self.queries.append(keyword)
            return pages[path](self.results.get(keyword, []), query, self.page_size)
        return Resource(b"not found", "text/plain", 404)


def _window(urls: list[str], start: int, size: int) -> list[str]:
    return urls[start : start + size]


def _bing(urls: list[str], query: dict[str, list[str]], size: int) -> Resource:
    first = int((query.get("first") or ["0"])[0])
    divs = []
    for url in _window(urls, first, size):
        meta = json.dumps(
            {"murl": url, "turl": url + "?t", "purl": "http://x.org/"}, separators=(",", ":")
        )
        divs.append(
            f'<li><div class="iuscp"><div class="imgpt"><a class="iusc" '
            f'm="{html.escape(meta)}" href="/images/search?view=detailV2">'
            f'<img class="mimg" src="{html.escape(url)}"></a></div></div></li>'
        )
    page = f"<html><body><ul class='dgControl_list'>{''.join(divs)}</ul></body></html>"
    return Resource(page.encode(), "text/html; charset=utf-8")


def _google(urls: list[str], query: dict[str, list[str]], size: int) -> Resource:
    start = int((query.get("start") or ["0"])[0])
    items = ",".join(f'[1,[0,"id{i}",["{u}",600,800]]]' for i, u in enumerate(urls[start:]))
    script = f"<script nonce='x'>AF_initDataCallback({{key: 'ds:1', data:[{items}]}});</script>"
    return Resource(f"<html><head></head><body>{script}</body></html>".encode(), "text/html")


def _baidu(urls: list[str], query: dict[str, list[str]], size: int) -> Resource:
    start = int((query.get("pn") or ["0"])[0])
    data = [{"hoverURL": u, "thumbURL": u} for u in _window(urls, start, size)]
    return Resource(json.dumps({"data": data + [{}]}).encode(), "application/json")


def _handler(engine: FakeEngine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            parts = urlsplit(self.path)
            res = engine.respond(parts.path, parse_qs(parts.query))
            try:
                self.send_response(res.status)
                self.send_header("Content-Type", res.content_type)
                self.send_header("Content-Length", str(len(res.body)))
                self.end_headers()
                if res.trickle:
                    _trickle(self.wfile, res.body, res.trickle)
                else:
                    self.wfile.write(res.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should on a slow host

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _trickle(wfile: Any, body: bytes, seconds: float) -> None:
    steps = 20
    piece = max(1, len(body) // steps)
    for start in range(0, len(body), piece):
        wfile.write(body[start : start + piece])
        wfile.flush()
        time.sleep(seconds / steps)


# --- images ------------------------------------------------------------------


def picture(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A smooth random picture: distinct seeds give perceptual hashes far apart."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)


def encode(img: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def jpeg(seed: int, size: tuple[int, int] = (320, 240), quality: int = 90) -> bytes:
    return encode(picture(seed, size), "JPEG", quality=quality)


def png(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    return encode(picture(seed, size), "PNG")

"""HTTP with a wall-clock deadline per request and a byte cap, into a temp file.

``requests``' timeout counts only the gap between bytes, so a host that
trickles a byte a second holds a download forever; here the socket timeout is
shrunk to the time left before every read, so nothing outlives its deadline.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3

from mtl.crawler.reasons import Rejected

CHUNK = 64 * 1024
TEMP_PREFIX = ".mtl-tmp-"
TEMP_SUFFIX = ".part"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0 Safari/537.36"
)


@dataclass(frozen=True)
class Downloaded:
    """A complete download sitting in a hidden temp file next to its final place."""

    url: str
    path: Path
    sha256: str
    size: int


def new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    return session


def _socket_of(resp: requests.Response) -> socket.socket | None:
    # urllib3 keeps no public handle on the socket; both private paths are tried
    # and, if neither exists, the deadline is still checked between chunks.
    raw: Any = resp.raw
    for path in (("_connection", "sock"), ("_fp", "fp", "raw", "_sock")):
        obj: Any = raw
        for attr in path:
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, socket.socket):
            return obj
    return None


def _left(end: float) -> float:
    left = end - time.monotonic()
    if left <= 0:
        raise Rejected("timeout", "took longer than --timeout")
    return left


@contextmanager
def _get(session: requests.Session, url: str, end: float) -> Iterator[requests.Response]:
    """GET ``url`` streaming; network faults become :class:`Rejected`."""
    left = _left(end)
    try:
        with session.get(url, stream=True, timeout=(left, left)) as resp:
            yield resp
    except Rejected:
        raise
    except requests.Timeout:
        raise Rejected("timeout", "took longer than --timeout") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        # A read timeout inside iter_content surfaces as ConnectionError.
        if time.monotonic() >= end or "timed out" in str(exc).lower():
            raise Rejected("timeout", "took longer than --timeout") from None
        raise Rejected("http_error", f"network error: {type(exc).__name__}") from None


def _chunks(resp: requests.Response, end: float) -> Iterator[bytes]:
    # read1 returns whatever has arrived; iter_content/read(n) would wait for a
    # full chunk, which a trickling host delivers long after the deadline.
    sock = _socket_of(resp)
    raw: Any = resp.raw
    while True:
        left = _left(end)
        if sock is not None:
            # Once the body is read the connection is released and may be closed.
            with contextlib.suppress(OSError):
                sock.settimeout(left)
        chunk = raw.read1(CHUNK, decode_content=True)
        if not chunk:
            return
        _left(end)
        yield chunk


def _check_status(resp: requests.Response, max_bytes: int) -> None:
    if resp.status_code >= 400:
        raise Rejected("http_error", f"HTTP {resp.status_code}")
    length = resp.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise Rejected("too_large", f"{int(length)} bytes")


def download(
    session: requests.Session, url: str, folder: Path, *, end: float, max_bytes: int
) -> Downloaded:
    """Download ``url`` into a hidden temp file in ``folder`` by ``end`` (monotonic time).

    Raises :class:`Rejected` (http_error, timeout, too_large); no temp file survives a failure.
    """
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
    path = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh, _get(session, url, end) as resp:
            for chunk in _capped_chunks(resp, end, max_bytes):
                size += len(chunk)
                digest.update(chunk)
                fh.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Downloaded(url=url, path=path, sha256=digest.hexdigest(), size=size)


def fetch_bytes(session: requests.Session, url: str, *, end: float, max_bytes: int) -> bytes:
    """A whole (search result) page in memory, under the same deadline and cap."""
    with _get(session, url, end) as resp:
        return b"".join(_capped_chunks(resp, end, max_bytes))


def _capped_chunks(resp: requests.Response, end: float, max_bytes: int) -> Iterator[bytes]:
    """The body's chunks after a status check, refused once it passes ``max_bytes``."""
    _check_status(resp, max_bytes)
    size = 0
    for chunk in _chunks(resp, end):
        size += len(chunk)
        if size > max_bytes:
            raise Rejected("too_large", f"more than {max_bytes} bytes")
        yield chunk

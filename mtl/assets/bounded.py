"""Whole-file downloads (weights, the class index, dataset zips) that always end.

A socket timeout counts only the gap between bytes, so a mirror sending one
byte every 20 s would hold a download for ever. Every download here has three
bounds, all derived from the size the file is expected to have:

- a size cap: a larger Content-Length is refused before reading, and a body
  passing the cap is cut off (an endless body stops there);
- a wall-clock deadline (``BASE_S`` plus the expected size at the minimum rate);
- a minimum rate: every ``window`` seconds at least ``min_rate`` bytes a second
  must have arrived, so a trickle fails in ``window`` seconds, not at the deadline.

``MTL_DOWNLOAD_DEADLINE_S`` and ``MTL_DOWNLOAD_WINDOW_S`` override the deadline
and the rate window (a test's mirror trickles for a second, not for minutes).
Each failure is a ``ValueError`` saying which bound it passed.

:func:`signals_unwind` turns SIGTERM and SIGHUP into ``SystemExit`` while a
download runs, so the callers' ``finally`` blocks remove their temp files.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

BASE_S = 60.0  # connecting, redirects, a slow start
MIN_RATE = 20_000  # bytes a second: a 45 MB zip may take 40 minutes, a trickle is cut off
WINDOW_S = 30.0
READ_TIMEOUT_S = 30.0
CHUNK = 1 << 16

Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    deadline_s: float
    min_rate: float = MIN_RATE
    window_s: float = WINDOW_S


def _env_seconds(name: str) -> float | None:
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:
        from mtl.errors import UsageError

        raise UsageError(f"{name} must be a number of seconds above 0. Received {raw!r}")
    return value


def limits_for(expected_bytes: int, max_bytes: int | None = None) -> Limits:
    """The bounds of a file expected to be ``expected_bytes`` long: by default it may be
    twice that (plus 1 MiB) before it is refused."""
    cap = max_bytes if max_bytes is not None else 2 * expected_bytes + (1 << 20)
    deadline = _env_seconds("MTL_DOWNLOAD_DEADLINE_S") or BASE_S + expected_bytes / MIN_RATE
    window = _env_seconds("MTL_DOWNLOAD_WINDOW_S") or WINDOW_S
    return Limits(max_bytes=cap, deadline_s=deadline, window_s=window)


def _socket_of(response: Any) -> socket.socket | None:
    # http.client keeps no public handle on the socket: fp is a buffered SocketIO.
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _kb(n: float) -> str:
    return f"{n / 1000:.0f} kB" if n >= 1000 else f"{n:.0f} bytes"


def download(url: str, fh: Any, name: str, limits: Limits, progress: Progress | None = None) -> int:
    """Copy ``url``'s body into ``fh`` within ``limits``; return its length.

    Raises ``ValueError`` for a body that passes a bound or differs from its
    Content-Length, ``OSError``/``urllib.error.URLError`` for network faults."""
    start = time.monotonic()
    end = start + limits.deadline_s
    with urllib.request.urlopen(url, timeout=min(READ_TIMEOUT_S, limits.deadline_s)) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > limits.max_bytes:
            raise ValueError(
                f"the mirror announces {total} bytes; {name} is at most {limits.max_bytes}"
            )
        sock = _socket_of(response)
        done = 0
        window_start, window_done = start, 0
        while True:
            now = time.monotonic()
            if now >= end:
                raise ValueError(f"the download took longer than {limits.deadline_s:.0f} s")
            if now - window_start >= limits.window_s:
                if window_done < limits.min_rate * (now - window_start):
                    raise ValueError(
                        f"the download is slower than {_kb(limits.min_rate)}/s "
                        f"({_kb(window_done)} in {now - window_start:.0f} s)"
                    )
                window_start, window_done = now, 0
            # Not the rate window: a socket that timed out cannot be read again.
            wait = min(READ_TIMEOUT_S, end - now)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.settimeout(max(wait, 0.001))
            try:
                chunk = response.read1(CHUNK)
            except TimeoutError:
                if time.monotonic() >= end - 0.01:
                    raise ValueError(
                        f"the download took longer than {limits.deadline_s:.0f} s"
                    ) from None
                raise ValueError(f"no data for {READ_TIMEOUT_S:.0f} s") from None
            if not chunk:
                break
            done += len(chunk)
            window_done += len(chunk)
            if done > limits.max_bytes:
                raise ValueError(
                    f"the download passed {limits.max_bytes} bytes, more than {name} is"
                )
            fh.write(chunk)
            if progress:
                progress(name, done, total)
    if total is not None and done != total:
        raise ValueError(f"download ended after {done} of {total} bytes")
    return done


@contextlib.contextmanager
def signals_unwind() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise ``SystemExit(128 + signal)`` (in the
    main thread, where handlers are left at their defaults), so ``finally`` blocks run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved: dict[int, Any] = {}

    def unwind(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
            saved[sig] = signal.signal(sig, unwind)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)

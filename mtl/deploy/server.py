"""``mtl serve MODEL``: the model over HTTP, on FastAPI (Starlette) and uvicorn.

This module is what the CLI and ``mtl.serve`` call; it imports neither FastAPI nor
uvicorn until it runs (``mtl --help`` stays fast, and a missing ``mtl[serve]`` is one
line). The model side is :mod:`mtl.deploy.service`, the HTTP side :mod:`mtl.deploy.app`.

Nothing from a request touches the disk: bodies are read into memory up to
``max_body`` and multipart bodies are parsed in memory (python-multipart's parser,
not Starlette's form reader, which spools files over 1 MB to a temporary file).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mtl.deploy.service import (
    BATCH_WAIT_S,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_FILES,
    MAX_BATCH,
    Limits,
    Service,
    open_service,
)
from mtl.errors import MtlError, UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
SERVE_EXTRA = "pip install 'mtl[serve]'"

__all__ = [
    "BATCH_WAIT_S",
    "DEFAULT_HOST",
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_FILES",
    "DEFAULT_PORT",
    "MAX_BATCH",
    "ServeReport",
    "Service",
    "model_label",
    "serve",
]


def require_serve_extra() -> None:
    """FastAPI, uvicorn and python-multipart, or the one line that says how to get them."""
    missing = []
    for module, name in (
        ("fastapi", "fastapi"),
        ("uvicorn", "uvicorn"),
        ("python_multipart", "python-multipart"),
    ):
        try:
            __import__(module)
        except ImportError:
            missing.append(name)
    if missing:
        raise UsageError(f"mtl serve needs {', '.join(missing)}: {SERVE_EXTRA}")


# --- running it -------------------------------------------------------------------------


@dataclass
class ServeReport:
    """What a server did, once it has stopped."""

    url: str
    requests: int
    images: int
    passes: int
    stopped_by: str | None  # "SIGINT", "SIGTERM", or None (stopped from code)

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "requests": self.requests,
            "images": self.images,
            "passes": self.passes,
            "stopped_by": self.stopped_by,
        }


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a usage error naming the address (in use, not here)."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0-65535. Received {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = exc.strerror or str(exc)
        raise UsageError(f"cannot listen on {host}:{port}: {why} (choose another --port)") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def serve(
    model: str | os.PathLike[str],
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    labels: str | os.PathLike[str] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    max_files: int = DEFAULT_MAX_FILES,
    max_batch: int = MAX_BATCH,
    batch_wait: float = BATCH_WAIT_S,
    access_log: bool = False,
    on_ready: Callable[[str, Service], None] | None = None,
) -> ServeReport:
    """Serve ``model`` on ``host:port`` until SIGINT or SIGTERM (or Ctrl-C), then return
    what was served. ``port=0``: a free port; ``on_ready(url, service)`` is called once
    the server accepts connections."""
    require_serve_extra()
    import uvicorn

    service = open_service(
        model,
        labels=labels,
        limits=Limits(max_body, max_files),
        max_batch=max_batch,
        batch_wait=batch_wait,
    )
    from mtl.deploy.app import create_app

    app = create_app(service)
    sock = bind(host, port)
    url = url_of(sock)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and on_ready is not None:
                on_ready(url, service)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await super().shutdown(sockets)
            if self.force_exit:
                # A second Ctrl-C: uvicorn skips the app's shutdown and cancels it, which it
                # logs as a traceback. Run it still: it only ends the model's worker.
                await self.lifespan.shutdown()

    config = uvicorn.Config(
        app,
        log_level="info" if access_log else "warning",
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=30,
        server_header=False,
    )
    server = Server(config)

    def shutdown() -> None:
        server.should_exit = True  # uvicorn's own flag, read by its main loop

    service.shutdown = shutdown
    stopped: list[str] = []

    def record(signum: int, _: Any) -> None:
        # uvicorn stops on the signal, then raises it again for the handler it found:
        # this one, so that a stop by signal is a normal return, not a KeyboardInterrupt.
        stopped.append(signal.Signals(signum).name)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, record) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
    if not server.started:
        raise MtlError(f"the server at {url} did not start (see the lines above)")
    return ServeReport(
        url=url,
        requests=service.requests,
        images=service.batcher.images,
        passes=service.batcher.passes,
        stopped_by=stopped[0] if stopped else None,
    )


def model_label(service: Service) -> str:
    p = service.predictor
    engine = f" on {p.engine}" if p.engine and p.engine != p.kind else ""
    return f"{p.path.name} ({p.kind}{engine}, {len(p.class_names)} classes)"

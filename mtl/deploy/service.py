"""The model side of ``mtl serve``, without the HTTP framework: the model fixed at start
(opened as ``mtl predict`` opens it), its facts, and the batching of concurrent requests.

The server opens the model once with :func:`mtl.inference.predict.open_model`, the
function ``mtl predict`` opens it with, decodes each upload from memory with mtl's one
loader (:func:`mtl.data.images.load_bytes`, the decoder of ``load_image``), and answers
what ``mtl predict --json`` prints (:func:`mtl.inference.results.top_k`,
``ImageResult.to_json``): the two cannot disagree.

Throughput: uploads are decoded in a thread pool (Pillow releases the GIL) while one
worker thread runs the model on batches of whatever photos arrived within a short window
(:class:`Batcher`), so 16 clients sending one photo each cost the model about one pass of
16, not 16 passes of one. The event loop only reads bodies and writes JSON.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mtl._version import __version__
from mtl.errors import ImageError, UsageError

if TYPE_CHECKING:
    from mtl.inference.predict import Predictor

DEFAULT_MAX_BODY = 32 << 20  # 32 MiB: a few large phone photos in one request
DEFAULT_MAX_FILES = 32  # photos in one multipart request
MAX_BATCH = 32  # photos per model pass: mtl predict's batch (mtl.inference.litekeras)
# How long the worker waits for more photos once one arrives. Clients answered by the
# last pass need a few ms to send their next photo and have it decoded; 5 ms gathers most
# of them into the next pass and adds at most 5 ms to a lone request.
BATCH_WAIT_S = 0.005
FIELD = "file"  # the multipart field name of each photo
MEDIA = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif")
RAW_TYPES = ("application/octet-stream",)  # besides image/*: a raw body that is one photo


class RequestError(Exception):
    """A request the server refuses: an HTTP 4xx and the one line that says why."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message, **self.extra}


@dataclass
class Upload:
    """One photo of a request, in memory: its name (the multipart file name) and bytes."""

    name: str
    data: bytes


# --- batching ---------------------------------------------------------------------------


class Batcher:
    """One worker thread running ``run`` on batches: photos submitted from any thread within
    ``wait`` seconds of the first (up to ``max_batch``) go through the model together.

    ``run`` is called from the worker thread only, so a model that is not thread-safe
    (a LiteRT interpreter) is safe here.
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        max_batch: int = MAX_BATCH,
        wait: float = BATCH_WAIT_S,
    ) -> None:
        self.run = run
        self.max_batch = max_batch
        self.wait = wait
        self.passes = 0
        self.images = 0
        self._queue: queue.SimpleQueue[tuple[np.ndarray, concurrent.futures.Future[Any]] | None]
        self._queue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="mtl-serve-model", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish the photos already submitted, then end the worker."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def submit(self, pixels: np.ndarray) -> concurrent.futures.Future[np.ndarray]:
        """``pixels`` (one photo, height x width x 3) -> a future of its model output row."""
        future: concurrent.futures.Future[np.ndarray] = concurrent.futures.Future()
        self._queue.put((pixels, future))
        return future

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            items = [first]
            deadline = time.monotonic() + self.wait
            while len(items) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                items.append(item)
            self._pass(items)

    def _pass(self, items: list[tuple[np.ndarray, concurrent.futures.Future[Any]]]) -> None:
        live = [(x, f) for x, f in items if f.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            out = self.run(np.stack([x for x, _ in live]))
        except Exception as exc:  # every waiting request answers it (500), the next pass runs
            for _, f in live:
                f.set_exception(exc)
            return
        self.passes += 1
        self.images += len(live)
        for (_, f), row in zip(live, out, strict=True):
            f.set_result(row)


# --- the model, fixed at start ----------------------------------------------------------


@dataclass
class Limits:
    """What one request may hold."""

    max_body: int = DEFAULT_MAX_BODY
    max_files: int = DEFAULT_MAX_FILES

    def check(self) -> None:
        if self.max_body < 1:
            raise UsageError(f"--max-body must be at least 1 byte. Received {self.max_body}")
        if self.max_files < 1:
            raise UsageError(f"--max-files must be at least 1. Received {self.max_files}")


@dataclass
class Service:
    """The model a server answers with: the predictor ``mtl predict`` uses, its facts, the
    decoder pool and the batcher."""

    predictor: Predictor
    sha256: str
    limits: Limits = field(default_factory=Limits)
    max_batch: int = MAX_BATCH
    batch_wait: float = BATCH_WAIT_S
    requests: int = 0
    batcher: Batcher = field(init=False)
    # Set by mtl.deploy.server.serve while it runs: ends it as SIGTERM would (from code,
    # e.g. a notebook that runs mtl.serve in a thread).
    shutdown: Callable[[], None] | None = field(default=None, init=False)
    _decoders: concurrent.futures.ThreadPoolExecutor | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.batcher = Batcher(self.predictor, self.max_batch, self.batch_wait)

    @property
    def class_names(self) -> list[str]:
        return self.predictor.class_names

    def start(self) -> None:
        workers = min(8, os.cpu_count() or 2)
        self._decoders = concurrent.futures.ThreadPoolExecutor(workers, "mtl-serve-decode")
        self.batcher.start()

    def stop(self) -> None:
        self.batcher.stop()
        if self._decoders is not None:
            self._decoders.shutdown(wait=True)
            self._decoders = None

    def metadata(self) -> dict[str, Any]:
        p = self.predictor
        return {
            "model": p.path.name,
            "kind": p.kind,
            "engine": p.engine,
            "class_names": p.class_names,
            "input": {
                "image_size": p.image_size,
                "fit": p.fit,
                "accepts": [*MEDIA, "multipart/form-data"],
                "field": FIELD,
            },
            "fit": p.fit,
            "sha256": self.sha256,
            "mtl_version": __version__,
            "limits": {"max_body": self.limits.max_body, "max_files": self.limits.max_files},
        }

    def decode(self, upload: Upload) -> np.ndarray | str:
        """The photo as ``mtl predict`` sees it, or why it cannot be used."""
        from mtl.data.images import load_bytes

        try:
            return load_bytes(upload.data, self.predictor.image_size, self.predictor.fit)
        except ImageError as exc:
            return exc.message

    async def predict(self, uploads: list[Upload], k: int) -> list[dict[str, Any]]:
        """What ``mtl predict --json --top-k k`` prints for these photos, in their order."""
        from mtl.inference.results import ImageResult, top_k

        loop = asyncio.get_running_loop()
        decoded = await asyncio.gather(
            *(loop.run_in_executor(self._decoders, self.decode, u) for u in uploads)
        )
        failed = [
            (u.name, why) for u, why in zip(uploads, decoded, strict=True) if isinstance(why, str)
        ]
        if failed:
            listed = "; ".join(f"{name}: {why}" for name, why in failed)
            raise RequestError(
                422,
                f"not a usable image: {listed}",
                files=[{"file": name, "error": why} for name, why in failed],
            )
        rows = await asyncio.gather(
            *(asyncio.wrap_future(self.batcher.submit(x)) for x in decoded)  # type: ignore[arg-type]
        )
        k = min(k, len(self.class_names))
        self.requests += 1
        return [
            ImageResult(file=u.name, predictions=top_k(row, self.class_names, k)).to_json()
            for u, row in zip(uploads, rows, strict=True)
        ]


def open_service(
    model: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | None = None,
    limits: Limits | None = None,
    max_batch: int = MAX_BATCH,
    batch_wait: float = BATCH_WAIT_S,
) -> Service:
    """Open ``model`` (``model.keras``, a run folder, ``.tflite`` or ``.onnx``) as
    ``mtl predict`` does; a missing file or an unreadable model is a typed error here,
    before anything listens."""
    from mtl.assets.checksums import sha256_file
    from mtl.inference.predict import open_model, resolve_model_path

    limits = limits or Limits()
    limits.check()
    if max_batch < 1:
        raise UsageError(f"--max-batch must be at least 1. Received {max_batch}")
    if batch_wait < 0:
        raise UsageError(f"the batch window must be 0 or more seconds. Received {batch_wait}")
    path = resolve_model_path(model)
    if not path.is_file():
        raise UsageError(f"no such model file: {path}")
    predictor = open_model(path, labels)
    return Service(predictor, sha256_file(predictor.path), limits, max_batch, batch_wait)

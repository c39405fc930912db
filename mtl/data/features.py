"""The feature cache: the frozen part of the network runs once per image, not once per epoch.

An entry is keyed by the file's content (SHA-256 of its bytes) and a *spec*
naming everything else the features depend on (model, alpha, input size,
freeze point, precision). Editing a file changes its key, so only its entry
is recomputed; changing a setting changes every key.

Entries live in memory up to a budget, then spill to ``.npy`` files in a
folder (the run folder's ``cache/``, or a shared ``--cache-dir``, which is
also read, so later runs reuse it).

Pooled features (an entry of one row per view) are kept as float16: half the memory
and disk of float32, and they are what a large run holds in memory all along. Pooled
MobileNet features lie in [0, 6] (ReLU6, averaged), where float16 keeps 11 significant
bits (a relative error under 0.05%); the head's validation accuracy trained on them
is the same as on float32 features (``bench/scale.py --precision``, docs/scale.md).
Feature maps at a cut inside the base (``--freeze N``) and decoded pixels keep their
type.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, TimeoutError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mtl import files
from mtl.data.images import iter_batches
from mtl.progress import ProgressFn

# 2: pooled entries stored as float16 (a float32 entry of format 1 is a miss, so one
# run's features never mix precisions).
FORMAT = 2
POOLED_DTYPE = np.float16


def compact(value: np.ndarray) -> np.ndarray:
    """What the cache keeps of ``value``: pooled features (one row per view, or one row)
    as float16; anything else (feature maps, uint8 pixels) as it is."""
    if value.ndim <= 2 and np.issubdtype(value.dtype, np.floating):
        return np.ascontiguousarray(value, dtype=POOLED_DTYPE)
    return np.ascontiguousarray(value)


def file_digest(path: str | os.PathLike[str]) -> str:
    return files.sha256(path)  # a FIFO named x.jpg must not hang a run


@dataclass
class CacheStats:
    hits: int = 0
    computed: int = 0
    spilled: int = 0
    bad: int = 0  # entries found unusable (NaN, wrong shape or type) and computed again

    def to_json(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "computed": self.computed,
            "spilled": self.spilled,
            "bad": self.bad,
        }


def entry_problem(value: np.ndarray, pixels: bool) -> str | None:
    """Why a cache entry cannot be used, or None: decoded pixels must be uint8, features
    finite floats; neither may be empty."""
    if not isinstance(value, np.ndarray) or value.ndim == 0 or value.size == 0:
        return "not an array of values"
    if pixels:
        return None if value.dtype == np.uint8 else f"pixels of type {value.dtype}"
    if value.dtype.kind != "f":
        return f"features of type {value.dtype}"
    if not np.isfinite(value).all():
        return "NaN or infinite features"
    return None


@dataclass
class FeatureCache:
    """Features by key, in memory up to ``memory_bytes``, the rest as files in ``folder``."""

    folder: Path | None = None
    memory_bytes: int = 2048 << 20
    persistent: bool = False  # also write every entry to ``folder`` (a shared cache dir)
    stats: CacheStats = field(default_factory=CacheStats)
    _memory: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _used: int = 0

    @staticmethod
    def key(digest: str, spec: str) -> str:
        return hashlib.sha256(f"{FORMAT}\0{spec}\0{digest}".encode()).hexdigest()[:40]

    def _file(self, key: str) -> Path | None:
        return self.folder / key[:2] / f"{key}.npy" if self.folder is not None else None

    def get(self, key: str) -> np.ndarray | None:
        if key in self._memory:
            return self._memory[key]
        path = self._file(key)
        if path is not None and path.is_file():
            try:
                return np.load(path, mmap_mode="r")
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a broken entry is just a miss
        return None

    def checked(self, key: str, pixels: bool) -> np.ndarray | None:
        """The entry of ``key`` if it is usable, else None (a bad one is discarded, to be
        computed again): a shared cache folder is data like any other, and a NaN or
        truncated entry served as features would make a run "diverge" for no reason of
        its own. Features are finite floats; decoded pixels are uint8."""
        value = self.get(key)
        if value is None:
            return None
        why = entry_problem(value, pixels)
        if why is None:
            return value
        self.discard(key)
        self.stats.bad += 1
        return None

    def discard(self, key: str) -> None:
        if self._memory.pop(key, None) is not None:
            self._used = sum(v.nbytes for v in self._memory.values())
        path = self._file(key)
        if path is not None:
            with contextlib.suppress(OSError):
                files.remove(path)

    def __contains__(self, key: str) -> bool:
        path = self._file(key)
        return key in self._memory or (path is not None and path.is_file())

    def put(self, key: str, value: np.ndarray) -> None:
        value = compact(value)
        path = self._file(key)
        fits = self._used + value.nbytes <= self.memory_bytes
        if path is not None and (self.persistent or not fits):
            assert self.folder is not None
            files.owned_dir(path.parent, under=self.folder)  # never into a planted link
            files.write_stream(path, lambda fh: np.save(fh, value), force=True)
            if not fits:
                self.stats.spilled += 1
                return
        if fits or path is None:
            self._memory[key] = value
            self._used += value.nbytes

    def release(self, key: str) -> None:
        """Drop ``key``'s entry from memory (e.g. once copied into one matrix); an entry
        also on disk stays there."""
        value = self._memory.pop(key, None)
        if value is not None:
            self._used -= value.nbytes


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """``x`` with zero rows appended up to ``rows`` (a short last batch): one input
    shape means one traced function or one tensor allocation, not two."""
    if not rows or not 0 < len(x) < rows:
        return x
    return np.concatenate([x, np.zeros((rows - len(x), *x.shape[1:]), dtype=x.dtype)])


class FeatureExtractor(Protocol):
    spec: str
    batch: int
    calls: int
    images: int

    def __call__(self, pixels: np.ndarray) -> np.ndarray: ...


class Extractor:
    """Runs the frozen part of the network (raw RGB 0-255 in) and counts what it computes."""

    def __init__(self, net: Any, spec: str, *, direct: bool = False, batch: int = 0) -> None:
        self.net = net
        self.batch = batch
        self.spec = spec
        # Under a tf.distribute strategy, predict_on_batch splits the batch over replicas
        # (and mis-sizes the result); a plain call runs it once on the local device.
        self.direct = direct
        self.calls = 0  # forward passes of the frozen part
        self.images = 0

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        from mtl.runtime import as_numpy

        self.calls += 1
        self.images += len(pixels)
        n = len(pixels)
        x = pad_rows(pixels.astype("float32"), self.batch)
        out = self.net(x, training=False) if self.direct else self.net.predict_on_batch(x)
        return np.asarray(as_numpy(out), dtype=np.float32)[:n]


@dataclass
class Features:
    """Features for the files that could be used, in the order asked, and the ones that failed."""

    paths: list[Path]
    keys: list[str]
    failures: list[tuple[Path, str]]


def compute(
    paths: Sequence[Path],
    extractor: FeatureExtractor | None,
    cache: FeatureCache,
    size: int,
    *,
    batch_size: int = 32,
    on_progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    fit: str = "squash",
) -> Features:
    """Fill ``cache`` for ``paths``: decode (the one check per file) and run only the misses.

    ``extractor`` None stores the decoded uint8 pixels themselves (used when
    nothing can be cached: augmentation or an unfrozen base). ``fit``: how a
    photo becomes the square input (:data:`mtl.data.images.FITS`).
    """
    spec = extractor.spec if extractor is not None else f"pixels:{size}"
    if fit != "squash":  # squash: the keys of caches made before the choice existed
        spec += f"|fit={fit}"
    keys: dict[Path, str] = {}
    failures: dict[Path, str] = {}
    todo: list[Path] = []
    hit_shapes: dict[Path, tuple[int, ...]] = {}
    pixels = extractor is None
    for p, digest in zip(paths, digests(paths), strict=True):
        if digest.startswith("!"):
            failures[p] = digest[1:]
            continue
        key = cache.key(digest, spec)
        keys[p] = key
        value = cache.checked(key, pixels)
        if value is not None:
            cache.stats.hits += 1
            hit_shapes[p] = value.shape
        else:
            todo.append(p)
    done = len(paths) - len(todo)
    if on_progress:
        on_progress(done, len(paths))
    if extractor is not None and not extractor.batch:
        extractor.batch = batch_size
    shapes: list[tuple[int, ...]] = []

    def fill(todo: list[Path], done: int) -> None:
        for batch in iter_batches(todo, size, batch_size, fit=fit):
            if stop is not None and stop.is_set():
                raise Cancelled
            for p, reason in batch.failures:
                failures[p] = reason
                keys.pop(p, None)
            if len(batch.paths):
                values = extractor(batch.pixels) if extractor is not None else batch.pixels
                for p, v in zip(batch.paths, values, strict=True):
                    cache.put(keys[p], v)
                    cache.stats.computed += 1
                    shapes.append(v.shape)
            done += len(batch.paths) + len(batch.failures)
            if on_progress:
                on_progress(min(done, len(paths)), len(paths))

    fill(todo, done)
    # Every entry of one spec has one shape: the one just computed (else the most common
    # among the hits). An entry of another shape is someone else's: computed again.
    common = Counter(shapes or list(hit_shapes.values())).most_common(1)
    if common:
        odd = [p for p, shape in hit_shapes.items() if shape != common[0][0]]
        for p in odd:
            cache.discard(keys[p])
            cache.stats.hits -= 1
            cache.stats.bad += 1
        fill(odd, len(paths))
    ok = [p for p in paths if p in keys]
    return Features(ok, [keys[p] for p in ok], sorted(failures.items()))


def _digest_or_error(path: Path) -> str:
    """The file's SHA-256, or "!" and why it cannot be read."""
    try:
        return file_digest(path)
    except FileNotFoundError:
        return "!no such file"
    except PermissionError:
        return "!permission denied"
    except OSError as exc:
        return f"!cannot read: {exc.strerror or exc}"


def digests(paths: Sequence[Path]) -> list[str]:
    """Every file's digest (:func:`_digest_or_error`), on every core: hashlib releases the
    GIL, and at 100,000 photos one thread reading and hashing them all would take a
    good part of a minute before the first photo is decoded."""
    if len(paths) < 64:
        return [_digest_or_error(p) for p in paths]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(_digest_or_error, paths, chunksize=32))


class Cancelled(Exception):
    """A background pass that was stopped (its results are not wanted)."""


@dataclass
class Background:
    """:func:`compute` running in a thread; ``result()`` waits for it, ``cancel()`` stops it.

    Its progress is only recorded: the thread that waits reports it (so nothing is
    drawn on the terminal while the main thread has stderr redirected, e.g. during
    TensorFlow's import).
    """

    future: Future[Features]
    stop: threading.Event
    progress: tuple[int, int] = (0, 0)

    def result(self, on_progress: ProgressFn | None = None) -> Features:
        while on_progress is not None:
            if self.progress[1]:
                on_progress(*self.progress)
            try:
                return self.future.result(timeout=0.1)
            except TimeoutError:
                continue
        return self.future.result()

    def cancel(self) -> None:
        self.stop.set()
        with contextlib.suppress(Exception):  # a stopped or failed pass is simply not used
            self.future.result()


def start(
    paths: Sequence[Path],
    extractor: FeatureExtractor,
    cache: FeatureCache,
    size: int,
    *,
    batch_size: int = 32,
    fit: str = "squash",
) -> Background:
    """Run :func:`compute` in a thread, e.g. while the main thread imports TensorFlow."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtl-features")
    job = Background(Future(), threading.Event())

    def record(done: int, total: int) -> None:
        job.progress = (done, total)

    job.future = pool.submit(
        compute,
        paths,
        extractor,
        cache,
        size,
        batch_size=batch_size,
        on_progress=record,
        stop=job.stop,
        fit=fit,
    )
    pool.shutdown(wait=False)
    return job


TRIM_EVERY = 4096  # released entries between two trim_heap calls in stack()


def trim_heap() -> None:
    """Give the pages of freed small arrays back to the system. glibc keeps a freed
    4 KB entry's memory in its heap for reuse, so moving 100,000 cache entries into one
    matrix would otherwise hold both at the peak (measured: 842 MB against 481 MB of
    resident memory for 400 MB of features). Elsewhere than glibc: nothing to do."""
    # No glibc (macOS, musl): that allocator decides, nothing to call.
    with contextlib.suppress(OSError, AttributeError):
        _libc().malloc_trim(0)


@functools.cache
def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None)


def stack(cache: FeatureCache, keys: Sequence[str], *, release: bool = False) -> np.ndarray:
    """The entries of ``keys`` as one array (entries, ...), in the entries' own type
    (float16 for pooled features), written into one allocation: no list of copies.

    ``release``: drop each entry from the cache's memory once copied, so the features
    are held once (in the array), never twice."""
    out: np.ndarray | None = None
    row_of: dict[str, int] = {}  # files with the same bytes share a key: released once
    for i, k in enumerate(keys):
        if release and k in row_of:
            assert out is not None
            out[i] = out[row_of[k]]
            continue
        value = cache.get(k)
        if value is None:  # pragma: no cover - entries are never evicted within a run
            raise KeyError(k)
        if out is None:
            out = np.empty((len(keys), *value.shape), value.dtype)
        out[i] = value
        if release:
            row_of[k] = i
            cache.release(k)
            if len(row_of) % TRIM_EVERY == 0:
                trim_heap()
    if release:
        trim_heap()
    if out is None:
        raise ValueError("no entries to stack")
    return out

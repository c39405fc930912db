"""``fetch``: fill one folder per keyword up to ``--limit`` with checked, unique images.

Downloads run in parallel; everything after a download (dedupe, naming,
manifest) happens in URL order on one thread, so two runs against the same
pages give the same files under the same names.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mtl import files, reprs
from mtl.crawler.download import download, new_session
from mtl.crawler.engines import EngineSession, EngineSource, ListSource
from mtl.crawler.keywords import Keyword
from mtl.crawler.manifest import MANIFEST, AmbiguousImage, ManifestEntry
from mtl.crawler.plan import FetchRequest, Plan, make_plan
from mtl.crawler.reasons import REASONS, Reason, Rejected
from mtl.crawler.state import (
    OutputState,
    first_free_index,
    next_free_name,
    now_iso,
    place,
    remove_temp_files,
)
from mtl.crawler.validate import ImageInfo, inspect_image
from mtl.errors import UsageError
from mtl.locks import folder_lock

# Ambiguous images found late can empty a class that was already full; it gets
# this many more turns at its source.
MAX_PASSES = 3

ProgressFn = Callable[[str, str, int, int], None]
"""``on_progress(slug, keyword, kept, limit)``."""


@dataclass
class ClassResult:
    """One keyword's outcome."""

    keyword: str
    slug: str
    requested: int
    existing: int  # valid images already there when the run started
    kept: int = 0  # valid images there now
    rejected: dict[Reason, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    new_files: list[str] = field(default_factory=list)
    why_short: str = ""

    @property
    def short(self) -> int:
        return max(0, self.requested - self.kept)

    def to_json(self) -> dict[str, object]:
        return {
            "keyword": self.keyword,
            "class": self.slug,
            "requested": self.requested,
            "existing": self.existing,
            "kept": self.kept,
            "downloaded": len(self.new_files),
            "short": self.short,
            "why_short": self.why_short if self.short else "",
            "rejected": dict(self.rejected),
            "new_files": sorted(self.new_files),
        }


@dataclass
class FetchResult:
    out: Path
    engine: str
    classes: list[ClassResult]
    ambiguous: list[AmbiguousImage]
    notes: list[str]

    @property
    def complete(self) -> bool:
        return all(c.short == 0 for c in self.classes)

    @property
    def manifest(self) -> Path:
        return self.out / MANIFEST

    def to_json(self) -> dict[str, object]:
        return {
            "out": str(self.out),
            "engine": self.engine,
            "manifest": str(self.manifest),
            "complete": self.complete,
            "classes": [c.to_json() for c in self.classes],
            "ambiguous": [a.to_json() for a in self.ambiguous],
            "notes": sorted(self.notes),
        }

    def __repr__(self) -> str:
        kept = {c.slug: c.kept for c in self.classes}
        return reprs.short_repr(
            "FetchResult", {"out": str(self.out), "kept": kept, "complete": self.complete}
        )

    def _repr_html_(self) -> str:
        rows = [[c.keyword, c.slug, c.kept, c.requested, c.why_short] for c in self.classes]
        columns = ["keyword", "folder", "kept", "wanted", "why short"]
        return reprs.html_table(f"mtl fetch -> {self.out}", columns, rows, sorted(self.notes))


@dataclass
class _Class:
    keyword: Keyword
    folder: Path
    source: EngineSource | ListSource
    result: ClassResult
    next_index: int
    end: float | None = None


@dataclass
class _Got:
    """A download that passed every check, waiting for dedupe and a name."""

    tmp: Path
    sha256: str
    info: ImageInfo


class _Run:
    def __init__(self, plan: Plan, pool: ThreadPoolExecutor, on_progress: ProgressFn) -> None:
        self.plan = plan
        self.pool = pool
        self.on_progress = on_progress
        self.state = OutputState.load(plan.out)
        self.images = new_session()
        self.engine_session = EngineSession(plan.engine_base, plan.timeout)
        self.found_ambiguous: list[AmbiguousImage] = []
        self.classes = [self._open(kw) for kw in plan.keywords]

    def _open(self, kw: Keyword) -> _Class:
        folder = files.owned_dir(self.plan.out / kw.slug, under=self.plan.out)
        remove_temp_files(folder)
        self.state.adopt_folder(kw.slug, self.plan.min_size)
        have = self.state.count(kw.slug)
        source: EngineSource | ListSource
        if self.plan.engine == "urls":
            known = self.state.urls(kw.slug)
            urls = deque(u for u in self.plan.url_lists[kw.slug] if u not in known)
            source = ListSource(urls)
            if not urls:
                source.stop("the URL list has no more entries")
        else:
            source = EngineSource(
                self.plan.engine,
                kw.text,
                self.engine_session,
                self.plan.timeout,
                skip=self.state.urls(kw.slug),
                api_key=self.plan.api_key,
            )
        result = ClassResult(kw.text, kw.slug, self.plan.limit, existing=have, kept=have)
        return _Class(kw, folder, source, result, first_free_index(folder))

    def run(self) -> None:
        for cls in self.classes:
            self.on_progress(cls.keyword.slug, cls.keyword.text, cls.result.kept, self.plan.limit)
        for _ in range(MAX_PASSES):
            todo = [c for c in self.classes if c.result.short and not c.source.exhausted]
            if not todo:
                break
            for cls in todo:
                self._fill(cls)
        for cls in self.classes:
            if cls.result.short:
                cls.result.why_short = cls.source.why or "stopped after several passes"

    def _fill(self, cls: _Class) -> None:
        if cls.end is None:
            cls.end = time.monotonic() + self.plan.deadline
        chunk = max(8, 2 * self.plan.threads)
        while cls.result.short and not cls.source.exhausted:
            urls = cls.source.take(min(cls.result.short, chunk), cls.end)
            if not urls:
                break
            end = cls.end
            futures = [self.pool.submit(self._get, url, cls.folder, end) for url in urls]
            for url, future in zip(urls, futures, strict=True):
                self._commit(cls, url, future.result())
            self.state.save()
            if time.monotonic() >= cls.end:
                cls.source.stop("ran out of time (--deadline)")

    def _get(self, url: str, folder: Path, end: float) -> _Got | Rejected:
        """Runs on a worker thread: download, then decode fully."""
        try:
            limit = min(time.monotonic() + self.plan.timeout, end)
            got = download(self.images, url, folder, end=limit, max_bytes=self.plan.max_bytes)
        except Rejected as exc:
            return exc
        try:
            info = inspect_image(got.path, self.plan.min_size)
        except Rejected as exc:
            got.path.unlink(missing_ok=True)
            return exc
        return _Got(got.path, got.sha256, info)

    def _commit(self, cls: _Class, url: str, got: _Got | Rejected) -> None:
        if isinstance(got, Rejected):
            cls.result.rejected[got.reason] += 1
            return
        index = self.state.index
        matches = index.matches(got.sha256, got.info.phash)
        if self.state.is_held(got.sha256, got.info.phash):
            reason: Reason | None = "set_aside"  # not "ambiguous": review judged it
        elif index.is_blocked(got.sha256, got.info.phash):
            reason = "ambiguous"
        elif any(m.slug == cls.keyword.slug for m in matches):
            reason = "duplicate"
        elif matches:
            self._ambiguous(cls, url, got, [m.file for m in matches])
            reason = "ambiguous"
        else:
            reason = None
        if reason:
            got.tmp.unlink(missing_ok=True)
            cls.result.rejected[reason] += 1
            return
        self._keep(cls, url, got)

    def _keep(self, cls: _Class, url: str, got: _Got) -> None:
        final, cls.next_index = next_free_name(cls.folder, got.info.extension, cls.next_index)
        file = f"{cls.keyword.slug}/{final.name}"
        info = got.info
        entry = ManifestEntry(
            cls.keyword.slug,
            file,
            url,
            self.plan.engine,
            got.sha256,
            info.phash,
            info.width,
            info.height,
            now_iso(),
        )
        self.state.record(entry)  # journalled first: a kill -9 after place() keeps the URL
        place(got.tmp, final)
        self.state.add(entry)
        cls.result.kept += 1
        cls.result.new_files.append(file)
        self.on_progress(cls.keyword.slug, cls.keyword.text, cls.result.kept, self.plan.limit)

    def _ambiguous(self, cls: _Class, url: str, got: _Got, files: list[str]) -> None:
        """The same picture under two labels: its label is unknown, so keep it in neither."""
        removed = [e for f in files if (e := self.state.remove(f)) is not None]
        by_slug = {c.keyword.slug: c for c in self.classes}
        for entry in removed:
            owner = by_slug.get(entry.class_)
            if owner is not None:
                owner.result.kept -= 1
                if entry.file in owner.result.new_files:
                    owner.result.new_files.remove(entry.file)
        amb = AmbiguousImage(
            sha256=got.sha256,
            phash=got.info.phash,
            classes=tuple(sorted({cls.keyword.slug, *(e.class_ for e in removed)})),
            urls=tuple(sorted({url, *(e.url for e in removed if e.url)})),
            removed=tuple(sorted(e.file for e in removed)),
        )
        self.state.index.block(got.sha256, got.info.phash)
        self.state.ambiguous.append(amb)
        self.found_ambiguous.append(amb)


def _ignore(slug: str, keyword: str, kept: int, limit: int) -> None:
    pass


def fetch(request: FetchRequest, on_progress: ProgressFn | None = None) -> FetchResult:
    """Fetch images for every keyword of ``request``; see ``mtl fetch --help``.

    Raises :class:`~mtl.errors.UsageError` for bad arguments before any download.
    """
    plan = make_plan(request)
    try:
        plan.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --out {plan.out}: {exc.strerror or exc}") from None
    # One fetch per --out at a time: two would each rewrite the manifest from
    # their own view and one class would silently vanish from it.
    with folder_lock(plan.out, "mtl fetch"):
        run = _fetch_locked(plan, on_progress)
    return FetchResult(
        out=plan.out,
        engine=plan.engine,
        classes=sorted((c.result for c in run.classes), key=lambda r: r.slug),
        ambiguous=run.found_ambiguous,
        notes=run.state.notes,
    )


def _fetch_locked(plan: Plan, on_progress: ProgressFn | None) -> _Run:
    remove_temp_files(plan.out)
    pool = ThreadPoolExecutor(max_workers=plan.threads, thread_name_prefix="mtl-fetch")
    run: _Run | None = None
    try:
        run = _Run(plan, pool, on_progress or _ignore)
        run.run()
    finally:
        # Downloads still in flight end within --timeout; wait for them so no
        # temp file is created after the clean-up below.
        pool.shutdown(wait=True, cancel_futures=True)
        if run is not None:
            run.state.save()
            for cls in run.classes:
                remove_temp_files(cls.folder)
    return run

"""What is already in ``--out``: kept files, their hashes, and the images refused as ambiguous.

A resumed run starts from here, so it only fetches what is missing and never
touches a file it did not just write (except an image it proves ambiguous).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from mtl import files
from mtl.crawler.dedupe import Entry, HashIndex
from mtl.crawler.download import TEMP_PREFIX, TEMP_SUFFIX
from mtl.crawler.manifest import (
    AmbiguousImage,
    ManifestEntry,
    append_pending,
    clear_pending,
    load_ambiguous,
    load_manifest,
    load_pending,
    save_ambiguous,
    save_manifest,
)
from mtl.crawler.reasons import Rejected
from mtl.crawler.validate import inspect_image
from mtl.data.images import is_image_name
from mtl.errors import DataError


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def remove_temp_files(folder: Path) -> None:
    """Temp files a killed run left behind; they are never complete images."""
    if folder.is_dir():
        for path in folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            path.unlink(missing_ok=True)


@dataclass
class OutputState:
    """The manifest, the hash index over it, and the ambiguous list, for one ``--out``."""

    out: Path
    entries: dict[str, ManifestEntry] = field(default_factory=dict)  # by file
    index: HashIndex = field(default_factory=HashIndex)
    ambiguous: list[AmbiguousImage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    held: list[ManifestEntry] = field(default_factory=list)  # set aside by `mtl review`
    held_index: HashIndex = field(default_factory=HashIndex)  # the held pictures' hashes

    @classmethod
    def load(cls, out: Path) -> OutputState:
        state = cls(out=out)
        for entry in load_manifest(out):
            if entry.status != "ok":  # set aside by `mtl review --apply`: never kept again
                state.hold(entry)
            elif (out / entry.file).is_file():
                state.add(entry)
            else:
                state.notes.append(f"{entry.file} is gone; dropped from the manifest")
        state.ambiguous = load_ambiguous(out)
        for amb in state.ambiguous:
            state.index.block(amb.sha256, amb.phash)
        for entry in load_pending(out):
            path = out / entry.file
            if entry.file in state.entries or not path.is_file():
                continue  # never placed (killed between journal and rename), or known
            if files.sha256(path) == entry.sha256 and not state.index.is_blocked(
                entry.sha256, entry.phash
            ):
                state.add(entry)
        return state

    def hold(self, entry: ManifestEntry) -> None:
        self.held.append(entry)
        self.index.block(entry.sha256, entry.phash)
        self.held_index.block(entry.sha256, entry.phash)

    def is_held(self, sha256: str, phash: str) -> bool:
        """Whether review set this picture aside (a refusal of its own, not "ambiguous")."""
        return self.held_index.is_blocked(sha256, phash)

    def record(self, entry: ManifestEntry) -> None:
        """Journal ``entry`` before its file is placed (see :data:`manifest.PENDING`)."""
        append_pending(self.out, entry)

    def add(self, entry: ManifestEntry) -> None:
        self.entries[entry.file] = entry
        self.index.add(Entry(entry.class_, entry.file, entry.sha256, entry.phash))

    def remove(self, file: str) -> ManifestEntry | None:
        """Delete a kept file from disk, manifest and index (an ambiguous image)."""
        (self.out / file).unlink(missing_ok=True)
        self.index.remove(file)
        return self.entries.pop(file, None)

    def count(self, slug: str) -> int:
        return sum(1 for e in self.entries.values() if e.class_ == slug)

    def urls(self, slug: str) -> set[str]:
        return {e.url for e in self.entries.values() if e.class_ == slug and e.url}

    def adopt_folder(self, slug: str, min_size: tuple[int, int]) -> None:
        """Count valid images a user put in the class folder by hand (or a crash left unlisted)."""
        folder = self.out / slug
        for path in sorted(folder.iterdir()):
            file = f"{slug}/{path.name}"
            if path.name.startswith(".") or not is_image_name(path) or file in self.entries:
                continue
            try:
                info = inspect_image(path, min_size)
            except Rejected as exc:
                self.notes.append(f"{file} is not counted: {exc.detail}")
                continue
            sha = files.sha256(path)
            if self.index.matches(sha, info.phash) or self.index.is_blocked(sha, info.phash):
                self.notes.append(f"{file} is not counted: a duplicate")
                continue
            self.add(
                ManifestEntry(
                    slug,
                    file,
                    None,
                    "local",
                    sha,
                    info.phash,
                    info.width,
                    info.height,
                    now_iso(),
                )
            )

    def save(self) -> None:
        if self.out.is_dir():
            self._merge_review_marks()
            save_manifest(self.out, [*self.entries.values(), *self.held])
            save_ambiguous(self.out, self.ambiguous)
            clear_pending(self.out)

    def _merge_review_marks(self) -> None:
        """Keep what `mtl review` wrote into the manifest since this run read it (review
        takes the same folder lock, so this is belt and braces): its set-aside marks, and
        a relabelled photo's new place instead of its old one."""
        try:
            on_disk = load_manifest(self.out)
        except DataError:
            return  # unreadable now: this run's own view is all there is
        held = {e.file for e in self.held}
        for entry in on_disk:
            if entry.status != "ok" and entry.file not in held:
                self.entries.pop(entry.file, None)
                self.index.remove(entry.file)
                self.hold(entry)
            elif (
                entry.status == "ok"
                and entry.file not in self.entries
                and entry.file not in held
                and (self.out / entry.file).is_file()
            ):
                moved = [f for f, e in self.entries.items() if e.sha256 == entry.sha256]
                for f in moved:
                    if not (self.out / f).exists():
                        self.entries.pop(f)
                        self.index.remove(f)
                self.add(entry)


def next_free_name(folder: Path, extension: str, start: int) -> tuple[Path, int]:
    """``000042.jpg``-style name that exists under no extension; never reuse a name."""
    index = start
    taken = {p.stem for p in folder.iterdir()} if folder.is_dir() else set()
    while f"{index:06d}" in taken:
        index += 1
    return folder / f"{index:06d}{extension}", index + 1


def first_free_index(folder: Path) -> int:
    numbers = [int(p.stem) for p in folder.iterdir() if p.stem.isdigit()]
    return max(numbers, default=0) + 1


def place(tmp: Path, final: Path) -> None:
    """Move a checked temp file into place; refuse to replace anything."""
    files.refuse_link(final)
    if final.exists():
        raise FileExistsError(final)
    os.chmod(tmp, 0o644)  # mkstemp made it 0600; kept images are ordinary files
    os.replace(tmp, final)

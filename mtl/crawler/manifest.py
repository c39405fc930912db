"""``manifest.jsonl``: one JSON line per kept file, and the ambiguous images to never keep.

Both are rewritten whole, atomically, so a crash leaves the old or the new
version and never half a line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from mtl import files
from mtl.data.dataset import MANIFEST_LIMIT
from mtl.errors import DataError
from mtl.safepaths import inside, relative_problem

MANIFEST = "manifest.jsonl"
AMBIGUOUS = "ambiguous.jsonl"
# Write-ahead journal: an entry is appended here *before* its file is moved into
# place, so a run killed before the manifest is rewritten still knows the URL
# of every file it placed (and does not download them again as "local" files).
PENDING = ".mtl-pending.jsonl"


@dataclass(frozen=True)
class ManifestEntry:
    """A kept file. ``file`` is relative to the output folder, with ``/``."""

    class_: str
    file: str
    url: str | None
    engine: str
    sha256: str
    phash: str
    width: int
    height: int
    fetched: str  # ISO 8601, UTC
    # Set aside by `mtl review --apply` ("review", with the reason in "review"): kept
    # listed so the same picture is refused again; train skips it.
    status: str = "ok"
    review: str | None = None

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        if data["status"] == "ok":  # unchanged lines for files review never touched
            del data["status"], data["review"]
        return {"class": data.pop("class_"), **data}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ManifestEntry:
        file, class_ = data["file"], data["class"]
        # A manifest is data from disk: an entry must name CLASS/FILE inside --out, or a
        # later clean-up (an ambiguous image) could delete a file elsewhere.
        # ("/victim" passes a parts check: PurePosixPath("/victim").parts == ("/", "victim").)
        why = relative_problem(class_, parts=1)
        if why:
            raise ValueError(f"class {class_!r} is not a folder name ({why})")
        why = relative_problem(file, parts=2)
        if why:
            raise ValueError(f"file {file!r} is not CLASS/NAME inside the output folder ({why})")
        assert isinstance(file, str) and isinstance(class_, str)
        if not file.startswith(class_ + "/"):
            raise ValueError(f"file {file!r} is not in the folder of its class {class_!r}")
        return cls(
            class_=class_,
            file=file,
            url=None if data.get("url") is None else str(data["url"]),
            engine=str(data.get("engine", "")),
            sha256=str(data["sha256"]),
            phash=str(data["phash"]),
            width=int(str(data["width"])),
            height=int(str(data["height"])),
            fetched=str(data.get("fetched", "")),
            status=str(data.get("status", "ok")),
            review=None if data.get("review") is None else str(data["review"]),
        )


@dataclass(frozen=True)
class AmbiguousImage:
    """An image found under several classes, so kept in none of them."""

    sha256: str
    phash: str
    classes: tuple[str, ...]
    urls: tuple[str, ...]
    removed: tuple[str, ...]  # files deleted because of it

    def to_json(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _read_lines(path: Path, *, torn_tail: bool = False) -> list[tuple[int, dict[str, object]]]:
    """``(line number, object)`` per non-empty line. With ``torn_tail`` an unreadable last
    line (an append cut short by a crash) is dropped instead of refused."""
    if not path.exists():
        return []
    try:
        text = files.read_text_limited(path, MANIFEST_LIMIT, "a manifest")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise DataError(f"cannot read {path}: {why}; fix or delete the file") from None
    # Split on "\n" only: str.splitlines also splits on U+2028 and friends, which
    # json.dumps(ensure_ascii=False) leaves unescaped inside strings.
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = files.loads_json(line)
        except json.JSONDecodeError:
            if torn_tail and not any(rest.strip() for rest in lines[number:]):
                break
            raise DataError(f"{path}:{number}: not a JSON line; fix or delete the file") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object")
        rows.append((number, row))
    return rows


def _entries(out: Path, name: str, *, torn_tail: bool = False) -> list[ManifestEntry]:
    path = out / name
    entries = []
    for number, row in _read_lines(path, torn_tail=torn_tail):
        try:
            entry = ManifestEntry.from_json(row)
        except KeyError as exc:
            raise DataError(
                f"{path}:{number}: a bad entry (no {exc}); fix or delete the file"
            ) from None
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{path}:{number}: a bad entry ({exc}); fix or delete the file"
            ) from None
        if not inside(out, entry.file):
            raise DataError(
                f"{path}:{number}: {entry.file!r} leads outside {out} (a symlinked folder); "
                "fix or delete the file"
            )
        entries.append(entry)
    return entries


def load_manifest(out: Path) -> list[ManifestEntry]:
    """The kept files; every entry checked (CLASS/NAME inside ``out``) before any is used."""
    return _entries(out, MANIFEST)


def append_pending(out: Path, entry: ManifestEntry) -> None:
    """Journal ``entry`` before its file is placed; the line is in the kernel's hands on return."""
    line = json.dumps(entry.to_json(), ensure_ascii=False) + "\n"
    files.append_text(out / PENDING, line)


def load_pending(out: Path) -> list[ManifestEntry]:
    """Journalled entries of a run that died before rewriting the manifest (checked like it)."""
    return _entries(out, PENDING, torn_tail=True)


def clear_pending(out: Path) -> None:
    files.remove(out / PENDING)


def save_manifest(out: Path, entries: list[ManifestEntry]) -> None:
    rows = sorted(entries, key=lambda e: e.file)
    text = "".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in rows)
    files.write_text(out / MANIFEST, text, force=True)


def _strs(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def load_ambiguous(out: Path) -> list[AmbiguousImage]:
    rows = [row for _, row in _read_lines(out / AMBIGUOUS)]
    return [
        AmbiguousImage(
            sha256=str(r["sha256"]),
            phash=str(r["phash"]),
            classes=_strs(r.get("classes")),
            urls=_strs(r.get("urls")),
            removed=_strs(r.get("removed")),
        )
        for r in rows
    ]


def save_ambiguous(out: Path, images: list[AmbiguousImage]) -> None:
    if not images:
        return
    rows = sorted(images, key=lambda a: (a.sha256, a.classes))
    text = "".join(json.dumps(a.to_json(), ensure_ascii=False) + "\n" for a in rows)
    files.write_text(out / AMBIGUOUS, text, force=True)

"""``manifest.jsonl``: one JSON line per kept file, and the ambiguous images to never keep.

Both are rewritten whole, atomically, so a crash leaves the old or the new
version and never half a line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from mtl import files
from mtl.errors import DataError

MANIFEST = "manifest.jsonl"
AMBIGUOUS = "ambiguous.jsonl"


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
        file = str(data["file"])
        class_ = str(data["class"])
        parts = PurePosixPath(file).parts
        # A manifest is data from disk: an entry must name CLASS/FILE inside --out, or a
        # later clean-up (an ambiguous image) could delete a file elsewhere.
        if len(parts) != 2 or parts[0] != class_ or ".." in parts or "\\" in file:
            raise ValueError(f"file {file!r} is not CLASS/NAME inside the output folder")
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


def _read_lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{path}:{number}: not a JSON line; fix or delete the file") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object")
        rows.append(row)
    return rows


def load_manifest(out: Path) -> list[ManifestEntry]:
    path = out / MANIFEST
    try:
        return [ManifestEntry.from_json(row) for row in _read_lines(path)]
    except (KeyError, ValueError) as exc:
        raise DataError(f"{path}: a bad entry ({exc}); fix or delete the file") from None


def save_manifest(out: Path, entries: list[ManifestEntry]) -> None:
    rows = sorted(entries, key=lambda e: e.file)
    text = "".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in rows)
    files.write_text(out / MANIFEST, text, force=True)


def _strs(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def load_ambiguous(out: Path) -> list[AmbiguousImage]:
    rows = _read_lines(out / AMBIGUOUS)
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

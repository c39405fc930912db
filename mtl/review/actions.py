"""Acting on findings, only when asked: set photos aside, relabel them, and undo it all.

``--apply`` moves each flagged photo to ``DATA/_review/<reason>/<its place>``
(never deletes), ``--relabel`` moves confident wrong-label photos to the
suggested class instead. Every move is recorded in ``DATA/_review/review.jsonl``
*before* it happens (a second ``--apply`` appends), and ``manifest.jsonl``
lines of moved photos are marked (``"status": "review"``: `mtl fetch` keeps
them listed and refuses the same picture again; `mtl train` skips them) with
the original line kept in the record. ``--undo`` reads the records back,
checks every one before touching anything (paths relative and inside DATA,
nothing at an original place), moves the photos back, restores the manifest
lines and removes what review wrote, so the folder is as it was.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from mtl import files
from mtl.data.dataset import MANIFEST, REVIEW_FOLDER
from mtl.errors import DataError, UsageError
from mtl.review.flags import REASONS, Finding

RECORDS = "review.jsonl"
REPORT = "report.html"


@dataclass(frozen=True)
class Move:
    """One recorded move: ``file`` is where the photo is now, ``original`` where it was."""

    file: str  # relative to DATA, POSIX
    original: str
    action: str  # "set_aside" or "relabel"
    reason: str
    score: float
    given: str
    suggested: str | None
    manifest_line: str | None  # the manifest line before review changed it
    applied: str

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "original": self.original,
            "action": self.action,
            "reason": self.reason,
            "score": round(self.score, 4),
            "given": self.given,
            "suggested": self.suggested,
            "manifest_line": self.manifest_line,
            "applied": self.applied,
        }


def review_dir(root: Path) -> Path:
    return root / REVIEW_FOLDER


def records_path(root: Path) -> Path:
    return review_dir(root) / RECORDS


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _rel(root: Path, path: Path) -> str:
    return path.resolve().relative_to(root.resolve()).as_posix()


def _free(path: Path, taken: set[Path]) -> Path:
    """``path``, or ``name-1.ext``, ``name-2.ext``... if something is (or will be) there."""
    candidate, n = path, 0
    while candidate.exists() or candidate in taken:
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    taken.add(candidate)
    return candidate


def plan(
    root: Path, findings: Sequence[Finding], *, relabel: bool, relabel_confidence: float
) -> list[Move]:
    """The moves ``--apply`` (and ``--relabel``) would make, in the order of ``findings``."""
    root = root.resolve()
    taken: set[Path] = set()
    manifest = _manifest_lines(root)
    moves = []
    stamp = _now()
    for f in findings:
        src = f.path.resolve()
        original = _rel(root, src)
        sure = f.reason == "wrong_label" and f.suggested_probability >= relabel_confidence
        if relabel and sure and f.suggested is not None:
            dest = _free(src.parent.parent / f.suggested / src.name, taken)
            action = "relabel"
        else:
            dest = _free(review_dir(root) / f.reason / original, taken)
            action = "set_aside"
        line = next((text for rel, text in manifest if rel == original), None)
        moves.append(
            Move(_rel(root, dest), original, action, f.reason, f.score, f.given, f.suggested,
                 line, stamp)
        )  # fmt: skip
    return moves


def apply(root: Path, moves: Sequence[Move]) -> list[Move]:
    """Record, then move, then mark the manifest. Returns the moves made."""
    if not moves:
        return []
    root = root.resolve()
    previous = read_records(root)  # validated: a second --apply keeps the first's record
    _write_records(root, [*previous, *moves])
    done = []
    for m in moves:
        src, dest = root / m.original, root / m.file
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():  # pragma: no cover - plan() picked a free name
            raise DataError(f"{dest} appeared while review was moving photos; nothing overwritten")
        os.replace(src, dest)
        done.append(m)
    _mark_manifest(root, done)
    return done


# --- the manifest -------------------------------------------------------------------------


def _entry_path(entry: dict[str, object]) -> str | None:
    rel = entry.get("file") or entry.get("path")
    return rel if isinstance(rel, str) else None


def _manifest_lines(root: Path) -> list[tuple[str | None, str]]:
    """(path the line names, the line's text) for every line of ``manifest.jsonl``."""
    path = root / MANIFEST
    if not path.is_file():
        return []
    out: list[tuple[str | None, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        rel = _entry_path(entry) if isinstance(entry, dict) else None
        out.append((PurePosixPath(rel).as_posix() if rel else None, line))
    return out


def _marked(line: str, move: Move) -> str:
    entry = json.loads(line)
    if move.action == "relabel":
        key = "file" if "file" in entry else "path"
        entry[key] = move.file
        for label_key in ("class", "label"):
            if label_key in entry:
                entry[label_key] = move.suggested
        entry["relabeled_from"] = move.original
    else:
        entry["status"] = "review"
        entry["review"] = move.reason
    end = "\n" if line.endswith("\n") else ""
    return json.dumps(entry, ensure_ascii=False) + end


def _mark_manifest(root: Path, moves: Sequence[Move]) -> None:
    lines = _manifest_lines(root)
    if not lines:
        return
    by_original = {m.original: m for m in moves if m.manifest_line is not None}
    text = "".join(
        _marked(line, by_original[rel]) if rel in by_original else line for rel, line in lines
    )
    files.write_text(root / MANIFEST, text, force=True)


def _restore_manifest(root: Path, moves: Sequence[Move]) -> None:
    wanted = [m for m in moves if m.manifest_line is not None]
    if not wanted:
        return
    lines = _manifest_lines(root)
    # A marked line names the original place (set aside) or the new one (relabel).
    at = {(m.file if m.action == "relabel" else m.original): m for m in wanted}
    restored: set[str] = set()
    out = []
    for rel, line in lines:
        m = at.get(rel) if rel is not None else None
        if m is not None and m.original not in restored:
            out.append(m.manifest_line or line)
            restored.add(m.original)
        else:
            out.append(line)
    out += [m.manifest_line or "" for m in wanted if m.original not in restored]  # dropped since
    files.write_text(root / MANIFEST, "".join(out), force=True)


# --- the records ----------------------------------------------------------------------------


def _write_records(root: Path, moves: Sequence[Move]) -> None:
    text = "".join(json.dumps(m.to_json(), ensure_ascii=False) + "\n" for m in moves)
    files.write_text(records_path(root), text, force=True)


def _inside(root: Path, value: object, where: str, field: str) -> str:
    """``value`` as a safe relative POSIX path inside ``root``, or a DataError naming ``where``."""
    if not isinstance(value, str) or not value:
        raise DataError(f"{where}: {field!r} is missing or not a path")
    p = PurePosixPath(value)
    if p.is_absolute() or "\\" in value or ".." in p.parts or value.startswith("~") or ":" in value:
        raise DataError(f"{where}: {field} {value!r} is not a relative path inside {root}")
    full = (root / p).resolve()
    if not full.is_relative_to(root.resolve()) or full == root.resolve():
        raise DataError(f"{where}: {field} {value!r} points outside {root}")
    return p.as_posix()


def read_records(root: Path) -> list[Move]:
    """Every record of ``review.jsonl``, each checked: exit 2 naming the line if any is unsafe."""
    path = records_path(root)
    if not path.is_file():
        return []
    moves = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            row = json.loads(line)
        except ValueError:
            raise DataError(f"{where}: not a JSON line; nothing was moved") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object; nothing was moved")
        file = _inside(root, row.get("file"), where, "file")
        original = _inside(root, row.get("original"), where, "original")
        action = row.get("action")
        if action not in ("set_aside", "relabel"):
            raise DataError(f"{where}: unknown action {action!r}")
        if action == "set_aside" and PurePosixPath(file).parts[0] != REVIEW_FOLDER:
            raise DataError(f"{where}: file {file!r} is not under {REVIEW_FOLDER}/")
        if PurePosixPath(original).parts[0] == REVIEW_FOLDER:
            raise DataError(f"{where}: original {original!r} is inside {REVIEW_FOLDER}/")
        line_text = row.get("manifest_line")
        if line_text is not None and not isinstance(line_text, str):
            raise DataError(f"{where}: manifest_line is not text")
        reason = str(row.get("reason", ""))
        moves.append(
            Move(file, original, str(action), reason if reason in REASONS else "unknown",
                 float(row.get("score") or 0.0), str(row.get("given", "")),
                 None if row.get("suggested") is None else str(row.get("suggested")),
                 line_text, str(row.get("applied", "")))
        )  # fmt: skip
    return moves


@dataclass(frozen=True)
class UndoResult:
    restored: list[Move]
    already: list[Move]  # recorded, but the photo was back in place already

    def to_json(self) -> dict[str, object]:
        return {
            "restored": [m.to_json() for m in self.restored],
            "already_in_place": [m.original for m in self.already],
        }


def undo(data: str | os.PathLike[str]) -> UndoResult:
    """Put every recorded photo back; refuse (exit 2) before moving anything if a record is
    unsafe or a file now sits at an original place."""
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"no such folder: {root}")
    if not records_path(root).is_file():
        raise UsageError(f"nothing to undo: no {REVIEW_FOLDER}/{RECORDS} in {root}")
    root = root.resolve()
    moves = read_records(root)
    todo, already = [], []
    originals: set[str] = set()
    for m in reversed(moves):
        src, dest = root / m.file, root / m.original
        if m.original in originals:
            raise DataError(f"{records_path(root)}: {m.original} is recorded twice; nothing moved")
        originals.add(m.original)
        if not src.exists() and dest.exists():
            already.append(m)  # the move never happened (a crash) or was undone by hand
            continue
        if not src.is_file():
            raise DataError(f"{src} (recorded in {RECORDS}) is missing; nothing was moved")
        if dest.exists():
            raise DataError(
                f"{dest} exists now; undo would overwrite it. Move it away and run --undo "
                "again; nothing was moved"
            )
        todo.append(m)
    for m in todo:
        dest = root / m.original
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(root / m.file, dest)
    _restore_manifest(root, [*todo, *already])
    records_path(root).unlink()
    (review_dir(root) / REPORT).unlink(missing_ok=True)
    _remove_empty(review_dir(root))
    return UndoResult(todo, already)


def _remove_empty(folder: Path) -> None:
    """Remove ``folder`` and the folders under it that are empty (never a file)."""
    if not folder.is_dir():
        return
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(sub.iterdir()):
            sub.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()

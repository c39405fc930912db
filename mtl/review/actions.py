"""Acting on findings, only when asked: set photos aside, relabel them, and undo it all.

``--apply`` moves each flagged photo to ``DATA/_review/<reason>/<its place>``
(never deletes), ``--relabel`` moves confident wrong-label photos to the top of
the suggested class's folder instead, and ``--apply DECISIONS`` does what a
decisions file from the review page says. ``manifest.jsonl`` lines of moved
photos are marked (``"status": "review"``: `mtl fetch` keeps them listed and
refuses the same picture again; `mtl train` skips them), the original line kept
in the record.

``DATA/_review/review.jsonl`` is a journal, written under the folder lock that
`mtl fetch` and `mtl train` take:

- a record is written *before* its move, so a crash leaves a record whose photo
  is still in place; the next ``--apply`` or ``--undo`` reconciles it (drops it)
  from what is on disk, so nothing is recorded twice;
- records chain: a photo relabelled by one apply and set aside by a later one
  has two records, and ``--undo`` replays them newest first;
- ``--undo`` puts back what it can (a photo deleted since, or a file now at its
  place, is reported and, if it may still be restored later, kept recorded);
- every record read back is checked before anything moves: both paths inside
  DATA, relative, through no symbolic link, a photo, the shape of one of
  review's own moves, the photo's content the one recorded (SHA-256).

Symbolic links are never followed to decide what to move or delete: a photo,
class folder or ``_review/`` that is a link is refused up front (exit 2),
naming it.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from mtl import files
from mtl.data.dataset import MANIFEST, REVIEW_FOLDER, split_role
from mtl.data.images import is_image_name
from mtl.errors import DataError, UsageError
from mtl.review.flags import REASONS, Finding
from mtl.review.report import DECISIONS_FORMAT, mark_undone
from mtl.safepaths import relative_problem

RECORDS = "review.jsonl"
REPORT = "report.html"
REMOVED = "removed"  # the reason of a photo a decisions file says to remove
# A decision or a journal record is a few hundred bytes: 64 MiB is some 200,000 photos,
# and a planted file past it is refused before it fills memory.
RECORDS_LIMIT = 64 << 20
MOVE_REASONS = (*REASONS, REMOVED)


def _in_split(folder: str) -> bool:
    """Whether a class folder under ``folder`` is one review reads: DATA/train or its
    validation folder, by train's one table of split names (any case, any alias)."""
    return split_role(folder) in ("train", "val")


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
    sha256: str = ""  # the photo's content when it was moved

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
            "sha256": self.sha256,
        }


def review_dir(root: Path) -> Path:
    return root / REVIEW_FOLDER


def records_path(root: Path) -> Path:
    return review_dir(root) / RECORDS


def check_review_dir(root: Path) -> Path:
    """``DATA/_review``, refused (exit 2) unless it is missing or a real folder: a link
    (an archive can carry one) would make review write and delete outside DATA."""
    folder = review_dir(root)
    if folder.is_symlink():
        raise DataError(
            f"{folder} is a symbolic link (to {os.readlink(folder)}); mtl review writes only "
            f"into a real folder inside {root}: remove the link; nothing was written"
        )
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder} is not a folder; move it away; nothing was written")
    return folder


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _link_in(root: Path, rel: str, known: set[str] | None = None) -> Path | None:
    """The first symbolic link on the way from ``root`` to ``root/rel`` (itself included).
    ``known``: folders already found not to be links in this operation (each folder is
    then looked at once, not once per photo in it)."""
    here = str(root)
    parts = PurePosixPath(rel).parts
    for n, part in enumerate(parts, 1):
        here = os.path.join(here, part)
        folder = n < len(parts)
        if folder and known is not None and here in known:
            continue
        if os.path.islink(here):
            return Path(here)
        if folder and known is not None:
            known.add(here)
    return None


def _refuse_link(root: Path, rel: str, known: set[str] | None = None) -> None:
    link = _link_in(root, rel, known)
    if link is not None:
        raise DataError(
            f"{link} is a symbolic link (to {os.readlink(link)}); mtl review moves only real "
            f"files in real folders of {root}: replace it with a copy or remove it; "
            "nothing was moved"
        )


def _free(root: Path, rel: PurePosixPath, taken: set[str]) -> str:
    """``rel``, or ``name-1.ext``, ``name-2.ext``... if something is (or will be) there."""
    candidate, n = rel, 0
    while os.path.lexists(root / candidate) or candidate.as_posix() in taken:
        n += 1
        candidate = rel.with_name(f"{rel.stem}-{n}{rel.suffix}")
    taken.add(candidate.as_posix())
    return candidate.as_posix()


def _class_prefix(original: PurePosixPath, given: str) -> tuple[str, ...]:
    """The folders above the photo's class folder: () or ("train",) / ("val",)."""
    parts = original.parts
    if len(parts) > 2 and _in_split(parts[0]) and parts[1] == given:
        return parts[:1]
    return ()


def relative(root: Path, path: Path) -> str:
    """``path`` relative to ``root``, lexically (links are not resolved: never followed)."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        raise DataError(f"{path} is not inside {root}; nothing was moved") from None


def plan(
    root: Path, findings: Sequence[Finding], *, relabel: bool, relabel_confidence: float
) -> list[Move]:
    """The moves ``--apply`` (and ``--relabel``) would make, in the order of ``findings``."""
    wanted = []
    for f in findings:
        sure = f.reason == "wrong_label" and f.suggested_probability >= relabel_confidence
        to = f.suggested if relabel and sure and f.suggested is not None else None
        wanted.append((relative(root, f.path), f.given, to, f.reason, f.score))
    return _plan(root, wanted)


def _plan(
    root: Path,
    wanted: Sequence[tuple[str, str, str | None, str, float]],
    shas: dict[str, str] | None = None,
) -> list[Move]:
    """Moves for (original, given class, target class or None to set aside, reason, score).
    ``shas``: SHA-256 already read, by original (a decisions file's checked photos)."""
    taken: set[str] = set()
    manifest: dict[str, str] = {}
    for rel, text in _manifest_lines(root):
        if rel is not None:
            manifest.setdefault(rel, text)  # the first line naming a photo, as before
    stamp = _now()
    moves = []
    known: set[str] = set()
    for original, given, target, reason, score in wanted:
        _refuse_link(root, original, known)
        src = PurePosixPath(original)
        if target is not None:
            # The top of the target class's folder: a photo in ants/sub/ goes to bees/.
            dest = PurePosixPath(*_class_prefix(src, given), target, src.name)
            action = "relabel"
        else:
            dest = PurePosixPath(REVIEW_FOLDER, reason, *src.parts)
            action = "set_aside"
        file = _free(root, dest, taken)
        line = manifest.get(original)
        sha = (shas or {}).get(original) or (
            files.sha256(root / original) if (root / original).is_file() else ""
        )
        moves.append(Move(file, original, action, reason, score, given, target, line, stamp, sha))
    return moves


def check(root: Path, moves: Sequence[Move]) -> None:
    """Refuse (exit 2) before anything moves: a link on either side, a photo that is not a
    regular file, a folder the move would need to write that is not writable."""
    check_review_dir(root)
    known: set[str] = set()  # folders checked already: each once, not once per photo
    usable: set[Path] = set()
    nearest: dict[Path, Path] = {}
    for m in moves:
        _refuse_link(root, m.original, known)
        _refuse_link(root, str(PurePosixPath(m.file).parent), known)
        src = root / m.original
        if not os.path.lexists(src):
            continue  # deleted since it was scored: apply skips it and says so
        if not src.is_file():
            raise DataError(f"{src} is not a regular file; nothing was moved")
        dest = (root / m.file).parent
        if dest not in nearest:
            nearest[dest] = _nearest_existing(dest)
        for folder in (src.parent, nearest[dest]):
            if folder in usable:
                continue
            usable.add(folder)
            if not folder.is_dir() or folder.is_symlink():
                raise DataError(f"cannot use {folder}: not a folder; nothing was moved")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise DataError(
                    f"cannot use {folder}: not writable (permission denied or a read-only "
                    "file system); nothing was moved"
                )


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


@dataclass
class Applied:
    """What one apply did: the moves made, and those it could not make (photo gone)."""

    moves: list[Move] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)


def apply(root: Path, moves: Sequence[Move]) -> list[Move]:
    """Reconcile the journal, check every move, record, move, mark the manifest.
    Returns the moves made (a photo deleted meanwhile is skipped)."""
    return apply_all(root, moves).moves


def apply_all(root: Path, moves: Sequence[Move]) -> Applied:
    done = Applied()
    if not moves:
        return done
    check(root, moves)
    kept = reconcile(root)
    _write_records(root, [*kept, *moves])  # written before the moves: the journal
    failure: OSError | None = None
    for m in moves:
        src, dest = root / m.original, root / m.file
        if not os.path.lexists(src):
            done.gone.append(m.original)  # deleted since it was scored
            continue
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(dest):
                raise FileExistsError(17, "a file appeared there; nothing overwritten", str(dest))
            os.replace(src, dest)
        except OSError as exc:
            failure = exc
            break
        done.moves.append(m)
    _mark_manifest(root, done.moves)
    _write_records(root, [*kept, *done.moves])
    if failure is not None:
        raise DataError(
            f"{_os_message(failure)}; {len(done.moves)} photo(s) were moved and recorded "
            f"(undo with: mtl review {root} --undo)"
        )
    return done


def _os_message(exc: OSError) -> str:
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    why = exc.strerror or str(exc) or type(exc).__name__
    return f"cannot use {' -> '.join(names)}: {why}" if names else why


# --- the manifest -------------------------------------------------------------------------


def _entry_path(entry: dict[str, object]) -> str | None:
    rel = entry.get("file") or entry.get("path")
    return rel if isinstance(rel, str) else None


def split_lines(text: str) -> list[str]:
    """Lines with their "\\n" kept, split on "\\n" only: ``str.splitlines`` also splits on
    U+2028 and friends, which ``json.dumps(ensure_ascii=False)`` leaves inside strings."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    return [*lines, parts[-1]] if parts[-1] else lines


def _manifest_lines(root: Path) -> list[tuple[str | None, str]]:
    """(path the line names, the line's text) for every line of ``manifest.jsonl``."""
    path = root / MANIFEST
    if not path.is_file() or path.is_symlink():
        return []
    out: list[tuple[str | None, str]] = []
    for line in split_lines(path.read_text(encoding="utf-8")):
        try:
            entry = files.loads_json(line)
        except ValueError:
            entry = None
        rel = _entry_path(entry) if isinstance(entry, dict) else None
        out.append((PurePosixPath(rel).as_posix() if rel else None, line))
    return out


def _marked(line: str, move: Move) -> str:
    entry = files.loads_json(line)
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


def _write_manifest(root: Path, lines: Sequence[tuple[str | None, str]]) -> None:
    last = len(lines) - 1  # only the last line may lack its "\n", as it did
    text = "".join(
        t if t.endswith("\n") or i == last else t + "\n" for i, (_, t) in enumerate(lines)
    )
    files.write_text(root / MANIFEST, text, force=True)


def _mark_manifest(root: Path, moves: Sequence[Move]) -> None:
    lines = _manifest_lines(root)
    by_original = {m.original: m for m in moves if m.manifest_line is not None}
    if not lines or not by_original:
        return
    out = []
    for rel, line in lines:
        m = by_original.get(rel) if rel is not None else None
        out.append(
            (m.file if m and m.action == "relabel" else rel, _marked(line, m) if m else line)
        )
    _write_manifest(root, out)


def _restore_lines(
    lines: list[tuple[str | None, str]], moves: Sequence[Move]
) -> list[tuple[str | None, str]]:
    """``lines`` with each move's line put back as it was, the moves taken newest first (a
    marked line names the original place, or the new one for a relabel)."""
    at: dict[str, list[int]] = {}  # path -> its lines, ascending: linear, not a scan a move
    for i, (rel, _) in enumerate(lines):
        if rel is not None:
            at.setdefault(rel, []).append(i)
    for m in moves:
        if m.manifest_line is None:
            continue
        found = [at[p][0] for p in (m.original, m.file) if at.get(p)]
        if not found:
            lines.append((m.original, m.manifest_line))  # dropped since (a fetch meanwhile)
            at.setdefault(m.original, []).append(len(lines) - 1)
            continue
        i = min(found)
        old = lines[i][0]
        lines[i] = (m.original, m.manifest_line)
        if old is not None and old != m.original:
            at[old].remove(i)  # the first of a path's few lines
            bisect.insort(at.setdefault(m.original, []), i)
    return lines


def _restore_manifest(root: Path, moves: Sequence[Move]) -> None:
    if any(m.manifest_line is not None for m in moves):
        _write_manifest(root, _restore_lines(_manifest_lines(root), moves))


# --- the journal ----------------------------------------------------------------------------


def _write_records(root: Path, moves: Sequence[Move]) -> None:
    if not moves:
        records_path(root).unlink(missing_ok=True)
        return
    text = "".join(json.dumps(m.to_json(), ensure_ascii=False) + "\n" for m in moves)
    try:
        files.write_text(records_path(root), text, force=True)
    except OSError as exc:
        raise DataError(f"{_os_message(exc)}; nothing more was moved") from None


def _renamed(name: str, original_name: str) -> bool:
    """Whether ``name`` is ``original_name`` or review's free variant of it (``x-2.jpg``)."""
    n, o = PurePosixPath(name), PurePosixPath(original_name)
    if n.suffix != o.suffix:
        return False
    base, dash, number = n.stem.rpartition("-")
    return n.stem == o.stem or (dash == "-" and base == o.stem and number.isdigit())


def _path(root: Path, value: object, where: str, name: str, known: set[str] | None = None) -> str:
    why = relative_problem(value)
    if why:
        raise DataError(f"{where}: {name} {value!r} is not a relative path inside {root} ({why})")
    assert isinstance(value, str)
    if not is_image_name(value):
        raise DataError(f"{where}: {name} {value!r} is not a photo")
    if any(part.startswith(".") for part in value.split("/")):
        raise DataError(f"{where}: {name} {value!r} is a hidden file or in a hidden folder")
    link = _link_in(root, value, known)
    if link is not None:
        raise DataError(f"{where}: {name} {value!r} goes through the symbolic link {link}")
    return value


def _record(root: Path, row: dict[str, object], where: str, known: set[str] | None = None) -> Move:
    """One journal line as a Move, if it is the shape of one of review's own moves."""
    file = _path(root, row.get("file"), where, "file", known)
    original = _path(root, row.get("original"), where, "original", known)
    action, reason = row.get("action"), row.get("reason")
    given, suggested = row.get("given"), row.get("suggested")
    src, dest = PurePosixPath(original), PurePosixPath(file)
    if src.parts[0] == REVIEW_FOLDER or len(src.parts) < 2:
        raise DataError(f"{where}: original {original!r} is not a photo in a class folder")
    if not isinstance(given, str) or not isinstance(reason, str) or reason not in MOVE_REASONS:
        raise DataError(f"{where}: no valid given class or reason")
    if action == "set_aside":
        expected = (REVIEW_FOLDER, reason, *src.parts[:-1])
        shape = dest.parts[:-1] == expected
    elif action == "relabel":
        prefix = _class_prefix(src, given)
        shape = (
            isinstance(suggested, str)
            and src.parts[len(prefix)] == given != suggested
            and dest.parts[:-1] == (*prefix, suggested)
            and suggested != REVIEW_FOLDER
        )
    else:
        raise DataError(f"{where}: unknown action {action!r}")
    if not shape or not _renamed(dest.name, src.name):
        raise DataError(f"{where}: {file!r} is not where review {action} puts {original!r}")
    sha = row.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise DataError(f"{where}: no valid sha256 of the photo")
    line = row.get("manifest_line")
    if line is not None:
        entry = (
            files.loads_json(line) if isinstance(line, str) and "\n" not in line.rstrip("\n") else 0
        )
        if not isinstance(entry, dict) or _entry_path(entry) != original:
            raise DataError(f"{where}: manifest_line is not the manifest line of {original!r}")
    score = row.get("score")
    return Move(
        file,
        original,
        str(action),
        reason,
        float(score) if isinstance(score, (int, float)) else 0.0,
        given,
        suggested if isinstance(suggested, str) else None,
        line if isinstance(line, str) else None,
        str(row.get("applied", "")),
        sha,
    )


def read_records(root: Path) -> list[Move]:
    """Every record of ``review.jsonl``, each checked: exit 2 naming the line if any is unsafe."""
    check_review_dir(root)
    path = records_path(root)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise DataError(f"{path} is not a regular file; nothing was moved")
    if not path.is_file():
        return []
    moves = []
    known: set[str] = set()
    text = files.read_text_limited(path, RECORDS_LIMIT, "review's journal")
    for n, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            row = files.loads_json(line)
        except ValueError:
            raise DataError(f"{where}: not a JSON line; nothing was moved") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object; nothing was moved")
        try:
            moves.append(_record(root, row, where, known))
        except ValueError:
            raise DataError(f"{where}: manifest_line is not a JSON line") from None
    return moves


# Where each record stands, found by replaying the journal newest first on paper.
RESTORE = "restore"  # the photo is at ``file``: undo moves it back
IN_PLACE = "in_place"  # the photo is at ``original``: never moved (a crash) or put back by hand
MISSING = "missing"  # at neither place: deleted since (or its chain is broken)
BLOCKED = "blocked"  # something else is at ``original`` (or at ``file``): left as it is


def replay(root: Path, moves: Sequence[Move]) -> list[tuple[Move, str]]:
    """Each record with where it stands, newest first, as undo would meet them: a record's
    place is freed by the newer records of its chain before it is looked at."""
    virtual: dict[str, str | None] = {}  # path -> sha256 of what undo would put there, None

    def content(rel: str) -> str | None:
        if rel in virtual:
            return virtual[rel]
        path = root / rel
        if not os.path.lexists(path):
            return None
        return files.sha256(path) if path.is_file() and not path.is_symlink() else "not a photo"

    broken: set[str] = set()  # places whose content is not the chain's photo
    out = []
    for m in reversed(moves):
        at_file, at_original = content(m.file), content(m.original)
        if m.file in broken:
            state = MISSING if at_file is None else BLOCKED
        elif at_file == m.sha256 and at_original is None:
            state = RESTORE
            virtual[m.original], virtual[m.file] = m.sha256, None
        elif at_file is None and at_original is not None:
            state = IN_PLACE
        elif at_file is None:
            state = MISSING
        else:
            state = BLOCKED
        if state in (MISSING, BLOCKED):
            broken.add(m.original)
        out.append((m, state))
    return out


def reconcile(root: Path) -> list[Move]:
    """The journal without records whose move never happened (a crash or a failed apply
    before it), their manifest lines restored; rewritten if that changed it."""
    moves = read_records(root)
    stale = [m for m, state in replay(root, moves) if state == IN_PLACE]
    if not stale:
        return moves
    _restore_manifest(root, stale)
    gone = {id(m) for m in stale}
    kept = [m for m in moves if id(m) not in gone]
    _write_records(root, kept)
    return kept


@dataclass(frozen=True)
class UndoResult:
    restored: list[Move]
    already: list[Move]  # recorded, but the photo was back in place already
    missing: list[Move] = field(default_factory=list)  # deleted since: nothing to put back
    blocked: list[Move] = field(default_factory=list)  # its place is taken: still recorded

    def to_json(self) -> dict[str, object]:
        return {
            "restored": [m.to_json() for m in self.restored],
            "already_in_place": [m.original for m in self.already],
            "missing": [m.to_json() for m in self.missing],
            "blocked": [m.to_json() for m in self.blocked],
        }


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """The folder lock `mtl fetch` and `mtl train` take: one writer of DATA at a time."""
    from mtl.locks import folder_lock

    with folder_lock(root, "mtl review"):
        yield


def undo(data: str | os.PathLike[str]) -> UndoResult:
    """Put every recorded photo back, newest record first, under the folder lock. A photo
    deleted since is reported (its manifest line stays marked, so fetch does not bring it
    back); one whose place is taken is reported and stays recorded for a later --undo.
    The review page stays, marked undone (issue 35: it is the record of what was found)."""
    root = Path(os.path.abspath(data))
    if not root.is_dir():
        raise DataError(f"no such folder: {root}")
    check_review_dir(root)
    path = records_path(root)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise DataError(f"{path} is not a regular file; nothing was moved")
    if not path.is_file():
        raise UsageError(f"nothing to undo: no {REVIEW_FOLDER}/{RECORDS} in {root}")
    with locked(root):
        return _undo(root)


def _undo(root: Path) -> UndoResult:
    moves = read_records(root)
    states = replay(root, moves)
    restored: list[Move] = []
    already: list[Move] = []
    missing: list[Move] = []
    blocked: list[Move] = []
    failure: OSError | None = None
    for m, state in states:
        if state == RESTORE and failure is None:
            try:
                dest = root / m.original
                dest.parent.mkdir(parents=True, exist_ok=True)
                if os.path.lexists(dest):
                    raise FileExistsError(17, "a file appeared there", str(dest))
                os.replace(root / m.file, dest)
                restored.append(m)
                continue
            except OSError as exc:
                failure = exc
        if state == RESTORE:
            blocked.append(m)  # not reached after a failure: still recorded
        else:
            {IN_PLACE: already, MISSING: missing, BLOCKED: blocked}.get(state, blocked).append(m)
    _restore_manifest(root, [*restored, *already])
    still = {id(m) for m in blocked}
    left = [m for m in moves if id(m) in still]
    if left != moves:  # as it was when nothing could be put back
        _write_records(root, left)
    if restored:
        # The page stays (it is the record of what was found), saying it was undone.
        mark_undone(review_dir(root) / REPORT, len(restored), _now())
    if not left:
        remove_empty(review_dir(root))
    if failure is not None:
        raise DataError(
            f"{_os_message(failure)}; {len(restored)} photo(s) were put back, the rest stays "
            f"recorded: run mtl review {root} --undo again"
        )
    return UndoResult(restored, already, missing, blocked)


def remove_empty(folder: Path) -> None:
    """Remove ``folder`` and the folders under it that are empty (never a file, never
    through a link: a linked folder is left as it is)."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for here, dirs, _ in os.walk(folder, topdown=False, followlinks=False):
        for d in dirs:
            sub = Path(here) / d
            if not sub.is_symlink():
                with suppress(OSError):  # not empty
                    sub.rmdir()
    with suppress(OSError):
        folder.rmdir()


# --- decisions from the review page ---------------------------------------------------------

ACTIONS = ("keep", "remove", "move")


@dataclass
class Decided:
    """A decisions file, checked decision by decision: the moves of the good ones, and why
    each bad or stale one is not applied (``problems``, one line each)."""

    moves: list[Move]
    problems: list[str] = field(default_factory=list)
    changed: bool = False  # DATA's photos are not those the page was made for


def folder_state(root: Path, paths: Sequence[Path] | None = None) -> str:
    """What a decisions file is bound to: SHA-256 of every listed photo's path and size
    (``paths``: those of a scan already made, else ``dataset.scan``'s), so a file made for
    another folder or before photos came, went or changed size is told apart in one
    listing, without reading any photo. Each decision is also bound to its own photo's
    content (its SHA-256): that is what decides whether it is applied."""
    from mtl.data import dataset

    if paths is None:
        try:
            paths = [it.path for it in dataset.scan(root, val_split=0.0).items]
        except DataError as exc:  # a layout train refuses: no state to match
            return f"unscannable: {exc}"
    digest = hashlib.sha256()
    for rel, size in sorted((relative(root, p), _size(p)) for p in paths):
        digest.update(f"{rel}\0{size}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return -1


def _sha(value: object) -> str | None:
    if not isinstance(value, str) or len(value) != 64:
        return None
    return value if all(c in "0123456789abcdef" for c in value) else None


def read_decisions(
    root: Path, path: Path, classes: Sequence[str], listed: Sequence[Path] | None = None
) -> Decided:
    """The moves a decisions file (saved from the review page) asks for. The file must be
    one made for this folder (exit 2 otherwise); then each decision is checked on its own
    (a photo inside DATA, a known action, an existing class, the photo's content the one
    the page showed) and a bad or stale one is reported in ``problems``, not applied,
    while the good ones are. Linear in the decisions."""
    try:
        data = files.loads_json(files.read_text_limited(path, RECORDS_LIMIT, "a decisions file"))
    except FileNotFoundError:
        raise UsageError(f"no such decisions file: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"cannot read decisions file {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != DECISIONS_FORMAT:
        raise DataError(
            f"{path} is not a decisions file from the mtl review page "
            f'(expected {{"format": "{DECISIONS_FORMAT}", "decisions": [...]}})'
        )
    rows = data.get("decisions")
    if not isinstance(rows, list):
        raise DataError(f"{path}: 'decisions' is not a list")
    made_for, state = data.get("data"), data.get("state")
    if not isinstance(made_for, str) or not isinstance(state, str):
        raise DataError(
            f"{path} is not bound to a folder (no 'data' and 'state': made by an older mtl?); "
            f"make the page again with: mtl review {root}; nothing was moved"
        )
    if not _same_folder(Path(made_for), root):
        raise DataError(
            f"{path} was made for {made_for}, not {root}; make the page for this folder "
            f"(mtl review {root}); nothing was moved"
        )
    files_named = Counter(
        row["file"] for row in rows if isinstance(row, dict) and isinstance(row.get("file"), str)
    )
    wanted: list[tuple[str, str, str | None, str, float]] = []
    shas: dict[str, str] = {}
    problems: list[str] = []
    known: set[str] = set()
    for n, row in enumerate(rows, 1):
        where = f"{path} decision {n}"
        try:
            got = _decision(root, row, where, classes, files_named, known)
        except DataError as exc:
            problems.append(f"{exc}; not applied")
            continue
        if got is not None:
            wanted.append(got[0])
            shas[got[0][0]] = got[1]
    changed = state != folder_state(root, listed)
    if problems and not wanted:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DataError("; ".join(p.removesuffix("; not applied") for p in problems[:3]) + more
                        + "; nothing was moved")  # fmt: skip
    return Decided(_plan(root, wanted, shas), problems, changed)


def _same_folder(a: Path, b: Path) -> bool:
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _decision(
    root: Path,
    row: object,
    where: str,
    classes: Sequence[str],
    files_named: Counter[object],
    known: set[str],
) -> tuple[tuple[str, str, str | None, str, float], str] | None:
    """One decision checked: its move and its photo's SHA-256, None for keep; DataError
    saying why it cannot be applied."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object")
    action = row.get("action")
    if action not in ACTIONS:
        raise DataError(f"{where}: action {action!r} is not one of {', '.join(ACTIONS)}")
    file = _path(root, row.get("file"), where, "file", known)
    if files_named[file] > 1:
        times = "two" if files_named[file] == 2 else str(files_named[file])
        raise DataError(f"{where}: {file} has {times} decisions (which one was meant?)")
    if action == "keep":
        return None
    src = PurePosixPath(file)
    prefix = 1 if _in_split(src.parts[0]) and len(src.parts) > 2 else 0
    given = src.parts[prefix]
    if src.parts[0] == REVIEW_FOLDER or given not in classes or len(src.parts) < 2:
        raise DataError(f"{where}: {file} is not a photo in a class folder of {root}")
    if not (root / file).is_file():
        raise DataError(f"{where}: {root / file} is not there (moved or deleted since?)")
    target = row.get("class") if action == "move" else None
    if action == "move" and (target not in classes or target == given):
        raise DataError(f"{where}: class {target!r} is not another class of {root}")
    expected = _sha(row.get("sha256"))
    if expected is None:
        raise DataError(f"{where}: no valid sha256 of the photo (made by an older mtl?)")
    sha = files.sha256(root / file)
    if sha != expected:
        raise DataError(f"{where}: {file} changed since the page was made (its SHA-256 differs)")
    reason = row.get("reason")
    reason = reason if isinstance(reason, str) and reason in REASONS else REMOVED
    return (file, given, target if isinstance(target, str) else None, reason, 0.0), sha

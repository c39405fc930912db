"""Writing output files: atomically (temp file + rename), never over an existing file unasked.

Every file mtl writes goes through :func:`write_with`, so a crash or a full disk
never leaves a half-written file under the final name. ``force`` decides
whether an existing file may be replaced; it defaults to False everywhere.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from mtl.errors import DataError, UsageError


class LinkRefused(UsageError):
    """A path mtl would create, replace or delete is a symbolic link (exit code 2)."""


def refuse_link(path: str | os.PathLike[str]) -> None:
    """Raise :class:`LinkRefused` if ``path`` itself is a symbolic link (never followed).

    The one rule for every file or folder mtl itself creates, replaces or deletes
    (outputs, locks, checkpoints, run records, journals, caches): a link at that name,
    planted or left by an archive, would make mtl write or delete at its target. A
    user's own linked data or output folder is above such names, never checked here.
    """
    if os.path.islink(path):
        try:
            target = f" (to {os.readlink(path)})"
        except OSError:
            target = ""
        raise LinkRefused(
            f"{path} is a symbolic link{target}; mtl never writes or deletes through a link "
            "it did not make: remove the link, or use another folder"
        )


def owned_dir(path: str | os.PathLike[str], *, under: str | os.PathLike[str] | None = None) -> Path:
    """The folder ``path`` that mtl makes inside a folder the user gave (a run's
    ``checkpoint/``, ``cache/``, ``tensorboard/``; review's ``_review/``): created if
    missing, refused (:class:`LinkRefused`, exit 2) if it, or any folder between
    ``under`` (the user's folder, which may be a link) and it, is a link."""
    path = Path(path)
    chain = [path]
    if under is not None:
        rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(under))
        chain = [Path(under).joinpath(*rel.parts[: i + 1]) for i in range(len(rel.parts))]
    for folder in chain:
        refuse_link(folder)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{folder} is not a folder; move it away")
    path.mkdir(parents=True, exist_ok=True)
    refuse_link(path)  # made a link meanwhile
    return path


def remove(path: str | os.PathLike[str]) -> None:
    """Delete a file or folder mtl made (``lstat`` first: a link there is refused, never
    followed nor silently skipped); a folder's contents go with it, links inside it are
    removed as links. A missing path is fine."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        refuse_link(path)
    if stat.S_ISDIR(mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def append_text(path: str | os.PathLike[str], text: str) -> None:
    """Append ``text`` to a journal mtl keeps (created if missing), never through a link."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        refuse_link(path)
        raise
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()


def check_new(path: str | os.PathLike[str], *, force: bool, what: str = "file") -> Path:
    """Refuse an existing ``path`` unless ``force``, and a link there always; call before
    any slow work."""
    path = Path(path)
    refuse_link(path)
    if path.exists() and not force:
        raise UsageError(f"{what} {path} already exists (use --force to overwrite it)")
    if path.is_dir() and what == "file":
        raise UsageError(f"{path} is a directory")
    check_writable(path, what=what)
    return path


def check_writable(path: str | os.PathLike[str], *, what: str = "file") -> None:
    """Refuse ``path`` if it could not be created: call before any slow work.

    The nearest existing folder above it must be a folder mtl may write into
    (files are written as a temp file beside the target, then renamed). Catches
    a read-only file system, a folder without write permission, and a path
    under a regular file, with the reason, before hours of work are lost.
    """
    path = Path(path)
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {what} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        try:
            readonly = os.statvfs(parent).f_flag & os.ST_RDONLY
        except (OSError, AttributeError):
            readonly = False
        why = "read-only file system" if readonly else "permission denied"
        raise UsageError(f"cannot write {what} {path}: {parent} is not writable ({why})")


def write_with(
    path: str | os.PathLike[str], writer: Callable[[Path], object], *, force: bool = False
) -> Path:
    """Call ``writer(temp_path)`` then move the temp file onto ``path`` in one step."""
    path = check_new(path, force=force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        writer(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None or str(exc.filename) == str(tmp):
            # A full disk names no file (or our temp file): name the one being written.
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_stream(
    path: str | os.PathLike[str], writer: Callable[[BinaryIO], object], *, force: bool = False
) -> Path:
    """:func:`write_with` for writers that take an open binary file (``np.save``,
    ``Image.save``)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            writer(fh)

    return write_with(path, write, force=force)


def write_bytes(path: str | os.PathLike[str], data: bytes, *, force: bool = False) -> Path:
    return write_with(path, lambda tmp: tmp.write_bytes(data), force=force)


def write_text(path: str | os.PathLike[str], text: str, *, force: bool = False) -> Path:
    return write_bytes(path, text.encode("utf-8"), force=force)


def strict_json(data: Any) -> Any:
    """``data`` with every NaN and infinity (Python or NumPy floats) replaced by None.

    ``json.dumps`` writes them as ``NaN``/``Infinity``, which is not JSON: strict
    parsers (``jq``, JavaScript, Go) reject the whole document.
    """
    if isinstance(data, float):  # numpy.float64 is a float too
        return float(data) if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: strict_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict_json(v) for v in data]
    if hasattr(data, "dtype") and hasattr(data, "tolist"):  # NumPy scalars and arrays
        return strict_json(data.tolist())
    return data


def dumps_json(data: Any) -> str:
    """Strict JSON text (see :func:`strict_json`), indented, UTF-8 kept readable."""
    return json.dumps(strict_json(data), indent=2, ensure_ascii=False, allow_nan=False)


def write_json(path: str | os.PathLike[str], data: Any, *, force: bool = False) -> Path:
    return write_text(path, dumps_json(data) + "\n", force=force)


# A text cell a spreadsheet would run as a formula: one starting with = + - @, or with
# a tab or CR (some spreadsheets skip those first). Written with a leading ' (OWASP's
# advice: the cell shows as text); a cell already starting with ' gets one more, so
# :func:`csv_value` reads every cell back exactly. Numbers (-0.5, +1e3) are left as
# they are: a spreadsheet reads them as numbers, not formulas.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value: Any) -> Any:
    """``value`` as a CSV cell mtl writes: safe to open in a spreadsheet."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    if _NUMBER.fullmatch(value):
        return value
    return "'" + value


def csv_value(cell: str) -> str:
    """A cell of a CSV file mtl wrote, as it was before :func:`csv_cell`."""
    return cell[1:] if cell.startswith("'") else cell


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The one CSV writer (run folders' ``split.csv`` and ``history.csv``, ``predict
    --csv``): every cell through :func:`csv_cell`."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    # csv quotes only a cell holding its own line terminator (\n), so a file name with a
    # bare CR would end the row for every reader: such a row is written fully quoted.
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in [header, *rows]:
        cells = [csv_cell(c) for c in row]
        (quoted if any(isinstance(c, str) and "\r" in c for c in cells) else w).writerow(cells)
    return buf.getvalue()


def write_csv(
    path: str | os.PathLike[str],
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    force: bool = False,
) -> Path:
    return write_text(path, csv_text(header, rows), force=force)


def replace_dir(source: Path, target: Path, *, force: bool = False) -> Path:
    """Move the finished folder ``source`` to ``target`` (same file system)."""
    check_new(target, force=force, what="folder")
    if target.exists():
        if not target.is_dir():
            target.unlink()
        else:
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
            os.replace(target, old / "x")
            os.replace(source, target)
            shutil.rmtree(old, ignore_errors=True)
            return target
    os.replace(source, target)
    return target


# mtl's own small records read back (settings, a checkpoint's state, metrics, labels):
# far above any real one (a 1,000-class metrics.json is under 1 MiB).
RECORD_LIMIT = 16 << 20
# How deep JSON or TOML that mtl reads may nest: its own records nest 4 levels or so; a
# planted "[[[[..." would otherwise end in RecursionError (in the parser, or in any code
# that walks the result).
MAX_DEPTH = 64


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words, from its ``st_mode``."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


class NotRegularFile(OSError):
    """A path that names a FIFO, socket, device or folder where a file was expected."""


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file; never block on a FIFO.

    The file is opened non-blocking (a FIFO opens at once that way) and checked
    with ``fstat`` on the open descriptor, so a file swapped after a check is
    still refused. Raises :class:`NotRegularFile` (an ``OSError``) otherwise:
    every file a user hands mtl (images, settings, decisions, labels, manifests,
    records, caches) is opened here, so a FIFO or ``/dev/zero`` never hangs or fills
    memory.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            why = f"is {file_kind(mode)}, not a regular file"
            raise NotRegularFile(errno.EINVAL, why, os.fspath(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a regular file's bytes (hex), read a MiB at a time (:func:`open_regular`:
    a FIFO named like a photo or a model is refused, never waited on)."""
    import hashlib

    digest = hashlib.sha256()
    with open_regular(path) as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_text_limited(path: str | os.PathLike[str], limit: int, what: str) -> str:
    """The UTF-8 text of a file mtl reads back (a record, a decisions file, settings, a
    manifest): a regular file only (:func:`open_regular`), refused past ``limit`` bytes
    before it is read whole: an edited or planted file can be any size."""
    with open_regular(path) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise DataError(f"{path} is too large for {what} (at most {max(1, limit >> 20)} MiB)")
    return data.decode("utf-8")


class TooDeep(ValueError):
    """JSON or TOML nested deeper than :data:`MAX_DEPTH` (a ValueError, as a parse error is)."""


def check_depth(data: Any, limit: int = MAX_DEPTH) -> Any:
    """``data`` if its lists and dicts nest at most ``limit`` deep, else :class:`TooDeep`.
    Walked with a stack, not recursion."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if depth > limit:
                raise TooDeep(f"nested deeper than {limit} levels")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items if isinstance(v, (dict, list, tuple)))
    return data


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` for anything mtl reads (a file, a line of one, a zip entry): deep
    nesting is a :class:`TooDeep` (a ValueError, as bad JSON is), never RecursionError."""
    try:
        return check_depth(json.loads(text))
    except RecursionError:
        raise TooDeep(f"nested deeper than {MAX_DEPTH} levels") from None


def loads_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads`` with the same depth rule as :func:`loads_json`."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        return check_depth(tomllib.loads(text))
    except RecursionError:
        raise TooDeep(f"nested deeper than {MAX_DEPTH} levels") from None


def read_json(path: str | os.PathLike[str], what: str, limit: int | None = None) -> Any:
    """A JSON file a user or an earlier run left: regular, at most ``limit`` bytes (default
    :data:`RECORD_LIMIT`), UTF-8, at most :data:`MAX_DEPTH` deep. Raises OSError,
    ValueError (bad JSON, too deep, not UTF-8) or :class:`~mtl.errors.DataError` (too
    large) for the caller to name the file."""
    return loads_json(read_text_limited(path, RECORD_LIMIT if limit is None else limit, what))

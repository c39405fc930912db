"""Writing output files: atomically (temp file + rename), never over an existing file unasked.

Every file mtl writes goes through :func:`write_with`, so a crash or a full disk
never leaves a half-written file under the final name. ``force`` decides
whether an existing file may be replaced; it defaults to False everywhere.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from mtl.errors import DataError, UsageError


def check_new(path: str | os.PathLike[str], *, force: bool, what: str = "file") -> Path:
    """Refuse an existing ``path`` unless ``force``; call before any slow work."""
    path = Path(path)
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
    """:func:`write_with` for writers that take an open binary file (``np.save``, ``savefig``)."""

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


def read_text_limited(path: str | os.PathLike[str], limit: int, what: str) -> str:
    """The UTF-8 text of a file mtl reads back (a record, a decisions file), refused past
    ``limit`` bytes before it is read whole: an edited or planted file can be any size."""
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise DataError(f"{path} is too large for {what} (at most {limit >> 20} MiB)")
    return data.decode("utf-8")

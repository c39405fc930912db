"""Writing output files: atomically (temp file + rename), never over an existing file unasked.

Every file mtl writes goes through :func:`write_with`, so a crash or a full disk
never leaves a half-written file under the final name. ``force`` decides
whether an existing file may be replaced; it defaults to False everywhere.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from mtl.errors import UsageError


def check_new(path: str | os.PathLike[str], *, force: bool, what: str = "file") -> Path:
    """Refuse an existing ``path`` unless ``force``; call before any slow work."""
    path = Path(path)
    if path.exists() and not force:
        raise UsageError(f"{what} {path} already exists (use --force to overwrite it)")
    if path.is_dir() and what == "file":
        raise UsageError(f"{path} is a directory")
    return path


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


def write_json(path: str | os.PathLike[str], data: Any, *, force: bool = False) -> Path:
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", force=force)


def write_csv(
    path: str | os.PathLike[str],
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    force: bool = False,
) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return write_text(path, buf.getvalue(), force=force)


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

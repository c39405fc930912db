"""Run folders (``runs/train``, ``runs/train2``, ...) and atomic writes of their files."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from mtl import files
from mtl.errors import UsageError

MODEL_FILE = "model.keras"


def next_run_dir(base: str | Path = "runs", name: str = "train") -> Path:
    """The first free ``base/name``, ``base/name2``, ``base/name3``... (as ultralytics does)."""
    base = Path(base)
    taken: set[int] = set()
    if base.is_dir():
        pattern = re.compile(rf"^{re.escape(name)}(\d*)$")
        for p in base.iterdir():
            m = pattern.match(p.name)
            if m:
                taken.add(int(m.group(1) or 1))
    n = 1
    while n in taken:
        n += 1
    return base / (name if n == 1 else f"{name}{n}")


def prepare(out: str | Path | None, *, force: bool = False) -> Path:
    """Create the run folder; refuse an existing, non-empty one unless ``force``."""
    if out is None:
        path = next_run_dir()
    else:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise UsageError(f"--out {path} exists and is not a folder")
        refuse_existing(path, force)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create run folder {path}: {exc.strerror or exc}") from None
    return path


def refuse_existing(path: Path, force: bool) -> None:
    """A run folder that exists with files in it is someone's work: never overwrite it silently."""
    if force or not path.is_dir() or not any(path.iterdir()):
        return
    if (path / MODEL_FILE).exists():
        what = "already holds a trained model"
    else:
        what = "exists and is not empty (an interrupted run? continue it with --resume)"
    raise UsageError(f"{path} {what}; choose another --out or pass --force")


def write_atomic(path: str | Path, writer: Callable[[BinaryIO], None]) -> Path:
    """Write via a temporary file in the same folder, then rename: never a half file."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            writer(fh)

    return files.write_with(path, write, force=True)


def write_text(path: str | Path, text: str) -> Path:
    data = text.encode("utf-8")

    def write(fh: BinaryIO) -> None:
        fh.write(data)

    return write_atomic(path, write)


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return write_text(path, buf.getvalue())

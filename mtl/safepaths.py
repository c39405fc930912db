"""Paths read back from mtl's own files (manifests, run records) are data, not trusted.

Every relative path mtl reads from a file it wrote earlier (``manifest.jsonl``,
``run.json``) goes through :func:`relative_problem` / :func:`inside` before it is
used: an edited file must never make mtl read, write or delete anything
outside the folder the file belongs to.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


def relative_problem(text: object, *, parts: int | None = None) -> str | None:
    """Why ``text`` is not a normalised relative POSIX path (``a/b.jpg``), or None.

    Refused: non-strings, empty, absolute (``/x``), backslashes, NUL and other
    control characters, empty, ``.`` or ``..`` components (``a//b``, ``./a``,
    ``a/../b``), a trailing ``/``; and with ``parts`` a different number of components.
    """
    if not isinstance(text, str) or not text:
        return "not a non-empty string"
    if text.startswith("/"):
        return "an absolute path"
    if "\\" in text:
        return "a backslash in the path"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        return "control characters in the path"
    pieces = text.split("/")
    if any(p in ("", ".", "..") for p in pieces):
        return "not a normalised path (empty, '.' or '..' components)"
    if PurePosixPath(text).parts != tuple(pieces):  # pragma: no cover - belt and braces
        return "not a normalised path"
    if parts is not None and len(pieces) != parts:
        return f"expected {parts} path component(s), got {len(pieces)}"
    return None


def inside(root: str | os.PathLike[str], relative: str) -> bool:
    """Whether ``root/relative`` stays inside ``root`` once symlinks are resolved."""
    base = Path(root).resolve()
    return (base / relative).resolve().is_relative_to(base)


def resolve_stored(name: str, run_dir: Path) -> Path:
    """A path read back from a run folder's file: absolute as is, else from the run folder."""
    path = Path(name)
    return path if path.is_absolute() else run_dir / path

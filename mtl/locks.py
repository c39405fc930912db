"""Advisory folder locks: two mtl processes never work in one folder at once.

    from mtl.locks import folder_lock

    with folder_lock(out, "fetch"):          # raises FolderBusy (exit 2) if taken
        ...

The lock is ``fcntl.flock`` on ``FOLDER/.mtl.lock`` (a hidden file, so image
walks and class scans never see it). The holder removes the file when it is
done; the kernel releases the lock when the process ends however it ends
(kill -9 included), so a file left behind by a killed process is harmless.
Taking the lock checks that the locked file is still the one under that name
(a waiter may have locked a file its holder just removed) and retries if not.
``wait=True`` blocks until the other process is done instead of refusing.
Where ``fcntl`` does not exist (Windows) the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mtl.errors import UsageError

LOCK_NAME = ".mtl.lock"


class FolderBusy(UsageError):
    """Another mtl process holds the folder's lock (exit code 2)."""


@contextlib.contextmanager
def folder_lock(
    folder: str | os.PathLike[str], what: str = "mtl", *, wait: bool = False
) -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` (created if missing) for the ``with`` block.

    ``what`` names this use in the lock file and the refusal ("another mtl fetch is
    writing into data/ ..."). Yields the lock file's path. Raises :class:`FolderBusy`
    when another process holds it and ``wait`` is False, and :class:`UsageError` when
    the folder cannot be created or the lock file cannot be opened.
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield path
        return
    fd = _acquire(fcntl, folder, path, wait)
    try:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{what} pid {os.getpid()}\n".encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # still locked: nobody can be holding this file now
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fcntl: Any, folder: Path, path: Path, wait: bool) -> int:
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise UsageError(f"cannot lock {folder}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            own = f" pid {os.getpid()}"
            if holder.endswith(own):  # flock is per open file: another thread of ours
                raise FolderBusy(
                    f"{folder} is in use by another {holder[: -len(own)]} in this process "
                    f"(another thread; lock {path}); one folder takes one run at a time"
                ) from None
            raise FolderBusy(
                f"another {holder or 'mtl process'} is using {folder} (lock {path}); "
                "wait for it to finish, or use another folder"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            same = False
        if same:
            return fd
        os.close(fd)  # we locked a file its holder removed meanwhile: take the new one


def _holder(fd: int) -> str:
    """What the lock holder wrote about itself ("mtl fetch pid 123"), for the message."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return text.splitlines()[0] if text else ""

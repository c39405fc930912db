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
``shared=True`` is a reader's lock (``mtl train`` on DATA): readers run side by side,
a writer (``review --apply``/``--undo``, ``fetch``) waits for or is refused by them all,
and they by it. The last holder out removes the file (it tries an exclusive lock
first, so it never removes a file another reader still holds). A reader that cannot
create the lock file (a read-only DATA) reads without one: nobody can write there.
The lock file is opened with ``O_NOFOLLOW``: a link planted at ``.mtl.lock`` is
refused naming it, never opened and truncated at its target.
Where ``fcntl`` does not exist (Windows) the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import errno
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
    folder: str | os.PathLike[str], what: str = "mtl", *, wait: bool = False, shared: bool = False
) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if missing) for the ``with`` block: exclusive,
    or with ``shared`` a reader's lock other readers may hold too.

    ``what`` names this use in the lock file and the refusal ("another mtl fetch is
    writing into data/ ..."). Yields the lock file's path. Raises :class:`FolderBusy`
    when another process holds it and ``wait`` is False, and :class:`UsageError` when
    the folder cannot be created or the lock file cannot be opened (or is a link).
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield path
        return
    fd = _acquire(fcntl, folder, path, wait, shared)
    if fd is None:  # a reader of a folder it cannot write: no writer can change it either
        yield path
        return
    try:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{what} pid {os.getpid()}\n".encode(), 0)
        yield path
    finally:
        try:
            # Still ours alone (a shared holder checks that no other reader holds it):
            # nobody can be holding this file now, so it can go.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(fd), os.lstat(path)):
                    path.unlink()
        except OSError:
            pass  # another reader holds it: the last one out removes it
        os.close(fd)  # closing the descriptor releases the lock


def _open(folder: Path, path: Path, shared: bool) -> int | None:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o644)
    except OSError as exc:
        if os.path.islink(path):
            from mtl.files import refuse_link

            refuse_link(path)
        if shared and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and folder.is_dir():
            return None
        raise UsageError(f"cannot lock {folder}: {exc.strerror or exc}") from None


def _acquire(fcntl: Any, folder: Path, path: Path, wait: bool, shared: bool) -> int | None:
    while True:
        fd = _open(folder, path, shared)
        if fd is None:
            return None
        try:
            mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
            fcntl.flock(fd, mode | (0 if wait else fcntl.LOCK_NB))
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

"""The one exception family the core raises; the CLI turns it into a message and an exit code."""

from __future__ import annotations


class MtlError(Exception):
    """A failure the user can act on. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class UsageError(MtlError):
    """Bad arguments or options (exit code 2)."""

    exit_code = 2


class WeightsUnavailable(MtlError):
    """Pretrained weights or the class index cannot be found or downloaded (exit code 2)."""

    exit_code = 2


class DataError(MtlError):
    """A dataset folder that cannot be trained or evaluated on (exit code 2)."""

    exit_code = 2


class ModelFileError(MtlError):
    """A file that is not a readable mtl model (exit code 2)."""

    exit_code = 2


class ImageError(MtlError):
    """One image that cannot be used; callers report it and go on with the others."""

    exit_code = 1


class DatasetUnavailable(MtlError):
    """A known dataset cannot be found, downloaded or verified (exit code 2)."""

    exit_code = 2


class TrainingDiverged(MtlError):
    """The loss became NaN or infinite: no usable model (exit code 1)."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """A signal that stops a command: SIGTERM or SIGHUP (or SIGINT, Ctrl-C), raised by the
    CLI's handler in the main thread (:func:`mtl.cli._common.run_app`) as a
    KeyboardInterrupt, so every ``finally`` and every Ctrl-C handler runs for it too
    (temporary files removed, a run's state written). Exit code 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum


def interrupt_exit_code(exc: BaseException) -> int:
    """The exit code a KeyboardInterrupt ends the command with: 130 for Ctrl-C, 143 for
    SIGTERM (:class:`Interrupted`)."""
    code = getattr(exc, "exit_code", 130)
    return code if isinstance(code, int) else 130


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during ``mtl train``: a KeyboardInterrupt still (callers that
    stop on one still do), carrying the one line that says how to resume (exit code 130,
    143 for SIGTERM: ``exit_code``)."""

    exit_code = 130

    def __init__(self, message: str, *, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0])

"""What every command shares: consoles, error handling at the edge, JSON output, progress."""

from __future__ import annotations

import atexit
import copy
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar, get_args

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from mtl.errors import MtlError, TrainingInterrupted
from mtl.progress import ProgressFn

_KEEP = "\n\t"  # what a whole message may hold (help screens, multi-line notes); a name may not


class SafeConsole(Console):
    """A Rich console that shows every string it renders (a line, a table cell, a title)
    as :func:`mtl.reprs.for_terminal` does: a file or class name holding ESC, CR or a bidi
    override prints as its escapes instead of acting on the terminal. Emoji codes stay
    text (a class folder named ``:fire:``). Every console of the CLI is one."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("emoji", False)
        super().__init__(**kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Any:
        from mtl.reprs import for_terminal

        return super().render_str(for_terminal(text, keep=_KEEP), **kwargs)


# Results go to stdout, everything else (progress, warnings, errors) to stderr,
# so `mtl ... --json | jq` always sees clean JSON.
out = SafeConsole(soft_wrap=True)
err = SafeConsole(stderr=True, soft_wrap=True)

T = TypeVar("T")


@dataclass
class Verbosity:
    """The root options ``mtl --quiet`` / ``mtl --verbose`` (and each command's ``-q``/``-v``),
    read by :func:`progress`, :func:`info` and :func:`detail`."""

    quiet: bool = False
    verbose: bool = False


verbosity = Verbosity()


def set_quiet(value: bool) -> bool:
    """Option callback: ``--quiet`` given anywhere turns it on for the whole run."""
    if value:
        verbosity.quiet, verbosity.verbose = True, False
    return value


def set_verbose(value: bool) -> bool:
    if value and not verbosity.quiet:
        verbosity.verbose = True
    return value


# The options several commands share, as module-level aliases (the option names and
# help here, each command's default after ``=``): ``quiet: Quiet = False``.
ModelPath = Annotated[
    Path,
    typer.Argument(
        help="model.keras from mtl train (or its run folder), or a .tflite or .onnx "
        "from mtl export.",
    ),
]
Images = Annotated[
    list[Path],
    typer.Argument(help="Image files, folders (searched recursively) or quoted globs."),
]
Labels = Annotated[
    Path | None,
    typer.Option(
        "--labels",
        help="Labels of a .tflite or .onnx model, one per line.",
        show_default="MODEL.labels.txt; an .onnx: inside it",
    ),
]
TopK = Annotated[int, typer.Option("--top-k", "-k", help="How many classes to show per image.")]
PassBatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Images per forward pass.")]
JsonTable = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
WeightsDir = Annotated[
    Path | None,
    typer.Option(
        "--weights-dir",
        envvar="MTL_WEIGHTS_DIR",
        help="Folder holding Keras weight files; else the Keras cache, else a download.",
    ),
]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Keep base features here; later train and review runs reuse them.",
        show_default="in memory",
    ),
]
# The same switches as the root's mtl --quiet / --verbose.
Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        callback=set_quiet,
        help="No progress bars or info lines (results, warnings and errors only).",
    ),
]
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        callback=set_verbose,
        help="Extra detail on stderr: the model, timings, every skipped file.",
    ),
]


def _as_default(alias: Any, default: Any) -> Any:
    """An alias's option as a parameter default (``x: T = weights_dir_option()``)."""
    info = copy.copy(get_args(alias)[1])
    # Written for Annotated, typer.Option("--name", ...) keeps its first name where the
    # default goes (Typer moves it back when it reads the alias): move it back here too.
    info.param_decls = (info.default, *(info.param_decls or ()))
    info.default = default
    return info


def weights_dir_option() -> Any:
    return _as_default(WeightsDir, None)


def cache_dir_option() -> Any:
    return _as_default(CacheDir, None)


def quiet_option() -> Any:
    return _as_default(Quiet, False)


def verbose_option() -> Any:
    return _as_default(Verbose, False)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error on stderr and return the Exit to raise."""
    err.print(f"[bold red]error:[/bold red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call the core; turn its typed errors into a message and an exit code."""
    try:
        return fn(*args, **kwargs)
    except MtlError as exc:
        raise fail(_escape(exc.message), exc.exit_code) from None
    except OSError as exc:
        if os.environ.get("MTL_DEBUG"):
            raise
        raise fail(_escape(os_error_message(exc)), 2) from None
    except TrainingInterrupted as exc:  # Ctrl-C that says what it left: how to resume
        err.print(f"[red]{_escape(exc.message)}[/red]", highlight=False)
        _interrupt.reported = True
        raise typer.Exit(exc.exit_code) from None


def os_error_message(exc: OSError) -> str:
    """One line naming the file and the cause: ``cannot write out/x.csv: Read-only file system``.

    Every OSError that reaches the CLI comes from a path the user gave or mtl
    derived from one (a full disk, a read-only or missing folder), so it is the
    user's to fix: exit code 2, never an "unexpected" traceback.
    """
    why = exc.strerror or str(exc) or type(exc).__name__
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    if names:
        return f"cannot use {' -> '.join(names)}: {why}"
    return f"{why} ({type(exc).__name__})"


def _escape(text: str) -> str:
    """A message for Rich markup: its brackets literal, its hidden characters escaped
    (:func:`mtl.reprs.for_terminal`; a progress bar's text is not rendered by the console)."""
    from rich.markup import escape

    from mtl.reprs import for_terminal

    return escape(for_terminal(text, keep=_KEEP))


def shown(value: object) -> str:
    """A user-supplied string (a path, a class name) made safe to show: for Rich markup,
    and with every hidden character escaped, line breaks and tabs too (one cell, one line)."""
    from rich.markup import escape

    from mtl.reprs import for_terminal

    return escape(for_terminal(str(value)))


def short_path(text: str, width: int) -> str:
    """``text`` cut from the left to ``width`` characters at a ``/``: the file name and the
    folders nearest it are what tells files apart (``…/train/ants/0013035.jpg``)."""
    if len(text) <= width:
        return text
    parts = text.split("/")
    kept = parts[-1]
    for part in reversed(parts[:-1]):
        if len(part) + 1 + len(kept) + 2 > width:
            break
        kept = f"{part}/{kept}"
    return f"…/{kept}"


def path_column_width(*others: int) -> int:
    """Room left for a path column in a table on stdout beside columns ``others`` wide
    (each cell has one space of padding a side and a border), at least 24."""
    overhead = 3 * (len(others) + 1) + 1
    return max(24, out.width - overhead - sum(others))


def print_json(data: Any) -> None:
    """Strict JSON on stdout: NaN and infinities become null (``jq`` rejects ``NaN``)."""
    from mtl.files import dumps_json
    from mtl.reprs import HIDDEN

    # JSON escapes C0 controls itself; DEL, C1 and bidi controls would reach a terminal
    # raw. Written as \\u escapes they read back the same (only indentation is a raw \\n).
    text = HIDDEN.sub(lambda m: m[0] if m[0] == "\n" else f"\\u{ord(m[0]):04x}", dumps_json(data))
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {_escape(message)}", highlight=False)


def info(message: str) -> None:
    """A line of what happened, on stderr; hidden by ``--quiet``."""
    if not verbosity.quiet:
        err.print(_escape(message), highlight=False)


def detail(message: str) -> None:
    """A line only ``--verbose`` shows, dimmed, on stderr."""
    if verbosity.verbose:
        err.print(f"[dim]{_escape(message)}[/dim]", highlight=False)


class RateColumn(ProgressColumn):
    """Items (photos, files) a second, over the last half minute: with the time left,
    what says how long a run on many photos will take while it runs."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("")
        rate = f"{speed:.1f}/s" if speed < 10 else f"{speed:,.0f}/s"
        return Text(rate, style="progress.data.speed")


class Bars:
    """Progress bars on stderr, one per named task, each created when it first reports
    (so nothing is left on screen for work that never happened)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def update(self, name: str, done: int, total: int | None, description: str = "") -> None:
        if not self.enabled:
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                RateColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,  # nothing left on screen once done
            )
            self._progress.start()
        label = _escape(description or name)
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task(label, total=total)
        self._progress.update(self._tasks[name], completed=done, total=total, description=label)

    def task(self, name: str) -> ProgressFn:
        """``on_progress(done, total)`` drawing the bar called ``name``."""
        return lambda done, total: self.update(name, done, total)

    def print(self, line: str) -> None:
        """A plain line on stderr, above the bars while they are drawn."""
        err.print(line, highlight=False, markup=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def bars_enabled(quiet: bool = False) -> bool:
    if quiet or verbosity.quiet:
        return False
    return err.is_terminal or os.environ.get("MTL_PROGRESS") == "1"


@contextmanager
def progress(quiet: bool = False) -> Iterator[Bars]:
    """The progress bars of one command, on a terminal (or with MTL_PROGRESS=1)."""
    bars = Bars(bars_enabled(quiet))
    try:
        yield bars
    finally:
        bars.close()


@contextmanager
def progress_bar(description: str, *, quiet: bool = False) -> Iterator[ProgressFn]:
    """One bar: yields ``on_progress(done, total)``."""
    with progress(quiet) as bars:
        yield bars.task(description)


@dataclass
class _Interrupt:
    """The signal that stopped this command, if one did, and whether its line is out."""

    signum: int | None = None
    reported: bool = False  # the core said what it left (TrainingInterrupted)


_interrupt = _Interrupt()


def interrupt_reported() -> None:
    """A command has printed what an interrupt left (no generic "interrupted" line)."""
    _interrupt.reported = True


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """While a command runs, SIGINT (Ctrl-C), SIGTERM and SIGHUP raise
    :class:`~mtl.errors.Interrupted`, a KeyboardInterrupt, in the main thread: every
    ``finally`` (temporary folders) and every Ctrl-C handler (a run's state) runs for a
    SIGTERM too, where its default would kill the process on the spot. The signal is
    recorded here, because Typer turns a KeyboardInterrupt into a plain ``Exit(130)``
    before :func:`run_app` sees it. A signal the parent set to be ignored stays ignored."""
    import signal
    import threading

    from mtl.errors import Interrupted

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        if _unsafe_to_raise(frame):
            # Raised inside an import (often one an extension module makes from C, as
            # TensorFlow's converter does), the exception leaves that module half set up
            # and surfaces as an unrelated SystemError; raised in a finaliser (``__del__``:
            # a zip file being collected) Python prints it as a traceback and drops it.
            # Delivered again once the frame is left.
            threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
            return
        if _interrupt.signum is None:
            _interrupt.signum = signum
        raise Interrupted(signum)

    saved: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is None:
            continue
        if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
            saved[sig] = signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _unsafe_to_raise(frame: Any) -> bool:
    """Whether ``frame`` runs inside Python's import machinery (a module being imported) or
    a finaliser (``__del__``), where an exception cannot unwind the command."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _interrupted_code(code: int) -> int:
    """The exit code of a command a signal stopped (128 + the signal: 130 for Ctrl-C,
    143 for SIGTERM), its line printed unless the core already said what it left;
    ``code`` as it is for a command no signal stopped."""
    if _interrupt.signum is None:
        return code
    import signal

    if not _interrupt.reported:
        sig = signal.Signals(_interrupt.signum)
        name = "Ctrl-C" if sig == signal.SIGINT else sig.name
        err.print(f"[red]interrupted ({_escape(name)})[/red]", highlight=False)
        _interrupt.reported = True
    return 128 + _interrupt.signum


def run_app(app: typer.Typer, *, program: bool = False) -> None:
    """Run the app; no traceback reaches the user unless MTL_DEBUG is set. A bad option
    (an unknown one, a value outside its choices) is one line on stderr and exit 2,
    like every other bad input, not Click's boxed usage screen. Ctrl-C, SIGTERM and
    SIGHUP unwind the command (:func:`_signals_interrupt`) and exit 128 + the signal.
    ``program``: this is the process's own program (the ``mtl`` command), which may end
    without the interpreter's teardown (:func:`_leave`); code that runs the app in its
    own process does not say so."""
    _interrupt.signum, _interrupt.reported = None, False
    try:
        try:
            with _signals_interrupt():
                code = app(standalone_mode=False)
        except Exception as exc:
            _parser_error(exc)  # Typer's own (vendored Click) errors; anything else re-raised
        code = code if isinstance(code, int) else 0
        _leave(_interrupted_code(code), program)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            _leave(_interrupted_code(exc.code or 0), program)
        raise
    except KeyboardInterrupt as exc:  # outside a command (Typer's parsing)
        from mtl.errors import interrupt_exit_code

        if _interrupt.signum is None:
            _interrupt.signum = interrupt_exit_code(exc) - 128
        _leave(_interrupted_code(130), program)
    except MtlError as exc:  # raised outside `call`, e.g. in a callback
        err.print(f"[bold red]error:[/bold red] {_escape(exc.message)}", highlight=False)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a file the user named (or one derived from it), outside `call`
        if os.environ.get("MTL_DEBUG"):
            raise
        err.print(f"[bold red]error:[/bold red] {_escape(os_error_message(exc))}", highlight=False)
        sys.exit(2)
    except Exception as exc:
        if os.environ.get("MTL_DEBUG"):
            raise
        if _interrupt.signum is not None:  # what a signal's unwinding left in a library
            _leave(_interrupted_code(1), program)
        err.print(
            f"[bold red]error:[/bold red] unexpected {type(exc).__name__}: {_escape(str(exc))} "
            "(set MTL_DEBUG=1 for the traceback)",
            highlight=False,
        )
        sys.exit(1)


def _parser_error(exc: Exception) -> NoReturn:
    """Typer's parser errors, told apart by shape (Typer vendors Click privately): a usage
    error is one line and exit 2; a bare ``mtl`` shows the help; Ctrl-C is 130."""
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        out.print(ctx.get_help(), highlight=False, markup=False)
        _leave(0, program=False)
    if type(exc).__name__ == "Abort":
        raise KeyboardInterrupt from None
    if hasattr(exc, "format_message") and getattr(exc, "exit_code", None) == 2:
        where = f"{ctx.command_path}: " if ctx is not None else ""
        message = " ".join(exc.format_message().split())
        err.print(f"[bold red]error:[/bold red] {_escape(where + message)}", highlight=False)
        sys.exit(2)
    raise exc


def _leave(code: int, program: bool) -> NoReturn:
    """Exit with ``code``, skipping the interpreter's teardown. A process that imported
    TensorFlow spends over a second tearing it down (1.4 s on the 2-core dev machine),
    and one that did not still 0.3 s (a default `mtl train` on 245 photos: 2.7 s to its
    last line, 3.0 s to exit), for nothing: every output file is written atomically and
    closed by now. The atexit handlers still run (temporary folders are removed there),
    and the streams are flushed."""
    if (program or "tensorflow" in sys.modules) and not os.environ.get("MTL_DEBUG"):
        with suppress(Exception):
            atexit._run_exitfuncs()  # noqa: SLF001 - what a normal exit would run first
        for stream in (sys.stdout, sys.stderr):
            with suppress(Exception):
                stream.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


@contextmanager
def download_progress() -> Iterator[Callable[[str, int, int | None], None]]:
    """A progress bar for weight downloads, drawn only once a download starts."""
    with progress() as bars:

        def on_download(name: str, done: int, total: int | None) -> None:
            bars.update("download", done, total, f"downloading {name}")

        yield on_download

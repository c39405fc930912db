"""What every command shares: consoles, error handling at the edge, JSON output, progress."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mtl.errors import MtlError

# Results go to stdout, everything else (progress, warnings, errors) to stderr,
# so `mtl ... --json | jq` always sees clean JSON.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

T = TypeVar("T")


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


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {_escape(message)}", highlight=False)


def info(message: str) -> None:
    err.print(_escape(message), highlight=False)


@contextmanager
def progress_bar(description: str, *, quiet: bool = False) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr; yields ``update(done, total, description=None)``."""
    if quiet or not err.is_terminal and os.environ.get("MTL_PROGRESS") != "1":
        yield lambda done, total, description=None: None
        return
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int | None, description: str | None = None) -> None:
            fields: dict[str, Any] = {"completed": done, "total": total}
            if description:
                fields["description"] = description
            bar.update(task, **fields)

        yield update


def run_app(app: typer.Typer) -> None:
    """Run the app; no traceback reaches the user unless MTL_DEBUG is set."""
    try:
        app(standalone_mode=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            _leave(exc.code or 0)
        raise
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        sys.exit(130)
    except MtlError as exc:  # raised outside `call`, e.g. in a callback
        err.print(f"[bold red]error:[/bold red] {_escape(exc.message)}", highlight=False)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if os.environ.get("MTL_DEBUG"):
            raise
        err.print(
            f"[bold red]error:[/bold red] unexpected {type(exc).__name__}: {_escape(str(exc))} "
            "(set MTL_DEBUG=1 for the traceback)",
            highlight=False,
        )
        sys.exit(1)


def _leave(code: int) -> NoReturn:
    """Exit with ``code``. A process that imported TensorFlow spends over a second
    tearing it down (1.4 s on the 2-core dev machine) for nothing: every output
    file is written atomically and closed by now, so only the streams need flushing."""
    if "tensorflow" in sys.modules and not os.environ.get("MTL_DEBUG"):
        for stream in (sys.stdout, sys.stderr):
            with suppress(Exception):
                stream.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


@contextmanager
def download_progress() -> Iterator[Callable[[str, int, int | None], None]]:
    """A progress bar for weight downloads, shown only once a download starts."""
    with progress_bar("downloading") as update:

        def on_download(name: str, done: int, total: int | None) -> None:
            update(done, total, description=f"downloading {name}")

        yield on_download

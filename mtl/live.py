"""Progress of the Python API's long calls (``mtl.train``, ``predict``, ``evaluate``,
``classify``), drawn where the caller sits.

In Jupyter: one HTML block, bars and epoch lines, updated in place through IPython's
display handles (no widgets to install; a saved or headless-run notebook keeps the
final state). On a terminal: Rich's bars on stderr, as the CLI draws them. Elsewhere
(a script piped to a file, a test): nothing, unless asked with ``progress=True``.
The core never prints; like the CLI, this is a front end.
"""

from __future__ import annotations

import html
import math
import sys
import time
from types import TracebackType
from typing import Any

from mtl.reprs import for_terminal

# Redraw a notebook's block at most this often (a feature pass reports every batch).
REFRESH_SECONDS = 0.25
MAX_LINES = 200  # epoch lines kept in a notebook's block


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (IPython with a kernel attached)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # an IPython too old or half-imported: no rich display
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class Progress:
    """Bars by name (created by their first report) and lines of text (one per epoch).

    ``show``: None draws in a notebook or on a terminal, True also elsewhere (on
    stderr), False never."""

    def __init__(self, show: bool | None = None) -> None:
        self.mode = ""
        if show is not False:
            if in_notebook():
                self.mode = "notebook"
            elif show or sys.stderr.isatty():
                self.mode = "terminal"
        self.tasks: dict[str, list[Any]] = {}  # name -> [description, done, total]
        self.lines: list[str] = []
        self._handle: Any = None
        self._shown_at = 0.0
        self._rich: Any = None
        self._rich_tasks: dict[str, Any] = {}

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def update(self, name: str, done: int, total: int | None, description: str = "") -> None:
        if not self.mode:
            return
        self.tasks[name] = [description or name, done, total]
        if self.mode == "terminal":
            self._rich_update(name, done, total, description or name)
        else:
            self._draw(force=total is not None and done >= total)

    def stage(self, stage: str, done: int, total: int) -> None:
        """``on_progress(stage, done, total)`` of training and review."""
        self.update(stage, done, total)

    def task(self, name: str) -> Any:
        """``on_progress(done, total)`` drawing the bar ``name``."""
        return lambda done, total: self.update(name, done, total)

    def line(self, text: str) -> None:
        if self.mode == "terminal":
            self._rich_progress().console.print(
                for_terminal(text, keep="\n"), highlight=False, markup=False
            )
        elif self.mode:
            self.lines = [*self.lines, text][-MAX_LINES:]
            self._draw(force=True)

    def epoch(self, log: Any) -> None:
        """An ``EpochLog`` as one line, as ``mtl train`` prints it."""
        self.update("training", log.epoch, log.epochs, f"epoch {log.epoch}/{log.epochs}")
        self.line(epoch_line(log))

    def close(self) -> None:
        if self.mode == "notebook" and self._handle is not None:
            self._draw(force=True)
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    # --- notebook ----------------------------------------------------------------------

    def _draw(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._shown_at < REFRESH_SECONDS:
            return
        self._shown_at = now
        data = {"text/plain": self._text(), "text/html": self._html()}
        from IPython.display import display

        if self._handle is None:
            self._handle = display(data, raw=True, display_id=True)
        else:
            self._handle.update(data, raw=True)

    def _text(self) -> str:
        bars = [f"{d} {n}/{t if t is not None else '?'}" for d, n, t in self.tasks.values()]
        return "\n".join([*bars, *self.lines])

    def _html(self) -> str:
        rows = []
        for description, done, total in self.tasks.values():
            bar = f'<progress value="{done}" max="{total}"></progress>' if total else ""
            count = f"{done}/{total}" if total is not None else str(done)
            rows.append(f"<div><code>{html.escape(description)}</code> {bar} {count}</div>")
        log = ""
        if self.lines:
            log = "<pre>" + html.escape("\n".join(self.lines)) + "</pre>"
        return '<div class="mtl-progress">' + "".join(rows) + log + "</div>"

    # --- terminal ----------------------------------------------------------------------

    def _rich_progress(self) -> Any:
        if self._rich is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._rich.start()
        return self._rich

    def _rich_update(self, name: str, done: int, total: int | None, description: str) -> None:
        progress = self._rich_progress()
        if name not in self._rich_tasks:
            self._rich_tasks[name] = progress.add_task(description, total=total)
        task = self._rich_tasks[name]
        progress.update(task, completed=done, total=total, description=description)


def epoch_line(log: Any) -> str:
    phase = {"fine_tune": " fine-tune", "refit": " refit (all photos)"}.get(log.phase, "")
    val = (
        ""
        if math.isnan(log.val_loss)
        else f"val_loss {log.val_loss:.4f}  val_acc {log.val_accuracy:.4f}  "
    )
    mark = " *" if log.best else ""
    return (
        f"epoch {log.epoch:>3}/{log.epochs}{phase}  loss {log.loss:.4f}  "
        f"acc {log.accuracy:.4f}  {val}{log.seconds:.2f}s{mark}"
    )

"""Short reprs and HTML tables of result objects, for a notebook or a REPL.

A result holds every epoch, every image's probabilities; its ``repr`` says what it is
in one line (the data stays in its fields and ``to_json()``), and ``_repr_html_``
(Jupyter's rich display) shows the table the CLI prints.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from typing import Any

MAX_ROWS = 20  # rows an HTML table shows; the rest is counted

# Characters a terminal acts on instead of showing: C0 controls (ESC opens the sequences
# that retitle, recolour or rewrite a terminal; CR and backspace overwrite what was
# printed), DEL, C1 controls (U+009B is CSI by itself), the line and paragraph
# separators, and the bidi controls that show a name reversed (U+202E in
# "photo\u202egpj.exe"). A file or class name can hold any of them.
HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def for_terminal(text: str, keep: str = "") -> str:
    """``text`` as it may be shown: each :data:`HIDDEN` character written as its escape
    (``\\x1b``, ``\\u202e``), so a name shows the characters it holds and cannot act on
    the terminal. ``keep``: characters left as they are (a message's own line breaks).
    The one place names are made safe for display (the CLI's consoles, progress bars,
    notebook lines); idempotent."""

    def escaped(m: re.Match[str]) -> str:
        c = m.group()
        if c in keep:
            return c
        return f"\\x{ord(c):02x}" if ord(c) <= 0xFF else f"\\u{ord(c):04x}"

    return HIDDEN.sub(escaped, text)


def short_repr(name: str, fields: dict[str, Any]) -> str:
    """``Name(key=value, ...)`` with floats to 4 digits."""
    shown = ", ".join(
        f"{k}={cell(v) if isinstance(v, float) else repr(v)}" for k, v in fields.items()
    )
    return f"{name}({shown})"


def cell(value: Any) -> str:
    """A table cell: floats to 4 digits, NaN and None as "-"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def html_table(
    caption: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()
) -> str:
    """An escaped HTML table (the first :data:`MAX_ROWS` rows), then one paragraph per note."""
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(cell(v))}</td>" for v in row) + "</tr>"
        for row in rows[:MAX_ROWS]
    )
    more = len(rows) - MAX_ROWS
    if more > 0:
        body += f'<tr><td colspan="{len(columns)}">... and {more} more</td></tr>'
    paragraphs = "".join(f"<p>{esc(n)}</p>" for n in notes)
    return (
        f'<table class="mtl"><caption style="text-align:left">{esc(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{paragraphs}"
    )

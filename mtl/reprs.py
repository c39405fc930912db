"""Short reprs and HTML tables of result objects, for a notebook or a REPL.

A result holds every epoch, every image's probabilities; its ``repr`` says what it is
in one line (the data stays in its fields and ``to_json()``), and ``_repr_html_``
(Jupyter's rich display) shows the table the CLI prints.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

MAX_ROWS = 20  # rows an HTML table shows; the rest is counted


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

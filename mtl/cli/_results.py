"""Rendering per-image results (classify, predict): a table, or JSON for scripts."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from mtl.cli._common import err, out, print_json
from mtl.inference.results import ImageResult


def render_image_results(results: list[ImageResult], *, as_json: bool, title: str) -> int:
    """Print the results; return the exit code (1 if any image failed)."""
    failed = [r for r in results if not r.ok]
    if as_json:
        print_json([r.to_json() for r in results])
    else:
        with_wnid = any(p.wnid for r in results for p in r.predictions)
        table = Table(title=title, show_lines=False)  # title: the caller escapes what it names
        table.add_column("file", overflow="fold")
        table.add_column("rank", justify="right")
        if with_wnid:
            table.add_column("wnid")
        table.add_column("label")
        table.add_column("probability", justify="right")
        for r in results:
            if not r.ok:
                continue
            for p in r.predictions:
                row = [escape(r.file) if p.rank == 1 else "", str(p.rank)]
                if with_wnid:
                    row.append(escape(p.wnid or ""))
                row += [escape(p.label), f"{p.probability:.4f}"]
                table.add_row(*row, end_section=p.rank == len(r.predictions))
        if len(results) > len(failed):
            out.print(table)
    for r in failed:
        err.print(f"[red]skipped[/red] {escape(r.file)}: {escape(r.error or '')}", highlight=False)
    if failed:
        err.print(f"{len(failed)} of {len(results)} images could not be read", highlight=False)
    return 1 if failed else 0

"""Rendering per-image results (classify, predict): a table, or JSON for scripts."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from mtl.cli._common import err, out, path_column_width, print_json, short_path, verbosity
from mtl.inference.results import ImageResult

# Skipped files listed one a line on stderr; past this, a count (--verbose lists all).
MAX_SKIPPED_SHOWN = 10


def render_image_results(results: list[ImageResult], *, as_json: bool, title: str) -> int:
    """Print the results; return the exit code (1 if any image failed)."""
    failed = [r for r in results if not r.ok]
    if as_json:
        print_json([r.to_json() for r in results])
    else:
        with_wnid = any(p.wnid for r in results for p in r.predictions)
        # title: the caller escapes what it names; -q leaves the results alone on stdout
        table = Table(title=None if verbosity.quiet else title, show_lines=False)
        table.add_column("file", overflow="fold")
        table.add_column("rank", justify="right")
        if with_wnid:
            table.add_column("wnid")
        table.add_column("label")
        table.add_column("probability", justify="right")
        labels = [p.label for r in results for p in r.predictions]
        wnids = [p.wnid or "" for r in results for p in r.predictions] if with_wnid else []
        others = [len("rank"), max(map(len, ["label", *labels])), len("probability")]
        if with_wnid:
            others.append(max(map(len, ["wnid", *wnids])))
        room = path_column_width(*others)
        for r in results:
            if not r.ok:
                continue
            for p in r.predictions:
                row = [escape(short_path(r.file, room)) if p.rank == 1 else "", str(p.rank)]
                if with_wnid:
                    row.append(escape(p.wnid or ""))
                row += [escape(p.label), f"{p.probability:.4f}"]
                table.add_row(*row, end_section=p.rank == len(r.predictions))
        if len(results) > len(failed):
            out.print(table)
    print_skipped([(r.file, r.error or "") for r in failed])
    if failed:
        err.print(f"{len(failed)} of {len(results)} images could not be read", highlight=False)
    return 1 if failed else 0


def print_skipped(failed: list[tuple[str, str]]) -> None:
    """One line per unreadable file on stderr (the first few; every one with --verbose)."""
    shown = failed if verbosity.verbose else failed[:MAX_SKIPPED_SHOWN]
    for file, reason in shown:
        err.print(f"[red]skipped[/red] {escape(file)}: {escape(reason)}", highlight=False)
    if len(failed) > len(shown):
        more = len(failed) - len(shown)
        err.print(
            f"... and {more} more skipped (--verbose lists every one)",
            highlight=False,
            markup=False,
        )

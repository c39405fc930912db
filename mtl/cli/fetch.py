"""`mtl fetch`: parse options, call :func:`mtl.crawler.fetch`, render the table or JSON."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mtl.cli._common import (
    JsonTable,
    Quiet,
    Verbose,
    call,
    out,
    print_json,
    progress,
    shown,
    warn,
)
from mtl.crawler.request import DEFAULT, ENGINES, FetchRequest

if TYPE_CHECKING:
    from mtl.crawler import FetchResult
    from mtl.crawler.crawl import ProgressFn

EXIT_SHORT = 3

HELP = """Build a folder-per-class training set from an image search.

One folder per KEYWORD under --out ("blue tit" becomes blue_tit/). Every kept
file is fully decoded with Pillow, at least --min-size, saved with the
extension of its real format, and not a duplicate (same bytes, or the same
picture re-encoded or resized) of another in its class. A picture found under
two keywords is kept in neither. data/manifest.jsonl records each kept file
(class, file, url, engine, sha256, phash, width, height, time).

Run the same command again to resume: it counts what is there and fetches
only what is missing; existing files are never overwritten or renamed.

Exit codes: 0 every keyword reached --limit, 3 some fell short (the table
says why), 2 bad arguments.

Environment: MTL_ENGINE_URL=http://127.0.0.1:8765 sends the engine's search
requests there instead (same path and query; for tests and mirrors).
FLICKR_API_KEY is needed for --engine flickr.

[bold]Examples[/bold]

  mtl fetch "blue tit" crow --limit 100 --out data/

  mtl fetch "blue tit" crow --limit 100 --min-size 400x300 --engine baidu

  mtl fetch --urls birds.tsv --out data/     [dim](lines: label<TAB>url)[/dim]

  mtl fetch crow --urls crows.txt --limit 50 [dim](one URL a line)[/dim]

  mtl fetch crow --json | jq '.classes[0].kept'

[bold]Known datasets[/bold] (downloaded once, verified, cached; then copied to --out)

  mtl fetch --dataset hymenoptera && mtl train data/hymenoptera/train

  mtl fetch --list

MTL_DATASETS_URL replaces the base URL of dataset downloads (keeping the file
name); MTL_DATA_DIR names a folder that already holds them (hymenoptera/train/...).
"""


Keywords = Annotated[
    list[str] | None,
    typer.Argument(metavar="KEYWORD...", help="Search keywords, one class (folder) each."),
]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
Engine = Annotated[
    str,
    typer.Option(
        "--engine",
        help="The image search engine (flickr needs FLICKR_API_KEY).",
        metavar=f"<{'|'.join(ENGINES)}>",
    ),
]
Urls = Annotated[
    Path | None,
    typer.Option("--urls", help="Download these URLs instead (url or label<TAB>url a line)."),
]
Limit = Annotated[int, typer.Option("--limit", "-n", help="Images wanted per keyword.")]
MinSize = Annotated[str, typer.Option("--min-size", help="Smallest WIDTHxHEIGHT kept.")]
Threads = Annotated[int, typer.Option("--threads", help="Parallel downloads.")]
Timeout = Annotated[
    float,
    typer.Option("--timeout", help="Seconds for one whole download or search page (wall clock)."),
]
Deadline = Annotated[float, typer.Option("--deadline", help="Seconds at most per keyword.")]
MaxMb = Annotated[float, typer.Option("--max-mb", help="Largest download kept, in MB.")]
Dataset = Annotated[
    str | None,
    typer.Option("--dataset", help="Get a known dataset (see --list) into --out, not a crawl."),
]
ListDatasets = Annotated[bool, typer.Option("--list", help="List the known datasets.")]


def register(app: typer.Typer) -> None:
    @app.command("fetch", help=HELP)
    def fetch(
        keywords: Keywords = None,
        out_dir: OutDir = DEFAULT.out,
        engine: Engine = DEFAULT.engine,
        urls: Urls = DEFAULT.urls_file,
        limit: Limit = DEFAULT.limit,
        min_size: MinSize = DEFAULT.min_size,
        threads: Threads = DEFAULT.threads,
        timeout: Timeout = DEFAULT.timeout,
        deadline: Deadline = DEFAULT.deadline,
        max_mb: MaxMb = DEFAULT.max_mb,
        json_out: JsonTable = False,
        quiet: Quiet = False,
        verbose: Verbose = False,
        dataset: Dataset = None,
        list_datasets: ListDatasets = False,
    ) -> None:
        if dataset is not None or list_datasets:
            from mtl.cli import _datasets

            crawl_args = bool(keywords) or urls is not None
            _datasets.run(
                dataset,
                list_only=list_datasets,
                crawl_args=crawl_args,
                out_dir=out_dir,
                json_out=json_out,
                quiet=quiet,
            )
            return
        from mtl.crawler import fetch as run_fetch

        request = FetchRequest(
            keywords=list(keywords or []),
            out=out_dir,
            engine=engine,
            urls_file=urls,
            limit=limit,
            min_size=min_size,
            threads=threads,
            timeout=timeout,
            deadline=deadline,
            max_mb=max_mb,
        )
        with _progress(quiet) as on_progress:
            result = call(run_fetch, request, on_progress=on_progress)
        if json_out:
            print_json(result.to_json())
        else:
            _render(result)
        if not result.complete:
            raise typer.Exit(EXIT_SHORT)


@contextmanager
def _progress(quiet: bool) -> Iterator[ProgressFn]:
    """One bar per keyword."""
    with progress(quiet) as bars:

        def update(slug: str, keyword: str, kept: int, limit: int) -> None:
            bars.update(slug, min(kept, limit), limit, keyword)

        yield update


def _rejected(counts: Mapping[str, int]) -> str:
    parts = [f"{n} {reason.replace('_', ' ')}" for reason, n in counts.items() if n]
    return ", ".join(parts) or "-"


def _render(result: FetchResult) -> None:
    table = Table(title=f"mtl fetch -> {shown(result.out)} ({shown(result.engine)})")
    for name in ("class", "requested", "had", "kept", "new", "rejected", "duplicates", "status"):
        numeric = name in ("requested", "had", "kept", "new", "duplicates")
        table.add_column(name, justify="right" if numeric else "left")
    for c in result.classes:
        others = {str(k): v for k, v in c.rejected.items() if k != "duplicate"}
        status = f"[red]short {c.short}[/red]" if c.short else "[green]ok[/green]"
        counts = (c.requested, c.existing, c.kept, len(c.new_files))
        duplicates = str(c.rejected["duplicate"])
        table.add_row(shown(c.slug), *map(str, counts), _rejected(others), duplicates, status)
    out.print(table)
    for c in result.classes:
        if c.short:
            out.print(f"{c.slug}: {c.short} short: {c.why_short}", highlight=False, markup=False)
    for amb in result.ambiguous:
        where = " and ".join(amb.classes)
        warn(f"same picture under {where}: kept in neither ({', '.join(amb.urls)})")
    for note in result.notes:
        warn(note)
    out.print(f"manifest: {result.manifest}", highlight=False, markup=False)

"""`mtl fetch --dataset NAME` and `mtl fetch --list`: known datasets (:mod:`mtl.assets.datasets`).

Imported by `mtl fetch` only when one of those options is given.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from mtl.assets import datasets
from mtl.cli._common import call, download_progress, info, out, print_json
from mtl.cli._common import shown as escape
from mtl.errors import UsageError


def run(
    name: str | None,
    *,
    list_only: bool,
    crawl_args: bool,
    out_dir: Path,
    json_out: bool,
    quiet: bool,
) -> None:
    """`mtl fetch` with --dataset or --list: ``crawl_args`` says KEYWORDs or --urls were given."""
    if crawl_args:
        call(_refuse, "give KEYWORDs (or --urls) or --dataset / --list, not both")
    if list_only:
        if name is not None:
            call(_refuse, "give --dataset NAME or --list, not both")
        _list(json_out)
        return
    assert name is not None
    located = datasets.find(call(datasets.get, name))
    if located is None and quiet:
        located = call(datasets.resolve, name)
    elif located is None:  # a bar only for a real download
        with download_progress() as on_download:
            located = call(datasets.resolve, name, progress=on_download)
    placed = call(datasets.place, located, out_dir)
    if json_out:
        print_json(placed.to_json())
        return
    splits = datasets.count(placed.path, located.dataset)
    sizes = " + ".join(f"{sum(n.values())} {split}" for split, n in splits.items())
    verb = "copied to" if placed.copied else "already in"
    out.print(f"{name}: {sizes} photos {verb} {placed.path}", highlight=False, markup=False)
    if located.source != "local":
        info(f"verified copy kept in {located.path}: later runs need no download")
    if "train" in splits:
        info(f"next: mtl train {placed.path / 'train'}")


def _refuse(message: str) -> None:
    raise UsageError(message)


def _list(json_out: bool) -> None:
    rows = []
    for dataset in datasets.KNOWN.values():
        found = datasets.find(dataset)
        rows.append((dataset, found))
    if json_out:
        print_json(
            [
                {
                    "name": d.name,
                    "title": d.title,
                    "classes": list(d.classes),
                    "photos": dict(d.counts),
                    "url": datasets.url_for(d),
                    "path": str(found.path) if found else None,
                    "source": found.source if found else None,
                }
                for d, found in rows
            ]
        )
        return
    table = Table(title="known datasets (mtl fetch --dataset NAME)")
    for column in ("name", "photos", "classes", "on this machine", "url"):
        table.add_column(column)
    for d, found in rows:
        table.add_row(
            escape(d.name),
            escape(" + ".join(f"{n} {split}" for split, n in d.counts.items())),
            escape(", ".join(d.classes)),
            escape(f"{found.path} ({found.source})") if found else "no (downloads once)",
            escape(datasets.url_for(d)),
        )
    out.print(table)

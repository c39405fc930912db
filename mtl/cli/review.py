"""`mtl review`: find wrong, off-topic and broken photos in a dataset; act only when asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mtl.cli._common import (
    cache_dir_option,
    call,
    download_progress,
    info,
    out,
    print_json,
    progress,
    shown,
    warn,
    weights_dir_option,
)

# One line: a docstring's line break would show in `mtl --help`'s list of commands.
SUMMARY = (
    "Find photos with wrong labels, off-topic photos, cross-class duplicates and broken "
    "images; show them (table, HTML page); move them only when asked."
)

EXAMPLES = """
[bold]Examples[/bold]

  mtl review data/                      (table + data/_review/report.html; nothing moved)

  mtl review data/ --top 20 --json | jq '.findings[].file'

  mtl review data/ --apply              (flagged photos to data/_review/<reason>/, recorded)

  mtl review data/ --apply --relabel    (confident wrong labels to the suggested class instead)

  mtl review data/ --undo               (every recorded photo back where it was)

  mtl review data/ --cache-dir feats/ && mtl train data/ --cache-dir feats/   (one base pass)

Each photo is scored by a head that never saw it (k-fold over the features mtl train
caches): wrong_label (another class is likelier, the given one far below chance),
off_topic (fits no class), duplicate (near-identical photo in another class), dark,
blurry, odd_aspect, tiny_subject (a small subject on a plain or blurred background).
mtl train ignores data/_review/.
"""


def register(app: typer.Typer) -> None:
    @app.command("review", epilog=EXAMPLES, help=SUMMARY)
    def review(
        data: Path = typer.Argument(
            ..., help="Dataset folder: one sub-folder of images per class."
        ),
        apply: bool = typer.Option(
            False, "--apply", help="Move flagged photos to DATA/_review/<reason>/ (never deletes)."
        ),
        relabel: bool = typer.Option(
            False,
            "--relabel",
            help="Move confident wrong-label photos to the suggested class (implies --apply).",
        ),
        undo: bool = typer.Option(
            False, "--undo", help="Put every photo review moved back where it was."
        ),
        top: int | None = typer.Option(None, "--top", "-n", help="Only the N worst photos."),
        label_threshold: float = typer.Option(
            0.7,
            "--label-threshold",
            help="wrong_label only when the given class's calibrated out-of-fold probability "
            "is below this times chance (1/k for k classes).",
        ),
        off_topic_threshold: float = typer.Option(
            3.5, "--off-topic-threshold", help="off_topic at this robust z-score and above."
        ),
        duplicate_threshold: float = typer.Option(
            0.97, "--duplicate-threshold", help="Feature similarity of a cross-class duplicate."
        ),
        relabel_confidence: float = typer.Option(
            0.9, "--relabel-confidence", help="--relabel only when the suggestion is this sure."
        ),
        folds: int = typer.Option(5, "--folds", help="k of the k-fold."),
        seed: int = typer.Option(42, "--seed", help="Seed of the folds."),
        report: Path | None = typer.Option(
            None,
            "--report",
            help="Where to write the HTML page.",
            show_default="DATA/_review/report.html",
        ),
        model: str = typer.Option("mobilenet", "--model", "-m", help="Base model (as mtl train)."),
        alpha: float = typer.Option(1.0, "--alpha", "-a", help="Width multiplier (as mtl train)."),
        image_size: int = typer.Option(224, "--image-size", help="Input size in pixels."),
        weights_dir: Path | None = weights_dir_option(),
        cache_dir: Path | None = cache_dir_option(),
        as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON on stdout."),
    ) -> None:
        """:data:`SUMMARY` (``help=``: Typer's rich help keeps a docstring's line breaks)."""
        # Long only by its Typer option declarations: the body parses, calls, renders.
        from mtl import review as core
        from mtl.training.config import TrainConfig

        if undo:
            _undo(data, apply or relabel, as_json)
            return
        cfg = TrainConfig(model=model, alpha=alpha, image_size=image_size, seed=seed)
        thresholds = core.Thresholds(wrong_label=label_threshold, off_topic=off_topic_threshold,
                                     duplicate=duplicate_threshold,
                                     relabel=relabel_confidence)  # fmt: skip
        with download_progress() as on_download, progress() as bars:
            result = call(
                core.review,
                data,
                cfg,
                thresholds=thresholds,
                folds=folds,
                top=top,
                apply=apply,
                relabel=relabel,
                report=report,
                weights_dir=weights_dir,
                cache_dir=cache_dir,
                on_download=on_download,
                on_progress=lambda stage, d, t: bars.update(stage, d, t),
            )
        _render(result, as_json)


def _undo(data: Path, also_moving: bool, as_json: bool) -> None:
    from mtl import review as core
    from mtl.cli._common import fail

    if also_moving:
        raise fail("--undo cannot be combined with --apply or --relabel", 2)
    undone = call(core.undo, data)
    if as_json:
        print_json(undone.to_json())
    else:
        n, k = len(undone.restored), len(undone.already)
        out.print(f"{n} photo(s) put back in {data}; {k} already in place", markup=False)


def _render(result: Any, as_json: bool) -> None:
    if result.skipped:
        warn(f"skipped {len(result.skipped)} unreadable file(s):")
        for f, reason in result.skipped:
            info(f"  {f}: {reason}")
    for message in result.warnings:
        warn(message)
    if as_json:
        print_json(result.to_json())
    else:
        _table(result)


def _table(result: Any) -> None:
    from rich.table import Table

    table = Table(
        title=f"mtl review: {shown(result.root)} ({result.flagged} of {result.total} flagged)",
        title_justify="left",
    )
    for col in ("file", "given", "suggested", "reason", "score", "detail"):
        table.add_column(col, justify="right" if col == "score" else "left")
    for f in result.findings:
        rel = f.path.relative_to(result.root) if f.path.is_relative_to(result.root) else f.path
        table.add_row(
            shown(rel), shown(f.given), shown(f.suggested or "-"), f.reason, f"{f.score:.2f}",
            shown(f.detail),
        )  # fmt: skip
    out.print(table)
    counts = ", ".join(f"{r} {n}" for r, n in result.counts().items()) or "nothing flagged"
    out.print(f"{counts}; {result.seconds.get('total', 0):.1f}s", highlight=False, markup=False)
    if result.report:
        out.print(f"report: {result.report}", highlight=False, markup=False)
    if result.moves:
        moved = sum(m.action == "set_aside" for m in result.moves)
        relabeled = len(result.moves) - moved
        out.print(
            f"moved {moved} photo(s) to {shown(result.root / '_review')}, relabeled {relabeled}; "
            f"undo with: mtl review {shown(result.root)} --undo",
            highlight=False,
        )
    elif result.findings:
        out.print("nothing moved (use --apply to set them aside)", highlight=False)

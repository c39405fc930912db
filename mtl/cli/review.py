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
    quiet_option,
    shown,
    verbose_option,
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

  mtl review data/ --apply decisions.json   (what you marked on the page: keep/remove/move)

  mtl review data/ --undo               (every recorded photo back, newest move first)

  mtl review data/ --cache-dir feats/ && mtl train data/ --cache-dir feats/   (one base pass)

Each photo is scored by a head that never saw it (k-fold over the features mtl train
caches): wrong_label (another class is likelier, the given one far below chance),
off_topic (fits no class), duplicate (near-identical photo in another class), dark,
blurry, odd_aspect, tiny_subject (a small subject on a plain or blurred background).
The page (data/_review/report.html) shows the square the model saw; mark each photo
keep, remove or move to a class there and download decisions.json. --json gives the
scores of every photo, flagged or not. mtl train ignores data/_review/.
"""


def register(app: typer.Typer) -> None:
    @app.command("review", epilog=EXAMPLES, help=SUMMARY)
    def review(
        data: Path = typer.Argument(
            ..., help="Dataset folder: one sub-folder of images per class."
        ),
        decisions: Path | None = typer.Argument(
            None,
            help="With --apply: a decisions.json saved from the review page; applies exactly "
            "those decisions (no scoring).",
            show_default=False,
        ),
        apply: bool = typer.Option(
            False,
            "--apply",
            help="Move flagged photos to DATA/_review/<reason>/ (never deletes); with "
            "DECISIONS, do what the page's decisions say.",
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
        force: bool = typer.Option(False, "--force", help="Overwrite an existing --report file."),
        as_json: bool = typer.Option(
            False, "--json", help="Print the findings and every photo's scores as JSON."
        ),
        quiet: bool = quiet_option(),
        verbose: bool = verbose_option(),
    ) -> None:
        """:data:`SUMMARY` (``help=``: Typer's rich help keeps a docstring's line breaks)."""
        # Long only by its Typer option declarations: the body parses, calls, renders.
        from mtl import review as core
        from mtl.pipeline.config import TrainConfig

        if undo:
            _undo(data, apply or relabel or decisions is not None, as_json)
            return
        if decisions is not None and not apply:
            from mtl.cli._common import fail

            raise fail(f"a decisions file is applied with --apply: mtl review {data} --apply "
                       f"{decisions}", 2)  # fmt: skip
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
                decisions=decisions,
                report=report,
                force=force,
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
        raise fail("--undo cannot be combined with --apply, --relabel or DECISIONS", 2)
    undone = call(core.undo, data)
    for m in undone.missing:
        warn(f"{shown(m.file)} is gone (deleted since?); {shown(m.original)} not restored")
    for m in undone.blocked:
        warn(
            f"{shown(m.original)} is taken (or {shown(m.file)} changed); {shown(m.file)} left "
            "where it is, still recorded: clear the place and run --undo again"
        )
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
    elif result.total == 0:  # a decisions file: nothing was scored, only the moves
        _moved(result)
        if not result.moves:
            out.print("nothing moved: the decisions keep every photo", highlight=False)
    else:
        _table(result)


def _table(result: Any) -> None:
    from rich.table import Table

    table = Table(
        title=f"mtl review: {shown(result.root)} ({result.flagged} of {result.total} flagged)",
        title_justify="left",
    )
    for col in ("file", "given", "suggested", "reason", "score", "detail"):
        # Piped, the console is 80 columns: fold file names rather than cut them.
        table.add_column(
            col, justify="right" if col == "score" else "left",
            overflow="fold" if col in ("file", "detail") else "ellipsis",
        )  # fmt: skip
    for f in result.findings:
        rel = f.path.relative_to(result.root) if f.path.is_relative_to(result.root) else f.path
        table.add_row(
            shown(rel), shown(f.given), shown(f.suggested or "-"), f.reason, f"{f.score:.2f}",
            shown(f.detail),
        )  # fmt: skip
    # Piped (not a terminal), Rich would fit the table to 80 columns and cut the file
    # names: print it at its natural width instead, for grep and for the next tool.
    if out.is_terminal:
        out.print(table)
    else:
        from rich.console import Console

        Console(file=out.file, width=10_000, soft_wrap=True).print(table)
    counts = ", ".join(f"{r} {n}" for r, n in result.counts().items()) or "nothing flagged"
    out.print(f"{counts}; {result.seconds.get('total', 0):.1f}s", highlight=False, markup=False)
    if result.report:
        out.print(f"report: {result.report}", highlight=False, markup=False)
    if result.moves:
        _moved(result)
    elif result.findings:
        out.print("nothing moved (use --apply to set them aside)", highlight=False)


def _moved(result: Any) -> None:
    if result.moves:
        moved = sum(m.action == "set_aside" for m in result.moves)
        relabeled = len(result.moves) - moved
        out.print(
            f"moved {moved} photo(s) to {shown(result.root / '_review')}, relabeled {relabeled}; "
            f"undo with: mtl review {shown(result.root)} --undo",
            highlight=False,
        )

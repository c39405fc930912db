"""`mtl review`: find wrong, off-topic and broken photos in a dataset; act only when asked."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated, Any

import typer

from mtl.cli._common import (
    CacheDir,
    Quiet,
    SafeConsole,
    Verbose,
    WeightsDir,
    call,
    download_progress,
    info,
    out,
    print_json,
    progress,
    shown,
    warn,
)
from mtl.pipeline.config import SETTINGS, TrainConfig
from mtl.review.flags import LIMITS, REASON_TABLE, Thresholds

# One line: a docstring's line break would show in `mtl --help`'s list of commands.
SUMMARY = (
    "Find photos with wrong labels, off-topic photos, cross-class duplicates and broken "
    "images; show them (table, HTML page); move them only when asked."
)

EXAMPLES_FORMAT = """
[bold]Examples[/bold]

  mtl review data/                      (table + data/_review/report.html; nothing moved)

  mtl review data/ --top 20 --json | jq '.findings[].file'

  mtl review data/ --apply              (flagged photos to data/_review/<reason>/, recorded)

  mtl review data/ --apply --relabel    (confident wrong labels to the suggested class instead)

  mtl review data/ --apply decisions.json   (what you marked on the page: keep/remove/move)

  mtl review data/ --undo               (every recorded photo back, newest move first)

  mtl review data/ --cache-dir feats/ && mtl train data/ --cache-dir feats/   (one base pass)

{reasons}
The page (data/_review/report.html, thumbnails in report-thumbs/ beside it) shows the
square the model saw, worst first by priority, a page at a time; mark each photo keep,
remove or move to a class there and download decisions.json (bound to the photos shown:
a photo changed since is reported, not moved). --json gives the
scores of every photo, flagged or not. mtl train ignores data/_review/.
"""


def _reasons() -> str:
    """The reasons in words, in the order they win, each with the option that sets it."""
    said = []
    for r in REASON_TABLE:
        option = LIMITS[r.threshold].option
        said.append(f"{r.name} ({r.meaning}{'; ' + option if option.startswith('--') else ''})")
    intro = (
        "Each photo is scored by a head that never saw it (k-fold over the features mtl "
        "train caches) and flagged for the first of these that applies: "
    )
    return textwrap.fill(intro + ", ".join(said) + ".", width=84, break_on_hyphens=False)


EXAMPLES = EXAMPLES_FORMAT.format(reasons=_reasons())
DEFAULT = Thresholds()
TRAIN = TrainConfig()  # the base's defaults, as mtl train's


def _threshold(name: str) -> Any:
    limit = LIMITS[name]
    return typer.Option(limit.option, help=limit.help)


Data = Annotated[Path, typer.Argument(help="Dataset folder: one sub-folder of images per class.")]
Decisions = Annotated[
    Path | None,
    typer.Argument(
        help="With --apply: a decisions.json saved from the review page; applies exactly "
        "those decisions (no scoring).",
        show_default=False,
    ),
]
Apply = Annotated[
    bool,
    typer.Option(
        "--apply",
        help="Move flagged photos to DATA/_review/<reason>/ (never deletes); with "
        "DECISIONS, do what the page's decisions say.",
    ),
]
Relabel = Annotated[
    bool,
    typer.Option(
        "--relabel",
        help="Move confident wrong-label photos to the suggested class (implies --apply).",
    ),
]
Undo = Annotated[
    bool, typer.Option("--undo", help="Put every photo review moved back where it was.")
]
Top = Annotated[int | None, typer.Option("--top", "-n", help="Only the N worst photos.")]
LabelThreshold = Annotated[float, _threshold("wrong_label")]
OffTopicThreshold = Annotated[float, _threshold("off_topic")]
DuplicateThreshold = Annotated[float, _threshold("duplicate")]
RelabelConfidence = Annotated[float, _threshold("relabel")]
Folds = Annotated[int, typer.Option("--folds", help="k of the k-fold.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the folds and the heads.")]
Report = Annotated[
    Path | None,
    typer.Option(
        "--report",
        help="Where to write the HTML page (its thumbnails: STEM-thumbs/ beside it).",
        show_default="DATA/_review/report.html",
    ),
]


def _as_train(key: str) -> Any:
    """The base's options as mtl train has them (mtl.pipeline.config.SETTINGS)."""
    row = SETTINGS[key]
    return typer.Option(*row.flags, help=row.help)


Model = Annotated[str, _as_train("model")]
Alpha = Annotated[float, _as_train("alpha")]
ImageSize = Annotated[int, _as_train("image_size")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing --report file.")]
AsJson = Annotated[
    bool,
    typer.Option("--json", help="Print the findings and every photo's scores as JSON."),
]


def register(app: typer.Typer) -> None:
    @app.command("review", epilog=EXAMPLES, help=SUMMARY)
    def review(
        data: Data,
        decisions: Decisions = None,
        apply: Apply = False,
        relabel: Relabel = False,
        undo: Undo = False,
        top: Top = None,
        label_threshold: LabelThreshold = DEFAULT.wrong_label,
        off_topic_threshold: OffTopicThreshold = DEFAULT.off_topic,
        duplicate_threshold: DuplicateThreshold = DEFAULT.duplicate,
        relabel_confidence: RelabelConfidence = DEFAULT.relabel,
        folds: Folds = 5,
        seed: Seed = TRAIN.seed,
        report: Report = None,
        model: Model = TRAIN.model,
        alpha: Alpha = TRAIN.alpha,
        image_size: ImageSize = TRAIN.image_size,
        weights_dir: WeightsDir = None,
        cache_dir: CacheDir = None,
        force: Force = False,
        as_json: AsJson = False,
        quiet: Quiet = False,
        verbose: Verbose = False,
    ) -> None:
        """:data:`SUMMARY` (``help=``: Typer's rich help keeps a docstring's line breaks)."""
        from mtl import review as core
        from mtl.pipeline.config import TrainConfig

        if undo:
            _undo(data, apply or relabel or decisions is not None, as_json)
            return
        if decisions is not None and not apply:
            from mtl.cli._common import fail

            command = f"mtl review {data} --apply {decisions}"
            raise fail(f"a decisions file is applied with --apply: {command}", 2)
        cfg = TrainConfig(model=model, alpha=alpha, image_size=image_size, seed=seed)
        thresholds = core.Thresholds(
            wrong_label=label_threshold,
            off_topic=off_topic_threshold,
            duplicate=duplicate_threshold,
            relabel=relabel_confidence,
        )
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
    for col in ("file", "given", "suggested", "reason", "priority", "detail"):
        # Piped, the console is 80 columns: fold file names rather than cut them.
        fold = col in ("file", "detail")
        table.add_column(
            col,
            justify="right" if col == "priority" else "left",
            overflow="fold" if fold else "ellipsis",
        )
    for f in result.findings:
        rel = f.path.relative_to(result.root) if f.path.is_relative_to(result.root) else f.path
        names = (shown(rel), shown(f.given), shown(f.suggested or "-"))
        table.add_row(*names, f.reason, f"{f.priority:.2f}", shown(f.detail))
    # Piped (not a terminal), Rich would fit the table to 80 columns and cut the file
    # names: print it at its natural width instead, for grep and for the next tool.
    if out.is_terminal:
        out.print(table)
    else:
        SafeConsole(file=out.file, width=10_000, soft_wrap=True).print(table)
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

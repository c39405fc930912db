"""`mtl evaluate`: accuracy, per-class metrics and a confusion matrix on a test set."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from mtl.cli._common import (
    Labels,
    ModelPath,
    PassBatchSize,
    Quiet,
    Verbose,
    call,
    detail,
    info,
    out,
    path_column_width,
    print_json,
    progress_bar,
    short_path,
    warn,
)
from mtl.cli._results import print_skipped

if TYPE_CHECKING:
    from mtl.inference.evaluate import EvaluationReport

EXAMPLES = """
[bold]Examples[/bold]

  mtl evaluate runs/train/model.keras data/test

  mtl evaluate runs/train --split val   [dim](the run's own held-out photos, from split.csv)[/dim]

  mtl evaluate runs/train --split test  [dim](DATA/test/, never trained on)[/dim]

  mtl evaluate model.keras data/test --plot confusion.png

  mtl evaluate model.keras data/test --json | jq .accuracy

  mtl evaluate model.int8.tflite data/test   [dim](judge the exported model)[/dim]

  mtl evaluate model.onnx data/test
"""


Data = Annotated[
    Path | None,
    typer.Argument(
        help="Test set: one folder per class, named like the model's classes (or use --split).",
        show_default=False,
    ),
]
Split = Annotated[
    Literal["val", "train", "test"] | None,
    typer.Option(
        "--split",
        help="Instead of DATA: the photos the run validated on (val), trained on, or "
        "held out (test: DATA/test/), as listed in RUN/split.csv; MODEL is the run "
        "folder or its model.keras.",
        show_default=False,
    ),
]
Plot = Annotated[
    Path | None, typer.Option("--plot", help="Write the confusion matrix as a PNG to this file.")
]
Show = Annotated[
    int, typer.Option("--show", help="How many misclassified files to list in the table output.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing --plot file.")]


def register(app: typer.Typer) -> None:
    @app.command("evaluate", epilog=EXAMPLES)
    def evaluate(
        model: ModelPath,
        data: Data = None,
        split: Split = None,
        plot: Plot = None,
        batch_size: PassBatchSize = 32,
        labels: Labels = None,
        show: Show = 20,
        as_json: AsJson = False,
        force: Force = False,
        quiet: Quiet = False,
        verbose: Verbose = False,
    ) -> None:
        """Score a trained model on a labelled test set (one folder per class).

        Unreadable images are listed and counted apart; they never count as
        wrong predictions.
        """
        from mtl.inference.evaluate import evaluate as run

        start = time.perf_counter()
        with progress_bar("evaluating") as on_progress:
            report = call(
                run,
                model,
                data,
                split=split,
                batch_size=batch_size,
                labels=labels,
                plot_path=plot,
                force=force,
                on_progress=on_progress,
            )
        for message in report.warnings:
            warn(message)
        print_skipped(report.bad_files)
        detail(
            f"{report.model}: {report.images + len(report.bad_files)} image(s) of {report.data} "
            f"in {time.perf_counter() - start:.2f} s"
        )
        if as_json:
            print_json(report.to_json())
        else:
            _render(report, show)
        if report.bad_files:
            info(f"{len(report.bad_files)} unreadable file(s) not counted")
        if report.plot_file is not None:
            info(f"wrote {report.plot_file}")


def _render(report: EvaluationReport, show: int) -> None:
    names = report.class_names
    out.print(
        f"[bold]accuracy {report.accuracy:.4f}[/bold] ({report.correct} of {report.images} "
        f"images; {len(report.bad_files)} unreadable)   macro F1 {report.macro_f1:.4f}",
        highlight=False,
    )
    metrics = Table(title="per class")
    metrics.add_column("class")
    for col in ("precision", "recall", "F1", "support"):
        metrics.add_column(col, justify="right")
    for m in report.per_class:
        metrics.add_row(
            escape(m.label), f"{m.precision:.4f}", f"{m.recall:.4f}", f"{m.f1:.4f}", str(m.support)
        )
    out.print(metrics)
    cm = Table(title="confusion matrix (rows: true class, columns: predicted)")
    cm.add_column("true \\ predicted")
    for name in names:
        cm.add_column(escape(name), justify="right")
    for i, name in enumerate(names):
        cells = [
            f"[bold]{v}[/bold]" if i == j else str(v) for j, v in enumerate(report.confusion[i])
        ]
        cm.add_row(escape(name), *cells)
    out.print(cm)
    if report.misclassified:
        wrong = Table(title=f"misclassified ({len(report.misclassified)}, most confident first)")
        wrong.add_column("file", overflow="fold")
        wrong.add_column("true")
        wrong.add_column("predicted")
        wrong.add_column("probability", justify="right")
        listed = report.misclassified[: max(show, 0)]
        widest = max(len(n) for n in names)
        room = path_column_width(max(widest, 4), max(widest, 9), len("probability"))
        for w in listed:
            wrong.add_row(
                escape(short_path(w.file, room)),
                escape(w.true_label),
                escape(w.predicted_label),
                f"{w.probability:.4f}",
            )
        out.print(wrong)
        if len(report.misclassified) > show:
            out.print(f"... and {len(report.misclassified) - show} more (--show N or --json)")

"""`mtl evaluate`: accuracy, per-class metrics and a confusion matrix on a test set."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from mtl.cli._common import call, err, info, out, print_json, progress_bar, warn

if TYPE_CHECKING:
    from mtl.inference.evaluate import EvaluationReport

EXAMPLES = """
[bold]Examples[/bold]

  mtl evaluate runs/train/model.keras data/test

  mtl evaluate model.keras data/test --plot confusion.png

  mtl evaluate model.keras data/test --json | jq .accuracy

  mtl evaluate model.int8.tflite data/test   [dim](judge the exported model)[/dim]
"""


def register(app: typer.Typer) -> None:
    @app.command("evaluate", epilog=EXAMPLES)
    def evaluate(
        model: Path = typer.Argument(
            ..., help="model.keras from mtl train, or a .tflite from mtl export."
        ),
        data: Path = typer.Argument(
            ..., help="Test set: one folder per class, named like the model's classes."
        ),
        plot: Path | None = typer.Option(
            None, "--plot", help="Write the confusion matrix as a PNG to this file."
        ),
        batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per forward pass."),
        labels: Path | None = typer.Option(
            None, "--labels", help="Labels of a .tflite model (default: MODEL.labels.txt)."
        ),
        show: int = typer.Option(
            20, "--show", help="How many misclassified files to list in the table output."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing --plot file."),
    ) -> None:
        """Score a trained model on a labelled test set (one folder per class).

        Unreadable images are listed and counted apart; they never count as
        wrong predictions.
        """
        from mtl.inference.evaluate import evaluate as run

        with progress_bar("evaluating") as on_progress:
            report = call(
                run,
                model,
                data,
                batch_size=batch_size,
                labels=labels,
                plot_path=plot,
                force=force,
                on_progress=on_progress,
            )
        for message in report.warnings:
            warn(message)
        for file, reason in report.bad_files:
            err.print(f"[red]skipped[/red] {escape(file)}: {escape(reason)}", highlight=False)
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
        for w in report.misclassified[: max(show, 0)]:
            wrong.add_row(
                escape(w.file),
                escape(w.true_label),
                escape(w.predicted_label),
                f"{w.probability:.4f}",
            )
        out.print(wrong)
        if len(report.misclassified) > show:
            out.print(f"... and {len(report.misclassified) - show} more (--show N or --json)")

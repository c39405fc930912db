"""`mtl export`: a trained model as TFLite (float, dynamic or int8) or a TF SavedModel."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from mtl.cli._common import call, out, print_json, progress_bar, shown

EXAMPLES = """
[bold]Examples[/bold]

  mtl export runs/train/model.keras   [dim](model.tflite + model.labels.txt)[/dim]

  mtl export model.keras --quantize int8 --representative data/train

  mtl export model.keras --quantize dynamic --out phone/birds.tflite

  mtl export model.keras --format saved_model

  mtl predict model.int8.tflite photos/   [dim](check the exported model)[/dim]
"""


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


def register(app: typer.Typer) -> None:
    @app.command("export", epilog=EXAMPLES)
    def export(
        model: Path = typer.Argument(..., help="model.keras from mtl train."),
        fmt: str = typer.Option("tflite", "--format", "-f", help="tflite or saved_model."),
        quantize: str = typer.Option(
            "none",
            "--quantize",
            "-q",
            help="TFLite weights: none (float32), dynamic (int8 weights) or int8 "
            "(int8 weights and activations; needs --representative).",
        ),
        representative: Path | None = typer.Option(
            None,
            "--representative",
            help="Folder of typical photos (e.g. the training set) to calibrate int8 on.",
        ),
        calibration_images: int = typer.Option(
            100, "--calibration-images", help="How many representative photos to calibrate on."
        ),
        out_path: Path | None = typer.Option(
            None,
            "--out",
            "-o",
            help="Output file (tflite) or folder (saved_model); default: beside the model.",
        ),
        force: bool = typer.Option(False, "--force", help="Overwrite existing output."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Export a trained model for phones and servers, with its labels file.

        The exported model takes raw RGB 0-255 float32 pixels at the model's
        size, like the Keras model; int8 quantizes the inside only.
        """
        from mtl.inference.export import export_model

        with progress_bar("calibrating") as on_progress:
            report = call(
                export_model,
                model,
                fmt=fmt,
                quantize=quantize,
                representative=representative,
                calibration_count=calibration_images,
                out=out_path,
                force=force,
                on_progress=on_progress,
            )
        if as_json:
            print_json(report.to_json())
            return
        table = Table(
            title=f"exported {shown(model.name)} ({shown(fmt)}, quantize {shown(quantize)})"
        )
        table.add_column("file", overflow="fold")
        table.add_column("what")
        table.add_column("size", justify="right")
        table.add_column("vs .keras", justify="right")
        src = report.source
        table.add_row(escape(str(src.path)), escape(src.what), _size(src.bytes), "1.00x")
        for f in report.files:
            ratio = f"{f.bytes / src.bytes:.2f}x" if not f.what.startswith("labels") else ""
            table.add_row(escape(str(f.path)), escape(f.what), _size(f.bytes), ratio)
        out.print(table)

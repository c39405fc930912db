"""`mtl export`: a trained model as TFLite (float, dynamic or int8), a TF SavedModel or ONNX."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from mtl.cli._common import (
    JsonTable,
    Quiet,
    Verbose,
    call,
    detail,
    out,
    path_column_width,
    print_json,
    progress_bar,
    short_path,
    shown,
)
from mtl.deploy.formats import FORMATS, FormatName

EXAMPLES = """
[bold]Examples[/bold]

  mtl export runs/train/model.keras   [dim](model.tflite + model.labels.txt)[/dim]

  mtl export runs/train --format onnx   [dim](runs/train/model.onnx, labels inside)[/dim]

  mtl export model.keras --quantize int8 --representative data/train

  mtl export model.keras --quantize dynamic --out phone/birds.tflite

  mtl export model.keras --format saved_model   [dim](TF Serving: JPEG bytes in)[/dim]

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


Model = Annotated[Path, typer.Argument(help="model.keras from mtl train, or its run folder.")]
Format = Annotated[
    FormatName,
    typer.Option(
        "--format",
        "-f",
        help=escape("; ".join(f"{f.name} ({f.help})" for f in FORMATS.values()) + "."),
    ),
]
Quantize = Annotated[
    Literal["none", "dynamic", "int8"],
    typer.Option(
        "--quantize",
        help="TFLite weights: none (float32), dynamic (int8 weights) or int8 "
        "(int8 weights and activations; needs --representative).",
    ),
]
Representative = Annotated[
    Path | None,
    typer.Option(
        "--representative",
        help="Folder of typical photos (e.g. the training set) to calibrate int8 on.",
    ),
]
CalibrationImages = Annotated[
    int,
    typer.Option("--calibration-images", help="How many representative photos to calibrate on."),
]
OutPath = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Output file (tflite, onnx) or folder (saved_model).",
        show_default="beside the model: model.tflite, model.onnx, model_saved_model/",
    ),
]
Force = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Replace an earlier export of mtl's there (never the model, a link, a file "
        "mtl did not write, or a folder holding anything else).",
    ),
]


def register(app: typer.Typer) -> None:
    @app.command("export", epilog=EXAMPLES)
    def export(
        model: Model,
        fmt: Format = "tflite",
        quantize: Quantize = "none",
        representative: Representative = None,
        calibration_images: CalibrationImages = 100,
        out_path: OutPath = None,
        force: Force = False,
        as_json: JsonTable = False,
        quiet: Quiet = False,
        verbose: Verbose = False,
    ) -> None:
        """Export a trained model for phones and servers, its class names inside.

        ONNX and SavedModel take a decoded photo of any size (SavedModel's
        serving_default: the encoded JPEG/PNG bytes) and make it square inside,
        as mtl predict does; TFLite takes the photo resized to its declared
        input and carries standard metadata (MediaPipe reads it). int8
        quantizes the inside only. See docs/deploy.md.
        """
        from mtl.deploy.export import export_model

        start = time.perf_counter()
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
        detail(f"exported {report.source.path} in {time.perf_counter() - start:.2f} s")
        if as_json:
            print_json(report.to_json())
            return
        how = f"{fmt}, quantize {quantize}" if fmt == "tflite" else fmt
        table = Table(title=f"exported {shown(report.source.path.name)} ({shown(how)})")
        table.add_column("file", overflow="fold")
        table.add_column("what")
        table.add_column("size", justify="right")
        table.add_column("vs .keras", justify="right")
        src = report.source
        whats = [src.what, *(f.what for f in report.files)]
        room = path_column_width(max(map(len, ["what", *whats])), 9, 9)
        table.add_row(
            escape(short_path(str(src.path), room)), escape(src.what), _size(src.bytes), "1.00x"
        )
        for f in report.files:
            ratio = f"{f.bytes / src.bytes:.2f}x" if not f.what.startswith("labels") else ""
            name = escape(short_path(str(f.path), room))
            table.add_row(name, escape(f.what), _size(f.bytes), ratio)
        out.print(table)

"""`mtl predict`: apply a trained model (model.keras, a run folder, an exported .tflite or
.onnx) to images."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from mtl.cli._common import (
    Images,
    JsonTable,
    Labels,
    ModelPath,
    PassBatchSize,
    Quiet,
    TopK,
    Verbose,
    call,
    detail,
    info,
    progress_bar,
    shown,
)
from mtl.cli._results import render_image_results

EXAMPLES = """
[bold]Examples[/bold]

  mtl predict runs/train/model.keras crow.jpg

  mtl predict runs/train crow.jpg   [dim](a run folder: its model.keras)[/dim]

  mtl predict model.keras photos/ "more/**/*.png" --top-k 3

  mtl predict model.keras photos/ --json | jq '.[] | .predictions[0].label'

  mtl predict model.keras photos/ --csv predictions.csv

  mtl predict model.tflite photos/   [dim](reads model.labels.txt beside it; no TensorFlow)[/dim]

  mtl predict model.onnx photos/   [dim](ONNX Runtime, labels inside the file; no TensorFlow)[/dim]

Exit codes: 0 all images predicted, 1 some could not be read (listed on
stderr), 2 bad arguments, an unusable model, or not one readable image.
"""


CsvFile = Annotated[
    Path | None, typer.Option("--csv", help="Also write the predictions to this CSV file.")
]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing --csv file.")]


def register(app: typer.Typer) -> None:
    @app.command("predict", epilog=EXAMPLES)
    def predict(
        model: ModelPath,
        images: Images,
        top_k: TopK = 1,
        batch_size: PassBatchSize = 32,
        labels: Labels = None,
        as_json: JsonTable = False,
        csv_file: CsvFile = None,
        force: Force = False,
        quiet: Quiet = False,
        verbose: Verbose = False,
    ) -> None:
        """Predict the classes of images with a model trained by mtl train.

        The model takes raw photos: image size, preprocessing and class names
        all come from the model file, never from options.
        """
        from mtl.inference.predict import predict as run

        start = time.perf_counter()
        with progress_bar("predicting") as on_progress:
            report = call(
                run,
                model,
                images,
                top_k_count=top_k,
                batch_size=batch_size,
                labels=labels,
                csv_path=csv_file,
                force=force,
                on_progress=on_progress,
            )
        detail(
            f"{report.model} ({report.runs_on}, {len(report.class_names)} classes): "
            f"{len(report.results)} image(s) in {time.perf_counter() - start:.2f} s"
        )
        name = Path(report.model).name
        code = render_image_results(
            report.results, as_json=as_json, title=f"{shown(name)} ({report.runs_on})"
        )
        if report.csv_file is not None:
            info(f"wrote {report.csv_file}")
        raise typer.Exit(code)

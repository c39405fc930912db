"""`mtl predict`: apply a trained model (model.keras, a run folder, an exported .tflite or
.onnx) to images."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from mtl.cli._common import (
    call,
    detail,
    info,
    labels_option,
    model_argument,
    progress_bar,
    quiet_option,
    shown,
    verbose_option,
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


def register(app: typer.Typer) -> None:
    @app.command("predict", epilog=EXAMPLES)
    def predict(
        model: Path = model_argument(),
        images: list[Path] = typer.Argument(
            ..., help="Image files, folders (searched recursively) or quoted globs."
        ),
        top_k: int = typer.Option(1, "--top-k", "-k", help="How many classes to show per image."),
        batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per forward pass."),
        labels: Path | None = labels_option(),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
        csv_file: Path | None = typer.Option(
            None, "--csv", help="Also write the predictions to this CSV file."
        ),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing --csv file."),
        quiet: bool = quiet_option(),
        verbose: bool = verbose_option(),
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
            f"{report.model} ({report.kind}, {len(report.class_names)} classes): "
            f"{len(report.results)} image(s) in {time.perf_counter() - start:.2f} s"
        )
        name = Path(report.model).name
        code = render_image_results(
            report.results, as_json=as_json, title=f"{shown(name)} ({report.kind})"
        )
        if report.csv_file is not None:
            info(f"wrote {report.csv_file}")
        raise typer.Exit(code)

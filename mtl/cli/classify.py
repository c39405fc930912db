"""`mtl classify`: ImageNet top-k with a pretrained MobileNet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from mtl.cli._common import (
    Images,
    JsonTable,
    PassBatchSize,
    Quiet,
    TopK,
    Verbose,
    call,
    download_progress,
    progress_bar,
    shown,
)
from mtl.cli._results import render_image_results
from mtl.model import backbones

EXAMPLES = """
[bold]Examples[/bold]

  mtl classify photo.jpg

  mtl classify photos/ --top-k 3 --json | jq '.[0].predictions[0].label'

  mtl classify dog.png --model mobilenet_v2 --alpha 1.0

  mtl classify panorama.jpg --fit squash
"""


Model = Annotated[
    backbones.ModelName, typer.Option("--model", "-m", help="The pretrained ImageNet model.")
]
Alpha = Annotated[
    float,
    typer.Option("--alpha", "-a", help="Width multiplier (MobileNet v1: 0.25, 0.5, 0.75, 1.0)."),
]
Fit = Annotated[
    Literal["center", "squash"],
    typer.Option(
        "--fit",
        help="How a photo becomes the model's square: center = ImageNet's evaluation "
        "crop (short side to 256, the central 224x224); squash = the whole photo, "
        "aspect ignored (for subjects at the edges).",
    ),
]
# Its own help: classify names a weight file, as it needs exactly one.
WeightsDir = Annotated[
    Path | None,
    typer.Option(
        "--weights-dir",
        envvar="MTL_WEIGHTS_DIR",
        help="Folder holding Keras weight files (e.g. mobilenet_1_0_224_tf.h5); "
        "else the Keras cache, else a download.",
    ),
]


def register(app: typer.Typer) -> None:
    @app.command("classify", epilog=EXAMPLES)
    def classify(
        images: Images,
        top_k: TopK = 5,
        model: Model = "mobilenet",
        alpha: Alpha = 1.0,
        batch_size: PassBatchSize = 32,
        fit: Fit = "center",
        weights_dir: WeightsDir = None,
        as_json: JsonTable = False,
        quiet: Quiet = False,
        verbose: Verbose = False,
    ) -> None:
        """Classify images into the 1000 ImageNet classes with a pretrained MobileNet."""
        from mtl.inference.classify import classify as run

        with download_progress() as on_download, progress_bar("classifying") as on_progress:
            results = call(
                run,
                images,
                model=model,
                alpha=alpha,
                top_k_count=top_k,
                batch_size=batch_size,
                fit=fit,
                weights_dir=weights_dir,
                on_download=on_download,
                on_progress=on_progress,
            )
        code = render_image_results(
            results, as_json=as_json, title=f"{shown(model)} (alpha {alpha})"
        )
        raise typer.Exit(code)

"""`mtl classify`: ImageNet top-k with a pretrained MobileNet."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from mtl.cli._common import (
    call,
    download_progress,
    progress_bar,
    quiet_option,
    shown,
    verbose_option,
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


def register(app: typer.Typer) -> None:
    @app.command("classify", epilog=EXAMPLES)
    def classify(
        images: list[Path] = typer.Argument(
            ..., help="Image files, folders (searched recursively) or quoted globs."
        ),
        top_k: int = typer.Option(5, "--top-k", "-k", help="How many classes to show per image."),
        model: backbones.ModelName = typer.Option(
            "mobilenet", "--model", "-m", help="The pretrained ImageNet model."
        ),
        alpha: float = typer.Option(
            1.0, "--alpha", "-a", help="Width multiplier (MobileNet v1: 0.25, 0.5, 0.75, 1.0)."
        ),
        batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per forward pass."),
        fit: Literal["center", "squash"] = typer.Option(
            "center",
            "--fit",
            help="How a photo becomes the model's square: center = ImageNet's evaluation "
            "crop (short side to 256, the central 224x224); squash = the whole photo, "
            "aspect ignored (for subjects at the edges).",
        ),
        weights_dir: Path | None = typer.Option(
            None,
            "--weights-dir",
            envvar="MTL_WEIGHTS_DIR",
            help="Folder holding Keras weight files (e.g. mobilenet_1_0_224_tf.h5); "
            "else the Keras cache, else a download.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
        quiet: bool = quiet_option(),
        verbose: bool = verbose_option(),
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

"""The ``mtl`` command line: parse options, call one core function, render the result.

Each command lives in its own module below; none of them imports TensorFlow
at module level, so ``mtl --help`` stays fast.
"""

from __future__ import annotations

import typer

from mtl import __version__
from mtl.cli import classify, evaluate, export, fetch, predict, review, train

app = typer.Typer(
    name="mtl",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mtl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Image transfer learning with MobileNet.

    [bold]Examples[/bold]

      mtl classify photo.jpg

      mtl fetch "blue tit" crow --limit 100 --out data/

      mtl review data/ --apply

      mtl train data/ --epochs 10

      mtl predict runs/train/model.keras crow.jpg
    """


for module in (classify, fetch, review, train, predict, evaluate, export):
    module.register(app)


def main() -> None:
    from mtl.cli._common import run_app

    run_app(app)

"""The ``mtl`` command line: parse options, call one core function, render the result.

Each command lives in its own module below; none of them imports TensorFlow
at module level, so ``mtl --help`` stays fast.
"""

from __future__ import annotations

import typer

from mtl._version import __version__

# _helpfix: flags shown without a "<bool>" type in every help screen (imported for its effect).
from mtl.cli import (  # noqa: F401
    _helpfix,
    classify,
    evaluate,
    export,
    fetch,
    predict,
    review,
    serve,
    train,
)

app = typer.Typer(
    name="mtl",
    no_args_is_help=True,
    add_completion=True,  # mtl --install-completion bash|zsh|fish|powershell
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
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bars or info lines, in every command."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Extra detail (model, timings, every skipped file)."
    ),
) -> None:
    """Image transfer learning with MobileNet.

    [bold]Examples[/bold]

      mtl classify photo.jpg

      mtl fetch "blue tit" crow --limit 100 --out data/

      mtl review data/ --apply

      mtl train data/ --epochs 10

      mtl predict runs/train crow.jpg

      mtl -q export runs/train --format onnx

      mtl serve runs/train --port 8000

    Shell completion: mtl --install-completion (bash, zsh, fish, PowerShell).
    """
    from mtl.cli._common import verbosity

    # Set for this run (a test runner calls the app many times in one process); a
    # command's own -q / -v can still turn them on.
    verbosity.quiet, verbosity.verbose = quiet, verbose and not quiet


for module in (classify, fetch, review, train, predict, evaluate, export, serve):
    module.register(app)


def main() -> None:
    from mtl.cli._common import run_app

    run_app(app, program=True)

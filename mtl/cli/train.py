"""`mtl train` (not implemented yet)."""

from __future__ import annotations

import typer

from mtl.cli._common import fail


def register(app: typer.Typer) -> None:
    @app.command(
        "train",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def train(ctx: typer.Context) -> None:
        """Not implemented yet."""
        raise fail("mtl train is not implemented yet", 2)

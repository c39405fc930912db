"""`mtl evaluate` (not implemented yet)."""

from __future__ import annotations

import typer

from mtl.cli._common import fail


def register(app: typer.Typer) -> None:
    @app.command(
        "evaluate",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def evaluate(ctx: typer.Context) -> None:
        """Not implemented yet."""
        raise fail("mtl evaluate is not implemented yet", 2)

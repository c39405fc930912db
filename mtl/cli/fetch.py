"""`mtl fetch` (not implemented yet)."""

from __future__ import annotations

import typer

from mtl.cli._common import fail


def register(app: typer.Typer) -> None:
    @app.command(
        "fetch",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def fetch(ctx: typer.Context) -> None:
        """Not implemented yet."""
        raise fail("mtl fetch is not implemented yet", 2)

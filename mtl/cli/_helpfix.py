"""Help screens: a flag (``--json``, ``--force``) takes no value, so it shows no type.

Typer 0.29's rich help prints ``<bool>`` beside every flag, which reads as if
``--json true`` were expected. This one patch, applied when the CLI is imported,
leaves the types of options that do take a value as they are.
"""

from __future__ import annotations

from typing import Any

try:
    from typer.core import TyperOption
except ImportError:  # pragma: no cover - another Typer layout: nothing to fix
    TyperOption = None  # type: ignore[assignment,misc]

if TyperOption is not None and hasattr(TyperOption, "display_type_rich"):
    _display_type_rich = TyperOption.display_type_rich

    def _flag_has_no_type(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) and getattr(self, "metavar", None) is None:
            return None
        return _display_type_rich(self, ctx)

    TyperOption.display_type_rich = _flag_has_no_type  # type: ignore[method-assign]

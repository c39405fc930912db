"""The one shape of progress reports from the core: ``on_progress(done, total)``.

Long work in the core takes an optional callback and calls it as it goes; the
CLI draws it (``mtl.cli._common.Bars``). Work with several stages reports
through :data:`StageProgressFn`, naming the stage.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[int, int], None]
"""``on_progress(done, total)``."""

StageProgressFn = Callable[[str, int, int], None]
"""``on_progress(stage, done, total)``: one bar per stage."""

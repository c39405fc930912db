"""``mtl.review(data, **settings)``: the keywords of ``mtl review``'s options, as
``mtl.train`` takes ``mtl train``'s, with progress (a notebook draws it in place)."""

from __future__ import annotations

import difflib
import os
from typing import TYPE_CHECKING, Any

from mtl.errors import UsageError

if TYPE_CHECKING:
    from mtl.review import ReviewResult

# The CLI's option names for the thresholds (mtl review --help) -> Thresholds' fields.
THRESHOLDS = {
    "label_threshold": "wrong_label",
    "off_topic_threshold": "off_topic",
    "duplicate_threshold": "duplicate",
    "relabel_confidence": "relabel",
}
# The base's settings, as mtl train's (mtl.pipeline.config.SETTINGS).
BASE_KEYS = ("model", "alpha", "image_size", "seed")
OTHER_KEYS = (
    "folds", "top", "apply", "relabel", "decisions", "report", "force", "write_report",
    "weights_dir", "cache_dir", "on_download", "on_progress", "thresholds",
)  # fmt: skip
KNOWN = (*BASE_KEYS, *THRESHOLDS, *OTHER_KEYS, "cfg")


def review(
    data: str | os.PathLike[str], *args: Any, progress: bool | None = None, **settings: Any
) -> ReviewResult:
    """``mtl review DATA`` with the CLI's options as keywords (``alpha=0.75``,
    ``label_threshold=0.3``, ``folds=5``, ``apply=True``...); a ``TrainConfig`` may
    still be given as the second argument (``cfg=``)."""
    from mtl.live import Progress
    from mtl.pipeline.config import resolve
    from mtl.review import Thresholds
    from mtl.review import review as run

    for key in settings:
        if key not in KNOWN:
            close = difflib.get_close_matches(key, KNOWN, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(KNOWN)}"
            raise UsageError(f"unknown review setting {key!r}{hint}")
    base = {k: settings.pop(k) for k in BASE_KEYS if k in settings}
    limits = {THRESHOLDS[k]: settings.pop(k) for k in list(THRESHOLDS) if k in settings}
    if base:
        if args or "cfg" in settings:
            raise UsageError("give the base's settings as keywords or as a TrainConfig, not both")
        settings["cfg"] = resolve(None, base)  # checked as mtl train checks them
    if limits:
        if "thresholds" in settings:
            raise UsageError("give thresholds as keywords or as a Thresholds, not both")
        settings["thresholds"] = Thresholds(**limits)
    with Progress(progress) as shown:
        settings.setdefault("on_progress", shown.stage)
        return run(data, *args, **settings)

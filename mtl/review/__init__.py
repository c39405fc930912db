"""``mtl review``: find wrong, off-topic and broken photos in a dataset before training.

:func:`review` scores every photo (:mod:`.features` for the pooled base features
through train's own base pass and cache, :mod:`.scores` for out-of-fold
probabilities blended with an ImageNet-concept classifier, cleanlab's label
quality and the off-topic score,
:mod:`.quality` for cheap image statistics), flags them (:mod:`.flags`),
writes the HTML page (:mod:`.report`) and, only when asked, moves them
(:mod:`.actions`); :func:`undo` puts them back.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
import time
import types
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtl import files
from mtl.assets import weights
from mtl.errors import DataError, UsageError
from mtl.pipeline.config import TrainConfig
from mtl.progress import StageProgressFn
from mtl.review import actions
from mtl.review.actions import UndoResult, undo
from mtl.review.flags import REASONS, Finding, Thresholds

__all__ = ["ReviewResult", "Thresholds", "UndoResult", "review", "undo"]


@dataclass
class ReviewResult:
    root: Path
    classes: list[str]
    total: int
    findings: list[Finding]  # shown (after --top)
    flagged: int  # before --top
    moves: list[actions.Move]
    report: Path | None
    skipped: list[tuple[str, str]]
    warnings: list[str]
    off_topic_method: str
    thresholds: Thresholds
    seconds: dict[str, float] = field(default_factory=dict)
    # How the wrong-label probabilities were made (mtl.review.scores.combine): the share
    # of the ImageNet-concept classifier, and the calibration's temperature.
    concept_weight: float = 0.0
    temperature: float = 1.0
    # Every photo's scores (cleanlab gives one for every photo, not only the flagged).
    scores: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        c = Counter(f.reason for f in self.findings)
        return {r: c[r] for r in REASONS if c[r]}

    def to_json(self) -> dict[str, Any]:
        return {
            "data": str(self.root),
            "classes": self.classes,
            "photos": self.total,
            "flagged": self.flagged,
            "counts": self.counts(),
            "findings": [f.to_json(self.root) for f in self.findings],
            "applied": [m.to_json() for m in self.moves],
            "report": str(self.report) if self.report else None,
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
            "warnings": self.warnings,
            "off_topic_method": self.off_topic_method,
            "concept_weight": self.concept_weight,
            "temperature": round(self.temperature, 4),
            "thresholds": self.thresholds.__dict__,
            "scores": self.scores,
            "seconds": self.seconds,
        }

    def __repr__(self) -> str:
        return (
            f"ReviewResult({self.root}: {self.flagged} of {self.total} flagged, "
            f"{len(self.moves)} moved)"
        )

    def _repr_html_(self) -> str:
        """The findings as a table in a notebook, worst first (as the page lists them)."""
        from mtl import reprs

        columns = ["file", "given", "reason", "suggested", "score"]
        rows = [[f.to_json(self.root).get(k) for k in columns] for f in self.findings]
        caption = (
            f"{self.root}: {self.flagged} of {self.total} photos flagged, {len(self.moves)} moved"
        )
        return reprs.html_table(caption, columns, rows)


def review(
    data: str | os.PathLike[str],
    cfg: TrainConfig | None = None,
    *,
    thresholds: Thresholds | None = None,
    folds: int = 5,
    top: int | None = None,
    apply: bool = False,
    relabel: bool = False,
    decisions: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    force: bool = False,
    write_report: bool = True,
    weights_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    on_download: weights.DownloadProgress | None = None,
    on_progress: StageProgressFn | None = None,
) -> ReviewResult:
    """Score every photo of ``data`` and flag the suspect ones, worst first.

    ``apply``: move flagged photos to ``DATA/_review/<reason>/`` (recorded, undoable);
    ``relabel``: move confident wrong-label photos to the suggested class instead (implies
    ``apply``). ``decisions``: apply exactly what a decisions file saved from the review
    page says (keep / remove / move to a class), without scoring. ``top``: only the N
    worst. The page goes to ``report`` (default ``DATA/_review/report.html``; an existing
    other file only with ``force``). Moving holds DATA's folder lock (as fetch and train
    do). Raises DataError/UsageError (exit 2) for unusable input.
    """
    if folds < 2:
        raise UsageError(f"--folds must be 2 or more. Received {folds}")
    if top is not None and top < 1:
        raise UsageError(f"--top must be 1 or more. Received {top}")
    t = (thresholds or Thresholds()).check()
    cfg = cfg or TrainConfig()
    root = Path(os.path.abspath(data))
    if not root.is_dir():
        raise DataError(f"no such folder: {data}")
    actions.check_review_dir(root)
    if decisions is not None:
        if relabel:
            raise UsageError("a decisions file is applied alone (without --relabel)")
        with actions.locked(root):
            return _apply_decisions(root, Path(decisions), t)
    if report is not None and write_report:
        files.check_new(report, force=force, what="report")
    elif write_report:
        files.check_writable(actions.review_dir(root) / actions.REPORT, what="report")
    if write_report:
        from mtl.review.report import check_thumbs_folder

        check_thumbs_folder(
            Path(report) if report is not None else actions.review_dir(root) / actions.REPORT
        )
    # Only a review that moves photos holds DATA's lock (and first settles the journal).
    with actions.locked(root) if apply or relabel else contextlib.nullcontext():
        if apply or relabel:
            actions.reconcile(root)  # an unsafe record stops us before any work
        return _review(
            root,
            cfg,
            t,
            folds,
            top,
            apply,
            relabel,
            report,
            write_report,
            weights_dir,
            cache_dir,
            on_download,
            on_progress,
        )


def _apply_decisions(root: Path, path: Path, t: Thresholds) -> ReviewResult:
    from mtl.data import dataset

    t0 = time.perf_counter()
    ds = dataset.scan(root, val_split=0.0)
    classes = ds.classes
    decided = actions.read_decisions(root, path, classes, [it.path for it in ds.items])
    done = actions.apply_all(root, decided.moves)
    warnings = []
    if decided.changed:
        warnings.append(
            f"{root} changed since the page was made (photos added, removed or resized); "
            "each decision was checked against its photo's SHA-256"
        )
    warnings += decided.problems
    warnings += [f"{g} is gone (deleted since the page was made); not moved" for g in done.gone]
    return ReviewResult(
        root=root,
        classes=classes,
        total=0,
        findings=[],
        flagged=0,
        moves=done.moves,
        report=None,
        skipped=[],
        warnings=warnings,
        off_topic_method="",
        thresholds=t,
        seconds={"total": round(time.perf_counter() - t0, 3)},
    )


def _review(
    root: Path,
    cfg: TrainConfig,
    t: Thresholds,
    folds: int,
    top: int | None,
    apply: bool,
    relabel: bool,
    report: str | os.PathLike[str] | None,
    write_report: bool,
    weights_dir: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None,
    on_download: weights.DownloadProgress | None,
    on_progress: StageProgressFn | None,
) -> ReviewResult:
    from mtl.review import flags, quality, scores
    from mtl.review.features import pooled_features

    t0 = time.perf_counter()
    pooled = pooled_features(
        root,
        cfg,
        weights_dir=weights_dir,
        cache_dir=cache_dir,
        on_download=on_download,
        on_progress=on_progress,
    )
    seconds = {"features": round(time.perf_counter() - t0, 3)}
    t1 = time.perf_counter()
    warnings = list(pooled.warnings)
    concept_probs = _concepts(pooled.x, cfg, weights_dir, on_download, warnings)
    report_fn = (lambda d, n: on_progress("scoring (k-fold)", d, n)) if on_progress else None
    s = scores.score(
        pooled.x,
        pooled.labels,
        concept_probs,
        folds=folds,
        seed=cfg.seed,
        duplicate=t.duplicate,
        same_bytes=pooled.keys,
        on_progress=report_fn,
    )
    stats_fn = (lambda d, n: on_progress("image statistics", d, n)) if on_progress else None
    stats = quality.all_stats(pooled.paths, stats_fn)
    seconds["scores"] = round(time.perf_counter() - t1, 3)
    found = flags.find(pooled.paths, pooled.labels, pooled.classes, s, stats, t)
    shown = found[:top] if top else found
    result = ReviewResult(
        root=root,
        classes=pooled.classes,
        total=len(pooled.paths),
        findings=shown,
        flagged=len(found),
        moves=[],
        report=None,
        skipped=pooled.skipped,
        warnings=warnings,
        off_topic_method=s.off_topic_method,
        thresholds=t,
        concept_weight=s.concept_weight,
        temperature=s.temperature,
        scores=flags.every_photo(
            root, pooled.paths, pooled.labels, pooled.classes, s, stats, found
        ),
    )
    if write_report:
        t2 = time.perf_counter()
        settings = (
            f"Out-of-fold {folds}-fold logistic regression on {cfg.model} alpha {cfg.alpha} "
            f"features, seed {cfg.seed}, blended with the ImageNet-concept classifier at "
            f"weight {s.concept_weight:.1f}, calibrated (temperature {s.temperature:.2f}); "
            f"off-topic by {s.off_topic_method}."
        )
        result.report = _write_page(result, report, settings, cfg, pooled.listed, on_progress)
        seconds["report"] = round(time.perf_counter() - t2, 3)
    if apply or relabel:
        moves = actions.plan(root, shown, relabel=relabel, relabel_confidence=t.relabel)
        done = actions.apply_all(root, moves)
        result.moves = done.moves
        warnings += [f"{g} is gone (deleted while it was scored); not moved" for g in done.gone]
    seconds["total"] = round(time.perf_counter() - t0, 3)
    result.seconds = seconds
    return result


def _concepts(
    x: Any,
    cfg: TrainConfig,
    weights_dir: str | os.PathLike[str] | None,
    on_download: weights.DownloadProgress | None,
    warnings: list[str],
) -> Any:
    """MobileNet's own ImageNet probabilities of the cached features (the off-topic score),
    or None (with a warning) for a backbone without that layer here."""
    from mtl.model.imagenet import has_top
    from mtl.review import concepts

    if not has_top(cfg.model):
        warnings.append(f"off-topic scores for {cfg.model} use k-nearest neighbours (weaker)")
        return None
    return concepts.imagenet_probabilities(
        x, cfg.model, cfg.alpha, cfg.image_size, weights_dir=weights_dir, on_download=on_download
    )


def _write_page(
    result: ReviewResult,
    report: str | os.PathLike[str] | None,
    settings: str,
    cfg: TrainConfig,
    listed: list[Path],
    on_progress: StageProgressFn | None = None,
) -> Path:
    """The page (default ``DATA/_review/report.html``) and its thumbnails beside it."""
    from mtl.review import report as page

    root = result.root
    target = Path(report) if report is not None else actions.review_dir(root) / actions.REPORT
    report_fn = (lambda d, n: on_progress("thumbnails", d, n)) if on_progress else None
    try:
        return page.build(
            target,
            root,
            result.classes,
            result.findings,
            result.counts(),
            result.total,
            settings,
            fit=cfg.fit,
            state=actions.folder_state(root, listed),
            on_progress=report_fn,
        )
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise DataError(f"cannot use {target}: {why}; nothing was moved") from None


# mtl.review(data, **settings): the keywords of `mtl review`'s options, as mtl.train
# takes mtl train's, with progress (a notebook draws it in place).
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


def review_with_keywords(
    data: str | os.PathLike[str], *args: Any, progress: bool | None = None, **settings: Any
) -> ReviewResult:
    """``mtl review DATA`` with the CLI's options as keywords (``alpha=0.75``,
    ``label_threshold=0.3``, ``folds=5``, ``apply=True``...); a ``TrainConfig`` may
    still be given as the second argument (``cfg=``)."""
    from mtl.live import Progress
    from mtl.pipeline.config import resolve

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
        return review(data, *args, **settings)


class _CallableModule(types.ModuleType):
    """``mtl.review(...)`` works although ``mtl.review`` is also this package."""

    def __call__(self, *args: Any, **kwargs: Any) -> ReviewResult:
        return review_with_keywords(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

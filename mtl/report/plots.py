"""PNG plots of a run and of an evaluation (matplotlib, Agg backend: no display needed).

One confusion-matrix renderer serves ``mtl train`` (validation split) and
``mtl evaluate`` (a test folder); only the title differs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtl import files


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str], force: bool) -> Path:
    return files.write_stream(path, lambda fh: fig.savefig(fh, format="png", dpi=110), force=force)


def curve_series(
    history: Sequence[dict[str, Any]], metric: str
) -> dict[str, tuple[list[int], list[float]]]:
    """The lines of one panel of :func:`learning_curves`: label -> (epochs, values).

    The validated fit (its ``train`` and ``fine_tune`` phases, one epoch count) gives a
    train and a val line; the refit (phase ``refit``) its own train line. Epochs without
    a value (NaN: no validation) are left out, and so are lines with no points. The refit
    trains a fresh head for the kept number of epochs, so its epochs count from 1 again:
    appended to the fit's line it would jump back across the plot."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for refit in (False, True):
        rows = [h for h in history if (h.get("phase") == "refit") == refit]
        for prefix, label in (("", "refit" if refit else "train"), ("val_", "val")):
            points = [
                (int(h["epoch"]), float(v))
                for h in rows
                if (v := h.get(prefix + metric)) is not None and v == v
            ]
            if points:
                series[f"{label} {metric}"] = ([e for e, _ in points], [v for _, v in points])
    return series


def learning_curves(
    history: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    kept_epoch: int | None = None,
    force: bool = True,
) -> Path:
    """Loss and accuracy per epoch (:func:`curve_series`: the validated fit's train and
    validation lines, the refit's apart); dashed lines mark the fine-tuning start and the
    epoch whose weights were kept."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for label, (epochs, values) in curve_series(history, metric).items():
            style = "-^" if label.startswith("refit") else "-s" if label.startswith("val") else "-o"
            ax.plot(epochs, values, style, label=label, alpha=0.8)
        starts = [h["epoch"] for h in history if h.get("phase") == "fine_tune"]
        if starts:
            ax.axvline(min(starts) - 0.5, color="grey", linestyle="--", label="fine-tuning")
        if kept_epoch:
            ax.axvline(kept_epoch, color="green", linestyle=":", label=f"kept (epoch {kept_epoch})")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    try:
        return _save(fig, path, force)
    finally:
        plt.close(fig)


def confusion_matrix(
    cm: Sequence[Sequence[int]],
    classes: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str,
    force: bool = True,
) -> Path:
    """A heat map with the count in every cell (up to 30 classes); rows are true classes,
    columns predicted."""
    plt = _pyplot()
    k = len(classes)
    side = min(4.0 + 0.6 * k, 20.0)
    fig, ax = plt.subplots(figsize=(side, side))
    try:
        ax.imshow(cm, cmap="Blues", vmin=0)
        ax.set_xticks(range(k), classes, rotation=45, ha="right")
        ax.set_yticks(range(k), classes)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title, fontsize=10)
        top = max((max(row) for row in cm), default=0)
        for i in range(k if k <= 30 else 0):
            for j in range(k):
                color = "white" if top and cm[i][j] > top / 2 else "black"
                ax.text(j, i, str(cm[i][j]), ha="center", va="center", color=color)
        fig.tight_layout()
        return _save(fig, path, force)
    finally:
        plt.close(fig)

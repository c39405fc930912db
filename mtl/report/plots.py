"""PNG plots of a run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    from mtl.training.rundir import write_atomic

    write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    return path


def learning_curves(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Loss and accuracy per epoch, train and validation; a line marks the fine-tuning start."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = [h.get(prefix + metric) for h in history]
            ax.plot(epochs, values, style, label=("val " if prefix else "train ") + metric)
        starts = [h["epoch"] for h in history if h.get("phase") == "fine_tune"]
        if starts:
            ax.axvline(min(starts) - 0.5, color="grey", linestyle="--", label="fine-tuning")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def confusion_matrix(cm: Sequence[Sequence[int]], classes: Sequence[str], path: Path) -> Path:
    plt = _pyplot()
    k = len(classes)
    size = min(3 + 0.5 * k, 20)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("validation confusion matrix")
    top = max((max(row) for row in cm), default=0)
    for i in range(k):
        for j in range(k):
            color = "white" if cm[i][j] > top / 2 else "black"
            ax.text(j, i, str(cm[i][j]), ha="center", va="center", color=color)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)

"""How a finished run shows in a notebook or a REPL: one line, or the CLI's table as HTML."""

from __future__ import annotations

from typing import Any

from mtl import reprs


def run_repr(run: Any) -> str:
    """``TrainResult(run_dir=..., classes=[...], epochs=..., val_accuracy=...)``: the numbers
    a user checks first, not the 60 epoch records (they stay in ``history``)."""
    val = run.val_metrics
    return reprs.short_repr(
        "TrainResult",
        {
            "run_dir": str(run.run_dir),
            "classes": run.classes,
            "kept_epoch": run.kept_epoch,
            "epochs_run": len(run.history),
            "train_accuracy": run.train_metrics["accuracy"],
            "val_accuracy": val["accuracy"] if val else None,
        },
    )


def run_html(run: Any) -> str:
    """The table ``mtl train`` prints: photos per class and split, validation precision and
    recall, accuracy and loss; the notes below it."""
    val = run.val_metrics
    rows: list[list[Any]] = []
    for c, t, v in zip(run.classes, run.train_counts, run.val_counts, strict=True):
        per = val["per_class"][c] if val else {}
        rows.append([c, t, v, per.get("precision"), per.get("recall")])
    for key in ("accuracy", "loss"):
        rows.append([key, run.train_metrics[key], val[key] if val else None, "", ""])
    columns = ["class", "train", "val", "val precision", "val recall"]
    notes = [*run.notes, f"model: {run.model_path}"]
    return reprs.html_table(f"mtl train: {run.run_dir}", columns, rows, notes)

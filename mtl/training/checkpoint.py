"""Per-epoch checkpoints in a run folder, so an interrupted ``mtl train`` can resume.

Layout, under ``RUN/checkpoint/``:

- ``run.json``: the resolved config and data folder, written before the first epoch;
- ``epoch-NNNN.npz``: every variable of the trained part (weights, BatchNorm
  statistics, dropout/augmentation RNG states) and the optimizer's variables;
- ``best-PHASE-NNNN.npz``: the trained part's best weights so far (early stopping),
  written when they change;
- ``state.json``: the last complete epoch, the history and the early-stopping
  state. It is written last, atomically, and names its ``.npz``: a crash at any
  moment leaves the previous complete checkpoint in force.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtl import files
from mtl.errors import UsageError

FOLDER = "checkpoint"
RUN_FILE = "run.json"
STATE_FILE = "state.json"
ARRAY_NAME = re.compile(r"(epoch-\d{4,}|best-[a-z_]+-\d{4,})\.npz")


@dataclass
class Checkpoint:
    epochs_done: int
    phase: str
    history: list[dict[str, Any]]
    early: dict[str, Any]  # best_loss, best_epoch, wait, stopped_early
    variables: list[np.ndarray]
    optimizer: dict[str, np.ndarray]
    best_weights: list[np.ndarray] | None


def folder(run_dir: Path) -> Path:
    return run_dir / FOLDER


def write_run(run_dir: Path, config: dict[str, Any], data: Path, split: list[list[str]]) -> None:
    """The run's settings, data folder and split (``[file, class, subset]`` rows, files
    relative to ``data``), so a resumed run can check that its data did not change."""
    record = {"config": config, "data": str(data.resolve()), "split": split}
    files.write_json(files.owned_dir(folder(run_dir)) / RUN_FILE, record, force=True)


def read_run(run_dir: Path) -> tuple[dict[str, Any], Path, list[list[str]] | None]:
    path = folder(run_dir) / RUN_FILE
    if not path.is_file():
        raise UsageError(f"{run_dir} has no checkpoint to resume from (no {path.name})")
    try:
        raw = files.loads_json(files.read_text_limited(path, files.RECORD_LIMIT, "a checkpoint"))
        split = raw.get("split")
        if split is not None and not all(
            isinstance(row, list) and len(row) == 3 and all(isinstance(s, str) for s in row)
            for row in split
        ):
            raise ValueError("split rows must be [file, class, subset]")
        return dict(raw["config"]), Path(raw["data"]), split
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None


def save(run_dir: Path, ckpt: Checkpoint) -> None:
    """Write the epoch's arrays, then commit them by replacing state.json."""
    where = files.owned_dir(folder(run_dir))
    name = f"epoch-{ckpt.epochs_done:04d}.npz"
    arrays: dict[str, np.ndarray] = {}
    arrays.update({f"var/{i}": v for i, v in enumerate(ckpt.variables)})
    arrays.update({f"opt/{k}": v for k, v in ckpt.optimizer.items()})
    _write_npz(where / name, arrays)
    best = None
    if ckpt.best_weights is not None:
        # Written only when early stopping found new ones.
        # Named by phase too: the fine-tuning phase trains more layers, so its trained
        # part (and the layout of its best weights) differs from the first phase's.
        best = f"best-{ckpt.phase}-{int(ckpt.early.get('best_epoch', 0)):04d}.npz"
        if not (where / best).is_file():
            _write_npz(where / best, {f"best/{i}": w for i, w in enumerate(ckpt.best_weights)})
    state = {
        "epochs_done": ckpt.epochs_done,
        "phase": ckpt.phase,
        "arrays": name,
        "best": best,
        "history": ckpt.history,
        "early": ckpt.early,
    }
    files.write_json(where / STATE_FILE, state, force=True)
    for old in where.glob("*.npz"):
        if old.name not in (name, best):
            files.remove(old)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # A handle, not a name: np.savez would append .npz to the temp file's name.
    files.write_stream(path, lambda fh: np.savez(fh, **arrays), force=True)  # type: ignore[arg-type]


def load(run_dir: Path) -> Checkpoint | None:
    """The last complete checkpoint, or None when no epoch finished yet.

    ``state.json`` is checked like any file read back: its array files must be plain
    names inside the checkpoint folder, ``epochs_done`` must match its history, and
    every array must be finite (a NaN checkpoint resumes to a model that says 0.5/0.5
    for every photo). Anything else is a :class:`UsageError` naming the file."""
    where = folder(run_dir)
    path = where / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = files.loads_json(files.read_text_limited(path, files.RECORD_LIMIT, "a checkpoint"))
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
        arrays: dict[str, np.ndarray] = {}
        for name in (state["arrays"], state.get("best")):
            if name:
                with np.load(_array_file(where, name)) as npz:
                    arrays.update({k: npz[k] for k in npz.files})
        ckpt = _checkpoint(state, arrays)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"cannot read the checkpoint {path}: {exc}") from None
    return ckpt


def _array_file(where: Path, name: object) -> Path:
    """A checkpoint's ``.npz``, named by ``state.json``: a plain file in ``where``."""
    if not isinstance(name, str) or not ARRAY_NAME.fullmatch(name):
        raise ValueError(f"it names {name!r}, not one of mtl's checkpoint files")
    file = where / name
    if file.is_symlink() or not file.is_file():
        raise ValueError(f"{name} is missing or not a plain file in {where}")
    return file


def _checkpoint(state: dict[str, Any], arrays: dict[str, np.ndarray]) -> Checkpoint:
    def numbered(prefix: str) -> list[np.ndarray]:
        keys = sorted(
            (k for k in arrays if k.startswith(prefix)), key=lambda k: int(k[len(prefix) :])
        )
        return [arrays[k] for k in keys]

    for key, value in arrays.items():
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            raise ValueError(f"its {key} holds NaN or infinite values (training diverged)")
    epochs, history = state["epochs_done"], state["history"]
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise ValueError("its history is not a list of epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs != len(history):
        raise ValueError(f"epochs_done {epochs!r} does not match its {len(history)} epochs")
    if not isinstance(state["phase"], str) or not isinstance(state["early"], dict):
        raise ValueError("its phase or early-stopping state is damaged")
    best = numbered("best/")
    return Checkpoint(
        epochs_done=epochs,
        phase=state["phase"],
        history=history,
        early=dict(state["early"]),
        variables=numbered("var/"),
        optimizer={k[4:]: v for k, v in arrays.items() if k.startswith("opt/")},
        best_weights=best or None,
    )


def clean_temp_files(run_dir: Path) -> None:
    """Leftovers of a write that a crash interrupted (mtl's temp files all start with a dot
    and end in .tmp or .part, or are Keras' own ``.model.XXXX.keras``)."""
    for pattern in ("**/.*.tmp", "**/.*.part", ".model.*.keras"):
        for part in run_dir.glob(pattern):
            part.unlink(missing_ok=True)

"""What happens at the end of each epoch, as small pieces with typed state.

- :class:`EpochLog`: one epoch's numbers (``history.csv``, the ``on_epoch`` hook);
- :class:`EarlyStopping`: the best validation loss so far and the patience
  counter; a dataclass, so the checkpoint saves and restores it whole;
- :func:`epoch_order`: the order of an epoch's rows, from (seed, epoch) alone;
- :func:`check_loss`, :func:`check_outputs`: the divergence checks (a loss that is
  not a number; a head whose outputs are not numbers or the same for every photo).

Nothing here imports Keras; both engines use these, through
:meth:`mtl.training.session.Session.end_epoch`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from mtl.errors import TrainingDiverged


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of ``epoch``, from (seed, epoch) alone (not from Keras' shuffle), so
    a resumed run sees exactly the batches an uninterrupted one does."""
    order = np.arange(n)
    np.random.default_rng([seed, epoch]).shuffle(order)
    return order


def check_loss(loss: float, epoch: int, learning_rate: float) -> None:
    """Refuse to go on from an epoch (1-based) whose training loss is not a number."""
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"training diverged at epoch {epoch} (loss {loss}); no model was saved. "
            f"Lower the learning rate (it was {learning_rate:g})"
        )


def check_outputs(probs: np.ndarray, epoch: int, learning_rate: float, run: object) -> None:
    """Refuse a head whose probabilities (one row per photo) are not numbers or are the
    same for every photo: a dead head (every hidden unit 0, e.g. weights that collapsed
    to a constant) keeps a finite, constant loss that :func:`check_loss` cannot see."""
    if not np.isfinite(probs).all():
        what = "gives probabilities that are not numbers"
    elif len(probs) > 1 and not np.ptp(probs, axis=0).any():
        shown = ", ".join(f"{p:.3g}" for p in probs[0])
        what = f"gives every photo the same probabilities ({shown})"
    else:
        return
    raise TrainingDiverged(
        f"training of {run} diverged at epoch {epoch}: its head {what}; no model was saved. "
        f"Train again with a lower learning rate (it was {learning_rate:g})"
    )


@dataclass
class EpochLog:
    phase: str  # "train" (head / unfrozen top), "fine_tune" or "refit"
    epoch: int  # 1-based, counted across both phases
    epochs: int  # planned in all
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    learning_rate: float
    seconds: float
    best: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class EarlyStopping:
    """Stop when validation loss has not improved for ``patience`` epochs (0: never).

    :meth:`update` says whether an epoch is the best so far; the caller keeps
    that epoch's weights, so the model that is saved is the best one.
    """

    patience: int
    best_loss: float = math.inf
    best_epoch: int = 0
    wait: int = 0
    stopped_early: bool = False

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record ``epoch``'s validation loss; True when it is the best so far."""
        if not math.isnan(val_loss) and val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.wait = val_loss, epoch, 0
            return True
        self.wait += 1
        return False

    def should_stop(self, epoch: int, last: int) -> bool:
        """Whether to stop after ``epoch`` (1-based) of a phase that would end at ``last``."""
        if self.patience and self.wait >= self.patience and epoch < last:
            self.stopped_early = True
        return self.stopped_early

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], patience: int) -> EarlyStopping:
        known = {f.name for f in fields(cls)} - {"patience"}
        return cls(patience, **{k: v for k, v in data.items() if k in known})


def fine_tune_notes(history: list[EpochLog], kept: int, first_phase_epochs: int) -> list[str]:
    """Say so when fine-tuning never beat the first phase on validation loss."""
    tuned = [h for h in history if h.phase == "fine_tune"]
    if not tuned or any(h.best for h in tuned):
        return []
    note = f"fine-tuning ran {len(tuned)} epoch(s) and none beat the first phase's validation loss"
    if kept <= first_phase_epochs:
        note += "; the model is the first phase's best"
    return [note]

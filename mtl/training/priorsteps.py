"""The ImageNet prior's steps in a run (:mod:`mtl.training.prior`), for either head engine.

Both trainers end with a head whose weights are NumPy arrays (the NumPy head's
own, or a Keras head's ``get_weights()``), and cached pooled features. From those
alone these steps fit the prior's weight on the validation photos, compose it
into the head, and score the result, so a run on a GPU (Keras head) and one on a
CPU (NumPy head) get the same prior the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtl.data import features
from mtl.report import metrics
from mtl.training import headfit, prior

CHUNK = 512  # photos per step when adding up class means: bounded memory on large sets


class PriorSteps:
    """Mixed into :class:`~mtl.training.session.Session`; uses its ``cfg``, ``ds``,
    ``cache`` and ``keys``."""

    cfg: Any
    ds: Any
    cache: features.FeatureCache
    views: list[str]
    # The include-top weights for the ImageNet prior, or why it is not used ("" or "off":
    # not applicable, or turned off).
    top_file: Path | str = ""
    blend: prior.Blend | None = None  # the prior's weight in the saved model, if any
    _top: tuple[np.ndarray, np.ndarray] | None = None
    # The features of these subsets, in this order, as one matrix (:meth:`hold`).
    _held: tuple[tuple[str, ...], np.ndarray] | None = None

    def keys(self, subset: str) -> list[str]:  # pragma: no cover - the Session's
        raise NotImplementedError

    def labels(self, subset: str) -> np.ndarray:  # pragma: no cover - the Session's
        raise NotImplementedError

    # --- cached features as NumPy ---------------------------------------------------------

    def hold(self, subsets: tuple[str, ...]) -> None:
        """Move the features of ``subsets`` out of the cache's memory into one matrix, in
        that order: :meth:`rows` of any run of them (("train",), ("val",), both) is then
        a slice of it, not a copy. A run holds its features once, as float16, instead of
        once in the cache and again per subset."""
        keys = [k for s in subsets for k in self.keys(s)]
        if keys:
            x = features.stack(self.cache, keys, release=True)
            self._held = (subsets, x[:, None] if x.ndim == 2 else x)

    def rows(self, subsets: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Features as (photos, views, dim) and labels of ``subsets``: float16 for pooled
        features (:data:`mtl.data.features.POOLED_DTYPE`; the head computes in float32)."""
        labels = (
            np.concatenate([self.labels(s) for s in subsets]) if subsets else np.zeros(0, np.int64)
        )
        held = self._held_rows(subsets)
        if held is not None:
            return held, labels
        keys = [k for s in subsets for k in self.keys(s)]
        if not keys:
            return np.zeros((0, len(self.views), 0), np.float32), np.zeros(0, np.int64)
        x = features.stack(self.cache, keys)
        if x.ndim == 2:
            x = x[:, None]
        return x, labels

    def _held_rows(self, subsets: tuple[str, ...]) -> np.ndarray | None:
        """``subsets``' rows as a slice of the held matrix, if they are a run of its subsets."""
        if self._held is None or not subsets:
            return None
        order, x = self._held
        n = len(subsets)
        for i in range(len(order) - n + 1):
            if order[i : i + n] == subsets:
                start = sum(len(self.keys(s)) for s in order[:i])
                return x[start : start + sum(len(self.keys(s)) for s in subsets)]
        return None

    def probs(self, head: headfit.Head, x: np.ndarray) -> np.ndarray:
        """Averaged over the views, as the saved model computes them."""
        photos, views, dim = x.shape
        return head.probs(x.reshape(photos * views, dim)).reshape(photos, views, -1).mean(axis=1)

    def evaluate(self, head: headfit.Head, subsets: tuple[str, ...]) -> dict[str, Any]:
        x, y = self.rows(subsets)
        return metrics.summary(self.probs(head, x), y, self.ds.classes)

    # --- the prior ------------------------------------------------------------------------

    def prior_layer(self, subsets: tuple[str, ...]) -> prior.Prior:
        """The prior's linear layer, its class means from the photos of ``subsets`` (in
        chunks: a run too large for memory never holds all its features at once)."""
        layers: dict[tuple[str, ...], prior.Prior] = self.__dict__.setdefault("_layers", {})
        if subsets in layers:  # the same photos give the same layer: computed once a run
            return layers[subsets]
        kernel, bias = self.top()
        classes = len(self.ds.classes)
        sums, counts = np.zeros((classes, kernel.shape[1])), np.zeros(classes)
        keys = [k for s in subsets for k in self.keys(s)]
        labels = np.concatenate([self.labels(s) for s in subsets])
        every = self._held_rows(subsets)
        for start in range(0, len(keys), CHUNK):
            if every is not None:
                x = every[start : start + CHUNK]
            else:
                x = features.stack(self.cache, keys[start : start + CHUNK])
                x = x[:, None] if x.ndim == 2 else x
            x = x.astype(np.float32)
            photos, views, dim = x.shape
            part = labels[start : start + CHUNK]
            s, n = prior.concept_sums(
                kernel, bias, x.reshape(photos * views, dim), np.repeat(part, views), classes
            )
            sums += s
            counts += n
        layers[subsets] = prior.Prior.from_sums(kernel, bias, sums, counts)
        return layers[subsets]

    def top(self) -> tuple[np.ndarray, np.ndarray]:
        """The ImageNet top's kernel and bias (read once per run)."""
        if self._top is None:
            from mtl.model.imagenet import read_top

            assert isinstance(self.top_file, Path)
            self._top = read_top(self.top_file, self.cfg.model)
        return self._top

    def fit_prior(self, head: headfit.Head, notes: list[str]) -> prior.Blend | None:
        """How much of the prior to blend into ``head``, from the validation photos; None
        when it is off, unavailable, or no help (and the notes say which)."""
        if not isinstance(self.top_file, Path):
            if self.top_file not in ("", "off"):
                notes.append(f"ImageNet prior not used: {self.top_file}")
            return None
        try:
            self.top()
        except (OSError, KeyError, ValueError) as exc:  # a damaged include-top file
            notes.append(f"ImageNet prior not used: cannot read {self.top_file.name} ({exc})")
            return None
        x, y = self.rows(("val",))
        photos, views, dim = x.shape
        rows = x.reshape(photos * views, dim)
        found = self.prior_layer(("train",))
        blend = prior.fit(
            head.logits(rows).reshape(photos, views, -1),
            found.logits(rows).reshape(photos, views, -1),
            y,
        )
        if not blend.prior:
            notes.append("ImageNet prior: weight 0 (it did not help on the validation photos)")
            return None
        notes.append(
            f"ImageNet prior blended in at weight {blend.weight:.2f}, fitted on the validation "
            "photos (so their scores are a little optimistic)"
        )
        self.blend = blend
        return blend


def head_of(weights: list[np.ndarray], dropout: float) -> headfit.Head:
    """A Keras head's ``get_weights()`` (kernel, bias per Dense layer) as a NumPy head."""
    arrays = [np.asarray(w, np.float32) for w in weights]
    return headfit.Head(arrays[0::2], arrays[1::2], dropout)

"""The real weights and photos the tests use, found or fetched the way mtl finds its own.

Beside this project's ``../shared`` (dev machines, CI) everything comes from there
and nothing is downloaded. Elsewhere (a clone on any machine) the ImageNet
weights come through :func:`mtl.assets.weights.resolve` (``MTL_WEIGHTS_DIR``, the Keras
cache, then a verified download from ``MTL_WEIGHTS_URL`` or Keras' URL) and
the hymenoptera photos through :func:`mtl.assets.datasets.resolve` (``MTL_DATA_DIR``,
mtl's cache, then a verified download from ``MTL_DATASETS_URL`` or PyTorch's
URL): downloaded once, cached for every later run.

``python -m tests.assets`` fetches them with progress bars (``make test`` runs it
first); ``tests/conftest.py`` calls :func:`resolve` quietly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_WEIGHTS = SHARED / "weights"
SHARED_HYMENOPTERA = SHARED / "data" / "hymenoptera" / "train"
ALPHA = 1.0  # Keras' default, and mtl's
FAST_ALPHA = 0.75  # the fast option, tested too
ALPHAS = (ALPHA, FAST_ALPHA)

Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class Assets:
    weights: Path  # a folder with the class index and the alpha 1.0 and 0.75 weights, Keras' names
    hymenoptera: Path  # hymenoptera/train: ants/ and bees/
    offline: bool  # both from ../shared


def weight_names() -> list[str]:
    from mtl.assets import weights
    from mtl.model import backbones

    return [weights.class_index_file().name] + [
        backbones.weights_file("mobilenet", alpha, include_top=top).name
        for alpha in ALPHAS
        for top in (True, False)
    ]


def _shared_weights() -> bool:
    return all((SHARED_WEIGHTS / name).is_file() for name in weight_names())


def resolve(*, download: bool = True, progress: Progress | None = None) -> Assets:
    """Raise :class:`mtl.errors.MtlError` (one line: what is missing, where to put it)."""
    from mtl.assets import datasets, weights
    from mtl.model import backbones

    if _shared_weights():
        folder = SHARED_WEIGHTS
    else:
        remotes = [weights.class_index_file()] + [
            backbones.weights_file("mobilenet", alpha, include_top=top)
            for alpha in ALPHAS
            for top in (True, False)
        ]
        paths = [weights.resolve(r, download=download, progress=progress) for r in remotes]
        folder = paths[0].parent
        if any(p.parent != folder for p in paths):  # found in different folders: link them
            from mtl.assets.cache import cache_root

            folder = cache_root() / "test-weights"
            folder.mkdir(parents=True, exist_ok=True)
            for p in paths:
                link = folder / p.name
                link.unlink(missing_ok=True)
                link.symlink_to(p)
    if SHARED_HYMENOPTERA.is_dir():
        data = SHARED_HYMENOPTERA
    else:
        data = datasets.resolve("hymenoptera", download=download, progress=progress).path / "train"
    return Assets(folder, data, offline=folder == SHARED_WEIGHTS and data == SHARED_HYMENOPTERA)


def main() -> int:
    """Fetch what the tests need (nothing beside ../shared); one line and exit 2 if impossible."""
    from mtl.cli._common import download_progress, err
    from mtl.errors import MtlError

    if _shared_weights() and SHARED_HYMENOPTERA.is_dir():
        return 0  # offline, as always beside ../shared
    try:
        with download_progress() as on_download:
            assets = resolve(progress=on_download)
    except MtlError as exc:
        err.print(f"tests need real weights and photos: {exc.message}", markup=False)
        return 2
    if not assets.offline:
        err.print(f"test weights: {assets.weights}; photos: {assets.hymenoptera}", markup=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Shared fixtures: the real weights and photos, sample photos, a CLI runner.

Beside ``../shared`` the weights and photos come from there, offline; elsewhere
they are downloaded once into the caches and reused (see tests/assets.py).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtl.errors import MtlError
from tests import assets

ROOT = assets.ROOT
SHARED = assets.SHARED
ALPHA = assets.ALPHA  # the only variant stored offline
try:
    _ASSETS: assets.Assets | None = assets.resolve()
    _MISSING = ""
except MtlError as exc:  # reported by the session fixture, as one line
    _ASSETS, _MISSING = None, exc.message
WEIGHTS = _ASSETS.weights if _ASSETS else assets.SHARED_WEIGHTS
HYMENOPTERA = _ASSETS.hymenoptera if _ASSETS else assets.SHARED_HYMENOPTERA


def closed_port() -> int:
    """A loopback port nothing listens on: a download attempt fails at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def offline_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Real weights (../shared or cached), an empty Keras cache, no way to reach the internet."""
    if _ASSETS is None:
        pytest.exit(f"real weights or photos missing: {_MISSING} (see README: Weights)", 2)
    os.environ["MTL_WEIGHTS_DIR"] = str(WEIGHTS)
    # Keras reads KERAS_HOME once, at import: give it a cache that holds copies of the
    # real files, so direct keras.applications calls find them offline too.
    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    for name in assets.weight_names():
        shutil.copy(WEIGHTS / name, home / "models" / name)
    os.environ["KERAS_HOME"] = str(home)
    # Bases converted for LiteRT are kept per session, never in the user's ~/.cache.
    os.environ["MTL_CACHE_DIR"] = str(tmp_path_factory.mktemp("mtl_cache"))
    os.environ["MTL_WEIGHTS_URL"] = f"http://127.0.0.1:{closed_port()}/"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def sample_photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """matplotlib's grace_hopper.jpg and scikit-image's coffee.png and chelsea.png."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    folder = tmp_path_factory.mktemp("samples")
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        (folder / "grace_hopper.jpg").write_bytes(fh.read())
    Image.fromarray(skimage.data.coffee()).save(folder / "coffee.png")
    Image.fromarray(skimage.data.chelsea()).save(folder / "chelsea.png")
    return {p.stem: p for p in folder.iterdir()}


# --- predict / evaluate / export: one real trained model for the session -------------


@pytest.fixture(scope="session")
def trained_model(offline_env: None, tmp_path_factory: pytest.TempPathFactory):  # type: ignore
    """model.keras: real frozen MobileNet 0.75 + a head trained on half of HYMENOPTERA."""
    from tests.trained_model import make_trained_model

    return make_trained_model(HYMENOPTERA, tmp_path_factory.mktemp("trained"), alpha=ALPHA)

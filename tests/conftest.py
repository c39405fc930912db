"""Shared fixtures: the real weights and photos, sample photos, a CLI runner.

Beside ``../shared`` the weights and photos come from there, offline; elsewhere
they are downloaded once into the caches and reused (see tests/assets.py), when a
test outside tests/unit/ first needs them. tests/README.md says where a test goes.
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
ALPHA = assets.ALPHA  # 1.0, the default
FAST_ALPHA = assets.FAST_ALPHA  # 0.75, the fast option
UNIT = Path(__file__).parent / "unit"  # the layer that needs neither (tests/README.md)
# WEIGHTS and HYMENOPTERA are found (or downloaded) on first use, not at import: the unit
# layer never asks for them, so it runs on a clone with nothing beside it.
_found: dict[str, object] = {}


def _assets() -> tuple[assets.Assets | None, str]:
    if not _found:
        try:
            _found["assets"], _found["missing"] = assets.resolve(), ""
        except MtlError as exc:  # reported by the offline_env fixture, as one line
            _found["assets"], _found["missing"] = None, exc.message
    return _found["assets"], str(_found["missing"])  # type: ignore[return-value]


def __getattr__(name: str) -> Path:
    """``from tests.conftest import WEIGHTS, HYMENOPTERA``: resolved on first import."""
    if name == "WEIGHTS":
        found = _assets()[0]
        return found.weights if found else assets.SHARED_WEIGHTS
    if name == "HYMENOPTERA":
        found = _assets()[0]
        return found.hymenoptera if found else assets.SHARED_HYMENOPTERA
    raise AttributeError(name)


def closed_port() -> int:
    """A loopback port nothing listens on: a download attempt fails at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _real_assets(request: pytest.FixtureRequest) -> None:
    """Every test outside tests/unit/ runs with the real weights (:func:`offline_env`)."""
    if UNIT not in request.path.parents:
        request.getfixturevalue("offline_env")


@pytest.fixture(scope="session")
def offline_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Real weights (../shared or cached), an empty Keras cache, no way to reach the internet."""
    found, missing = _assets()
    if found is None:
        pytest.exit(f"real weights or photos missing: {missing} (see README: Weights)", 2)
    weights = found.weights
    os.environ["MTL_WEIGHTS_DIR"] = str(weights)
    # Keras reads KERAS_HOME once, at import: give it a cache that holds copies of the
    # real files, so direct keras.applications calls find them offline too.
    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    for name in assets.weight_names():
        shutil.copy(weights / name, home / "models" / name)
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
    """model.keras: real frozen MobileNet (ALPHA) + a head trained on half of HYMENOPTERA."""
    from tests.trained_model import make_trained_model

    found = _assets()[0]
    assert found is not None  # offline_env exits without it
    return make_trained_model(found.hymenoptera, tmp_path_factory.mktemp("trained"), alpha=ALPHA)

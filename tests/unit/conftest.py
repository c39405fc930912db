"""The unit layer: tests that need neither TensorFlow (nor Keras) nor the real weights.

`make test-unit` runs only these, in seconds, on a clone with nothing beside it.
Each test here gets a private mtl cache and no way to download weights, and fails
if it imports TensorFlow or Keras: such a test belongs in tests/ (tests/README.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import closed_port

HEAVY = ("tensorflow", "keras")


@pytest.fixture(scope="session", autouse=True)
def unit_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No user cache touched, no download possible (a download attempt fails at once)."""
    session = str(tmp_path_factory.getbasetemp())
    if not os.environ.get("MTL_CACHE_DIR", "").startswith(session):  # else offline_env's
        os.environ["MTL_CACHE_DIR"] = str(tmp_path_factory.mktemp("unit_cache"))
    os.environ["MTL_WEIGHTS_URL"] = f"http://127.0.0.1:{closed_port()}/"
    os.environ["MTL_DATASETS_URL"] = f"http://127.0.0.1:{closed_port()}/"


@pytest.fixture(autouse=True)
def no_tensorflow() -> Iterator[None]:
    """A unit test that imports TensorFlow or Keras (where no earlier test did) fails."""
    before = {m for m in HEAVY if m in sys.modules}
    yield
    loaded = [m for m in HEAVY if m in sys.modules and m not in before]
    if loaded:
        pytest.fail(f"imported {', '.join(loaded)}: move this test out of tests/unit/")

"""A checkout with no ../shared beside it: `make demo` and `make test` fetch what they need.

The checkout is a copy of what a clone of this working tree holds (tracked and
unignored files), placed in an empty folder. A loopback server plays the two
download hosts: Keras' weights (``MTL_WEIGHTS_URL``) and PyTorch's hymenoptera
zip (``MTL_DATASETS_URL``), both holding the real files (the zip is built from
the real training photos, see tests/fakes/hymenoptera_zip.py).

Installing TensorFlow needs the internet, so ``VENV`` is a stand-in whose
``python`` and ``mtl`` run this interpreter on the copy (``PYTHONPATH``), marked
as installed; everything else is the real Makefile, demo script and mtl.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import assets
from tests.conftest import HYMENOPTERA, ROOT, WEIGHTS
from tests.fakes import hymenoptera_zip
from tests.fakes.file_server import FileServer

pytestmark = pytest.mark.slow

ZIP = "/datasets/hymenoptera_data.zip"


def copy_checkout(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def stand_in_venv(folder: Path) -> Path:
    (folder / "bin").mkdir(parents=True)
    for name, args in (("python", ""), ("mtl", " -m mtl")):
        script = folder / "bin" / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}"{args} "$@"\n')
        script.chmod(0o755)
    for marker in (".installed", ".installed-test"):  # newer than the copied pyproject.toml
        (folder / marker).touch()
    return folder


def clean_env(checkout: Path, server: FileServer, caches: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MTL_", "KERAS_", "MAKE", "PYTEST_")) and k != "XDG_CACHE_HOME"
    }
    env.update(
        PYTHONPATH=str(checkout),
        MTL_WEIGHTS_URL=server.url("/weights/"),
        MTL_DATASETS_URL=server.url("/datasets/"),
        MTL_CACHE_DIR=str(caches / "mtl"),
        KERAS_HOME=str(caches / "keras"),
    )
    return env


@pytest.mark.skipif(
    not (shutil.which("git") and shutil.which("make") and (ROOT / ".git").exists()),
    reason="needs git, make and a git checkout",
)
def test_make_demo_and_make_test_without_shared(tmp_path):
    checkout = tmp_path / "elsewhere" / "mtl"
    copy_checkout(checkout)
    assert not (checkout.parent / "shared").exists()
    venv = stand_in_venv(tmp_path / "venv")
    with FileServer() as server:
        where = subprocess.run(
            [venv / "bin" / "python", "-c", "import mtl; print(mtl.__file__)"],
            cwd=tmp_path,
            env=clean_env(checkout, server, tmp_path / "unused"),
            capture_output=True,
            text=True,
            check=True,
        )
        assert where.stdout.strip() == str(checkout / "mtl" / "__init__.py")  # the copy runs
        for name in assets.weight_names():
            server.add("/weights/" + name, (WEIGHTS / name).read_bytes())
        server.add(ZIP, hymenoptera_zip.build(HYMENOPTERA))

        demo = subprocess.run(
            ["make", "demo", f"VENV={venv}"],
            cwd=checkout,
            env=clean_env(checkout, server, tmp_path / "caches-demo"),
            capture_output=True,
            text=True,
            check=False,
        )
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        assert (checkout / "demo" / "run" / "model.keras").is_file()
        assert "== 0/3 the hymenoptera photos" in demo.stdout
        assert "demo: done" in demo.stdout
        assert len(list((checkout / "demo/data/hymenoptera/train/bees").iterdir())) == 121
        # The demo runs the default alpha (1.0): the class index and 1.0's two files.
        default = [n for n in assets.weight_names() if "_7_5_" not in n]
        assert sorted(server.asked) == sorted([ZIP] + ["/weights/" + n for n in default])

        # The tests themselves, from a fresh cache: tests.assets downloads, conftest finds.
        caches = tmp_path / "caches-test"
        selection = "tests/test_weights.py tests/test_train_data.py -q -p no:cacheprovider"
        test = subprocess.run(
            ["make", "test", f"VENV={venv}", f"PYTEST_ARGS={selection}"],
            cwd=checkout,
            env=clean_env(checkout, server, caches),
            capture_output=True,
            text=True,
            check=False,
        )
        assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]
        assert " passed" in test.stdout and "failed" not in test.stdout
        assert server.asked.count(ZIP) == 2
        assert (caches / "mtl" / "datasets" / "hymenoptera" / "train" / "ants").is_dir()
        assert (caches / "keras" / "models" / "mobilenet_7_5_224_tf_no_top.h5").is_file()

    # Offline with nothing cached: one line that says what is missing and where it goes.
    env = clean_env(checkout, server, tmp_path / "caches-offline")  # the server is closed now
    shutil.rmtree(checkout / "demo")
    offline = subprocess.run(
        ["make", "demo", f"VENV={venv}"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert offline.returncode != 0
    errors = [line for line in offline.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, offline.stderr
    assert "missing dataset hymenoptera and cannot download it from" in errors[0]
    assert "MTL_DATA_DIR" in errors[0]

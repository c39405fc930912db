"""`mtl train` beyond one TensorFlow device, each in a subprocess with a timeout (tiny data).

- KERAS_BACKEND=jax: the core is plain Keras 3.
- MTL_CPU_DEVICES=2: the CPU split into two logical devices -> MirroredStrategy.
- TF_CONFIG with two workers on 127.0.0.1 -> MultiWorkerMirroredStrategy; same weights.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import HYMENOPTERA, closed_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("train_worker.py")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    for cls in ("ants", "bees"):
        (root / cls).mkdir()
        for f in sorted((HYMENOPTERA / cls).iterdir())[:4]:
            shutil.copy(f, root / cls / f.name)
    return root


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT)
    e.pop("TF_CONFIG", None)
    e.update(extra)
    return e


def result_of(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def run_worker(data: Path, out: Path, epochs: int = 1, **extra: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(data), str(out), str(epochs)],
        env=env(**extra),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return result_of(proc.stdout)


def test_jax_backend_trains_and_reloads(tiny, tmp_path):
    report = run_worker(tiny, tmp_path / "run", KERAS_BACKEND="jax")
    assert report["backend"] == "jax" and "Keras (jax)" in report["device"]
    assert report["classes"] == ["ants", "bees"]
    probs = np.array(report["probs"])
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_two_logical_cpus_use_mirrored_strategy(tiny, tmp_path):
    report = run_worker(tiny, tmp_path / "run", MTL_CPU_DEVICES="2")
    assert "MirroredStrategy over 2 logical CPUs" in report["device"]
    assert np.allclose(np.array(report["probs"]).sum(axis=1), 1.0, atol=1e-5)


def test_two_workers_with_tf_config_end_with_the_same_weights(tiny, tmp_path):
    from mtl.model.modelio import load_model

    ports = [closed_port(), closed_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(tiny), str(tmp_path / f"w{i}"), "2"],
                env=env(TF_CONFIG=tf_config),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
        )
    reports = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=240)
            assert p.returncode == 0, stderr[-3000:]
            reports.append(result_of(stdout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all("MultiWorkerMirroredStrategy, 2 workers" in r["device"] for r in reports)
    assert reports[0]["epochs"] == reports[1]["epochs"] == 2
    w0 = load_model(tmp_path / "w0" / "model.keras").model.get_weights()
    w1 = load_model(tmp_path / "w1" / "model.keras").model.get_weights()
    assert len(w0) == len(w1)
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)

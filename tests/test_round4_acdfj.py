"""Reliability round 4 (issue 34), classes A, C, D, F and J, on real weights and photos.

Each test is an attack of the issue on a small copy of shared/data/clothing; the attacks
that need no weights are in tests/unit/test_round4_acdfj.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mtl
from mtl.cli import app
from mtl.data.images import list_images
from tests.conftest import ALPHA, ROOT, SHARED
from tests.unit.test_round4_acdfj import odd_dds

CLOTHING = SHARED / "data" / "clothing"
CLASSES = ("pants", "shoes")
FAST = ["--alpha", str(ALPHA), "--epochs", "2"]


def clothing(root: Path, train: int = 8, test: int = 0) -> Path:
    """``root`` with train/ (and test/ when asked) of two clothing classes."""
    for c in CLASSES:
        sides = {"train": list_images(CLOTHING / "train" / c)[:train]}
        if test:
            sides["test"] = list_images(CLOTHING / "test" / c)[:test]
        for side, found in sides.items():
            (root / side / c).mkdir(parents=True, exist_ok=True)
            for f in found:
                shutil.copy(f, root / side / c / f.name)
    return root


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- F: one odd image never stops train or predict ----------------------------------


def test_an_odd_dds_named_jpg_is_skipped_by_predict(cli, trained_model, tmp_path):
    (tmp_path / "odd.jpg").write_bytes(odd_dds())
    shutil.copy(trained_model.val_files[0], tmp_path / "good.jpg")
    result = cli.invoke(app, ["predict", str(trained_model.path), str(tmp_path), "--json"])
    assert result.exit_code == 1, result.output
    rows = json.loads(result.stdout)
    rows = rows["results"] if isinstance(rows, dict) else rows
    by_file = {Path(r["file"]).name: r for r in rows}
    assert (
        "predictions" in by_file["good.jpg"]
        and "NotImplementedError" in by_file["odd.jpg"]["error"]
    )
    assert "odd.jpg" in result.stderr and "Traceback" not in result.output


def test_an_odd_dds_and_a_symlinked_test_folder_train_and_score(tmp_path):
    """F: the odd file is skipped, named; C: test/ is a link to a folder elsewhere and is
    scored; a copy of a training photo in test/ is reported."""
    data = clothing(tmp_path / "d")
    (data / "train" / "pants" / "odd.jpg").write_bytes(odd_dds())
    held = clothing(tmp_path / "held", train=0, test=3) / "test"
    twin = list_images(data / "train" / "shoes")[0]
    shutil.copy(twin, held / "shoes" / "twin.jpg")
    (data / "test").symlink_to(held)
    run = mtl.train(data, out=tmp_path / "run", epochs=2, alpha=ALPHA)
    assert any(Path(f).name == "odd.jpg" and "NotImplementedError" in why for f, why in run.skipped)
    assert run.test_metrics is not None and run.test_metrics["count"] == 7
    assert any("1 test photo(s) are also training photos" in w for w in run.warnings)


# --- J: a writer of DATA waits for a training run to end -----------------------------


def test_review_apply_during_a_train_is_refused_with_one_line(tmp_path):
    """The run exited 0 having trained on photos review moved away under it."""
    data = clothing(tmp_path / "d")
    photo = list_images(data / "train" / "pants")[0]
    decisions = tmp_path / "decisions.json"
    import hashlib

    from mtl.review import actions

    sha = hashlib.sha256(photo.read_bytes()).hexdigest()
    rows = [{"file": photo.relative_to(data).as_posix(), "action": "remove", "sha256": sha}]
    bound = {"data": str(data), "state": actions.folder_state(data)}  # as the page saves it
    decisions.write_text(json.dumps({"format": "mtl-review-decisions", **bound, "decisions": rows}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    seen: list[subprocess.CompletedProcess[str]] = []

    def writer(_log: object) -> None:
        if not seen:  # the first epoch: the run is reading DATA
            seen.append(
                subprocess.run(
                    [sys.executable, "-m", "mtl", "review", str(data), "--apply", str(decisions)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )  # fmt: skip
            )

    mtl.train(data, out=tmp_path / "run", epochs=2, alpha=ALPHA, on_epoch=writer)
    (done,) = seen
    assert done.returncode == 2, done.stderr
    assert "mtl train (reading)" in done.stderr and str(data) in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert photo.is_file() and not (data / "_review").exists()
    assert ".mtl.lock" not in entries(data)  # the run let go of it
    review = subprocess.run(
        [sys.executable, "-m", "mtl", "review", str(data), "--apply", str(decisions)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert review.returncode == 0, review.stderr
    assert not photo.exists()


# --- A: nothing written or deleted through a link mtl did not make ------------------


def test_train_refuses_a_linked_checkpoint_or_lock_and_touches_nothing(cli, tmp_path):
    data = clothing(tmp_path / "d")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "epoch-0001.npz").write_bytes(b"someone's")
    (elsewhere / "note.txt").write_text("keep")
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint").symlink_to(elsewhere)
    result = cli.invoke(app, ["train", str(data), "--out", str(run), "--force", *FAST])
    assert result.exit_code == 2, result.output
    assert "checkpoint is a symbolic link" in result.stderr
    assert entries(elsewhere) == ["epoch-0001.npz", "note.txt"]
    (run / "checkpoint").unlink()
    (data / ".mtl.lock").symlink_to(elsewhere / "note.txt")
    result = cli.invoke(app, ["train", str(data), "--out", str(run), "--force", *FAST])
    assert result.exit_code == 2 and ".mtl.lock is a symbolic link" in result.stderr
    assert (elsewhere / "note.txt").read_text() == "keep"


def test_a_users_linked_data_and_run_folders_keep_working(cli, tmp_path):
    real_data = clothing(tmp_path / "d")
    (tmp_path / "data-link").symlink_to(real_data)
    (tmp_path / "runs-real").mkdir()
    (tmp_path / "runs-link").symlink_to(tmp_path / "runs-real")
    out = tmp_path / "runs-link" / "r"
    result = cli.invoke(app, ["train", str(tmp_path / "data-link"), "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs-real" / "r" / "model.keras").is_file()
    assert ".mtl.lock" not in entries(real_data)

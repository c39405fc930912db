"""`mtl review` at scale, on synthetic inputs (no model, no photos): the parts whose cost
grew faster than the number of photos.

- ``duplicates``: the cross-class near-duplicate search on synthetic pooled features
  (non-negative, 1,024 wide like MobileNet v1 at alpha 1.0, ten classes, 1% planted
  near-duplicates across classes), the old all-pairs search against the new one
  (:func:`mtl.review.scores.cross_class_duplicates`: all pairs up to 8,192 photos, an
  inverted-file index above) in the same run: time, and the recall of the planted
  pairs. The all-pairs search at 100k takes minutes on 2 cores: it is timed on a
  slice of its rows and scaled by the number of rows (its cost is exactly linear in
  them), and says so.
- ``decisions``: ``mtl review DATA --apply decisions.json`` then ``--undo`` on a folder
  of N tiny synthetic files (names and bytes only: applying decisions decodes no
  photo) with a fetch-style manifest, every photo decided ``remove``: seconds and
  microseconds per photo at each size. ``--baseline REV`` also runs
  ``mtl/review/actions.py`` as it was at git revision REV in the same run.

    python bench/review_scale.py duplicates --sizes 10000 100000
    python bench/review_scale.py decisions --sizes 2000 8000 32000 --baseline 529ddce
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def synthetic(n: int, d: int = 1024, k: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered non-negative features (ReLU-pooled-like) and labels; 1% of the photos get
    a near-copy in another class (cosine 0.975-0.99: just past the 0.97 threshold),
    planted at the end."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.0, 1.0, size=(k, d)).astype(np.float32)
    labels = rng.integers(0, k, size=n)
    x = centres[labels] + rng.gamma(1.0, 1.0, size=(n, d)).astype(np.float32) * 1.5
    planted = n // 100
    src = rng.choice(n - planted, planted, replace=False)
    dst = np.arange(n - planted, n)
    x[dst] = x[src] * (1 + rng.normal(0, 0.2, size=(planted, d))).astype(np.float32)
    labels[dst] = (labels[src] + 1 + rng.integers(0, k - 1, size=planted)) % k
    return np.abs(x), labels


def old_all_pairs(x: np.ndarray, labels: np.ndarray, threshold: float, rows: int) -> np.ndarray:
    """The search as it was before (mtl/review/scores.py at 529ddce), on the first ``rows``."""
    from mtl.review.scores import normalise

    z = normalise(x).astype(np.float32)
    best = np.full(rows, -1, dtype=np.int64)
    for start in range(0, rows, 512):
        block = z[start : min(start + 512, rows)] @ z.T
        same = labels[start : start + len(block), None] == labels[None, :]
        block[same] = -1.0
        j = block.argmax(axis=1)
        s = block[np.arange(len(block)), j]
        best[start : start + len(block)][s >= threshold] = j[s >= threshold]
    return best


def duplicates(sizes: list[int], old_rows: int) -> None:
    from mtl.review.scores import DUPLICATE_SIMILARITY, cross_class_duplicates

    print(
        "| photos | old all-pairs s | new s | speed-up | planted pairs found (new) | their cosine |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for n in sizes:
        x, labels = synthetic(n)
        rows = min(n, old_rows)
        t0 = time.perf_counter()
        old_all_pairs(x, labels, DUPLICATE_SIMILARITY, rows)
        old = (time.perf_counter() - t0) * n / rows
        t0 = time.perf_counter()
        best, sim = cross_class_duplicates(x, labels, DUPLICATE_SIMILARITY)
        new = time.perf_counter() - t0
        planted = np.arange(n - n // 100, n)
        recall = float((best[planted] >= 0).mean())
        cos = np.percentile(sim[planted], [5, 95])
        scaled = "" if rows == n else f" (timed on {rows} rows, x{n / rows:.0f})"
        print(
            f"| {n} | {old:.1f}{scaled} | {new:.1f} | {old / new:.1f}x | {recall:.3f} "
            f"| {cos[0]:.3f}-{cos[1]:.3f} |"
        )


def make_folder(root: Path, n: int) -> Path:
    """N tiny files in ten class folders, a fetch-style manifest, and the decisions file the
    page would save (every photo ``remove``), bound to the folder as the page binds it."""
    from mtl.review import actions

    lines = []
    for i in range(n):
        cls = f"c{i % 10}"
        rel = f"{cls}/{i:07d}.jpg"
        (root / cls).mkdir(parents=True, exist_ok=True)
        data = b"\xff\xd8" + i.to_bytes(8, "big")
        (root / rel).write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        lines.append(json.dumps({"class": cls, "file": rel, "sha256": sha, "url": f"http://x/{i}"}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    rows = [
        {"file": json.loads(line)["file"], "action": "remove", "sha256": json.loads(line)["sha256"]}
        for line in lines
    ]
    decisions = root.parent / "decisions.json"
    state = actions.folder_state(root) if hasattr(actions, "folder_state") else ""
    doc = {"format": actions.DECISIONS_FORMAT, "data": str(root), "state": state}
    decisions.write_text(json.dumps({**doc, "decisions": rows}))
    return decisions


def load_actions(rev: str):  # noqa: ANN201 - a module
    """``mtl/review/actions.py`` as it was at ``rev``, as a module beside the current one."""
    text = subprocess.run(
        ["git", "show", f"{rev}:mtl/review/actions.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "actions_baseline.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("actions_baseline", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def time_decisions(actions, n: int) -> tuple[float, float]:  # noqa: ANN001
    from mtl.data import dataset

    work = Path(tempfile.mkdtemp())
    try:
        root = work / "data"
        decisions = make_folder(root, n)
        t0 = time.perf_counter()
        ds = dataset.scan(root, val_split=0)  # as review --apply DECISIONS does, once
        if hasattr(actions, "Decided"):
            listed = [it.path for it in ds.items]
            moves = actions.read_decisions(root, decisions, ds.classes, listed).moves
        else:  # the baseline: a list of moves
            moves = actions.read_decisions(root, decisions, ds.classes)
        done = actions.apply_all(root, moves)
        applied = time.perf_counter() - t0
        assert len(done.moves) == n, len(done.moves)
        t0 = time.perf_counter()
        undone = actions.undo(root)
        assert len(undone.restored) == n
        return applied, time.perf_counter() - t0
    finally:
        shutil.rmtree(work)


def decisions(sizes: list[int], baseline: str | None) -> None:
    from mtl.review import actions

    versions = [("now", actions)]
    if baseline:
        versions.append((baseline, load_actions(baseline)))
    print("| actions.py | photos | apply s | undo s | apply us/photo | undo us/photo |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in sizes:
        for name, module in versions:
            a, u = time_decisions(module, n)
            print(f"| {name} | {n} | {a:.2f} | {u:.2f} | {a / n * 1e6:.0f} | {u / n * 1e6:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["duplicates", "decisions"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--old-rows", type=int, default=10_000, help="all-pairs rows timed")
    parser.add_argument("--baseline", help="git revision of actions.py to time beside")
    args = parser.parse_args()
    if args.what == "duplicates":
        duplicates(args.sizes, args.old_rows)
    else:
        decisions(args.sizes, args.baseline)


if __name__ == "__main__":
    main()

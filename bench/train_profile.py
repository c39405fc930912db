"""Where a default `mtl train` spends its time, and how that grows with the photos.

Runs `mtl train` in this process (the CLI, defaults, a fresh run folder) with
timers around the steps that scale with the photos: hashing each file
(the cache key), decoding it (Pillow, in the decode threads), the base passes
(LiteRT's invoke, in the pass's thread), and the run's own phases
(``seconds`` of ``--json``: features, fit, refit, write). Decode and hash
times are summed over threads: CPU-seconds, which overlap the base passes.

Each size runs ``--repeat`` times, the sizes interleaved (small, large, small,
large...), so a loaded machine's noise falls on both alike; the growth ratio is
the ratio of medians.

    python bench/train_profile.py --data ../shared/data/hymenoptera/train \
        --replicate 3 12 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

BASE = "base passes (LiteRT invoke)"
TIMERS: dict[str, float] = defaultdict(float)
COUNTS: dict[str, int] = defaultdict(int)
_lock = threading.Lock()


def timed(name: str, fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            with _lock:
                TIMERS[name] += time.perf_counter() - t0
                COUNTS[name] += 1

    return wrapper


def install_timers() -> None:
    from mtl.data import features, images
    from mtl.model import litebase

    features.file_digest = timed("hash", features.file_digest)
    images._load_or_error = timed("decode", images._load_or_error)
    litebase.LiteExtractor.__call__ = timed(BASE, litebase.LiteExtractor.__call__)


def one_run(data: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    import sys

    from mtl.cli import app
    from mtl.cli._common import run_app

    TIMERS.clear()
    COUNTS.clear()
    sys.argv = ["mtl", "-q", "train", str(data), "--alpha", str(args.alpha), "--seed",
                str(args.seed), "--out", str(out), "--json", *args.extra]  # fmt: skip
    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        run_app(app)  # in this process: not the program, so it returns (SystemExit)
    wall = time.perf_counter() - t0
    result = json.loads(buf.getvalue())
    views = len(json.loads((out / "config.json").read_text())["config"]["views"])
    # A photo's views go through the base in one call: passes = photos x views.
    passes = result["cache"]["base_forward_images"] * views
    return {"wall": wall, "seconds": result["seconds"], "timers": dict(TIMERS),
            "passes": passes}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared/data/hymenoptera/train"
    ap.add_argument("--data", default=str(default))
    ap.add_argument("--alpha", type=float, default=0.75)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--replicate", type=int, nargs="+", default=[3, 12])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--extra", default="", help="more `mtl train` options, e.g. --extra='--base-precision int8'"
    )
    args = ap.parse_args()
    args.extra = shlex.split(args.extra)

    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_vs_naive import replicate

    install_timers()
    runs: dict[int, list[dict[str, Any]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        sets = {k: replicate(Path(args.data), Path(tmp) / f"x{k}", k) for k in args.replicate}
        photos = {k: sum(1 for _ in sets[k].glob("*/*")) for k in sets}
        # Warm: the base converted for LiteRT once (as on any machine's first run).
        one_run(sets[args.replicate[0]], Path(tmp) / "warm", args)
        for r in range(args.repeat):
            for k in args.replicate:
                runs[k].append(one_run(sets[k], Path(tmp) / f"run{k}_{r}", args))

    print(f"data: {args.data}, replicated {args.replicate}; {args.repeat} interleaved runs each")
    print(
        f"| photos | run (s) | ms/photo | features (s) | {BASE} (s) | share | decode CPU-s "
        "| hash CPU-s | fit (s) | refit (s) | write (s) | rest (s) | base passes/s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    totals = {}
    for k, rs in runs.items():
        n = photos[k]

        def med(key: str, src: str = "seconds", rs: list[dict[str, Any]] = rs) -> float:
            return statistics.median(r[src].get(key, 0.0) for r in rs)

        tot, base = med("total"), med(BASE, "timers")
        totals[k] = tot
        steps = ("features", "fit", "refit", "write")
        rest = statistics.median(
            r["seconds"]["total"] - sum(r["seconds"].get(s, 0.0) for s in steps) for r in rs
        )
        passes = statistics.median(r["passes"] / r["timers"][BASE] for r in rs)
        cells = [n, f"{tot:.2f}", f"{1000 * tot / n:.2f}", f"{med('features'):.2f}",
                 f"{base:.2f}", f"{base / tot:.0%}", f"{med('decode', 'timers'):.2f}",
                 f"{med('hash', 'timers'):.2f}", f"{med('fit'):.2f}", f"{med('refit'):.2f}",
                 f"{med('write'):.2f}", f"{rest:.2f}", f"{passes:.0f}"]  # fmt: skip
        print("| " + " | ".join(map(str, cells)) + " |")
    if len(totals) == 2:
        (a, ta), (b, tb) = totals.items()
        print(f"\ngrowth: {photos[b]} photos cost {tb / ta:.2f}x the time of {photos[a]} "
              "(medians of the run's own total: start-up excluded)")  # fmt: skip
    for k, rs in runs.items():
        print(
            f"{photos[k]} photos, each run's total (s):",
            [round(r["seconds"]["total"], 2) for r in rs],
        )


if __name__ == "__main__":
    main()

"""`mtl serve` under load against `mtl predict`, on the same photos, model and machine.

    python bench/serve.py --model runs/train --data photos/
    python bench/serve.py          # a head trained on half of ../shared's hymenoptera

Starts ``mtl serve MODEL`` on a free loopback port, then times `mtl predict`'s own code
(``open_model`` once, then ``predict_paths`` in batches of 32: what the command runs after
it loads the model) on the photos, then sends the same photos to the server: REQUESTS
requests of one photo each (multipart, as ``curl -F file=@photo.jpg``) from CLIENTS
concurrent clients on keep-alive connections. Prints both rates in images/s, their ratio,
the latency percentiles, how many requests failed, and how many photos the server put in
each model pass. The server's answers must carry the same top labels as `mtl predict`'s,
or the run fails. Both arms exclude their model load (the server is warmed up with a few
requests first); the clients run in this process, on the same cores as the server, as a
user's benchmark on one machine would.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run the checkout's mtl, and reach tests/trained_model.py

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if (ROOT.parent / "shared" / "weights").is_dir():
    os.environ.setdefault("MTL_WEIGHTS_DIR", str(ROOT.parent / "shared" / "weights"))

BOUNDARY = "mtl-bench-boundary"


def start_server(model: Path) -> tuple[subprocess.Popen[str], str, list[str]]:
    """``python -m mtl serve MODEL --port 0``; its URL once it listens, and its stderr lines."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtl", "serve", str(model), "--port", "0"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    lines: list[str] = []
    url: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            found = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
            if found:
                url.put(found.group(1))
        url.put("")

    threading.Thread(target=read, daemon=True).start()
    got = url.get(timeout=600)
    if not got:
        raise SystemExit("mtl serve did not start:\n" + "".join(lines))
    return proc, got, lines


def body_of(photo: Path) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{photo.name}"\r\nContent-Type: image/jpeg\r\n\r\n'
    )
    return head.encode() + photo.read_bytes() + f"\r\n--{BOUNDARY}--\r\n".encode()


def load(url: str, bodies: list[bytes], clients: int) -> tuple[float, list[float], list, int]:
    """Every body once, from ``clients`` threads each on its own keep-alive connection:
    (seconds, latencies, answers in body order, failures)."""
    host, port = url.removeprefix("http://").split(":")
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(bodies)):
        todo.put(i)
    latencies: list[float] = []
    answers: list = [None] * len(bodies)
    failures = []
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

    def client() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=300)
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                break
            start = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=bodies[i], headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=300)
                continue
            latencies.append(time.perf_counter() - start)
            if response.status != 200:
                failures.append(f"{response.status}: {data[:200]!r}")
                continue
            answers[i] = json.loads(data)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies, answers, len(failures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/hymenoptera/train")
    parser.add_argument("--alpha", type=float, default=0.75, help="for the model made here")
    parser.add_argument("--model", type=Path, help="model.keras, a run folder, .tflite or .onnx")
    parser.add_argument("--requests", type=int, default=480)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()

    from mtl.data.images import list_images
    from mtl.inference.predict import open_model, predict_paths

    photos = list_images(args.data)
    if not photos:
        raise SystemExit(f"no photos in {args.data}")
    paths = [photos[i % len(photos)] for i in range(args.requests)]  # the same list, both arms
    if args.model is None:
        from tests.trained_model import make_trained_model

        print(f"training a head on half of {args.data} ...", file=sys.stderr)
        work = Path(tempfile.mkdtemp(prefix="mtl-bench-serve-"))
        args.model = make_trained_model(args.data, work, alpha=args.alpha).path

    proc, url, lines = start_server(args.model)
    try:
        # mtl predict's code, while the server waits idle: the model opened once, then timed.
        predictor = open_model(args.model)
        predict_paths(predictor, paths[:32])
        start = time.perf_counter()
        results, _ = predict_paths(predictor, paths, batch_size=32)
        t_predict = time.perf_counter() - start
        predict_labels = [r.predictions[0].label for r in results]

        bodies = [body_of(p) for p in paths]
        load(url, bodies[:32], args.clients)  # warm-up, not counted
        t_serve, latencies, answers, failed = load(url, bodies, args.clients)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(300)
    served = "".join(lines)
    stats = re.search(r"(\d+) photo\(s\) in (\d+) model pass", served)
    if code != 0 or stats is None:
        raise SystemExit(f"mtl serve did not stop cleanly (exit {code}):\n{served}")
    images, passes = map(int, stats.groups())

    n = len(paths)
    serve_labels = [a[0]["predictions"][0]["label"] if a else None for a in answers]
    same = sum(a == b for a, b in zip(serve_labels, predict_labels, strict=True))
    lat = np.array(latencies) * 1000
    rate_predict, rate_serve = n / t_predict, (n - failed) / t_serve
    print(
        f"\n{n} photos ({len(photos)} distinct) from {args.data}; model {args.model} "
        f"({predictor.kind} on {predictor.engine}); {args.clients} clients, one photo a "
        f"request; {os.cpu_count()} CPU cores (clients, server and predict on the same ones)"
    )
    print("\n| arm | seconds | images/s |")
    print("| --- | ---: | ---: |")
    print(f"| mtl predict (batches of 32, model loaded) | {t_predict:.2f} | {rate_predict:.1f} |")
    print(f"| mtl serve, {args.clients} concurrent clients | {t_serve:.2f} | {rate_serve:.1f} |")
    print(
        f"\nratio serve/predict: {rate_serve / rate_predict:.2f}x; "
        f"latency p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms; "
        f"{failed} of {n} requests failed; top labels equal to mtl predict's: {same}/{n}; "
        f"the server ran {images} photos in {passes} model passes "
        f"({images / max(passes, 1):.1f} a pass, warm-up included)"
    )
    if failed or same != n:
        raise SystemExit("FAIL: some requests failed or disagree with mtl predict")


if __name__ == "__main__":
    main()

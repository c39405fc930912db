"""`mtl serve`: a real server (``python -m mtl serve``) on a free loopback port, spoken to
over real HTTP, answering what `mtl predict --json` prints; bad input refused with a 4xx
and the next request served; the page driven in a real headless Chromium."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import mtl
from mtl.cli import app
from tests.conftest import ROOT
from tests.test_review import chromium  # the review page's browser, found the same way

# Only to keep a broken server from hanging the suite: never a measure of speed.
HANG_GUARD_S = 300


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    workdir: Path  # its cwd and TMPDIR: nothing from a request may land in either
    lines: list[str] = field(default_factory=list)
    before: list[str] = field(default_factory=list)  # what those held once it was ready

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        self.proc.send_signal(sig)
        code = self.proc.wait(HANG_GUARD_S)
        return code, "".join(self.lines)


def start(model: Path, workdir: Path, *args: str, prelude: str = "") -> Server:
    """``python -m mtl serve MODEL --port 0 ARGS`` (``prelude``: code run before mtl)."""
    (workdir / "cwd").mkdir(parents=True)
    (workdir / "tmp").mkdir()
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TMPDIR": str(workdir / "tmp")}
    argv = ["mtl", "serve", str(model), "--port", "0", *args]
    code = f"{prelude}\nimport sys\nsys.argv = {argv!r}\nfrom mtl.cli import main\nmain()\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=workdir / "cwd", env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    server = Server(proc, "", workdir)
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            server.lines.append(line)
            found = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
            if found and not server.url:
                server.url = found.group(1)
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(HANG_GUARD_S)
    if not server.url:
        proc.kill()
        pytest.fail("mtl serve did not start:\n" + "".join(server.lines)[-3000:])
    return server


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def request(
    url: str, body: bytes | None = None, content_type: str | None = None
) -> tuple[int, Any]:
    """(status, JSON answer) of a GET (no body) or POST."""
    headers = {"Content-Type": content_type} if content_type else {}
    req = urllib.request.Request(
        url, data=body, headers=headers, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=HANG_GUARD_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def multipart(files: list[tuple[str, bytes]], field_name: str = "file") -> tuple[bytes, str]:
    boundary = "mtl-test-boundary-7d41"
    out = io.BytesIO()
    for name, data in files:
        out.write(f"--{boundary}\r\n".encode())
        out.write(
            f'Content-Disposition: form-data; name="{field_name}"; filename="{name}"\r\n'.encode()
        )
        out.write(b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def post_files(url: str, paths: list[Path], k: int = 1) -> tuple[int, Any]:
    body, kind = multipart([(p.name, p.read_bytes()) for p in paths])
    return request(f"{url}/predict?k={k}", body, kind)


def predicted(cli, model: Path, paths: list[Path], k: int) -> dict[str, list[dict]]:
    """What `mtl predict --json` prints, by file name."""
    result = cli.invoke(app, ["predict", str(model), "--json", "-k", str(k), *map(str, paths)])
    assert result.exit_code == 0, result.stderr
    return {Path(r["file"]).name: r["predictions"] for r in json.loads(result.stdout)}


def assert_same(answer: list[dict], expected: dict[str, list[dict]], names: list[str]) -> None:
    assert [r["file"] for r in answer] == names  # upload order
    for r in answer:
        want = expected[r["file"]]
        assert [p["label"] for p in r["predictions"]] == [p["label"] for p in want]
        assert [p["rank"] for p in r["predictions"]] == [p["rank"] for p in want]
        got = np.array([p["probability"] for p in r["predictions"]])
        assert np.allclose(got, [p["probability"] for p in want], atol=1e-5), (r, want)


@pytest.fixture(scope="module")
def served(trained_model, tmp_path_factory) -> Server:
    """The session's trained model.keras, served with small limits to test them."""
    workdir = tmp_path_factory.mktemp("serve_keras")
    server = start(trained_model.path, workdir, "--max-body", "4MB", "--max-files", "6")
    server.before = files_in(workdir)
    yield server
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="module")
def tflite_model(trained_model, tmp_path_factory) -> Path:
    """`mtl export` as it is: model.tflite, labels inside and beside it."""
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("serve_tflite") / "model.tflite"
    result = CliRunner().invoke(app, ["export", str(trained_model.path), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    return out


def test_healthz_and_metadata(served, trained_model):
    assert request(f"{served.url}/healthz") == (200, {"status": "ok", "model": "model.keras"})
    status, meta = request(f"{served.url}/metadata")
    assert status == 200
    assert meta["class_names"] == trained_model.class_names
    assert meta["sha256"] == hashlib.sha256(trained_model.path.read_bytes()).hexdigest()
    assert meta["mtl_version"] == mtl.__version__
    assert meta["fit"] == meta["input"]["fit"] == "center"  # the model's own, as mtl train saved it
    assert meta["input"]["image_size"] == 224
    assert meta["limits"] == {"max_body": 4_000_000, "max_files": 6}
    status, spec = request(f"{served.url}/openapi.json")
    assert status == 200 and "/predict" in spec["paths"]
    assert "multipart/form-data" in spec["paths"]["/predict"]["post"]["requestBody"]["content"]


def test_several_photos_and_a_raw_body_get_what_mtl_predict_prints(served, trained_model, cli):
    # Both classes, landscape and portrait, in an order that is not sorted.
    paths = [trained_model.val_files[-1], trained_model.train_files[0], trained_model.val_files[0]]
    paths.append(trained_model.train_files[-3])
    expected = predicted(cli, trained_model.path, paths, k=2)
    status, answer = post_files(served.url, paths, k=2)
    assert status == 200, answer
    assert_same(answer, expected, [p.name for p in paths])
    assert {r["predictions"][0]["label"] for r in answer} == {"ants", "bees"}

    photo = paths[0]
    status, answer = request(
        f"{served.url}/predict?k=2&name={photo.name}", photo.read_bytes(), "image/jpeg"
    )
    assert status == 200, answer
    assert_same(answer, expected, [photo.name])
    status, answer = request(
        f"{served.url}/predict", photo.read_bytes(), "application/octet-stream"
    )
    assert status == 200 and answer[0]["file"] == "body" and len(answer[0]["predictions"]) == 1
    status, answer = request(f"{served.url}/predict?k=99", photo.read_bytes(), "image/jpeg")
    assert status == 200 and len(answer[0]["predictions"]) == 2  # as many as there are classes


def _bomb() -> bytes:
    """A 12000x12000 PNG of 18 kB: 144 megapixels once decoded."""
    out = io.BytesIO()
    Image.new("1", (12000, 12000)).save(out, format="PNG")
    return out.getvalue()


def _big_photo(photo: Path) -> bytes:
    """A real photo over 1 MB (Starlette's form reader would spool it to a temporary file)."""
    img = Image.open(photo).convert("RGB").resize((1600, 1600))
    noisy = np.asarray(img, np.int16) + np.random.default_rng(0).integers(-40, 40, (1600, 1600, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=95)
    assert 1_200_000 < out.tell() < 4_000_000
    return out.getvalue()


def test_bad_input_gets_a_4xx_naming_the_problem_and_the_next_request_is_served(
    served, trained_model
):
    photo = trained_model.val_files[0]
    jpeg = photo.read_bytes()
    cases = [  # (what, body, content type, status, words in the error)
        ("text file", *multipart([("notes.txt", b"just some text\n")]), 422,
         ["notes.txt", "not an image"]),
        ("empty file", *multipart([("empty.jpg", b"")]), 422, ["empty.jpg", "empty file"]),
        ("truncated JPEG", *multipart([("cut.jpg", jpeg[: len(jpeg) // 3])]), 422,
         ["cut.jpg", "truncated"]),
        ("decompression bomb", *multipart([("bomb.png", _bomb())]), 422,
         ["bomb.png", "too large"]),
        ("one bad among good", *multipart([("a.jpg", jpeg), ("b.txt", b"no")]), 422,
         ["b.txt", "not an image"]),
        ("empty raw body", b"", "image/jpeg", 400, ["empty request body"]),
        ("body over --max-body", b"\xff\xd8\xff" + os.urandom(4_100_000), "image/jpeg", 413,
         ["over the limit", "--max-body"]),
        ("too many files", *multipart([(f"{i}.jpg", jpeg) for i in range(7)]), 413,
         ["too many files", "7", "--max-files"]),
        ("wrong content type", jpeg, "text/plain", 415, ["text/plain", "multipart/form-data"]),
        ("curl's default type", jpeg, "application/x-www-form-urlencoded", 415,
         ["Content-Type: image/jpeg"]),
        ("wrong field name", *multipart([("a.jpg", jpeg)], "photo"), 400, ["'photo'", "'file'"]),
        ("no closing boundary", multipart([("a.jpg", jpeg)])[0][:-30],
         multipart([])[1], 400, ["malformed"]),
    ]  # fmt: skip
    for what, body, kind, status, words in cases:
        got, answer = request(f"{served.url}/predict", body, kind)
        assert got == status, (what, answer)
        assert all(w in answer["error"] for w in words), (what, answer)
        ok, _ = post_files(served.url, [photo])  # the server goes on
        assert ok == 200, what
    got, answer = request(f"{served.url}/predict?k=0", jpeg, "image/jpeg")
    assert got == 422 and answer["error"].startswith("k:"), answer
    big = _big_photo(photo)
    got, answer = request(f"{served.url}/predict", *multipart([("big.jpg", big)]))
    assert got == 200 and answer[0]["file"] == "big.jpg"
    assert files_in(served.workdir) == served.before  # nothing written: cwd and TMPDIR


def test_concurrent_clients_are_batched_into_few_model_passes(
    tflite_model, trained_model, cli, tmp_path
):
    """16 clients at once, 3 photos each in turn: every answer is mtl predict's, and the
    model ran fewer passes than photos. Also: a .tflite is served where TensorFlow cannot be
    imported (the light install), and SIGTERM stops the server cleanly."""
    prelude = (  # the light install (no `train` extra): TensorFlow and Keras unimportable
        "import atexit, sys\n"
        "for name in ('tensorflow', 'keras', 'tf2onnx', 'jax', 'torch'):\n"
        "    sys.modules[name] = None  # as if not installed: importing it raises ImportError\n"
        "atexit.register(lambda: print('STOPPED CLEANLY', file=sys.stderr, flush=True))"
    )
    server = start(tflite_model, tmp_path, prelude=prelude)
    try:
        photos = (trained_model.val_files[:24] + trained_model.train_files[:24])[:48]
        expected = predicted(cli, tflite_model, photos, k=2)
        status, meta = request(f"{server.url}/metadata")
        assert meta["kind"] == "tflite" and meta["class_names"] == trained_model.class_names

        def client(i: int) -> list[tuple[int, Any]]:
            return [post_files(server.url, [p], k=2) for p in photos[i::16]]

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(client, range(16)))
        for i, replies in enumerate(answers):
            for p, (status, answer) in zip(photos[i::16], replies, strict=True):
                assert status == 200, answer
                assert_same(answer, expected, [p.name])
    finally:
        code, log = server.stop(signal.SIGTERM)
    assert code == 0, log
    assert "Traceback" not in log
    assert "STOPPED CLEANLY" in log  # the exit handlers ran: a normal exit, not a kill
    found = re.search(r"stopped \(SIGTERM\): (\d+) request\(s\), (\d+) photo\(s\) in (\d+)", log)
    assert found, log
    requests, images, passes = map(int, found.groups())
    assert requests == images == 48
    assert passes < images  # batched: concurrent photos shared model passes


def test_sigint_stops_it_cleanly_and_a_port_in_use_is_one_line(tflite_model, tmp_path):
    server = start(tflite_model, tmp_path / "a")
    try:
        port = server.url.rsplit(":", 1)[1]
        taken = subprocess.run(
            [sys.executable, "-m", "mtl", "serve", str(tflite_model), "--port", port],
            capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=ROOT,
        )  # fmt: skip
        assert taken.returncode == 2, taken.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in taken.stderr
        assert "Traceback" not in taken.stderr
    finally:
        code, log = server.stop(signal.SIGINT)
    assert code == 0 and "stopped (SIGINT)" in log and "Traceback" not in log, log


def test_mtl_serve_in_a_thread_is_stopped_from_code(tflite_model, trained_model):
    """The Python API: mtl.serve in a thread (no signal handlers there), stopped by the
    service's shutdown; it returns what it served."""
    ready: dict[str, Any] = {}
    started = threading.Event()

    def on_ready(url: str, service: Any) -> None:
        ready.update(url=url, service=service)
        started.set()

    reports: list[Any] = []
    thread = threading.Thread(
        target=lambda: reports.append(mtl.serve(tflite_model, port=0, on_ready=on_ready))
    )
    thread.start()
    assert started.wait(HANG_GUARD_S)
    status, answer = post_files(ready["url"], trained_model.val_files[:2])
    assert status == 200 and len(answer) == 2
    ready["service"].shutdown()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive()
    report = reports[0].to_json()
    assert report["passes"] in (1, 2)  # both photos are queued at once: one pass, unless
    del report["passes"]  # the machine pauses the server between them past the window
    assert report == {"url": ready["url"], "requests": 1, "images": 2, "stopped_by": None}


def test_a_missing_model_is_one_line_before_anything_listens(tmp_path, cli):
    result = cli.invoke(app, ["serve", str(tmp_path / "nope.keras"), "--port", "0"])
    assert result.exit_code == 2
    assert "nope.keras" in result.stderr and "Traceback" not in result.stderr
    result = cli.invoke(app, ["serve", str(tmp_path), "--max-body", "lots"])
    assert result.exit_code == 2 and "not a size" in result.stderr


# --- the page, in a real browser -------------------------------------------------------------


class DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe
    (``--remote-debugging-pipe``: commands in on fd 3, answers out on fd 4, each JSON
    message ended by a NUL byte), so no WebSocket client is needed."""

    def __init__(self, browser: str, home: Path) -> None:
        commands_r, self._commands_w = os.pipe()
        self._answers_r, answers_w = os.pipe()

        def child() -> None:  # runs in the child before exec: put the pipes on fds 3 and 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_r, answers_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe"]
        self.proc = subprocess.Popen(
            [browser, *flags, f"--user-data-dir={home / 'profile'}", "about:blank"],
            preexec_fn=child, close_fds=False, env={**os.environ, "HOME": str(home)},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(commands_r)
        os.close(answers_w)
        self._buffer = b""
        self._id = 0

    def __call__(self, method: str, session: str | None = None, **params: Any) -> Any:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands_w, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                assert "error" not in reply, (method, reply["error"])
                return reply.get("result", {})

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._answers_r], [], [], HANG_GUARD_S)
            assert ready, "Chromium did not answer"
            chunk = os.read(self._answers_r, 1 << 16)
            assert chunk, "Chromium closed its DevTools pipe"
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        with contextlib.suppress(AssertionError):  # it may be gone already
            self("Browser.close")
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._commands_w)
        os.close(self._answers_r)


def _evaluate(tools: DevTools, session: str, expression: str) -> Any:
    result = tools(
        "Runtime.evaluate", session, expression=expression, returnByValue=True, awaitPromise=True
    )
    assert "exceptionDetails" not in result, result
    return result["result"].get("value")


def _wait_for(tools: DevTools, session: str, expression: str) -> Any:
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        value = _evaluate(tools, session, expression)
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"the page never showed: {expression}")


BARS = """JSON.stringify([...document.querySelectorAll('.result')].map(card => ({
  file: card.dataset.file,
  rows: [...card.querySelectorAll('.row')].map(row => ({
    label: row.querySelector('.label').textContent,
    width: row.querySelector('.bar').style.width,
    shown: row.querySelector('.prob').textContent,
  })),
})))"""


def test_the_page_shows_the_top_classes_as_bars_in_a_headless_browser(
    served, trained_model, cli, tmp_path
):
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium; make browser)")
    with urllib.request.urlopen(f"{served.url}/", timeout=HANG_GUARD_S) as response:
        page = response.read().decode()
    assert "<script src" not in page and "http" not in page  # self-contained: works offline
    chosen, dropped = trained_model.val_files[0], trained_model.val_files[-1]
    expected = predicted(cli, trained_model.path, [chosen, dropped], k=2)

    tools = DevTools(browser, tmp_path)
    try:
        target = tools("Target.createTarget", url=f"{served.url}/")["targetId"]
        session = tools("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        _wait_for(
            tools,
            session,
            "document.readyState === 'complete' && !!document.getElementById('file')",
        )
        # Choose a photo in the file input, as a user clicking the drop zone does.
        root = tools("DOM.getDocument", session)["root"]["nodeId"]
        node = tools("DOM.querySelector", session, nodeId=root, selector="#file")["nodeId"]
        tools("DOM.setFileInputFiles", session, files=[str(chosen)], nodeId=node)
        _wait_for(tools, session, "document.querySelectorAll('.result').length === 1")
        # Drop another on the drop zone, as dragging it from a file manager does.
        b64 = base64.b64encode(dropped.read_bytes()).decode()
        _evaluate(tools, session, f"""(() => {{
            const bytes = Uint8Array.from(atob('{b64}'), c => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], '{dropped.name}', {{type: 'image/jpeg'}}));
            document.getElementById('drop').dispatchEvent(
                new DragEvent('drop', {{dataTransfer: data, bubbles: true, cancelable: true}}));
            return true;
        }})()""")  # fmt: skip
        _wait_for(tools, session, "document.querySelectorAll('.result').length === 2")
        cards = json.loads(_evaluate(tools, session, BARS))
        shot = tools("Page.captureScreenshot", session)["data"]
        (tmp_path / "page.png").write_bytes(base64.b64decode(shot))
    finally:
        tools.close()
    assert [c["file"] for c in cards] == [dropped.name, chosen.name]  # newest first
    for card in cards:
        want = expected[card["file"]]
        assert [r["label"] for r in card["rows"]] == [p["label"] for p in want]
        for row, p in zip(card["rows"], want, strict=True):
            for shown in (row["width"], row["shown"]):  # "98.2%" (a width of 100.0% is "100%")
                assert abs(float(shown.rstrip("%")) - 100 * p["probability"]) <= 0.05 + 1e-9
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_an_upload_decodes_as_the_same_file_does_across_the_bad_input_corpus(tmp_path):
    """load_bytes (the server's) and load_image (every command's): the same pixels for every
    usable file of the corpus, the same one-line reason for every broken one."""
    from mtl.data.images import load_bytes, load_image
    from mtl.errors import ImageError
    from tests.corpus import make_corpus

    def decoded(load: Any, source: Any) -> np.ndarray | str:
        try:
            return load(source, 224, "center")
        except ImageError as exc:
            return exc.message

    entries = make_corpus(tmp_path)
    assert len(entries) > 12
    for name, entry in entries.items():
        if not os.access(entry.path, os.R_OK):
            continue  # unreadable (not as root): no bytes to upload
        from_file = decoded(load_image, entry.path)
        from_bytes = decoded(load_bytes, entry.path.read_bytes())
        if entry.good:
            assert isinstance(from_bytes, np.ndarray), (name, from_bytes)
            assert np.array_equal(from_bytes, from_file), name
        else:
            assert from_bytes == from_file, name
            assert entry.reason in from_bytes, (name, from_bytes)

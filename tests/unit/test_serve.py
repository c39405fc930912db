"""`mtl serve`'s parts that need no model: the batcher and the in-memory multipart reader
(tests/test_serve.py runs the real server on a real model)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from mtl.deploy.service import Batcher, RequestError


def _multipart(parts: list[tuple[str, str, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for field_name, filename, data in parts:
        out += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; '
                f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode()


def test_concurrent_photos_share_model_passes_and_each_gets_its_own_row():
    sizes: list[int] = []

    def run(pixels: np.ndarray) -> np.ndarray:
        sizes.append(len(pixels))
        return pixels.reshape(len(pixels), -1)[:, :1].astype(np.float32)  # the first pixel

    batcher = Batcher(run, max_batch=8, wait=0.2)
    batcher.start()
    go = threading.Barrier(20)
    futures: dict[int, object] = {}

    def client(i: int) -> None:
        go.wait()
        futures[i] = batcher.submit(np.full((4, 4, 3), i, np.uint8))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = {i: f.result(60) for i, f in futures.items()}  # type: ignore[attr-defined]
    batcher.stop()
    assert {i: float(r[0]) for i, r in rows.items()} == {i: float(i) for i in range(20)}
    assert sum(sizes) == 20 and max(sizes) <= 8 and len(sizes) < 20
    assert (batcher.images, batcher.passes) == (20, len(sizes))


def test_a_failing_pass_fails_its_photos_only_and_the_next_pass_runs():
    def run(pixels: np.ndarray) -> np.ndarray:
        if (pixels == 13).any():
            raise ValueError("the model broke")
        return np.zeros((len(pixels), 2), np.float32)

    batcher = Batcher(run, max_batch=4, wait=0.0)
    batcher.start()
    bad = batcher.submit(np.full((2, 2, 3), 13, np.uint8))
    with pytest.raises(ValueError, match="the model broke"):
        bad.result(60)
    assert batcher.submit(np.zeros((2, 2, 3), np.uint8)).result(60).shape == (2,)
    batcher.stop()


def test_multipart_is_read_in_memory_in_upload_order_byte_for_byte():
    from mtl.deploy.app import parse_multipart

    tricky = b"\r\n--b0undar\r\n\x00\xff" * 100  # almost the boundary, CRLFs, binary
    body = _multipart(
        [("file", "b.jpg", tricky), ("file", "a.jpg", b"\xff\xd8"), ("file", "", b"x")]
    )
    uploads = parse_multipart(body, b"b0undary", max_files=3)
    assert [(u.name, u.data) for u in uploads] == [
        ("b.jpg", tricky), ("a.jpg", b"\xff\xd8"), ("file[2]", b"x")]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "boundary", "status", "words"),
    [
        (_multipart([("file", "a.jpg", b"1")] * 4), b"b0undary", 413, "too many files: 4"),
        (_multipart([("photo", "a.jpg", b"1")]), b"b0undary", 400, "unexpected form field 'photo'"),
        (_multipart([("file", "a.jpg", b"1")])[:-20], b"b0undary", 400, "no closing boundary"),
        (_multipart([]), b"b0undary", 400, "no photos"),
        (b"whatever", None, 400, "without a boundary"),
    ],
)
def test_multipart_that_cannot_be_used_is_a_4xx_naming_why(body, boundary, status, words):
    from mtl.deploy.app import parse_multipart

    with pytest.raises(RequestError) as caught:
        parse_multipart(body, boundary, max_files=3)
    assert caught.value.status == status and words in caught.value.message

"""Weight resolution: --weights-dir or MTL_WEIGHTS_DIR, the Keras cache, then an HTTP download."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mtl.assets import weights
from mtl.errors import UsageError, WeightsUnavailable
from mtl.model import backbones
from tests.conftest import WEIGHTS


@pytest.fixture
def weights_server() -> Iterator[tuple[str, list[str]]]:
    """Serves ../shared/weights over loopback HTTP, recording the paths asked for."""
    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            asked.append(self.path)
            super().do_GET()

    handler = functools.partial(Handler, directory=str(WEIGHTS))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", asked
    finally:
        server.shutdown()
        server.server_close()


def test_keras_file_names_and_urls():
    f = backbones.weights_file("mobilenet", 0.75, include_top=False)
    assert f.name == "mobilenet_7_5_224_tf_no_top.h5"
    assert f.url.endswith("/keras-applications/mobilenet/mobilenet_7_5_224_tf_no_top.h5")
    assert backbones.weights_file("mobilenet", 1.0, True, 160).name == "mobilenet_1_0_160_tf.h5"
    v2 = backbones.weights_file("mobilenet_v2", 0.35, include_top=True, size=96)
    assert v2.name == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5"
    v3 = backbones.weights_file("mobilenet_v3_small", 1.0, include_top=False)
    assert v3.name == "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    for name in ("mobilenet_7_5_224_tf.h5", "mobilenet_7_5_224_tf_no_top.h5"):
        assert (WEIGHTS / name).is_file()  # the names we compute are the ones Keras uses


def test_bad_choices_echo_the_value():
    with pytest.raises(UsageError, match="Received alpha=0.3"):
        backbones.check("mobilenet", 0.3)
    with pytest.raises(UsageError, match="Received size=100"):
        backbones.check("mobilenet", 1.0, 100)


def test_weights_dir_wins_over_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    (tmp_path / "kh" / "models").mkdir(parents=True)
    (tmp_path / "kh" / "models" / "imagenet_class_index.json").write_text("{}")
    got = weights.resolve(weights.class_index_file(), WEIGHTS)
    assert got == WEIGHTS / "imagenet_class_index.json"
    monkeypatch.delenv("MTL_WEIGHTS_DIR")
    assert (
        weights.resolve(weights.class_index_file())
        == tmp_path / "kh/models/imagenet_class_index.json"
    )


def test_download_into_keras_cache_over_http(tmp_path, monkeypatch, weights_server):
    url, asked = weights_server
    monkeypatch.setenv("MTL_WEIGHTS_URL", url)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    empty = tmp_path / "readonly_weights"
    empty.mkdir()
    empty.chmod(0o555)
    seen: list[tuple[int, int | None]] = []
    remote = backbones.weights_file("mobilenet", 0.75, include_top=False)
    got = weights.resolve(
        remote, empty, progress=lambda name, done, total: seen.append((done, total))
    )
    assert got == tmp_path / "kh" / "models" / remote.name
    assert got.read_bytes() == (WEIGHTS / remote.name).read_bytes()
    assert asked == ["/" + remote.name]
    assert seen and seen[-1][0] == seen[-1][1] == got.stat().st_size
    assert list(empty.iterdir()) == []  # never writes into a weights folder
    assert [p.name for p in got.parent.iterdir()] == [remote.name]  # no temp file left
    # Second call: served from the cache, no request.
    assert weights.resolve(remote, empty) == got and len(asked) == 1


def test_failed_download_leaves_no_partial_file(tmp_path, monkeypatch, weights_server):
    url, _ = weights_server
    monkeypatch.setenv("MTL_WEIGHTS_URL", url)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    with pytest.raises(WeightsUnavailable, match="404"):
        weights.resolve(weights.RemoteFile("nope.h5", "https://example.invalid/nope.h5"), tmp_path)
    assert list((tmp_path / "kh" / "models").iterdir()) == []


def test_no_download_allowed_names_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.delenv("MTL_WEIGHTS_URL")
    with pytest.raises(WeightsUnavailable) as exc:
        weights.resolve(weights.class_index_file(), tmp_path, download=False)
    assert "imagenet_class_index.json" in exc.value.message
    assert weights.CLASS_INDEX_URL in exc.value.message
    assert os.fspath(tmp_path) in exc.value.message
    assert Path(exc.value.message).name  # one line
    assert "\n" not in exc.value.message

"""Reproductions of the adversarial run's reliability and security findings, one per defect.

Each test failed (or hung) before its fix. Keras is imported only by the model-file
tests at the end; everything else runs on fetch's fake engine or plain files.
"""

from __future__ import annotations

import http.server
import stat
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtl.cli import app
from mtl.errors import WeightsUnavailable


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def no_length_server() -> Iterator[dict[str, bytes]]:
    """Serves bodies with no Content-Length (the end is the connection closing)."""
    bodies: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            body = bodies.get(self.path.rsplit("/", 1)[-1])
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    bodies["_base"] = f"http://127.0.0.1:{server.server_address[1]}/w/".encode()
    try:
        yield bodies
    finally:
        server.shutdown()
        server.server_close()


def test_a_weights_download_cut_short_without_length_is_not_kept(
    tmp_path, monkeypatch, no_length_server
):
    from mtl.assets import weights
    from mtl.model import backbones
    from tests.conftest import WEIGHTS

    remote = backbones.weights_file("mobilenet", 0.75, include_top=False)
    whole = (WEIGHTS / remote.name).read_bytes()
    no_length_server[remote.name] = whole[: len(whole) // 2]  # starts with the signature
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.setenv("MTL_WEIGHTS_URL", no_length_server["_base"].decode())
    with pytest.raises(WeightsUnavailable, match="truncated"):
        weights.resolve(remote, tmp_path / "empty")
    assert list((tmp_path / "kh" / "models").iterdir()) == []
    no_length_server[remote.name] = whole  # the mirror is fixed: the next run works
    assert weights.resolve(remote, tmp_path / "empty").read_bytes() == whole


@pytest.mark.parametrize("where", ["weights_dir", "cache"])
@pytest.mark.parametrize("cut", ["html", "truncated"])
def test_a_corrupt_weights_file_on_disk_is_named(tmp_path, monkeypatch, where, cut):
    from mtl.assets import weights
    from mtl.model import backbones
    from tests.conftest import WEIGHTS

    remote = backbones.weights_file("mobilenet", 0.75, include_top=False)
    whole = (WEIGHTS / remote.name).read_bytes()
    body = b"<html>captive portal</html>" if cut == "html" else whole[:100_000]
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.delenv("MTL_WEIGHTS_DIR", raising=False)
    folder = tmp_path / ("w" if where == "weights_dir" else "kh/models")
    folder.mkdir(parents=True)
    (folder / remote.name).write_bytes(body)
    with pytest.raises(WeightsUnavailable) as info:
        weights.resolve(remote, tmp_path / "w" if where == "weights_dir" else None)
    assert info.value.exit_code == 2
    assert str(folder / remote.name) in info.value.message
    assert ("not an HDF5 file" if cut == "html" else "truncated") in info.value.message


def _tiny(outputs: int, names: list[str]):  # type: ignore[no-untyped-def]
    import keras

    from mtl.model.layers import ClassNames

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    x = keras.layers.Dense(outputs, activation="softmax")(x)
    return keras.Model(inputs, ClassNames(names, mtl_version="9.0.0")(x))


def _rewrite_config(src: Path, dst: Path, edit) -> None:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                data = edit(data)
            zout.writestr(item.filename, data, compresslevel=1)


@pytest.fixture(scope="module")
def hostile_models(tmp_path_factory, offline_env) -> dict[str, Path]:
    from mtl.model.modelio import save_model

    folder = tmp_path_factory.mktemp("hostile")
    good = save_model(_tiny(2, ["a", "b"]), folder / "good.keras")
    models = {"good": good}
    models["fewer_names"] = save_model(_tiny(3, ["a", "b"]), folder / "fewer.keras")
    models["huge_input"] = folder / "huge.keras"
    _rewrite_config(
        good,
        models["huge_input"],
        lambda d: d.replace(b"[null, 8, 8, 3]", b"[null, 60000, 60000, 3]"),
    )
    models["bomb"] = folder / "bomb.keras"  # 65 MiB of JSON white space in a small zip
    _rewrite_config(good, models["bomb"], lambda d: d + b" " * (65 * 2**20))
    return models


def test_hostile_model_files_exit_2_with_the_reason(hostile_models, sample_photos):
    image = str(sample_photos["coffee"])
    assert b"60000, 60000" in zipfile.ZipFile(hostile_models["huge_input"]).read("config.json")
    assert hostile_models["bomb"].stat().st_size < 2**20
    for kind, expected in (
        ("fewer_names", "has 2 class names but predicts 3 classes"),
        ("huge_input", "declares an input of 60000x60000 pixels"),
        ("bomb", "config.json inflates to"),
    ):
        code, stdout, stderr = invoke("predict", str(hostile_models[kind]), image)
        assert code == 2, (kind, stdout, stderr)
        assert expected in stderr and "unexpected" not in stderr, stderr
    code, stdout, stderr = invoke("predict", str(hostile_models["good"]), image, "--json")
    assert code == 0, stderr
    assert stat.S_IMODE(hostile_models["good"].stat().st_mode) == 0o644  # 17

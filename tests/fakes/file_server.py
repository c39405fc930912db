"""A loopback HTTP server for whole files (weights, dataset zips), recording what was asked.

    with FileServer() as server:
        server.add("/datasets/hymenoptera_data.zip", zip_bytes)
        os.environ["MTL_DATASETS_URL"] = server.url("/datasets/")

``cut=N`` announces the full Content-Length but sends only N bytes, then closes:
a connection that drops in the middle of a download.

Hostile mirrors (:meth:`FileServer.add` options, and :func:`wrong_hdf5`):

- ``trickle=S``: one byte every S seconds (Content-Length announced), a mirror that
  a between-bytes timeout never catches;
- ``endless=True``: zeros for ever, no Content-Length;
- ``wrong_hdf5()``: a valid HDF5 file in Keras' weights layout holding other layers.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from tests.fakes.loopback import LoopbackServer


@dataclass(frozen=True)
class Served:
    body: bytes
    cut: int | None = None
    trickle: float = 0.0
    endless: bool = False


def wrong_hdf5() -> bytes:
    """A small, valid Keras-style weights file: one Dense layer, not a MobileNet."""
    import h5py
    import numpy as np

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["layer_names"] = [b"dense"]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.4"
        g = f.create_group("dense")
        g.attrs["weight_names"] = [b"dense/kernel:0", b"dense/bias:0"]
        g.create_dataset("dense/kernel:0", data=np.ones((4, 2), np.float32))
        g.create_dataset("dense/bias:0", data=np.zeros((2,), np.float32))
    return buf.getvalue()


class FileServer(LoopbackServer):
    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.asked: list[str] = []
        super().__init__(_handler(self))

    def add(
        self,
        path: str,
        body: bytes = b"",
        *,
        cut: int | None = None,
        trickle: float = 0.0,
        endless: bool = False,
    ) -> str:
        self.files[path] = Served(body, cut, trickle, endless)
        return self.url(path)


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            with server._lock:
                server.asked.append(self.path)
            if self.path not in server.files:
                self.send_error(404)
                return
            served = server.files[self.path]
            body = served.body if served.cut is None else served.body[: served.cut]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if not served.endless:
                self.send_header("Content-Length", str(len(served.body)))
            self.end_headers()
            self.close_connection = True
            try:
                if served.endless:
                    while True:
                        self.wfile.write(bytes(1 << 16))
                elif served.trickle:
                    for i in range(len(body)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(served.trickle)
                else:
                    self.wfile.write(body)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should

    return Handler

"""A loopback HTTP server for whole files (weights, dataset zips), recording what was asked.

    with FileServer() as server:
        server.add("/datasets/hymenoptera_data.zip", zip_bytes)
        os.environ["MTL_DATASETS_URL"] = server.url("/datasets/")

``cut=N`` announces the full Content-Length but sends only N bytes, then closes:
a connection that drops in the middle of a download.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

from tests.fakes.loopback import LoopbackServer


class FileServer(LoopbackServer):
    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, int | None]] = {}
        self.asked: list[str] = []
        super().__init__(_handler(self))

    def add(self, path: str, body: bytes, *, cut: int | None = None) -> str:
        self.files[path] = (body, cut)
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
            body, cut = server.files[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if cut is None else body[:cut])
            self.wfile.flush()
            self.close_connection = True

    return Handler

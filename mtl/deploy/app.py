"""The HTTP side of ``mtl serve``: the FastAPI app, and reading photos out of requests.

Imported only by :func:`mtl.deploy.server.serve` (and tests), once the serve extra is
known to be there: it needs FastAPI, Starlette and python-multipart at import. The
handlers' annotations are read by FastAPI at run time, so ``Request`` is a real name here
(no ``from __future__ import annotations``).
"""

import asyncio
import html
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException

from mtl._version import __version__
from mtl.deploy.page import render_page
from mtl.deploy.service import (
    FIELD,
    RAW_TYPES,
    Limits,
    RequestError,
    Service,
    Upload,
)
from mtl.files import dumps_json

# A body over the limit is still read (and thrown away) up to this much, so that a client
# that sends before it reads (urllib, requests) sees the 413 instead of a reset connection.
DRAIN_BYTES = 256 << 20

# --- reading requests -------------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes (413 past it)."""
    declared = request.headers.get("content-length")
    size = None
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(400, f"bad Content-Length header: {declared!r}") from None
    too_large = f"the request body is over the limit of {limit:,} bytes (mtl serve --max-body)"
    if (
        size is not None
        and size > limit
        and (
            size > limit + DRAIN_BYTES
            or "100-continue" in request.headers.get("expect", "").lower()
        )
    ):
        raise RequestError(413, too_large)  # curl waits for "100 Continue": it sends nothing
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received <= limit:
            chunks.append(chunk)
        elif received > limit + DRAIN_BYTES:
            break
        else:
            chunks.clear()  # keep reading, keep nothing: the client then reads the 413
    if received > limit:
        raise RequestError(413, too_large)
    return b"".join(chunks)


def media_type(request: Request) -> tuple[str, dict[bytes, bytes]]:
    value, params = parse_options_header(request.headers.get("content-type", ""))
    return value.decode("latin-1").lower(), params


async def read_uploads(request: Request, limits: Limits, name: str | None) -> list[Upload]:
    """The photos of a ``POST /predict``: multipart ``file`` fields in order, or the raw body."""
    kind, params = media_type(request)
    if kind == "multipart/form-data":
        body = await read_body(request, limits.max_body)
        return parse_multipart(body, params.get(b"boundary"), limits.max_files)
    if kind and not kind.startswith("image/") and kind not in RAW_TYPES:
        hint = (
            " (curl --data-binary sends that unless told: add -H 'Content-Type: image/jpeg')"
            if kind == "application/x-www-form-urlencoded"
            else ""
        )
        raise RequestError(
            415,
            f"unsupported Content-Type {kind!r}{hint}: send photos as multipart/form-data "
            f"fields named {FIELD!r}, or one photo as the body with Content-Type image/* "
            "or application/octet-stream",
        )
    body = await read_body(request, limits.max_body)
    if not body:
        raise RequestError(
            400,
            f"empty request body: send a photo as the body, or as multipart/form-data "
            f"fields named {FIELD!r}",
        )
    return [Upload(name or "body", body)]


def parse_multipart(body: bytes, boundary: bytes | None, max_files: int) -> list[Upload]:
    """multipart/form-data in memory: every ``file`` field, in order."""
    if not boundary:
        raise RequestError(400, "multipart/form-data without a boundary in its Content-Type")
    parts: list[tuple[dict[str, bytes], bytearray]] = []
    header = {"field": bytearray(), "value": bytearray()}
    ended = []

    def on_part_begin() -> None:
        parts.append(({}, bytearray()))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        parts[-1][0][header["field"].decode("latin-1").lower()] = bytes(header["value"])
        header["field"], header["value"] = bytearray(), bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if len(parts) > max_files:
            return  # refused below; keep no more bytes
        parts[-1][1].extend(data[start:end])

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_end": lambda: ended.append(True),
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise RequestError(400, f"malformed multipart/form-data body: {exc}") from None
    if not ended:
        raise RequestError(400, "malformed multipart/form-data body: no closing boundary")
    uploads = []
    for i, (headers, data) in enumerate(parts):
        _, disposition = parse_options_header(headers.get("content-disposition", b""))
        field_name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if field_name != FIELD:
            raise RequestError(
                400,
                f"unexpected form field {field_name!r}: send each photo as a field named "
                f"{FIELD!r} (curl -F {FIELD}=@photo.jpg)",
            )
        filename = disposition.get(b"filename", b"").decode("utf-8", "replace")
        uploads.append(Upload(filename or f"{FIELD}[{i}]", bytes(data)))
    if len(uploads) > max_files:
        raise RequestError(
            413,
            f"too many files: {len(uploads)} in one request, the limit is {max_files} "
            "(mtl serve --max-files)",
        )
    if not uploads:
        raise RequestError(
            400, f"no photos: send them as multipart/form-data fields named {FIELD!r}"
        )
    return uploads


PREDICT_BODY = {
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    FIELD: {"type": "array", "items": {"type": "string", "format": "binary"}}
                },
                "required": [FIELD],
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
    "required": True,
}


def create_app(service: Service) -> FastAPI:
    """The ASGI app: ``/``, ``/predict``, ``/healthz``, ``/metadata`` and FastAPI's
    ``/docs`` (OpenAPI). The service's threads run for the app's lifespan."""

    def as_json(data: Any, status: int = 200) -> Response:
        return Response(dumps_json(data), status_code=status, media_type="application/json")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        service.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)  # waits for the model's current pass

    p = service.predictor
    app = FastAPI(
        title=f"mtl serve: {p.path.name}",
        version=__version__,
        description=(
            f"A {p.kind} model of {len(p.class_names)} classes "
            f"({', '.join(p.class_names[:10])}{', ...' if len(p.class_names) > 10 else ''}), "
            "served by mtl. POST photos to /predict; the answer is what `mtl predict --json` "
            "prints for them."
        ),
        lifespan=lifespan,
    )

    @app.exception_handler(RequestError)
    async def refused(_: Request, exc: RequestError) -> Response:
        return as_json(exc.to_json(), exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        problems = [
            f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
            for e in exc.errors()
        ]
        return as_json({"error": "; ".join(problems)}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        return as_json({"error": str(exc.detail)}, exc.status_code)

    @app.exception_handler(Exception)
    async def failed(_: Request, exc: Exception) -> Response:
        # The model or the server broke, not the request: a 500 that says so (and uvicorn
        # logs the traceback); the next request is served.
        return as_json({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)

    @app.get("/", response_class=HTMLResponse, summary="A page to drop photos on")
    async def page() -> HTMLResponse:
        return HTMLResponse(render_page(html.escape(p.path.name), p.kind, p.class_names))

    @app.get("/healthz", summary="Liveness: the model is loaded and the server answers")
    async def healthz() -> Response:
        return as_json({"status": "ok", "model": p.path.name})

    @app.get("/metadata", summary="The model: class names, input, fit, sha256, mtl version")
    async def metadata() -> Response:
        return as_json(service.metadata())

    @app.post(
        "/predict",
        summary="Predict the classes of photos",
        description=(
            f"One or more photos as multipart/form-data fields named `{FIELD}` "
            f"(`curl -F {FIELD}=@a.jpg -F {FIELD}=@b.jpg`), or one photo as the raw body "
            "(`curl --data-binary @a.jpg -H 'Content-Type: image/jpeg'`). The answer is a "
            'list in upload order of `{"file": NAME, "predictions": [{"rank", "label", '
            '"probability"}, ...]}`, exactly what `mtl predict --json` prints. Photos that '
            "cannot be used: 422 naming each; a body over the limit: 413; a wrong "
            "Content-Type: 415."
        ),
        openapi_extra={"requestBody": PREDICT_BODY},
    )
    async def predict(
        request: Request,
        k: int = Query(1, ge=1, description="How many classes per photo (mtl predict --top-k)."),
        name: str | None = Query(None, description="The file name reported for a raw body."),
    ) -> Response:
        uploads = await read_uploads(request, service.limits, name)
        return as_json(await service.predict(uploads, k))

    return app

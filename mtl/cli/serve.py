"""`mtl serve`: a trained model over HTTP (a drop-a-photo page and a JSON API)."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from mtl.cli._common import Labels, ModelPath, Quiet, Verbose, call, err, info, shown, warn

EXAMPLES = """
[bold]Examples[/bold]

  mtl serve runs/train   [dim](http://127.0.0.1:8000/: the page)[/dim]

  mtl serve model.tflite --port 9000   [dim](no TensorFlow needed)[/dim]

  mtl serve model.onnx --host 0.0.0.0 --max-body 8MB

  curl -F file=@crow.jpg -F file=@tit.jpg 'localhost:8000/predict?k=3'

  curl --data-binary @crow.jpg -H 'Content-Type: image/jpeg' localhost:8000/predict

The answer is what mtl predict --json prints for the same photos.
Ctrl-C or SIGTERM stops it (exit 0) once the requests in flight are answered.
Needs the serve extra: pip install 'mtl\\[serve]'.
"""

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 1 << 10, "MIB": 1 << 20}
_UNITS["GIB"] = 1 << 30


def parse_size(text: str | int) -> int:
    """``32MB``, ``8MiB``, ``500000``: bytes."""
    if isinstance(text, int):  # the default
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _UNITS:
        raise typer.BadParameter(f"not a size: {text!r} (for example 32MB, 8MiB or 1000000)")
    return int(float(match.group(1)) * _UNITS[unit])


Host = Annotated[
    str,
    typer.Option("--host", help="Address to listen on (0.0.0.0: every interface)."),
]
Port = Annotated[int, typer.Option("--port", "-p", help="Port to listen on (0: a free one).")]
MaxBody = Annotated[
    int,
    typer.Option(
        "--max-body",
        parser=parse_size,
        metavar="SIZE",
        help="Largest request body (32MB, 8MiB, bytes); over it: 413.",
        show_default="32MiB",
    ),
]
MaxFiles = Annotated[
    int, typer.Option("--max-files", help="Most photos in one request; over it: 413.")
]
MaxBatch = Annotated[
    int, typer.Option("--max-batch", help="Most photos in one model pass (requests batched).")
]
BatchWait = Annotated[
    float,
    typer.Option(
        "--batch-wait-ms", help="How long the model waits for more photos to batch, in ms."
    ),
]


def register(app: typer.Typer) -> None:
    from mtl.deploy import server as core

    @app.command("serve", epilog=EXAMPLES)
    def serve(
        model: ModelPath,
        host: Host = core.DEFAULT_HOST,
        port: Port = core.DEFAULT_PORT,
        labels: Labels = None,
        max_body: MaxBody = core.DEFAULT_MAX_BODY,
        max_files: MaxFiles = core.DEFAULT_MAX_FILES,
        max_batch: MaxBatch = core.MAX_BATCH,
        batch_wait_ms: BatchWait = core.BATCH_WAIT_S * 1000,
        quiet: Quiet = False,
        verbose: Verbose = False,
    ) -> None:
        """Serve a model over HTTP: a page to drop photos on, and a JSON API.

        POST /predict takes photos (multipart fields named file, or one photo as the
        body) and answers what mtl predict --json prints; GET /healthz, GET /metadata
        (class names, input, fit, sha256) and the OpenAPI docs at /docs. The model
        is opened once, at start, exactly as mtl predict opens it.
        """

        def ready(url: str, service: core.Service) -> None:
            # Always shown (even with -q): it is the one line that says where to go.
            err.print(
                f"serving {shown(core.model_label(service))} at [bold]{url}[/bold] "
                "(the page: /, the API: POST /predict, its docs: /docs); Ctrl-C stops",
                highlight=False,
            )
            if host not in ("127.0.0.1", "localhost", "::1"):
                warn(f"listening on {host}: anyone who can reach this machine can use the model")

        report = call(
            core.serve,
            model,
            host=host,
            port=port,
            labels=labels,
            max_body=max_body,
            max_files=max_files,
            max_batch=max_batch,
            batch_wait=batch_wait_ms / 1000,
            access_log=verbose,
            on_ready=ready,
        )
        how = f" ({report.stopped_by})" if report.stopped_by else ""
        info(
            f"stopped{how}: {report.requests} request(s), {report.images} photo(s) in "
            f"{report.passes} model pass(es)"
        )

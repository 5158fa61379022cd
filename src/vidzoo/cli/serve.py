"""``vidzoo serve``: the HTTP API and the web page (needs the ``serve`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vidzoo.cli._common import err_console, user_errors

LIMITS = "Limits"
_MISSING = "vidzoo serve needs FastAPI and uvicorn: pip install 'vidzoo[serve]'"


@user_errors
def serve(
    model_files: List[Path] = typer.Argument(..., help="vidzoo model files, or .onnx files `vidzoo export` wrote "
                                             "(run by ONNX Runtime); each is served under its file name without "
                                             "the suffix (the first is the default)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, help="Worker processes that decode and predict (each loads the models); "
                                "also the number of predictions running at once."),
    queue: int = typer.Option(4, min=0, help="Requests that may wait for a worker; more get 503 with Retry-After."),
    threads: int = typer.Option(0, min=0, help="torch threads per worker (0: CPU cores / workers)."),
    engine: str = typer.Option("auto", help="How the models run, as for `vidzoo predict`: auto|eager|compile|"
                               "onnxruntime (auto: measured once per worker at start, then cached)."),
    precision: str = typer.Option("auto", help="auto|fp32|bf16|fp16, as for `vidzoo predict`."),
    max_upload_mb: float = typer.Option(200, min=0.001, rich_help_panel=LIMITS,
                                        help="Largest upload, in MiB (refused while it arrives)."),
    max_duration: float = typer.Option(600, min=0.001, rich_help_panel=LIMITS, help="Longest video, in seconds."),
    max_pixels: Optional[int] = typer.Option(None, min=1, rich_help_panel=LIMITS,
                                             help="Most pixels per frame (default: 4096x2304)."),
    max_windows: int = typer.Option(1000, min=1, rich_help_panel=LIMITS, help="Most timeline windows per request."),
    decode_timeout: float = typer.Option(60, min=0.001, rich_help_panel=LIMITS,
                                         help="Seconds a request's decoding and prediction may take; the worker "
                                         "is killed and replaced after that."),
    upload_timeout: float = typer.Option(300, min=0.001, rich_help_panel=LIMITS,
                                         help="Seconds an upload may take to arrive (slow clients hold a place)."),
    containers: Optional[str] = typer.Option(None, rich_help_panel=LIMITS, help="Accepted containers, by content, "
                                             "comma-separated among mp4,matroska,avi,mpegts (default: all)."),
    codecs: Optional[str] = typer.Option(None, rich_help_panel=LIMITS, help="Accepted video codecs, "
                                         "comma-separated FFmpeg names (default: h264,hevc,vp8,vp9,av1,mpeg4,...)."),
) -> None:
    """An HTTP API (POST /v1/predict, GET /v1/models, /healthz, /readyz, OpenAPI at /docs) and a
    web page at / to try the models on your videos. Predictions are `vidzoo predict`'s; uploads
    are decoded in worker processes under a time limit and deleted after each request. Logs one
    JSON line per request on stderr."""
    import logging

    try:
        import uvicorn

        from vidzoo.serve import ServeSettings, create_app
    except ImportError as e:
        raise ImportError(f"{_MISSING} ({e})") from e
    from vidzoo.data.video import DEFAULT_MAX_PIXELS

    settings = ServeSettings(
        max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_duration_s=max_duration,
        max_pixels=max_pixels or DEFAULT_MAX_PIXELS, max_windows=max_windows, decode_timeout_s=decode_timeout,
        upload_timeout_s=upload_timeout, workers=workers, queue=queue, threads=threads, engine=engine,
        precision=precision,
    )
    if containers:
        settings.containers = tuple(c.strip() for c in containers.split(",") if c.strip())
    if codecs:
        settings.codecs = tuple(c.strip() for c in codecs.split(",") if c.strip())
    app = create_app(model_files, settings)
    access = logging.getLogger("vidzoo.serve.access")
    handler = logging.StreamHandler()  # the bare JSON line, one per request
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    err_console.print(f"serving {', '.join(p.stem for p in model_files)} on http://{host}:{port}/ "
                      f"(API docs: /docs)", highlight=False)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command(name="serve")(serve)

"""The HTTP app: `create_app(models, settings)` returns a FastAPI app; `vidzoo serve` runs it
with uvicorn.

A request to ``POST /v1/predict`` is counted in (at most ``workers + queue`` at once, else 503
with Retry-After), its upload streamed to a private file (size limit enforced as it arrives), its
first bytes checked for a video container, then predicted by a worker process under the decode
time limit (`vidzoo.serve.worker`). The file is deleted when the request ends, however it ends.
Each request logs one JSON line on the ``vidzoo.serve.access`` logger.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect

from vidzoo.data.video import DEFAULT_MAX_PIXELS
from vidzoo.model_file import read_model_metadata
from vidzoo.serve.upload import MAX_FRAMING_BYTES, UploadError, mp4_truncation, receive_upload, sniff_container
from vidzoo.serve.worker import CONTAINERS, DEFAULT_CODECS, JobLimits, make_pool, ping, predict_job

__all__ = ["ServeSettings", "ServedModel", "create_app"]

access_log = logging.getLogger("vidzoo.serve.access")
STATIC = Path(__file__).with_name("static")
MB = 1024 * 1024


@dataclass
class ServeSettings:
    """The server's limits and resources (all configurable from ``vidzoo serve``)."""

    max_upload_bytes: int = 200 * MB
    max_duration_s: float = 600.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_windows: int = 1000
    decode_timeout_s: float = 60.0
    upload_timeout_s: float = 300.0  # seconds a request's body may take to arrive
    workers: int = 1  # worker processes: predictions (decoding included) running at once
    queue: int = 4  # requests that may wait for a worker; beyond workers + queue: 503
    threads: int = 0  # torch threads per worker; 0: the CPU count divided by `workers`
    engine: str = "auto"  # how the models run, as `vidzoo predict --engine` (vidzoo.engine)
    precision: str = "auto"
    containers: tuple[str, ...] = tuple(dict.fromkeys(CONTAINERS.values()))
    codecs: tuple[str, ...] = DEFAULT_CODECS
    upload_root: Optional[str] = None  # where the private upload directory is made; None: the system's

    def job_limits(self) -> JobLimits:
        return JobLimits(self.max_duration_s, self.max_pixels, self.max_windows, tuple(self.containers),
                         tuple(self.codecs))

    def check(self) -> None:
        for name in ("max_upload_bytes", "max_duration_s", "max_pixels", "max_windows", "decode_timeout_s",
                     "upload_timeout_s", "workers"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.queue < 0 or self.threads < 0:
            raise ValueError("queue and threads must be 0 or more")
        from vidzoo.engine import ENGINES, PRECISIONS

        if self.engine not in ENGINES or self.precision not in PRECISIONS:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)} and precision one of {', '.join(PRECISIONS)}, "
                             f"got {self.engine!r} and {self.precision!r}")
        unknown = sorted(set(self.containers) - set(CONTAINERS.values()))
        if unknown:
            raise ValueError(f"unknown containers {unknown}; known: {sorted(set(CONTAINERS.values()))}")


@dataclass
class ServedModel:
    """A model file (or an exported ``.onnx`` file) the server answers for, with its description
    read from the file's header (the ONNX file's metadata)."""

    name: str
    path: str
    file_sha256: str
    metadata: dict[str, Any] = field(repr=False)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ServedModel:
        path = Path(path)
        if path.suffix.lower() == ".onnx":  # `vidzoo export --format onnx`: run by ONNX Runtime
            from vidzoo.export import read_export_metadata

            metadata = read_export_metadata(path)  # raises ExportError for a file vidzoo did not export
        else:
            metadata = read_model_metadata(path)  # raises ModelFileError for anything else
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(MB), b""):
                digest.update(block)
        return cls(path.stem, str(path.resolve()), digest.hexdigest(), metadata)

    def describe(self) -> dict[str, Any]:
        meta = self.metadata
        return {"name": self.name, "file_sha256": self.file_sha256, "tensors_sha256": meta.get("tensors_sha256"),
                "arch": meta.get("arch"), "classes": meta.get("classes"), "clip": meta.get("clip"),
                "history": meta.get("history"), "metrics": (meta.get("extra") or {}).get("metrics"),
                "extra": meta.get("extra"), "vidzoo_version": meta.get("vidzoo_version")}


class _Error(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


# What each worker-side error code answers: a client's problem, not the server's.
_JOB_STATUS = {"not_a_video": 415, "unsupported_container": 415, "unsupported_codec": 415}


def create_app(models: Sequence[str | os.PathLike], settings: ServeSettings | None = None) -> FastAPI:
    """A FastAPI app serving the model files `models` (names: the file stems, unique)."""
    settings = settings or ServeSettings()
    settings.check()
    served = [ServedModel.from_file(p) for p in models]
    if not served:
        raise ValueError("give at least one model file")
    by_name = {m.name: m for m in served}
    if len(by_name) != len(served):
        raise ValueError(f"model files must have different names (file stems): {[m.name for m in served]}")
    threads = settings.threads or max(1, (os.cpu_count() or 1) // settings.workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        state.upload_dir = Path(tempfile.mkdtemp(prefix="vidzoo-serve-", dir=settings.upload_root))
        os.chmod(state.upload_dir, 0o700)
        state.pool = make_pool({m.name: m.path for m in served}, settings.workers, threads, settings.engine,
                               settings.precision)
        # Start every worker (importing torch, loading the models) now, not on the first request.
        state.warmup = [asyncio.wrap_future(state.pool.schedule(ping)) for _ in range(settings.workers)]
        try:
            yield
        finally:
            state.pool.stop()
            state.pool.join()
            shutil.rmtree(state.upload_dir, ignore_errors=True)

    app = FastAPI(title="vidzoo", summary="Video classification with vidzoo models.", lifespan=lifespan,
                  version=_version())
    app.state.settings = settings
    app.state.models = by_name
    app.state.active = 0  # requests counted in (running, uploading or waiting for a worker)
    app.state.job_seconds = 2.0  # running mean of a job's duration, for Retry-After
    app.state.job = predict_job  # the worker's entry point (tests swap it for a hanging one)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def log_requests(request: Request, call_next):
        request.state.id = uuid.uuid4().hex
        request.state.log = {}
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            # A bug, not a bad upload: answered 500 by the server, but still one log line.
            response = JSONResponse({"error": "internal", "message": "the server failed on this request",
                                     "request_id": request.state.id}, status_code=500)
            access_log.exception("request %s failed", request.state.id)
        response.headers["X-Request-ID"] = request.state.id
        line = {"id": request.state.id, "method": request.method, "path": request.url.path,
                "status": response.status_code,
                "request_bytes": request.state.log.pop("body_bytes", int(request.headers.get("content-length") or 0)),
                "response_bytes": int(response.headers.get("content-length") or 0),
                "seconds": round(time.perf_counter() - started, 4), **request.state.log}
        access_log.info(json.dumps(line))
        return response

    @app.exception_handler(_Error)
    async def error_answer(request: Request, error: _Error):
        request.state.log["error"] = error.code
        return JSONResponse({"error": error.code, "message": error.message, "request_id": request.state.id},
                            status_code=error.status, headers=error.headers)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", summary="The process is up.")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="Every worker process has started and loaded the models.")
    async def readyz():
        ready = all(f.done() and not f.exception() for f in app.state.warmup)
        return JSONResponse({"ready": ready, "workers": settings.workers}, status_code=200 if ready else 503)

    @app.get("/v1/models", summary="The models served: classes, clip description, history, metrics.")
    async def list_models():
        return {"models": [m.describe() for m in served], "limits": _public_limits(settings)}

    @app.post(
        "/v1/predict",
        summary="Classify an uploaded video (multipart field 'file').",
        openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"}}}}}}},
    )
    async def predict(
        request: Request,
        model: Optional[str] = Query(None, description="Model name (see /v1/models); default: the first."),
        top_k: int = Query(5, ge=1, le=1000, description="Classes in `top`."),
        clips: Optional[int] = Query(None, ge=1, le=100, description="Clips per video (default: the model's)."),
        window: Optional[float] = Query(None, gt=0, le=3600, description="Timeline: seconds per window."),
        stride: Optional[float] = Query(None, gt=0, le=3600, description="Timeline: seconds between windows "
                                        "(default: window)."),
    ):
        state = app.state
        name = model or served[0].name
        if name not in by_name:
            raise _Error(404, "unknown_model", f"no model {name!r}; served: {', '.join(by_name)}")
        if stride is not None and window is None:
            raise _Error(422, "bad_option", "stride needs window")
        if state.active >= settings.workers + settings.queue:
            wait = math.ceil(state.job_seconds * (1 + settings.queue / settings.workers))
            raise _Error(503, "busy", f"{state.active} requests are in progress; try again in {wait} s",
                         headers={"Retry-After": str(wait)})
        declared = int(request.headers.get("content-length") or 0)
        if declared > settings.max_upload_bytes + MAX_FRAMING_BYTES:
            raise _Error(413, "too_large", f"the upload ({declared} bytes) passes the limit of "
                         f"{settings.max_upload_bytes} bytes")
        state.active += 1
        started = time.perf_counter()
        path = state.upload_dir / f"{request.state.id}.upload"
        try:
            try:
                # A client that trickles its upload must not hold a place for ever.
                upload = await asyncio.wait_for(
                    receive_upload(request.stream(), request.headers.get("content-type"), path,
                                   settings.max_upload_bytes),
                    settings.upload_timeout_s)
            except asyncio.TimeoutError:
                raise _Error(408, "upload_timeout", f"the upload took longer than {settings.upload_timeout_s:g} s") \
                    from None
            except UploadError as e:
                raise _Error(e.status, e.code, e.message) from None
            except ClientDisconnect:
                raise _Error(400, "client_disconnected", "the client went away during the upload") from None
            request.state.log.update(body_bytes=upload.body_bytes, upload_bytes=upload.size, model=name)
            uploaded = time.perf_counter()
            with open(path, "rb") as f:
                family = sniff_container(f.read(512))
            if family is None:
                raise _Error(415, "not_a_video", f"{upload.filename or 'the upload'} is not a video container "
                             f"(accepted: {', '.join(settings.containers)})")
            if family not in settings.containers:
                raise _Error(415, "unsupported_container", f"{family} files are not accepted "
                             f"(accepted: {', '.join(settings.containers)})")
            cut = mp4_truncation(path) if family == "mp4" else None
            if cut:
                raise _Error(422, "truncated", f"{upload.filename or 'the upload'}: {cut}")
            options = {"top_k": top_k, "clips": clips, "window": window, "stride": stride}
            result = await _run_job(state, settings, name, str(path), options)
            finished = time.perf_counter()
        finally:
            state.active -= 1
            path.unlink(missing_ok=True)
        if "error" in result:
            status = _JOB_STATUS.get(result["error"], 422)
            # FFmpeg's messages may quote the file: the server's paths stay private.
            message = result["message"].replace(str(path), "the upload").replace(str(state.upload_dir), "")
            raise _Error(status, result["error"], f"{upload.filename or 'the upload'}: {message}")
        state.job_seconds = 0.8 * state.job_seconds + 0.2 * (finished - uploaded)
        timings = {"upload_s": uploaded - started, **result["timings"], "total_s": finished - started}
        timings["wait_s"] = max(0.0, finished - uploaded - timings["decode_s"] - timings["inference_s"])
        request.state.log.update({k: round(v, 4) for k, v in timings.items()})
        prediction = result["prediction"]
        m = by_name[name]
        return {
            "request_id": request.state.id,
            "model": {"name": m.name, "file_sha256": m.file_sha256, "arch": m.metadata.get("arch"),
                      "engine": result["engine"]},
            "upload": {"filename": upload.filename, "bytes": upload.size},
            "top": prediction["top"], "classes": prediction["classes"], "probabilities": prediction["probabilities"],
            "timeline": result["timeline"], "video": result["video"], "timings": timings,
        }

    return app


async def _run_job(state, settings: ServeSettings, name: str, path: str, options: dict) -> dict:
    """The worker's answer, or an error dict when the worker ran out of time or died."""
    from pebble import ProcessExpired

    future = state.pool.schedule(state.job, args=(name, path, options, settings.job_limits()),
                                 timeout=settings.decode_timeout_s)
    try:
        return await asyncio.wrap_future(future)
    except TimeoutError:
        return {"error": "decode_timeout", "message": f"decoding and predicting took longer than the limit of "
                f"{settings.decode_timeout_s:g} s"}
    except ProcessExpired as e:
        return {"error": "decoder_crashed", "message": f"the decoder crashed on this file (exit code {e.exitcode})"}
    finally:
        future.cancel()  # the client went away while waiting: free the worker


def _public_limits(settings: ServeSettings) -> dict[str, Any]:
    out = asdict(settings)
    out.pop("upload_root")
    return out


def _version() -> str:
    from vidzoo import __version__

    return __version__

"""The server's worker processes: decode and predict one upload each, with a time limit.

Decoding strangers' files is the risky part of serving: a decoder can hang or crash on a crafted
file. So every prediction runs in a worker process of a `pebble.ProcessPool` (forked from a
fork server, never from the server itself, which holds torch's threads and locks), which loads
the models once. A job that runs past the time limit has its worker killed and replaced, and a
worker that dies (a segfault in a decoder) only fails its own job; the server never decodes. The job calls the same
`vidzoo.predict` functions as ``vidzoo predict``, so the answers are the command's answers.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["CONTAINERS", "DEFAULT_CODECS", "JobLimits", "JobError", "predict_job", "init_worker", "make_pool"]

# Container families the server can accept, by FFmpeg's demuxer name (``av.open(...).format.name``).
# The upload's first bytes are checked before FFmpeg sees it (`vidzoo.serve.upload.sniff_container`),
# and the demuxer FFmpeg then picks must agree.
CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "matroska", "avi": "avi", "mpegts": "mpegts"}
DEFAULT_CODECS = ("h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg2video", "mpeg1video", "mjpeg", "h263")

# FFmpeg names the decoder it picked, which for some codecs is an external library's.
DECODER_CODECS = {"libdav1d": "av1", "libaom-av1": "av1", "libvpx": "vp8", "libvpx-vp9": "vp9",
                  "libopenh264": "h264"}

_ENGINES: dict[str, Any] = {}  # model name -> vidzoo.engine.Engine, in each worker
_INFERENCE_SECONDS = [0.0]  # time in the engines' forward passes during the current job


@dataclass(frozen=True)
class JobLimits:
    """What a worker checks before it decodes more than the headers and the packet index."""

    max_duration_s: float
    max_pixels: int
    max_windows: int
    containers: tuple[str, ...]
    codecs: tuple[str, ...]


class JobError(Exception):
    """A problem with the upload, found in the worker: `code` names it for clients, `message`
    explains it (without the server's temporary path)."""

    def __init__(self, code: str, message: str):
        super().__init__(code, message)
        self.code, self.message = code, message


def init_worker(model_paths: dict[str, str], threads: int, engine: str = "eager", precision: str = "fp32") -> None:
    """Pool initializer: load every model once per worker process and build its inference engine
    as ``vidzoo predict`` does (`vidzoo.engine.build_engine`; ``auto`` measures, or reads the
    measurements cached by an earlier run)."""
    if not model_paths:
        return  # nothing to load: don't import torch
    import torch

    from vidzoo.engine import build_engine, load_inference_model

    torch.set_num_threads(threads)
    for name, path in model_paths.items():
        built = build_engine(load_inference_model(path), engine=engine, precision=precision)
        built._forward = _timed(built._forward)  # every engine's forward pass, whatever runs it
        _ENGINES[name] = built


def _timed(forward):
    def run(clips):
        started = time.perf_counter()
        try:
            return forward(clips)
        finally:
            _INFERENCE_SECONDS[0] += time.perf_counter() - started

    return run


def make_pool(model_paths: dict[str, str], workers: int, threads: int, engine: str = "eager",
              precision: str = "fp32"):
    """A pool of `workers` processes, each with the models loaded and `threads` torch threads."""
    from pebble import ProcessPool

    context = multiprocessing.get_context("forkserver")
    # The fork server imports torch and vidzoo once; each worker (and each replacement of a killed
    # one) is then forked from it in milliseconds instead of importing them again for seconds.
    # Forking it is safe where forking the server would not be: it has run no torch op, so it holds
    # no thread pool or lock.
    context.set_forkserver_preload(["vidzoo.serve.worker", "vidzoo.predict", "vidzoo.models.factory"])
    return ProcessPool(max_workers=workers, initializer=init_worker, initargs=(model_paths, threads, engine, precision),
                       context=context)


def ping() -> int:
    """A job that only proves a worker is up (with its models loaded)."""
    return os.getpid()


def predict_job(model_name: str, path: str, options: dict[str, Any], limits: JobLimits) -> dict[str, Any]:
    """Check the upload at `path` against `limits`, then predict it as ``vidzoo predict`` does.

    Returns ``{"prediction": ..., "timeline": ... or None, "video": ..., "timings": ...}``, or
    ``{"error": code, "message": ...}`` for a bad upload (exceptions whose constructors take more
    than a message do not survive the trip back to the server, so errors travel as data).
    """
    from vidzoo.data.sampling import seconds_to_frames, window_bounds
    from vidzoo.data.video import (
        CorruptVideoError,
        FrameTooLargeError,
        NotAVideoError,
        NoVideoStreamError,
        VideoDecodeError,
        VideoReader,
    )
    from vidzoo.predict import merge_segments, predict_video, predict_windows

    run = _ENGINES[model_name]
    _INFERENCE_SECONDS[0] = 0.0
    started = time.perf_counter()
    try:
        demuxer = _container_format(path)
        container = CONTAINERS.get(demuxer, demuxer)
        if container not in limits.containers:
            raise JobError("unsupported_container", f"{container} files are not accepted "
                           f"(accepted: {', '.join(limits.containers)})")
        with VideoReader(path, max_pixels=None) as video:
            info = video.info
        codec = DECODER_CODECS.get(info.codec, info.codec)
        if codec not in limits.codecs:
            raise JobError("unsupported_codec", f"video codec {codec} is not accepted "
                           f"(accepted: {', '.join(limits.codecs)})")
        if info.duration > limits.max_duration_s:
            raise JobError("too_long", f"the video lasts {info.duration:.1f} s, over the limit of "
                           f"{limits.max_duration_s:g} s")
        if info.width * info.height > limits.max_pixels:
            raise JobError("too_many_pixels", f"frames of {info.width}x{info.height} ({info.width * info.height} "
                           f"pixels) exceed the limit of {limits.max_pixels} pixels")
        window, stride = options.get("window"), options.get("stride")
        if window is not None:
            stride = stride or window
            # Counted as predict_windows will cut them (a window shorter than a frame is its ValueError).
            windows = len(window_bounds(info.num_frames, seconds_to_frames(window, info.fps),
                                        seconds_to_frames(stride, info.fps)))
            if windows > limits.max_windows:
                raise JobError("too_many_windows", f"window {window:g} s every {stride:g} s makes {windows} "
                               f"windows of this {info.duration:.1f} s video, over the limit of {limits.max_windows}")
        # The calls `vidzoo predict` makes with its engine.
        prediction = predict_video(run, path, top_k=options["top_k"], clips_per_video=options.get("clips"))
        timeline = None
        if window is not None:
            timeline = predict_windows(run, path, window=window, stride=stride, top_k=run.num_classes,
                                       batch_size=run.batch_size)
    except JobError as e:
        return {"error": e.code, "message": e.message}
    except NotAVideoError as e:
        return {"error": "not_a_video", "message": e.reason}
    except NoVideoStreamError as e:
        return {"error": "no_video_stream", "message": e.reason}
    except CorruptVideoError as e:
        return {"error": "truncated_or_corrupt", "message": e.reason}
    except FrameTooLargeError as e:
        return {"error": "too_many_pixels", "message": e.reason}
    except VideoDecodeError as e:
        return {"error": "undecodable", "message": e.reason}
    except ValueError as e:  # an option the model cannot take (e.g. windows shorter than a frame)
        return {"error": "bad_option", "message": str(e).replace(path, "the upload")}
    total = time.perf_counter() - started
    return {
        "prediction": prediction.to_dict() | {"path": None},
        "timeline": None if timeline is None else {
            "window_s": window, "stride_s": stride,
            "windows": [{"start_s": w.start_s, "end_s": w.end_s,
                         "probabilities": _in_class_order(w.top, prediction.classes)} for w in timeline],
            "segments": [s.to_dict() for s in merge_segments(timeline)],
        },
        "video": {"duration_s": info.duration, "frames": info.num_frames, "fps": info.fps, "width": info.width,
                  "height": info.height, "codec": codec, "container": container},
        "engine": run.summary,
        "timings": {"decode_s": max(0.0, total - _INFERENCE_SECONDS[0]), "inference_s": _INFERENCE_SECONDS[0]},
    }


def _container_format(path: str) -> str:
    import av

    from vidzoo.data.video import NotAVideoError

    try:
        with av.open(path, metadata_errors="ignore") as container:
            return container.format.name
    except av.error.FFmpegError as e:
        raise NotAVideoError(path, f"not a readable media file ({e})") from e


def _in_class_order(top: list[tuple[str, float]], classes: list[str]) -> list[float]:
    by_name = dict(top)
    return [by_name[name] for name in classes]

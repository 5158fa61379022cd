"""Prediction on single videos: one label for the whole video, or one per time window.

Both cut clips through the model's clip description and the same `ClipPipeline` as training and
evaluation (frames, stride, sampling, crop size, normalisation), so a prediction sees what
evaluation sees. The model is a vidzoo model, an exported ``.onnx`` file loaded as an `OnnxModel`,
or an `Engine` built once for many videos (`vidzoo.engine`); `engine` and `precision` choose how
a model runs when it is not already an `Engine`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch

from vidzoo.data.pipeline import ClipPipeline
from vidzoo.data.sampling import seconds_to_frames, window_bounds
from vidzoo.data.video import VideoReader
from vidzoo.engine import Engine, inference_engine
from vidzoo.evaluate import clip_spec_for
from vidzoo.export import OnnxModel
from vidzoo.models._base import VideoClassifier
from vidzoo.models.factory import default_class_names

__all__ = ["VideoPrediction", "WindowPrediction", "Segment", "predict_video", "predict_windows", "merge_segments",
           "class_names", "video_views"]

Runnable = VideoClassifier | OnnxModel | Engine


@dataclass
class VideoPrediction:
    """The whole video's class probabilities (softmax averaged over its views)."""

    path: str
    top: list[tuple[str, float]]  # (class name, probability), most probable first
    probabilities: list[float]  # one per class, in `classes` order
    classes: list[str]
    num_frames: int
    fps: float

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["top"] = _top_dicts(self.top)
        return out


@dataclass
class WindowPrediction:
    """Class probabilities of one time window ``[start_s, end_s)`` of a video."""

    start_s: float
    end_s: float
    top: list[tuple[str, float]]  # (class name, probability), most probable first

    def to_dict(self) -> dict[str, Any]:
        return {"start_s": self.start_s, "end_s": self.end_s, "top": _top_dicts(self.top)}


def class_names(model: Runnable) -> list[str]:
    """`model.classes`, or ``class_000``, ``class_001``, ... when the model has none."""
    return list(model.classes) if model.classes is not None else default_class_names(model.num_classes)


def video_views(model: Runnable, path: str | os.PathLike, clips_per_video: int | None = None,
                crops: int | None = None, decoder: str = "auto") -> tuple[torch.Tensor, Any]:
    """The views of a video as the model's clip description cuts them, and the video's info
    (`decoder`: see `VideoReader`)."""
    pipeline = ClipPipeline(clip_spec_for(model, clips_per_video, crops), train=False)
    with VideoReader(path, decoder=decoder) as video:
        return pipeline.views(video), video.info


def predict_video(
    model: Runnable,
    path: str | os.PathLike,
    *,
    top_k: int = 5,
    clips_per_video: int | None = None,
    crops: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    engine: str = "eager",
    precision: str = "fp32",
    decoder: str = "auto",
) -> VideoPrediction:
    """Classify a whole video from its views, cut as the model's clip description says
    (``clips_per_video`` clips spread evenly over it, ``crops`` crops each; None: the model's),
    their softmax averaged. `top` holds the min(top_k, classes) most probable classes. The model
    sees at most `batch_size` views per forward pass (None: the engine's choice). `decoder` is the
    video decoder ("auto", "pyav", "torchcodec", "torchcodec-cuda"; see `VideoReader`). Raises
    VideoDecodeError (naming the file) if the video cannot be read."""
    top_k = _check_positive_int("top_k", top_k)
    if batch_size is not None:
        batch_size = _check_positive_int("batch_size", batch_size)
    names = class_names(model)
    views, info = video_views(model, path, clips_per_video, crops, decoder)
    with inference_engine(model, engine=engine, precision=precision, device=device, batch_size=batch_size,
                          calibration=views, job_clips=len(views)) as run:
        logits = run(views)
    probs = logits.softmax(dim=1).mean(dim=0)
    return VideoPrediction(
        path=str(path),
        top=_top(probs, names, top_k),
        probabilities=probs.tolist(),
        classes=names,
        num_frames=info.num_frames,
        fps=info.fps,
    )


def predict_windows(
    model: Runnable,
    path: str | os.PathLike,
    *,
    window: float,
    stride: float,
    top_k: int = 5,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    engine: str = "eager",
    precision: str = "fp32",
    decoder: str = "auto",
) -> list[WindowPrediction]:
    """Classify consecutive windows of `window` seconds, starting every `stride` seconds.

    Windows come from `sampling.window_bounds`: the last one is aligned to the end of the video,
    so with ``stride <= window`` every frame is in some window; a video shorter than `window`
    is one window. Each window gives one clip, cut from inside the window as the model's own
    sampler cuts an evaluation clip from a video (dense models: the centred clip at the model's
    frame stride; segment models: one frame per segment of the window), one centre crop.
    `batch_size` windows are decoded and run together. Times are frame indices divided by
    the video's average frame rate. `decoder` is the video decoder, as for `predict_video`.
    """
    top_k = _check_positive_int("top_k", top_k)
    batch_size = _check_positive_int("batch_size", batch_size)
    window, stride = _seconds("window", window), _seconds("stride", stride)
    pipeline = ClipPipeline(clip_spec_for(model, crops=1), train=False)
    names = class_names(model)
    out: list[WindowPrediction] = []
    with VideoReader(path, decoder=decoder) as video, contextlib.ExitStack() as stack:
        fps = video.fps
        bounds = window_bounds(video.num_frames, seconds_to_frames(window, fps), seconds_to_frames(stride, fps))
        run = None
        for first in range(0, len(bounds), batch_size):
            batch = bounds[first : first + batch_size]
            clips = pipeline.clips_at(video, pipeline.window_indices(batch, fps))
            if run is None:  # calibrated on the first windows' clips
                run = stack.enter_context(inference_engine(
                    model, engine=engine, precision=precision, device=device, batch_size=batch_size,
                    calibration=clips, job_clips=len(bounds)))
            probs = run(clips).softmax(dim=1)
            out.extend(
                WindowPrediction(float(start / fps), float(end / fps), _top(p, names, top_k))
                for (start, end), p in zip(batch, probs)
            )
    return out


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _top(probs: torch.Tensor, names: list[str], k: int) -> list[tuple[str, float]]:
    # More classes than the model has would just repeat the list: cap at the class count.
    values, indices = probs.topk(min(k, len(names)))
    return [(names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]


def _top_dicts(top: list[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"class": name, "probability": p} for name, p in top]


@dataclass
class Segment:
    """Consecutive windows with the same top-1 class, merged: ``[start_s, end_s)`` labelled `label`."""

    start_s: float
    end_s: float
    label: str
    probability: float  # the label's mean probability over the merged windows
    windows: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def merge_segments(windows: list[WindowPrediction]) -> list[Segment]:
    """Merge consecutive windows (as `predict_windows` returns them) whose top-1 class is the
    same into segments that tile the video without overlap: where overlapping windows change
    label, the boundary is midway between the centres of the last window of one segment and
    the first window of the next."""
    runs: list[list[WindowPrediction]] = []
    for w in windows:
        if runs and runs[-1][-1].top[0][0] == w.top[0][0]:
            runs[-1].append(w)
        else:
            runs.append([w])
    segments = []
    for k, run in enumerate(runs):
        start = run[0].start_s if k == 0 else segments[-1].end_s
        end = run[-1].end_s if k == len(runs) - 1 else (_centre(run[-1]) + _centre(runs[k + 1][0])) / 2
        label = run[0].top[0][0]
        segments.append(Segment(start, end, label, sum(w.top[0][1] for w in run) / len(run), len(run)))
    return segments


def _centre(w: WindowPrediction) -> float:
    return (w.start_s + w.end_s) / 2

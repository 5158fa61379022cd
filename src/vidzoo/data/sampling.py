"""Sampling: which frames to decode.

Pure functions from a video's length (and frame rate) to frame indices. Every function returns
int64 numpy indices in ``[0, num_frames - 1]`` with an exact, documented shape; randomness comes
only from an explicit ``numpy.random.Generator``, so the same seed gives the same clip.

- `dense_clip`: ``frames`` frames every ``stride`` frames (C3D, I3D, SlowFast).
- `multi_clip`: K dense clips spread over the video, for video-level evaluation.
- `segment`: one frame from each of N equal segments (TSN).
- `sliding_windows` / `window_bounds`: overlapping windows over a whole video, for inference.
- `SamplingConfig`: one sampler described as data; datasets call only its two methods.

Rounding: a fractional position ``x`` becomes frame ``floor(x + 0.5)`` (half up) for dense steps,
and ``floor(x)`` for positions inside a segment (so a position never leaves its segment).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vidzoo.data.clip import SHORT_POLICIES as _SHORT_POLICIES
from vidzoo.data.clip import ShortPolicy

__all__ = [
    "ClipTooShortError",
    "ShortPolicy",
    "SamplingConfig",
    "dense_clip",
    "multi_clip",
    "segment",
    "sliding_windows",
    "window_bounds",
    "seconds_to_frames",
]

_MODES = ("center", "random")


class ClipTooShortError(ValueError):
    """The video has fewer frames than the clip needs and ``short_policy="error"``."""

    def __init__(self, num_frames: int, needed: int, path: str | None = None):
        self.num_frames = num_frames
        self.needed = needed
        self.path = path  # set by datasets, which know the file; the samplers never do
        where = f"{path}: " if path else ""
        super().__init__(
            f"{where}video has {num_frames} frames but the clip needs {needed}; "
            "use short_policy='loop' or 'repeat_last' to sample short videos"
        )


# --------------------------------------------------------------------------- checks


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    # bool is an int subclass; True frames is always a bug.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return str(value)


def _check_rng(rng: object, mode: str) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"mode={mode!r} needs rng=numpy.random.default_rng(seed), got {rng!r}"
        )
    return rng


# --------------------------------------------------------------------------- dense clips


def _dense_step(stride: int, fps: float | None, target_fps: float | None) -> float:
    """Frames between consecutive clip frames, in source frames (may be fractional)."""
    stride = _check_int("stride", stride)
    if target_fps is None:
        return float(stride)
    if fps is None:
        raise ValueError(f"target_fps={target_fps} needs the video's fps, got fps=None")
    # stride counts frames at target_fps (as PySlowFast's sampling_rate does), so
    # stride=1 resamples the video to target_fps.
    return stride * _check_positive("fps", fps) / _check_positive("target_fps", target_fps)


def _apply_short_policy(indices: np.ndarray, num_frames: int, policy: str) -> np.ndarray:
    """Map indices past the end of the video back into it, as `policy` says."""
    if indices.size == 0 or indices.max() < num_frames:
        return indices
    if policy == "loop":
        return indices % num_frames
    if policy == "repeat_last":
        return np.minimum(indices, num_frames - 1)
    raise ClipTooShortError(num_frames, int(indices.max()) + 1)


def _dense_starts(
    num_frames: int,
    frames: int,
    stride: int,
    fps: float | None,
    target_fps: float | None,
    short_policy: str,
) -> tuple[np.ndarray, int]:
    """Offsets of one clip, and the last start that keeps the clip inside the video (< 0: short)."""
    num_frames = _check_int("num_frames", num_frames)
    _check_choice("short_policy", short_policy, _SHORT_POLICIES)
    frames = _check_int("frames", frames)
    step = _dense_step(stride, fps, target_fps)
    offsets = np.floor(np.arange(frames) * step + 0.5).astype(np.int64)
    return offsets, num_frames - (int(offsets[-1]) + 1)


def dense_clip(
    num_frames: int,
    frames: int,
    stride: int = 1,
    *,
    mode: Literal["center", "random"] = "center",
    rng: np.random.Generator | None = None,
    fps: float | None = None,
    target_fps: float | None = None,
    short_policy: ShortPolicy = "loop",
) -> np.ndarray:
    """``frames`` frame indices, one every ``stride`` frames, shape ``(frames,)``.

    With ``target_fps`` (and the video's ``fps``) the step is ``stride * fps / target_fps``
    source frames, so ``stride`` counts frames at ``target_fps``; a step below 1 repeats frames.
    ``mode="center"`` centres the clip (evaluation); ``mode="random"`` draws its start uniformly
    from ``rng`` (training). A video shorter than the clip starts at frame 0 and is handled by
    ``short_policy``: ``"loop"`` wraps around, ``"repeat_last"`` pads with the last frame,
    ``"error"`` raises `ClipTooShortError`.
    """
    _check_choice("mode", mode, _MODES)
    if mode == "random":
        rng = _check_rng(rng, mode)
    offsets, last_start = _dense_starts(num_frames, frames, stride, fps, target_fps, short_policy)
    if last_start < 0:
        start = 0
    elif mode == "random":
        start = int(rng.integers(0, last_start + 1))
    else:
        start = last_start // 2
    return _apply_short_policy(start + offsets, num_frames, short_policy)


def multi_clip(
    num_frames: int,
    frames: int,
    stride: int = 1,
    clips_per_video: int = 10,
    *,
    fps: float | None = None,
    target_fps: float | None = None,
    short_policy: ShortPolicy = "loop",
) -> np.ndarray:
    """``clips_per_video`` dense clips spread evenly over the video, shape ``(clips_per_video, frames)``.

    Clip k starts at ``floor((k + 0.5) / clips_per_video * last_start)``, where ``last_start`` is the
    last start that keeps a clip inside the video (MMAction2's test-time sampling): each clip sits
    in the middle of its share of the video, and ``clips_per_video=1`` equals
    ``dense_clip(mode="center")``. In a video shorter than one clip every clip starts at 0.
    """
    clips_per_video = _check_int("clips_per_video", clips_per_video)
    offsets, last_start = _dense_starts(num_frames, frames, stride, fps, target_fps, short_policy)
    starts = np.floor((np.arange(clips_per_video) + 0.5) / clips_per_video * max(last_start, 0))
    indices = starts.astype(np.int64)[:, None] + offsets[None, :]
    return _apply_short_policy(indices, num_frames, short_policy)


# --------------------------------------------------------------------------- segments


def _segment_at(num_frames: int, num_segments: int, fractions: np.ndarray) -> np.ndarray:
    """Frame at ``fractions[k]`` of the way through segment k (fractions in [0, 1))."""
    positions = (np.arange(num_segments) + fractions) * (num_frames / num_segments)
    # Float rounding could land a fraction just under 1 on the next segment's first frame;
    # the clip keeps the last index inside the video whatever happens.
    return np.minimum(np.floor(positions).astype(np.int64), num_frames - 1)


def segment(
    num_frames: int,
    num_segments: int,
    *,
    mode: Literal["center", "random"] = "center",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """One frame from each of ``num_segments`` equal segments (TSN), shape ``(num_segments,)``.

    Segment k covers ``[k, k + 1) * num_frames / num_segments``; ``mode="center"`` takes its
    middle, ``mode="random"`` a uniform position in it. Indices are non-decreasing, and repeat
    when the video has fewer frames than segments.
    """
    num_frames = _check_int("num_frames", num_frames)
    num_segments = _check_int("num_segments", num_segments)
    _check_choice("mode", mode, _MODES)
    if mode == "random":
        fractions = _check_rng(rng, mode).random(num_segments)
    else:
        fractions = np.full(num_segments, 0.5)
    return _segment_at(num_frames, num_segments, fractions)


# --------------------------------------------------------------------------- sliding windows


def seconds_to_frames(seconds: float, fps: float) -> int:
    """Whole frames in ``seconds`` at ``fps`` (rounded half up); at least one frame or an error."""
    seconds = _check_positive("seconds", seconds)
    fps = _check_positive("fps", fps)
    frames = int(np.floor(seconds * fps + 0.5))
    if frames < 1:
        raise ValueError(f"{seconds} s at {fps} fps is less than one frame")
    return frames


def window_bounds(num_frames: int, window: int, stride: int) -> np.ndarray:
    """``[start, end)`` frames of each sliding window, shape ``(num_windows, 2)``.

    Windows start every ``stride`` frames; when the last one stops short of the end, one more
    window is aligned to the end, so with ``stride <= window`` every frame is covered. A video
    shorter than ``window`` gives the single window ``[0, num_frames)``. Divide by fps for seconds.
    """
    num_frames = _check_int("num_frames", num_frames)
    window = _check_int("window", window)
    stride = _check_int("stride", stride)
    starts = np.arange(0, max(num_frames - window, 0) + 1, stride, dtype=np.int64)
    if starts[-1] + window < num_frames:
        starts = np.append(starts, num_frames - window)
    return np.stack([starts, np.minimum(starts + window, num_frames)], axis=1)


def sliding_windows(
    num_frames: int,
    window: int,
    stride: int,
    *,
    frames: int | None = None,
    short_policy: ShortPolicy = "loop",
) -> np.ndarray:
    """Frame indices of each window of `window_bounds`, shape ``(num_windows, frames or window)``.

    With ``frames`` each window is subsampled to ``frames`` frames at the centres of
    ``frames`` equal parts of the window (as `segment` does). A video shorter than ``window``
    is sampled as if it were long enough and mapped back by ``short_policy``.
    """
    _check_choice("short_policy", short_policy, _SHORT_POLICIES)
    starts = window_bounds(num_frames, window, stride)[:, 0]
    if frames is None:
        offsets = np.arange(window)
    else:
        offsets = segment(window, _check_int("frames", frames))
    return _apply_short_policy(starts[:, None] + offsets[None, :], num_frames, short_policy)


# --------------------------------------------------------------------------- config


class SamplingConfig(BaseModel):
    """A sampler described as data; datasets call `train_indices` and `eval_indices` only.

    ``kind="dense"``: ``frames`` frames every ``stride`` frames (at ``target_fps`` if set).
    ``kind="segment"``: ``frames`` TSN segments; ``stride`` and ``target_fps`` do not apply,
    and short videos repeat frames unless ``short_policy="error"``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["dense", "segment"] = "dense"
    frames: int = Field(16, ge=1)
    stride: int = Field(1, ge=1)
    target_fps: float | None = Field(None, gt=0)
    short_policy: ShortPolicy = "loop"
    clips_per_video: int = Field(1, ge=1, description="clips per video at evaluation")

    @model_validator(mode="after")
    def _segment_has_no_stride(self) -> SamplingConfig:
        if self.kind == "segment" and (self.stride != 1 or self.target_fps is not None):
            raise ValueError(
                f"kind='segment' spreads frames over the whole video, so stride={self.stride} "
                f"and target_fps={self.target_fps} do not apply; leave them unset or use "
                "kind='dense'"
            )
        return self

    def _check_segment_length(self, num_frames: int) -> int:
        num_frames = _check_int("num_frames", num_frames)
        if self.short_policy == "error" and num_frames < self.frames:
            raise ClipTooShortError(num_frames, self.frames)
        return num_frames

    def train_indices(
        self, num_frames: int, fps: float | None, rng: np.random.Generator
    ) -> np.ndarray:
        """One random training clip, shape ``(frames,)``."""
        if self.kind == "segment":
            self._check_segment_length(num_frames)
            return segment(num_frames, self.frames, mode="random", rng=rng)
        return dense_clip(
            num_frames,
            self.frames,
            self.stride,
            mode="random",
            rng=rng,
            fps=fps,
            target_fps=self.target_fps,
            short_policy=self.short_policy,
        )

    def eval_indices(self, num_frames: int, fps: float | None) -> np.ndarray:
        """``clips_per_video`` deterministic clips, shape ``(clips_per_video, frames)``.

        Dense: `multi_clip`. Segment: clip k takes the frame ``(k + 0.5) / clips_per_video`` of the way
        through every segment, so one clip takes the segment centres.
        """
        if self.kind == "segment":
            num_frames = self._check_segment_length(num_frames)
            fractions = (np.arange(self.clips_per_video) + 0.5) / self.clips_per_video
            return np.stack([_segment_at(num_frames, self.frames, f) for f in fractions])
        return multi_clip(
            num_frames,
            self.frames,
            self.stride,
            self.clips_per_video,
            fps=fps,
            target_fps=self.target_fps,
            short_policy=self.short_policy,
        )

"""The one clip description.

A `ClipSpec` says what a model eats and how to cut it from a video: frames, frame stride,
sampling, crop size, resize-short size, crops, clips per video, normalisation and the
short-video policy. It is resolved once per run (`resolve_clip_spec`), travels inside the
model file, and every stage (train, eval, predict, windows, extract, export, serve) reads it
back and cuts clips through the same `vidzoo.data.pipeline.ClipPipeline`.

Precedence, highest first: a command-line flag, the config file, the pretrained model file,
the architecture's default (see `resolve_clip_spec`). This module imports nothing heavy: the
model contract carries a ClipSpec.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_validator,
)

from vidzoo.settings import StrictModel

__all__ = ["CLIP_FIELDS", "SHORT_POLICIES", "ShortPolicy", "ClipOverrides", "ClipSpec", "check_norm", "norm_mean_std", "parse_size",
           "resolve_clip_spec"]

ShortPolicy = Literal["loop", "repeat_last", "error"]
SHORT_POLICIES = ("loop", "repeat_last", "error")
_NORM_KEYS = ("mean", "std", "scale")

# C3D's ratio: frames resized to 128 on the short side for 112 crops (256 for 224).
_RESIZE_RATIO = 128 / 112
_SIZE_RE = re.compile(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*")


def check_norm(spec: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """A normalisation spec as plain lists, checked: ``{"mean": [...], "std": [...]}`` (one value
    per channel, on pixels in [0, 1], std > 0) or ``{"scale": [low, high]}`` (pixel 0 -> low,
    255 -> high, e.g. [-1, 1] for Inception-style models)."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"a normalization spec must be a mapping, got {spec!r}")
    keys = set(spec)
    if keys not in ({"mean", "std"}, {"scale"}):
        unknown = sorted(keys - set(_NORM_KEYS))
        close = difflib.get_close_matches(unknown[0], _NORM_KEYS, n=1) if unknown else []
        hint = f"; did you mean {close[0]!r} for {unknown[0]!r}?" if close else ""
        raise ValueError(
            "normalization spec must be {'mean': [...], 'std': [...]} or {'scale': [low, high]}, "
            f"got {dict(spec)!r}{hint}"
        )
    norm = {str(k): [float(x) for x in v] for k, v in spec.items()}
    if "scale" in norm:
        scale = norm["scale"]
        if len(scale) != 2 or scale[0] >= scale[1]:
            raise ValueError(f"scale must be [low, high] with low < high, got {scale}")
    elif len(norm["mean"]) != len(norm["std"]) or not norm["mean"]:
        raise ValueError(f"mean and std need one value per channel, got mean={norm['mean']}, std={norm['std']}")
    elif any(s <= 0 for s in norm["std"]):
        raise ValueError(f"std must be positive, got {norm['std']}")
    return norm


def norm_mean_std(spec: Mapping[str, Sequence[float]], channels: int = 3) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) on [0, 1] pixels of a normalisation spec (a scale becomes the
    mean/std that map pixel 0 to low and 255 to high on `channels` channels)."""
    norm = check_norm(spec)
    if "scale" not in norm:
        return norm["mean"], norm["std"]
    low, high = norm["scale"]
    # (x / 255 - mean) / std == low + (high - low) * x / 255
    return [-low / (high - low)] * channels, [1.0 / (high - low)] * channels


def parse_size(value: Any) -> tuple[int, int]:
    """A frame size as (height, width) from an int (square), ``"112"``, ``"112x160"`` or a pair."""
    if isinstance(value, bool):
        raise ValueError(f"size must be an int or (height, width), got {value!r}")
    if isinstance(value, int):
        pair: tuple[Any, ...] = (value, value)
    elif isinstance(value, str):
        match = _SIZE_RE.fullmatch(value)
        if not match:
            raise ValueError(f"size must look like 112 or 112x160 (height x width), got {value!r}")
        height, width = match.groups()
        pair = (int(height), int(width or height))
    elif isinstance(value, Sequence) and len(value) == 2:
        pair = tuple(value)
    else:
        raise ValueError(f"size must be an int or (height, width), got {value!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in pair):
        raise ValueError(f"size must be positive integers (height, width), got {value!r}")
    return int(pair[0]), int(pair[1])


class ClipSpec(BaseModel):
    """What a model eats, and how to cut it from a video.

    Attributes:
        frames: frames per clip (T).
        frame_stride: take every N-th frame (dense sampling only).
        sampling: ``"dense"`` (consecutive frames, every `frame_stride`-th) or ``"segment"``
            (one frame from each of `frames` equal segments of the video, TSN).
        size: crop size (height, width).
        resize_short: the short side frames are decoded at before cropping; None takes
            ``round(max(size) * 128 / 112)`` (C3D's 128 for 112 crops), so the crop fits
            whatever the video's orientation.
        crops: evaluation crops per clip: 1 (centre) or 3 (along the long side).
        clips_per_video: evaluation clips spread evenly over a video (eval, predict, extract,
            serve); a video's prediction averages the softmax of all its views.
        norm: ``{"mean": [...], "std": [...]}`` on pixels in [0, 1], or ``{"scale": [lo, hi]}``.
        short_policy: what a video shorter than one clip gets: ``"loop"`` (wrap around),
            ``"repeat_last"`` (pad with the last frame) or ``"error"`` (refuse it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: int = Field(16, ge=1, description="frames per clip")
    frame_stride: int = Field(1, ge=1, description="take every N-th frame (dense sampling)")
    sampling: Literal["dense", "segment"] = Field("dense", description="dense (consecutive frames) or segment (TSN)")
    size: tuple[int, int] = Field((112, 112), description="crop size, height x width")
    resize_short: int | None = Field(None, ge=1, description="short side frames are decoded at (default max(size)*128/112)")
    crops: Literal[1, 3] = Field(1, description="evaluation crops per clip: 1 (centre) or 3")
    clips_per_video: int = Field(10, ge=1, description="evaluation clips spread over each video")
    norm: dict[str, list[float]] = Field(default_factory=lambda: {"scale": [0.0, 1.0]})
    short_policy: ShortPolicy = Field("loop", description="videos shorter than a clip: loop, repeat_last or error")

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> tuple[int, int]:
        return parse_size(value)

    @field_validator("norm", mode="before")
    @classmethod
    def _norm(cls, value: Any) -> dict[str, list[float]]:
        if not isinstance(value, Mapping):
            raise ValueError(f"norm must be a mapping, got {value!r}")
        return check_norm(value)

    @model_validator(mode="after")
    def _segment_has_no_stride(self) -> ClipSpec:
        if self.sampling == "segment" and self.frame_stride != 1:
            raise ValueError(
                f"segment sampling spreads the frames over the whole video, so frame_stride="
                f"{self.frame_stride} does not apply; use sampling='dense' or frame_stride=1"
            )
        return self

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]

    @property
    def decode_size(self) -> int:
        """The short side frames are decoded at."""
        return self.resize_short or math.floor(max(self.size) * _RESIZE_RATIO + 0.5)

    def replace(self, **changes: Any) -> ClipSpec:
        """A validated copy with `changes`; None values change nothing."""
        return ClipSpec(**{**self.model_dump(), **{k: v for k, v in changes.items() if v is not None}})

    def describe(self) -> str:
        """One line for humans: ``16x112x112, dense every 2nd frame, 10 clips x 1 crop``."""
        h, w = self.size
        how = "segments" if self.sampling == "segment" else (
            "consecutive frames" if self.frame_stride == 1 else f"every {self.frame_stride} frames")
        return (f"{self.frames}x{h}x{w} ({how}), decoded at short side {self.decode_size}, "
                f"{self.clips_per_video} clip(s) x {self.crops} crop(s) per video, short videos: {self.short_policy}")


# The fields of a ClipSpec: what a config, a flag or a model file may set.
CLIP_FIELDS = tuple(ClipSpec.model_fields)


def resolve_clip_spec(default: ClipSpec, *layers: Mapping[str, Any] | ClipSpec | None) -> ClipSpec:
    """The clip description of a run: `default` (the architecture's), then each of `layers` in
    order of rising precedence (the pretrained model file, the config file, the command-line
    flags), each layer setting only the fields it names (None values set nothing).

    A layer that is a whole `ClipSpec` (a model file's) sets every field.
    """
    values = default.model_dump()
    for layer in layers:
        if layer is None:
            continue
        items = layer.model_dump() if isinstance(layer, BaseModel) else dict(layer)
        unknown = sorted(set(items) - set(CLIP_FIELDS))
        if unknown:
            raise ValueError(f"unknown clip field(s) {', '.join(unknown)}; clip fields: {', '.join(CLIP_FIELDS)}")
        values.update({k: v for k, v in items.items() if v is not None})
    return ClipSpec(**values)


class _ClipLayer(StrictModel):
    """What `ClipOverrides` adds to its generated fields."""

    @model_validator(mode="before")
    @classmethod
    def _check_each(cls, values: Any) -> Any:
        if isinstance(values, Mapping):
            values = {k: (v if v is None or k not in CLIP_FIELDS else getattr(ClipSpec(**{k: v}), k))
                      for k, v in values.items()}
        return values

    def clip_values(self) -> dict[str, Any]:
        """The clip fields that are set."""
        return {name: getattr(self, name) for name in CLIP_FIELDS if getattr(self, name) is not None}


# Some fields of a ClipSpec (None: not set), as a config file or the command line gives them;
# resolve_clip_spec layers them over the defaults. Each set value is checked on its own by
# ClipSpec (so `size: 112x160` is parsed and a bad value is refused at once). The fields are
# generated from ClipSpec's, so the two cannot drift apart.
ClipOverrides: type[_ClipLayer] = create_model(
    "ClipOverrides",
    __base__=_ClipLayer,
    __doc__="Some fields of a `ClipSpec` (None: not set): one layer of `resolve_clip_spec`.",
    **{name: ((Any if name in ("size", "norm") else info.annotation) | None, Field(None, description=info.description))
       for name, info in ClipSpec.model_fields.items()},
)

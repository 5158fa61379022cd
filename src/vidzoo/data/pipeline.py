"""The one wiring of a clip description: sampler + decode size + transform.

Datasets (training clips and evaluation views), whole-video prediction, prediction over time
windows and serving all cut clips through `ClipPipeline`, so they see the same pixels::

    video file --VideoReader--> frames at `decode_size` (short side)
               --ClipPipeline.sampler--> which frames (SamplingConfig)
               --ClipPipeline.transform--> crop(s), flip (training), normalise
               --> float32 (C, T, H, W) per view
"""

from __future__ import annotations

import numpy as np
import torch

from vidzoo.data.clip import ClipSpec
from vidzoo.data.sampling import SamplingConfig
from vidzoo.data.transforms import eval_transform, train_transform
from vidzoo.data.video import VideoReader

__all__ = ["ClipPipeline"]


class ClipPipeline:
    """The wiring of one `ClipSpec`: which frames (`sampler`), at what decode size, and the
    pixel transform. Datasets, prediction, windows and serving all cut clips through it.

    Args:
        spec: the clip description.
        train: training clips (one random clip, random crop and flip) or evaluation views.
        flip: random horizontal flips in training (off when classes depend on direction).
        clips_per_video: overrides ``spec.clips_per_video`` for evaluation views.
    """

    def __init__(self, spec: ClipSpec, *, train: bool, flip: bool = True, clips_per_video: int | None = None):
        self.spec = spec
        self.train = train
        self.decode_size = spec.decode_size
        self.sampler = SamplingConfig(
            kind=spec.sampling, frames=spec.frames, stride=spec.frame_stride, short_policy=spec.short_policy,
            clips_per_video=1 if train else (clips_per_video or spec.clips_per_video),
        )
        if train:
            self.transform = train_transform(spec.size, resize_short=self.decode_size, norm=spec.norm, flip=flip)
        else:
            self.transform = eval_transform(spec.size, resize_short=self.decode_size, norm=spec.norm, crops=spec.crops)

    @property
    def views_per_video(self) -> int:
        return self.sampler.clips_per_video * self.spec.crops

    def train_clip(self, video: VideoReader, rng: np.random.Generator) -> torch.Tensor:
        """One random training clip ``(C, T, H, W)``; every random choice comes from `rng`."""
        indices = self.sampler.train_indices(video.num_frames, video.fps, rng)
        frames = video.get_frames(indices.tolist(), size=self.decode_size)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return self.transform(frames, generator)

    def views(self, video: VideoReader) -> torch.Tensor:
        """A video's evaluation views ``(clips * crops, C, T, H, W)``."""
        return self.clips_at(video, self.sampler.eval_indices(video.num_frames, video.fps))

    def clips_at(self, video: VideoReader, indices: np.ndarray) -> torch.Tensor:
        """The clips at `indices` ``(clips, frames)``, decoded once, as ``(clips * crops, C, T, H, W)``."""
        indices = np.asarray(indices)
        frames = video.get_frames(indices.reshape(-1).tolist(), size=self.decode_size)
        clips = frames.reshape(indices.shape[0], indices.shape[1], *frames.shape[1:])
        out = torch.stack([self.transform(clip) for clip in clips])
        # A three-crop transform adds a crop axis per clip: fold it into the view axis.
        return out.reshape(-1, *out.shape[-4:])

    def window_indices(self, bounds: np.ndarray, fps: float) -> np.ndarray:
        """One clip per ``[start, end)`` window of `bounds`, cut from inside the window as an
        evaluation clip is cut from a video (dense: the centred clip; segment: one frame per
        segment of the window): ``(windows, frames)``."""
        one = self.sampler.model_copy(update={"clips_per_video": 1})
        return np.stack([start + one.eval_indices(int(end - start), fps)[0] for start, end in bounds])

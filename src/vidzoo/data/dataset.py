"""A torch Dataset of clips: an annotation source wired to a `ClipPipeline`.

``dataset[i] -> (clip or views, label_index, video_id)``. Training takes one random clip per
video and skips (and records) videos that fail to decode; evaluation takes all the views of
a video and never substitutes one video for another.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from vidzoo.data.clip import ClipSpec
from vidzoo.data.pipeline import ClipPipeline
from vidzoo.data.sampling import ClipTooShortError
from vidzoo.data.sources import VideoSample, VideoSource
from vidzoo.data.video import VideoDecodeError, VideoReader, check_decoder

__all__ = ["BadVideo", "VideoDataset"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BadVideo:
    path: str
    reason: str
    error: str  # exception class name


@dataclass
class _BadVideoLog:
    """Failures seen while loading. DataLoader workers are separate processes, so besides the
    in-memory list each failure is appended as one line to `file` (O_APPEND writes of one
    short line do not interleave), where the main process can read them all."""

    file: str | None = None
    seen: list[BadVideo] = field(default_factory=list)

    def add(self, bad: BadVideo) -> None:
        self.seen.append(bad)
        if self.file:
            line = "\t".join(x.replace("\t", " ").replace("\n", " ") for x in (bad.path, bad.error, bad.reason))
            with open(self.file, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def all(self) -> list[BadVideo]:
        if not self.file or not os.path.exists(self.file):
            return list(self.seen)
        with open(self.file, encoding="utf-8") as f:
            rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
        return [BadVideo(path, reason, error) for path, error, reason in rows]


class VideoDataset(Dataset):
    """Map-style dataset of clips: ``dataset[i] -> (clip, label_index, video_id)``.

    Training (``pipeline.train``): one clip per video, sampled with a generator seeded from
    (seed, epoch, index), so a run is reproducible whatever the number of DataLoader workers;
    call `set_epoch` each epoch. A video that fails to decode is logged, counted
    (`bad_videos`) and replaced by another video of the dataset.

    Evaluation: all the pipeline's views of the video, stacked ``(clips * crops, C, T, H, W)``.
    Evaluation never substitutes: a failure raises `VideoDecodeError`, or with `skip_bad`
    (validation during training) the item is None and the failure is recorded like a training
    one.

    Frames are decoded directly at the pipeline's decode size (short side), so no
    full-resolution frame is ever materialised. `decoder` is the `VideoReader` backend ("auto",
    "pyav", "torchcodec", "torchcodec-cuda"), `threads` its decoding threads per video (`decoder_threads`).
    """

    def __init__(
        self,
        source: VideoSource,
        pipeline: ClipPipeline,
        *,
        seed: int = 0,
        bad_video_log: str | os.PathLike | None = None,
        max_substitutions: int = 10,
        decoder: str = "auto",
        threads: int = 1,
        skip_bad: bool = False,
    ):
        if len(source) == 0:
            raise ValueError(f"{source.origin}: the dataset has no videos")
        self.source = source
        self.pipeline = pipeline
        self.seed = seed
        self.epoch = 0
        self.max_substitutions = max_substitutions
        # Checked here, in the main process: a backend that cannot load (torchcodec without its
        # FFmpeg libraries) is one clear error now, not one per DataLoader worker.
        self.decoder = check_decoder(decoder)
        self.threads = threads  # decoding threads per video: see `decoder_threads`
        self.skip_bad = skip_bad
        self._bad = _BadVideoLog(str(bad_video_log) if bad_video_log else None)

    @classmethod
    def from_spec(
        cls, source: VideoSource, spec: ClipSpec, *, train: bool, flip: bool = True,
        clips_per_video: int | None = None, **kwargs,
    ) -> VideoDataset:
        """A dataset cutting clips of `source` as `spec` says (see `ClipPipeline`)."""
        return cls(source, ClipPipeline(spec, train=train, flip=flip, clips_per_video=clips_per_video), **kwargs)

    @property
    def train(self) -> bool:
        return self.pipeline.train

    @property
    def classes(self) -> list[str]:
        return self.source.classes

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def bad_videos(self) -> list[BadVideo]:
        """Every video that failed so far (in all worker processes when a log file is set)."""
        return self._bad.all()

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, str]:
        """`key` is an index, or (epoch, index) from a sampler that knows the epoch (so that
        DataLoader workers, which hold copies of this object, need no shared state)."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        if not self.train:
            sample = self.source.samples[index]
            try:
                return self._load(sample, None), sample.label, sample.video_id
            except (VideoDecodeError, ClipTooShortError) as e:
                if not self.skip_bad:
                    raise
                self._record(sample, e)
                return None
        rng = np.random.default_rng([self.seed, epoch, index])
        candidate = index
        for _ in range(self.max_substitutions + 1):
            sample = self.source.samples[candidate]
            try:
                return self._load(sample, rng), sample.label, sample.video_id
            except (VideoDecodeError, ClipTooShortError) as e:
                self._record(sample, e)
                candidate = int(rng.integers(len(self.source)))
        raise RuntimeError(
            f"{self.max_substitutions + 1} videos in a row failed to decode, the last {sample.path}; "
            "check the dataset with `vidzoo check`"
        )

    def _record(self, sample: VideoSample, error: Exception) -> None:
        reason = getattr(error, "reason", None) or str(error)
        log.warning("skipping %s: %s", sample.path, reason)
        self._bad.add(BadVideo(sample.path, reason, type(error).__name__))

    def _load(self, sample: VideoSample, rng: np.random.Generator | None) -> torch.Tensor:
        # The path is logged before decoding starts, so a decoder that crashes or hangs its
        # process can be named: `vidzoo.train` keeps the last of these records per DataLoader
        # worker ("video_path" is None once the video is done).
        decoding = log.getChild("decoding")
        decoding.debug("decoding %s", sample.path, extra={"video_path": sample.path})
        try:
            with VideoReader(sample.path, decoder=self.decoder, threads=self.threads) as video:
                if rng is not None:
                    return self.pipeline.train_clip(video, rng)
                return self.pipeline.views(video)
        except ClipTooShortError as e:
            raise ClipTooShortError(e.num_frames, e.needed, path=sample.path) from None
        finally:
            decoding.debug("done with %s", sample.path, extra={"video_path": None})

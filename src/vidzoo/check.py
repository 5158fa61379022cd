"""Pre-flight check of a dataset: can every video be decoded, and is anything odd about it?

`check_dataset(data)` opens every video in worker processes, decodes its first, last and a few
seeded random frames (each on its own, after a seek, so a long video costs a few keyframe
intervals, not a full decode) and reports per file:

- status ``ok``; ``too_short`` (fewer than `frames` frames: a warning, such a video is usable
  with the default ``loop`` or ``repeat_last`` short-video policy); ``unreadable`` (the error
  class and FFmpeg's reason); ``no_video_stream`` (audio-only, subtitles...).
- flags ``rotated``, ``variable_frame_rate``, ``odd_size`` (odd width or height),
  ``frame_count_mismatch`` (the header claims more frames than the file holds: truncated).

``unreadable`` and ``no_video_stream`` are *unusable*. A file that hangs the decoder is reported
``unreadable`` with error ``Timeout`` after `timeout` seconds and its worker is killed.
"""

from __future__ import annotations

import csv
import os
import time
import zlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from vidzoo.data.sources import VIDEO_EXTENSIONS, VideoSource, load_source
from vidzoo.data.video import NoVideoStreamError, VideoDecodeError, VideoReader
from vidzoo.pool import run_per_file
from vidzoo.progress import progress_bar

__all__ = ["STATUSES", "FLAGS", "VideoCheck", "CheckReport", "check_video", "check_dataset", "find_videos"]

STATUSES = ("ok", "too_short", "unreadable", "no_video_stream")
UNUSABLE = ("unreadable", "no_video_stream")
FLAGS = ("rotated", "variable_frame_rate", "odd_size", "frame_count_mismatch")
_POOL_START_METHOD = "spawn"  # not fork: the parent may hold torch's threads and locks
_CHECK_SIZE = 64  # frames are decoded at this short side: the check needs decodability, not pixels


@dataclass(frozen=True)
class VideoCheck:
    """The outcome for one file (a row of the CSV report)."""

    path: str
    status: str
    error: str = ""  # exception class name when unreadable
    reason: str = ""
    num_frames: int = 0
    header_num_frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    rotation: int = 0
    codec: str = ""
    pix_fmt: str = ""
    rotated: bool = False
    variable_frame_rate: bool = False
    odd_size: bool = False
    frame_count_mismatch: bool = False
    seconds: float = 0.0

    @property
    def usable(self) -> bool:
        return self.status not in UNUSABLE

    @property
    def flags(self) -> list[str]:
        return [f for f in FLAGS if getattr(self, f)]


@dataclass
class CheckReport:
    """Every file's `VideoCheck`, in input order."""

    results: list[VideoCheck]
    frames: int

    @property
    def unusable(self) -> list[VideoCheck]:
        return [r for r in self.results if not r.usable]

    def summary(self) -> dict[str, int]:
        """Files checked, then the count of each status and each flag."""
        counts = {"videos": len(self.results)}
        counts.update({s: sum(r.status == s for r in self.results) for s in STATUSES})
        counts.update({f: sum(getattr(r, f) for r in self.results) for f in FLAGS})
        counts["unusable"] = len(self.unusable)
        return counts

    def write_csv(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(VideoCheck)])
            writer.writeheader()
            writer.writerows(asdict(r) for r in self.results)
        return path

    def to_dict(self) -> dict:
        return {"frames": self.frames, "summary": self.summary(), "videos": [asdict(r) for r in self.results]}


def check_video(path: str | os.PathLike, *, frames: int = 16, random_frames: int = 3, seed: int = 0) -> VideoCheck:
    """Open one video, decode its first, last and `random_frames` random frames (seeded by
    `seed` and the path, so the same files get the same frames whatever the order)."""
    path = str(path)
    started = time.perf_counter()
    try:
        with VideoReader(path) as video:
            info = video.info
            n = info.num_frames
            rng = np.random.default_rng([seed, zlib.crc32(path.encode("utf-8", "surrogateescape"))])
            middle = rng.integers(1, n - 1, size=random_frames).tolist() if n > 2 else []
            for index in dict.fromkeys([0, n - 1, *middle]):
                video.get_frames([index], size=_CHECK_SIZE)
    except NoVideoStreamError as e:
        return VideoCheck(path, "no_video_stream", type(e).__name__, e.reason, seconds=_since(started))
    except VideoDecodeError as e:
        return VideoCheck(path, "unreadable", type(e).__name__, e.reason, seconds=_since(started))
    status = "too_short" if n < frames else "ok"
    reason = f"{n} frames < clip length {frames}" if status == "too_short" else ""
    return VideoCheck(
        path, status, "", reason, n, info.header_num_frames, round(info.fps, 3), info.width, info.height,
        info.rotation, info.codec, info.pix_fmt,
        rotated=info.rotation != 0,
        variable_frame_rate=info.variable_frame_rate,
        odd_size=info.width % 2 == 1 or info.height % 2 == 1,
        frame_count_mismatch=info.header_num_frames > n,
        seconds=_since(started),
    )


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def find_videos(data: str | os.PathLike | VideoSource) -> list[str]:
    """The videos to check: a `VideoSource`'s, a CSV annotation's (validated as for training),
    or every file with a video extension under a folder (class folders or not; no labels needed)."""
    if isinstance(data, VideoSource):
        return [s.path for s in data.samples]
    path = Path(data)
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    return [s.path for s in load_source(path).samples]


def _check_one(args: tuple[str, int, int, int]) -> VideoCheck:
    path, frames, random_frames, seed = args
    return check_video(path, frames=frames, random_frames=random_frames, seed=seed)


def check_dataset(
    data: str | os.PathLike | VideoSource | Sequence[str],
    *,
    frames: int = 16,
    workers: int = 2,
    random_frames: int = 3,
    seed: int = 0,
    timeout: float = 120.0,
    progress: bool = True,
) -> CheckReport:
    """Check every video of `data` (a folder, an annotation file, a `VideoSource` or a list of
    paths) with `workers` processes (0: in this process, with no timeout). See the module doc."""
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")
    paths = list(data) if isinstance(data, (list, tuple)) else find_videos(data)
    tasks = [(str(p), frames, random_frames, seed) for p in paths]
    with progress_bar(progress, len(tasks), "checking", stderr=True) as advance:
        results = run_per_file(_check_one, tasks, workers=workers, timeout=timeout, failed=_failed, advance=advance,
                               start_method=_POOL_START_METHOD)
    return CheckReport(results, frames)


def _failed(task: tuple[str, int, int, int], error: str, reason: str) -> VideoCheck:
    return VideoCheck(task[0], "unreadable", error, reason)

"""Soak: opening and reading 2,000 videos leaves memory and file descriptors bounded
(every container is closed; nothing is cached per file inside the reader)."""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import os
import time

import pytest
from conftest import require_videos

from vidzoo.data.video import VideoReader

# Small fixtures of several containers and codecs, cycled.
FIXTURES = [
    "torchcodec-resources/test/resources/h265_video.mp4",
    "torchcodec-resources/test/resources/av1_video.mkv",
    "torchcodec-resources/test/resources/h264_10bits.mp4",
    "decord-testdata/tests/test_data/video_0.mov",
    "decord-testdata/tests/test_data/video_90.mov",
    "moviepy-media/media/transparent.webm",
    "torchcodec-resources/test/resources/h265_10bits.mp4",
    "mp4parse-testdata/mp4parse/tests/h264_white_frame_sar_16_9.mp4",
    "mmaction2-samples/tests/data/rawvideo_dataset/part_0.mp4",
    "tiny-ucf101/v_Basketball_g01_c01.avi",
]
VIDEOS = 2000
WARM_UP = 200
# Measured on live memory (RSS after glibc's malloc_trim, see _live_rss_mb): +2 to +5 MB over
# the 1,800 videos after warm-up. One reader left open costs ~2 MB and a file descriptor
# (part_0.mp4), so the bound allows ~15 leaked readers out of 1,800; the descriptor count none.
MAX_GROWTH_MB = 30


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _live_rss_mb() -> float:
    """RSS once glibc has returned freed heap to the system. Without the trim, RSS cycling these
    codecs climbs ~100 kB per video after a variable onset (750 to 1,800 videos), all of it
    freed memory that malloc keeps (malloc_trim(0) brings it back to the warm-up level)."""
    libc = ctypes.util.find_library("c")
    if libc:
        trim = getattr(ctypes.CDLL(libc), "malloc_trim", None)
        if trim is not None:
            trim(0)
    return _rss_mb()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
def test_reading_2000_videos_keeps_memory_and_fds_bounded() -> None:
    root = require_videos()
    paths = [root / p for p in FIXTURES]
    start = time.perf_counter()
    raw_after_warm_up = rss_after_warm_up = fds_after_warm_up = None
    for n, path in enumerate(itertools.islice(itertools.cycle(paths), VIDEOS), start=1):
        with VideoReader(path) as video:
            count = video.num_frames
            frames = video.get_frames([0, count // 3, 2 * count // 3, count - 1], size=64)
        assert frames.shape[0] == 4
        if n == WARM_UP:
            raw_after_warm_up = _rss_mb()
            rss_after_warm_up, fds_after_warm_up = _live_rss_mb(), _open_fds()
    raw_growth = _rss_mb() - raw_after_warm_up
    growth = _live_rss_mb() - rss_after_warm_up
    print(f"soak: {VIDEOS} videos in {time.perf_counter() - start:.1f} s, RSS after warm-up "
          f"{rss_after_warm_up:.1f} MB, growth over the last {VIDEOS - WARM_UP}: {growth:+.1f} MB "
          f"({raw_growth:+.1f} MB before malloc_trim), "
          f"fds {fds_after_warm_up} -> {_open_fds()}")
    assert growth < MAX_GROWTH_MB, f"RSS grew by {growth:.1f} MB over {VIDEOS - WARM_UP} videos"
    assert _open_fds() <= fds_after_warm_up, "file descriptors leaked"

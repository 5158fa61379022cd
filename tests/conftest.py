"""Shared test set-up: where the real video fixtures live."""

from pathlib import Path

import pytest
import torch

# make test runs two xdist workers on two cores: one compute thread each, or every worker's
# torch ops spawn a thread per core and the suite runs at half speed.
torch.set_num_threads(1)

# Shared between checkouts, next to the repository: <repo>/../shared/data/videos.
VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"


def require_videos() -> Path:
    """VIDEOS, or a loud failure when it is missing: decoder tests never skip silently."""
    if not (VIDEOS / "ffprobe.json").is_file():
        pytest.fail(
            f"video fixtures not found: expected {VIDEOS}/ffprobe.json (the shared fixture folder "
            "next to the repository, see its README.md); the decoder tests cannot run without it",
            pytrace=False,
        )
    return VIDEOS

"""Shared test set-up: where the real video fixtures live."""

import os
import tempfile
from pathlib import Path

import pytest
import torch

# make test runs two xdist workers on two cores: one compute thread each, or every worker's
# torch ops spawn a thread per core and the suite runs at half speed.
torch.set_num_threads(1)

# Commands default to --engine auto, which caches its measurements (and exported ONNX files) in
# ~/.cache/vidzoo (VIDZOO_CACHE_DIR): tests keep theirs in a fresh temporary folder, never the user's,
# so no test's choice depends on an earlier run.
os.environ["VIDZOO_CACHE_DIR"] = tempfile.mkdtemp(prefix="vidzoo-test-cache-")


def pytest_collection_modifyitems(config, items) -> None:
    """The long tests (marked slow) first: with two xdist workers they then overlap with the
    many short ones instead of running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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


# A C3D-BN small enough to train for a few epochs in seconds on a CPU.
TINY_MODEL = {"width": 0.0625, "frames": 8, "size": 16, "dropout": 0.0}
# What a TrainConfig takes as model_args: the clip length and size are clip fields.
TINY_ARGS = {"width": 0.0625, "dropout": 0.0}


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 classes x 3 videos of 8 frames, 32 px: one video per class in each of train/val/test."""
    from vidzoo.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, videos_per_class=3, frames=8, size=32, fps=8, overwrite=True)
    return root


def tiny_config(dataset: Path, out: Path, **overrides):
    """A TrainConfig for TINY_MODEL on the `dataset` fixture: 2 epochs, no workers, no progress."""
    from vidzoo.train import TrainConfig

    values = dict(
        model="c3d_bn", model_args=TINY_ARGS, frames=TINY_MODEL["frames"], size=TINY_MODEL["size"],
        data=str(dataset / "train.csv"),
        val=str(dataset / "val.csv"), workers=0, progress=False, batch_size=4, epochs=2, out=str(out),
    )
    return TrainConfig(**{**values, **overrides})


def input_size(cfg) -> tuple[int, int, int]:
    """(frames, height, width) of a model config's clip."""
    return (cfg.clip.frames, *cfg.clip.size)


def replace_weights(monkeypatch: pytest.MonkeyPatch, model: str, tag: str, **changes):
    """Point `model`'s registered weights `tag` elsewhere for one test (entries are frozen data):
    e.g. ``url=`` a file the test put in a cache, with its ``sha256``. Returns the new entry."""
    import dataclasses

    from vidzoo.models import _registry, get_model_entry

    entry = get_model_entry(model)
    weights = dataclasses.replace(entry.weights[tag], **changes)
    monkeypatch.setitem(_registry._MODELS, model,
                        dataclasses.replace(entry, weights={**entry.weights, tag: weights}))
    return weights


# Families whose variants share one class and its code, differing only in the arguments they
# fix: the C2D variants that name a backbone (c2d_timm stands for them, on a tiny timm backbone)
# and the X3D sizes (XS, S, M and L differ in their default clip and depth).
_STANDS_FOR_ITS_FAMILY = {"c2d": "c2d_timm", "x3d": "x3d_xs"}


def _representatives() -> list[str]:
    from vidzoo.models import get_model_entry, list_models

    # Where tests compute on real tensors, one variant stands for its family.
    return [name for name in list_models()
            if _STANDS_FOR_ITS_FAMILY.get(get_model_entry(name).family, name) == name]


# One registered model per model class and variant kind.
REPRESENTATIVES = _representatives()

"""Prediction on one video: whole-video top-k and sliding time windows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from vidzoo.models import create_model
from vidzoo.predict import predict_video, predict_windows

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
SHORT = VIDEOS / "mmaction2-samples/tests/data/test.mp4"  # 300 frames at 30 fps
LONG = VIDEOS / "intel-sample-videos/one-by-one-person-detection.mp4"  # 1394 frames at 10 fps
CLASSES = ["walk", "run", "jump"]


@pytest.fixture
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("c3d_bn", num_classes=3, frames=8, size=16, width=0.0625)
    model.classes = CLASSES
    return model


def _count_views(model: nn.Module) -> list[int]:
    seen: list[int] = []
    model.register_forward_hook(lambda module, args, output: seen.append(len(args[0])))
    return seen


def test_predict_video_returns_top_k_sorted_and_a_full_distribution(tiny_model):
    prediction = predict_video(tiny_model, SHORT, top_k=2)
    probabilities = [p for _, p in prediction.top]
    assert len(prediction.top) == 2 and probabilities == sorted(probabilities, reverse=True)
    assert {name for name, _ in prediction.top} <= set(CLASSES)
    assert len(prediction.probabilities) == 3 and sum(prediction.probabilities) == pytest.approx(1.0)
    assert max(prediction.probabilities) == pytest.approx(probabilities[0])
    assert (prediction.num_frames, prediction.fps) == (300, pytest.approx(30.0))


def test_predict_video_caps_top_k_at_the_class_count(tiny_model):
    assert len(predict_video(tiny_model, SHORT, top_k=5).top) == 3


def test_predict_video_uses_the_models_clips_per_video_in_batches_of_batch_size(tiny_model):
    seen = _count_views(tiny_model)
    predict_video(tiny_model, SHORT)  # the clip description's 10 clips, in batches of 8
    predict_video(tiny_model, SHORT, clips_per_video=3, batch_size=2)
    tiny_model.default_cfg = tiny_model.default_cfg.replace(clip=tiny_model.clip_spec.replace(clips_per_video=4))
    predict_video(tiny_model, SHORT)
    assert seen == [8, 2, 2, 1, 4]


def test_predict_video_names_classes_by_index_when_the_model_has_none(tiny_model):
    tiny_model.classes = None
    prediction = predict_video(tiny_model, SHORT)
    assert prediction.classes == ["class_000", "class_001", "class_002"]
    assert json.loads(json.dumps(prediction.to_dict()))["top"][0]["class"].startswith("class_")


def test_predict_video_rejects_a_bad_top_k(tiny_model):
    with pytest.raises(ValueError, match="top_k must be an integer >= 1, got 0"):
        predict_video(tiny_model, SHORT, top_k=0)


def test_predict_windows_cover_the_video_with_times_in_seconds(tiny_model):
    seen = _count_views(tiny_model)
    windows = predict_windows(tiny_model, LONG, window=20.0, stride=20.0, top_k=1, batch_size=4)
    # Every 20 s from 0 to 100 s, then one window aligned to the end (139.4 s).
    assert [w.start_s for w in windows] == pytest.approx([0, 20, 40, 60, 80, 100, 119.4])
    assert [w.end_s for w in windows] == pytest.approx([20, 40, 60, 80, 100, 120, 139.4])
    assert all(len(w.top) == 1 and w.top[0][0] in CLASSES for w in windows)
    assert seen == [4, 3]
    assert json.loads(json.dumps(windows[0].to_dict()))["start_s"] == 0


@pytest.mark.parametrize("window, stride, bad", [(0, 1.0, "window"), (2.0, -1, "stride")])
def test_predict_windows_rejects_non_positive_times(tiny_model, window, stride, bad):
    with pytest.raises(ValueError, match=f"{bad} must be a positive number of seconds"):
        predict_windows(tiny_model, SHORT, window=window, stride=stride)

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


def _window(start: float, end: float, label: str, p: float):
    from vidzoo.predict import WindowPrediction

    return WindowPrediction(start, end, [(label, p), ("other", 1 - p)])


def test_merge_segments_joins_runs_of_the_same_top1_and_tiles_the_video():
    from vidzoo.predict import merge_segments

    windows = [_window(0, 2, "walk", 0.6), _window(1, 3, "walk", 0.8), _window(2, 4, "run", 0.7),
               _window(3, 5, "walk", 0.9), _window(4, 6, "walk", 0.5)]
    segments = merge_segments(windows)
    assert [(s.label, s.windows) for s in segments] == [("walk", 2), ("run", 1), ("walk", 2)]
    # Boundaries midway between the centres of the windows on either side (2 and 3, 3 and 4).
    assert [(s.start_s, s.end_s) for s in segments] == [(0, 2.5), (2.5, 3.5), (3.5, 6)]
    assert [s.probability for s in segments] == pytest.approx([0.7, 0.7, 0.7])
    assert merge_segments([]) == [] and len(merge_segments(windows[:1])) == 1


def test_predict_cli_window_writes_segments_json_and_a_timeline_png(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from vidzoo.cli import app
    from vidzoo.models.factory import save_model

    model_file = save_model(tiny_model, tmp_path / "tiny.safetensors")
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(model_file), str(SHORT), "--window", "2", "--stride", "1",
                                 "--engine", "eager", "--precision", "fp32", "--top-k", "2", "--json",
                                 "--plot", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    (answer,) = json.loads(result.stdout)
    windows = predict_windows(tiny_model, SHORT, window=2, stride=1, top_k=2)
    assert [w["top"] for w in answer["windows"]] == [w.to_dict()["top"] for w in windows]
    segments = answer["segments"]
    assert segments[0]["start_s"] == 0 and segments[-1]["end_s"] == pytest.approx(10.0)
    assert sum(s["windows"] for s in segments) == len(windows) == 9
    png = Path(answer["plot"])
    assert png == tmp_path / "plots" / "test.timeline.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    refused = runner.invoke(app, ["predict", str(model_file), str(SHORT), "--plot", str(tmp_path / "p")])
    assert refused.exit_code == 2 and "--plot draws the timeline" in refused.output

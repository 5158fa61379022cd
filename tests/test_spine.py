"""The clip description is resolved once and every stage cuts the same clips: train, the model
file, load, predict (whole video and windows), extract. Also the two defects this design removed:
a clip length given twice with opposite precedence, and a non-square size losing its width."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPRESENTATIVES, TINY_ARGS
from typer.testing import CliRunner

from vidzoo.cli import app
from vidzoo.data.clip import ClipSpec
from vidzoo.data.pipeline import ClipPipeline
from vidzoo.data.sources import load_source
from vidzoo.evaluate import evaluate
from vidzoo.features import extract_features
from vidzoo.model_file import read_model_metadata
from vidzoo.models import get_model_entry, list_models, load_model
from vidzoo.predict import predict_video, predict_windows
from vidzoo.train import TrainConfig, resolve_run_model, train

# The fields that say how a clip is cut; the others (crops, clips_per_video) say how many views.
CUT = ("frames", "frame_stride", "sampling", "size", "resize_short", "norm", "short_policy")


@pytest.fixture
def cut_clips(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ClipSpec, tuple[int, ...]]]:
    """Every clip the pipeline cuts in this process, as (stage, clip description, shape)."""
    seen: list[tuple[str, ClipSpec, tuple[int, ...]]] = []
    train_clip, clips_at = ClipPipeline.train_clip, ClipPipeline.clips_at

    def recorded_train_clip(self, video, rng):
        out = train_clip(self, video, rng)
        seen.append(("train", self.spec, tuple(out.shape)))
        return out

    def recorded_clips_at(self, video, indices):
        out = clips_at(self, video, indices)
        seen.append(("views", self.spec, tuple(out.shape)))
        return out

    monkeypatch.setattr(ClipPipeline, "train_clip", recorded_train_clip)
    monkeypatch.setattr(ClipPipeline, "clips_at", recorded_clips_at)
    return seen


@pytest.fixture(scope="module")
def two_classes(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train, val and test CSVs of two classes, one video each (one optimizer step per epoch),
    beside the dataset's own CSVs."""
    rows = {split: list(csv.reader((dataset / f"{split}.csv").open()))[1:] for split in ("train", "val", "test")}
    keep = sorted({label for _, label in rows["train"]})[:2]
    out = tmp_path_factory.mktemp("two_classes")
    for split, split_rows in rows.items():
        with open(out / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows([path, label] for path, label in split_rows if label in keep)
        (out / "videos").mkdir(exist_ok=True)
    for label in keep:
        (out / "videos" / label).symlink_to(dataset / "videos" / label)
    return out


def _assert_one_cut(seen, model) -> None:
    """Every clip seen was cut as the model's clip description says, at its input shape."""
    clip = model.clip_spec
    expected = (model.default_cfg.in_chans, clip.frames, *clip.size)
    assert seen, "no clip was cut"
    for stage, spec, shape in seen:
        assert {f: getattr(spec, f) for f in CUT} == {f: getattr(clip, f) for f in CUT}, stage
        assert shape[-4:] == expected, (stage, shape)


# --------------------------------------------------------------------------- the round trip


@pytest.mark.slow
@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_every_stage_cuts_the_clips_the_model_was_trained_on(name, two_classes, tmp_path, cut_clips) -> None:
    test_args = dict(get_model_entry(name).test_args)
    clip = {key: test_args.pop(key) for key in ("frames", "size") if key in test_args}
    config = TrainConfig(model=name, model_args=test_args, **clip, clips_per_video=2, data=str(two_classes / "train.csv"),
                         val=str(two_classes / "val.csv"), test=str(two_classes / "test.csv"), epochs=1,
                         batch_size=2, workers=0, progress=False, out=str(tmp_path / "run"), seed=0)
    result = train(config)
    trained = ClipSpec(**result.clip)
    assert {stage for stage, _, _ in cut_clips} == {"train", "views"}

    model = load_model(result.model_file)
    assert model.clip_spec == trained == ClipSpec(**read_model_metadata(result.model_file)["clip"])
    video = load_source(two_classes / "test.csv").samples[0].path
    predicted_views = len(cut_clips)
    predict_video(model, video)
    assert cut_clips[predicted_views][2][0] == trained.clips_per_video * trained.crops  # the file's views
    predict_windows(model, video, window=0.5, stride=0.5)
    features = extract_features(model, load_source(two_classes / "test.csv"), per="clip", progress=False)
    assert len(features.features) == 2 * trained.clips_per_video
    _assert_one_cut(cut_clips, model)


@pytest.mark.parametrize("name", sorted(set(list_models()) - set(REPRESENTATIVES)))
def test_the_other_variants_are_built_for_the_clips_they_are_fed(name, two_classes) -> None:
    # The C2D variants that name a backbone and the X3D sizes: same class and code as c2d_timm and
    # x3d_xs (whose full round trips run above); here the clip is resolved and cut for real, the
    # model built on meta.
    test_args = dict(get_model_entry(name).test_args)
    clip = {key: test_args.pop(key) for key in ("frames", "size") if key in test_args}
    config = TrainConfig(model=name, model_args=test_args, **clip, data=str(two_classes / "train.csv"))
    with torch.device("meta"):
        model = resolve_run_model(config, num_classes=2)
        assert model(torch.empty(1, 3, model.clip_spec.frames, *model.clip_spec.size)).shape == (1, 2)
    from vidzoo.data.video import VideoReader

    with VideoReader(load_source(two_classes / "train.csv").samples[0].path) as video:
        views = ClipPipeline(model.clip_spec, train=False).views(video)
    assert views.shape[1:] == (3, model.clip_spec.frames, *model.clip_spec.size)


# --------------------------------------------------------------------------- the two defects


def _train_cli(*args) -> object:
    return CliRunner().invoke(app, ["train", *map(str, args)])


def test_a_flag_and_a_config_file_give_one_clip_length(two_classes, tmp_path, cut_clips) -> None:
    # Before: the config file sized the model (8 frames) and the flag cut the clips (16): the
    # first batch failed in C3D's fc6. Now the flag wins for both.
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": "c3d_bn", "model_args": TINY_ARGS, "frames": 8, "size": 16,
                                      "data": str(two_classes / "train.csv"), "val": str(two_classes / "val.csv"),
                                      "epochs": 1, "batch_size": 2, "workers": 0, "progress": False}))
    result = _train_cli("--config", config, "--frames", 16, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    meta = read_model_metadata(summary["model_file"])
    assert meta["clip"]["frames"] == meta["model_args"]["frames"] == 16
    _assert_one_cut(cut_clips, load_model(summary["model_file"]))


def test_the_model_arguments_cannot_say_the_clip_length(tmp_path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": "c3d_bn", "model_args": {"num_frames": 8}, "data": "a.csv"}))
    result = _train_cli("--config", config, "--frames", 16)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "clip length and size are clip fields" in result.stderr and "--frames/--size" in result.stderr


def test_a_non_square_model_trains_and_evaluates_on_non_square_clips(two_classes, tmp_path, cut_clips) -> None:
    # Before: a model built for 32x48 got clips of 32x32.
    config = TrainConfig(model="c3d_bn", model_args=TINY_ARGS, frames=8, size="16x24", data=str(two_classes / "train.csv"),
                         val=str(two_classes / "val.csv"), epochs=1, batch_size=2, workers=0, progress=False,
                         out=str(tmp_path / "run"))
    result = train(config)
    assert Path(result.model_file).name.startswith("c3d_bn-8x16x24x3-")
    model = load_model(result.model_file)
    assert model.clip_spec.size == (16, 24) and read_model_metadata(result.model_file)["clip"]["size"] == [16, 24]
    report = evaluate(model, load_source(two_classes / "test.csv"), progress=False)
    assert report.num_videos == 2
    _assert_one_cut(cut_clips, model)

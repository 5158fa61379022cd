"""Training: the run directory, resuming, broken videos, schedules, early stopping, config files
and two-process DDP, all on the tiny synthetic dataset with a tiny C3D-BN."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from conftest import input_size, tiny_config
from torch import nn

from vidzoo.data import video as video_module
from vidzoo.data.clip import ClipSpec
from vidzoo.data.sources import load_source
from vidzoo.data.video import VideoDecodeError, VideoReader
from vidzoo.model_file import read_model_metadata
from vidzoo.models import load_model
from vidzoo.train import (
    TrainConfig,
    TrainingError,
    VideoClassificationModule,
    read_metrics,
    train,
)

# The module's fixtures are costly: one xdist worker runs all its tests (make test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("train")

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "data" / "videos"
# 50 frames at 720p; decoding fails from frame 28 on.
BROKEN = VIDEOS / "decord-testdata/tests/test_data/corrupted.mp4"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# 8 training videos, batch 4: two optimizer steps per epoch.
STEPS_PER_EPOCH = 2




@pytest.fixture(scope="module")
def two_epochs(dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """One 2-epoch run at frame stride 2, shared by the run-directory and resume tests."""
    config = tiny_config(dataset, tmp_path_factory.mktemp("runs") / "a", frame_stride=2)
    return config, train(config)


# --------------------------------------------------------------------------- the run directory


def test_run_dir_config_yaml_loads_back_to_the_config(two_epochs):
    config, result = two_epochs
    assert TrainConfig.load(Path(result.run_dir) / "config.yaml") == config


def test_run_dir_metrics_csv_has_one_row_per_epoch_with_every_column(two_epochs):
    _, result = two_epochs
    path = Path(result.run_dir) / "metrics.csv"
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "clips_per_s",
                      "data_wait", "bad_videos"]
    rows = read_metrics(path)
    assert [row["epoch"] for row in rows] == [0, 1]
    assert all(value is not None for row in rows for value in row.values())
    assert all(0 <= row["data_wait"] <= 1 and row["clips_per_s"] > 0 for row in rows)


def test_summary_json_has_each_epochs_data_wait_share_and_clips_per_s(two_epochs):
    _, result = two_epochs
    summary = json.loads((Path(result.run_dir) / "summary.json").read_text())
    rows = read_metrics(Path(result.run_dir) / "metrics.csv")
    assert [e["epoch"] for e in summary["throughput"]] == [0, 1] and isinstance(summary["throughput"][0]["epoch"], int)
    assert all(0 <= e["data_wait"] <= 1 and e["clips_per_s"] > 0 for e in summary["throughput"])
    # The same figures as metrics.csv: one measurement, two records.
    assert [(e["clips_per_s"], e["data_wait"]) for e in summary["throughput"]] == \
        [(row["clips_per_s"], row["data_wait"]) for row in rows]


@pytest.mark.parametrize("name", ["curves.png", "confusion_val.png"])
def test_run_dir_plots_are_png_files(two_epochs, name):
    _, result = two_epochs
    assert (Path(result.run_dir) / name).read_bytes()[:8] == PNG_SIGNATURE


def test_run_dir_last_checkpoint_is_the_final_epoch_and_best_exists(two_epochs):
    # Lightning 2.6's save_last rewrites last.ckpt only when the monitored metric improves;
    # resuming needs the final epoch whatever val_acc did.
    _, result = two_epochs
    checkpoints = Path(result.run_dir) / "checkpoints"
    assert (checkpoints / "best.ckpt").is_file()
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 2 * STEPS_PER_EPOCH)


def test_run_dir_summary_json_matches_the_result(two_epochs):
    _, result = two_epochs
    summary = json.loads((Path(result.run_dir) / "summary.json").read_text())
    for key in ("best_val_accuracy", "best_epoch", "epochs_run", "model_file", "seconds"):
        assert summary[key] == getattr(result, key)
    assert summary["epochs_run"] == 2
    assert Path(summary["model_file"]).is_file()


def test_model_file_loads_with_the_dataset_classes_in_order(two_epochs, dataset: Path):
    _, result = two_epochs
    model = load_model(result.model_file)
    assert model.classes == load_source(dataset / "train.csv").classes


def test_model_file_records_the_training_clip(two_epochs):
    _, result = two_epochs
    clip = read_model_metadata(result.model_file)["clip"]
    assert (clip["sampling"], clip["frame_stride"], clip["frames"], clip["size"]) == ("dense", 2, 8, [16, 16])
    assert load_model(result.model_file).clip_spec == ClipSpec(**result.clip)


# --------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def resumed(two_epochs, tmp_path_factory: pytest.TempPathFactory):
    """The two-epoch run's config, run for 1 epoch in another directory, then resumed to 2."""
    config, _ = two_epochs
    run_dir = tmp_path_factory.mktemp("runs") / "b"
    train(config.model_copy(update={"epochs": 1, "out": str(run_dir)}))
    return train(config.model_copy(update={"out": str(run_dir)}), resume=run_dir)


def _last_checkpoint(result) -> dict:
    return torch.load(Path(result.run_dir) / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)


def test_resume_ends_with_exactly_the_uninterrupted_weights(two_epochs, resumed):
    # Exact: on CPU every kernel used is deterministic and sampling, augmentation and dropout
    # depend only on (seed, epoch), so no tolerance is needed.
    _, uninterrupted = two_epochs
    expected, got = _last_checkpoint(uninterrupted)["state_dict"], _last_checkpoint(resumed)["state_dict"]
    assert expected.keys() == got.keys()
    differing = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert differing == []


def test_resume_restores_the_optimizer_state(resumed):
    state = _last_checkpoint(resumed)["optimizer_states"][0]["state"]
    assert {float(s["step"]) for s in state.values()} == {2.0 * STEPS_PER_EPOCH}


def test_resume_appends_to_metrics_csv(resumed):
    assert [row["epoch"] for row in read_metrics(Path(resumed.run_dir) / "metrics.csv")] == [0, 1]


# --------------------------------------------------------------------------- broken videos

# 8 frames every 4th frame span 29 frames: in a 50-frame video every start (0..21) reaches frame 28.
# Batches of 3 split the 9 videos evenly: a last batch of 1 would fail in BatchNorm, whose input
# is 1x1x1 per channel at conv5 in this tiny C3D-BN.
BROKEN_CLIP = dict(frames=8, frame_stride=4, batch_size=3)


@pytest.fixture
def data_with_broken_video(dataset: Path, tmp_path: Path) -> Path:
    """The training videos as a folder per class, plus the broken video in class 'grow'."""
    root = tmp_path / "train"
    for sample in load_source(dataset / "train.csv").samples:
        link = root / sample.video_id.split("/")[1] / Path(sample.path).name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(sample.path, link)
    os.symlink(BROKEN, root / "grow" / "corrupted.mp4")
    return root


def test_broken_video_fails_for_every_training_clip():
    # The premise of the two tests below, checked rather than assumed: the clip starting at
    # frame 0 reaches least far, and it already hits the undecodable frames.
    offsets = range(0, BROKEN_CLIP["frames"] * BROKEN_CLIP["frame_stride"], BROKEN_CLIP["frame_stride"])
    with VideoReader(BROKEN) as video, pytest.raises(VideoDecodeError):
        video.get_frames(list(offsets), size=16)


def test_broken_video_is_skipped_and_written_to_bad_videos_csv(dataset, data_with_broken_video, tmp_path):
    # No preflight, which would leave the file out before training: this is the skip in training.
    config = tiny_config(dataset, tmp_path / "run", data=str(data_with_broken_video), epochs=1,
                         max_bad_fraction=0.5, preflight=0, **BROKEN_CLIP)
    result = train(config)
    assert result.bad_videos == 1
    with open(Path(result.run_dir) / "bad_videos.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(row["path"]).name for row in rows] == ["corrupted.mp4"]
    assert issubclass(getattr(video_module, rows[0]["error"]), VideoDecodeError)
    assert rows[0]["reason"]
    assert read_metrics(Path(result.run_dir) / "metrics.csv")[0]["bad_videos"] == 1


def test_max_bad_fraction_stops_training_and_names_bad_videos_csv(dataset, data_with_broken_video, tmp_path):
    config = tiny_config(dataset, tmp_path / "run", data=str(data_with_broken_video), epochs=1,
                         max_bad_fraction=0.0, preflight=0, **BROKEN_CLIP)
    with pytest.raises(TrainingError, match="bad_videos.csv"):
        train(config)


def test_the_preflight_leaves_a_broken_video_out_before_training_and_lists_it(
        dataset, data_with_broken_video, tmp_path, caplog):
    config = tiny_config(dataset, tmp_path / "run", data=str(data_with_broken_video), epochs=1,
                         max_bad_fraction=0.5, **BROKEN_CLIP)
    with caplog.at_level("INFO", logger="vidzoo.train"):
        result = train(config)
    assert result.preflight["unreadable"] == 1 and result.bad_videos == 1
    assert "skipping" in caplog.text and "corrupted.mp4" in caplog.text
    with open(Path(result.run_dir) / "bad_videos.csv", newline="") as f:
        assert [Path(row["path"]).name for row in csv.DictReader(f)] == ["corrupted.mp4"]
    assert "corrupted.mp4" not in (Path(result.run_dir) / "train_split.csv").read_text()


def test_the_preflight_refuses_too_many_broken_videos_naming_them(dataset, data_with_broken_video, tmp_path):
    config = tiny_config(dataset, tmp_path / "run", data=str(data_with_broken_video), epochs=1,
                         max_bad_fraction=0.0, **BROKEN_CLIP)
    with pytest.raises(TrainingError, match=r"1 of 17 videos cannot be used .*corrupted\.mp4: decoding failed"):
        train(config)
    assert not (tmp_path / "run").exists()  # a run refused before training leaves nothing behind


# --------------------------------------------------------------------------- schedules


def lr_factors(steps: int, steps_per_epoch: int = 4, **config) -> list[float]:
    module = VideoClassificationModule(nn.Linear(1, 1), TrainConfig(data="unused", **config), steps_per_epoch)
    return [module._lr_factor(step) for step in range(steps)]


def test_constant_schedule_keeps_the_learning_rate():
    assert lr_factors(40, schedule="constant", epochs=10) == [1.0] * 40


def test_step_schedule_multiplies_by_gamma_at_each_boundary():
    factors = lr_factors(40, schedule="step", epochs=10, step_epochs=3, step_gamma=0.1)
    assert factors[:12] == [1.0] * 12  # epochs 0-2
    assert factors[12:24] == pytest.approx([0.1] * 12)  # epochs 3-5
    assert factors[24:36] == pytest.approx([0.01] * 12)


def test_cosine_schedule_falls_from_one_to_near_zero():
    factors = lr_factors(40, schedule="cosine", epochs=10)
    assert factors[0] == 1.0
    assert factors[20] == pytest.approx(0.5)  # half way
    assert all(a > b for a, b in zip(factors, factors[1:]))
    assert factors[-1] < 0.01


def test_warmup_rises_linearly_from_near_zero_to_one():
    factors = lr_factors(16, schedule="constant", epochs=10, warmup_epochs=2)
    assert factors[:8] == pytest.approx([(step + 1) / 8 for step in range(8)])
    assert factors[8:] == [1.0] * 8


def test_cosine_after_warmup_starts_at_one():
    factors = lr_factors(40, schedule="cosine", epochs=10, warmup_epochs=2)
    assert factors[7] == pytest.approx(1.0)
    assert factors[-1] < 0.01


# --------------------------------------------------------------------------- early stopping


def test_target_accuracy_stops_after_the_first_epoch(dataset, tmp_path):
    result = train(tiny_config(dataset, tmp_path / "run", epochs=3, target_accuracy=0.01))
    assert read_metrics(Path(result.run_dir) / "metrics.csv")[0]["val_acc"] >= 0.01, "premise: epoch 0 reached it"
    assert (result.epochs_run, result.stopped_early) == (1, True)


# --------------------------------------------------------------------------- config files


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_from_file_reads_yaml_and_json(tmp_path, suffix):
    values = {"data": "videos/train.csv", "model_args": {"width": 0.25}, "epochs": 3, "schedule": "cosine"}
    path = tmp_path / f"run{suffix}"
    path.write_text(json.dumps(values) if suffix == ".json" else yaml.safe_dump(values))
    assert TrainConfig.load(path) == TrainConfig(**values)


def test_config_from_file_overrides_win_and_none_is_ignored(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": "a.csv", "epochs": 3, "lr": 0.01}))
    config = TrainConfig.load(path, epochs=5, lr=None)
    assert (config.epochs, config.lr) == (5, 0.01)


def test_config_from_file_rejects_an_unknown_key_by_name(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": "a.csv", "learning_rate": 0.01}))
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.load(path)


def test_config_rejects_val_and_val_split_together():
    with pytest.raises(ValueError, match="val_split"):
        TrainConfig(data="a.csv", val="b.csv", val_split=0.2)


# --------------------------------------------------------------------------- DDP


@pytest.fixture(scope="module")
def ddp_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """`vidzoo train` for one epoch as two CPU processes (gloo), each recording its videos."""
    out = tmp_path_factory.mktemp("ddp")
    config = tiny_config(dataset, out / "run", epochs=1, batch_size=2, record_samples=True)
    config_file = out / "ddp.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    # Lightning's ddp strategy relaunches this command once per extra rank.
    command = [str(Path(sys.executable).with_name("vidzoo")), "train", "--config", str(config_file),
               "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return config, done


@pytest.mark.slow
def test_ddp_ranks_train_on_disjoint_shares_of_the_data(ddp_run):
    config, _ = ddp_run
    seen = [
        [line.split("\t")[1] for line in (Path(config.out) / f"seen_rank{rank}.txt").read_text().splitlines()]
        for rank in (0, 1)
    ]
    train_ids = {s.video_id for s in load_source(config.data).samples}
    # DistributedSampler pads to equal shares by repeating videos: only those may be seen twice.
    padding = math.ceil(len(train_ids) / 2) * 2 - len(train_ids)
    assert len(seen[0]) == len(seen[1]) == math.ceil(len(train_ids) / 2)
    assert set(seen[0]) | set(seen[1]) == train_ids
    assert sum(n - 1 for n in Counter(seen[0] + seen[1]).values()) == padding


@pytest.mark.slow
def test_ddp_run_saves_a_model_file_that_loads(ddp_run):
    config, _ = ddp_run
    summary = json.loads((Path(config.out) / "summary.json").read_text())
    assert load_model(summary["model_file"]).classes == load_source(config.data).classes


@pytest.mark.slow
def test_ddp_run_reports_once_from_rank_zero(ddp_run):
    _, done = ddp_run
    assert done.stdout.count("model file:") == 1


def test_frames_and_size_build_the_model_for_the_clips(dataset, tmp_path):
    # C3D's fc6 is sized by its input: --frames/--size alone must be enough to train it.
    config = tiny_config(dataset, tmp_path / "run", model_args={"width": 0.0625, "dropout": 0.0},
                         frames=8, size=16, epochs=1)
    result = train(config)
    model = load_model(result.model_file)
    assert (model.model_args["frames"], model.model_args["size"]) == (8, [16, 16])
    assert input_size(model.default_cfg) == (8, 16, 16)

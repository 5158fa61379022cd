"""The `vidzoo` command: help for every command, the whole path from dataset to predictions,
user errors (exit code 2, no traceback) and the quickstart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer.main
from click.testing import Result
from typer.testing import CliRunner

from vidzoo.cli import app
from vidzoo.data.sampling import window_bounds
from vidzoo.data.synthetic import CLASSES
from vidzoo.model_file import read_model_metadata

# The module's fixtures are costly: one xdist worker runs all its tests (make test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("cli")

runner = CliRunner()
TINY_MODEL = {"width": 0.0625, "frames": 8, "size": 16, "dropout": 0.0}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
C3D_PARAMS = 79_991_015  # the paper's C3D with Sports-1M's 487 classes


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    ctx = click.Context(group)
    paths = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, (*prefix, name)))
    return paths


COMMANDS = _command_paths(typer.main.get_command(app))


def vidzoo(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def squashed(text: str) -> str:
    """Rich wraps messages at the console width, even inside a long path: compare without whitespace."""
    return "".join(text.split())


def assert_user_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert squashed(fragment) in squashed(result.stderr)


# --------------------------------------------------------------------------- help


def test_every_command_is_discovered():
    assert {"train", "eval", "predict", "info", "models", "quickstart", "make-dataset"} <= {p[0] for p in COMMANDS}


@pytest.mark.parametrize("path", [(), *COMMANDS], ids=lambda p: " ".join(p) or "vidzoo")
def test_help_exits_zero(path):
    result = vidzoo(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


# --------------------------------------------------------------------------- dataset -> model -> predictions


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "data"
    result = vidzoo("make-dataset", "synthetic", out, "--videos-per-class", 3, "--frames", 8, "--size", 32)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def model_file(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli")
    # Model arguments and the clip from flags alone: the options are generated from TrainConfig.
    result = vidzoo("train", "--model", "c3d_bn", "--model-arg", "width=0.0625", "--model-arg", "dropout=0",
                    "--frames", 8, "--size", 16, "--data", dataset / "train.csv", "--val", dataset / "val.csv",
                    "--epochs", 1, "--batch-size", 4, "--workers", 0, "--out", out / "run")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "run" / "summary.json").read_text())
    return Path(summary["model_file"])


def test_make_dataset_synthetic_writes_the_dataset(dataset):
    meta = json.loads((dataset / "dataset.json").read_text())
    assert (meta["videos_per_class"], meta["frames"], meta["height"]) == (3, 8, 32)
    assert (dataset / "classes.txt").read_text().split() == list(CLASSES)
    for split in ("train", "val", "test"):
        rows = (dataset / f"{split}.csv").read_text().splitlines()
        assert len([r for r in rows if r.startswith("videos/")]) == len(CLASSES)
    assert len(list((dataset / "videos").rglob("*.mp4"))) == 3 * len(CLASSES)


def test_eval_json_reports_every_metric(model_file, dataset):
    result = vidzoo("eval", model_file, dataset / "test.csv", "--clips-per-video", 2, "--workers", 0, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("clip_accuracy", "video_accuracy", "top5_accuracy", "mean_class_accuracy"):
        assert 0.0 <= report[key] <= 1.0
    assert report["classes"] == sorted(CLASSES)
    assert set(report["per_class"]) == set(CLASSES)
    assert report["num_videos"] == len(CLASSES)
    assert sum(map(sum, report["confusion_matrix"])) == len(CLASSES)


def test_eval_out_writes_confusion_png(model_file, dataset, tmp_path):
    result = vidzoo("eval", model_file, dataset / "test.csv", "--clips-per-video", 1, "--workers", 0, "--out", tmp_path / "e")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "e" / "confusion.png").read_bytes()[:8] == PNG_SIGNATURE


def test_predict_json_returns_top_k_sorted(model_file, dataset):
    videos = sorted((dataset / "videos").rglob("*.mp4"))[:2]
    result = vidzoo("predict", model_file, *videos, "--top-k", 3, "--json")
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)
    assert [p["path"] for p in predictions] == [str(v) for v in videos]
    for prediction in predictions:
        probabilities = [t["probability"] for t in prediction["top"]]
        assert len(probabilities) == 3
        assert probabilities == sorted(probabilities, reverse=True)
        assert probabilities[0] == max(prediction["probabilities"])


def test_predict_window_returns_one_prediction_per_window(model_file, dataset):
    video = sorted((dataset / "videos").rglob("*.mp4"))[0]  # 8 frames at 8 fps
    result = vidzoo("predict", model_file, video, "--window", 0.5, "--stride", 0.25, "--top-k", 2, "--json")
    assert result.exit_code == 0, result.output
    windows = json.loads(result.stdout)[0]["windows"]
    expected = window_bounds(8, 4, 2) / 8
    assert [(w["start_s"], w["end_s"]) for w in windows] == [tuple(b) for b in expected.tolist()]
    assert all(len(w["top"]) == 2 for w in windows)


def test_info_prints_the_model_metadata(model_file):
    result = vidzoo("info", model_file)
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert meta == read_model_metadata(model_file)
    assert (meta["arch"], meta["classes"]) == ("c3d_bn", sorted(CLASSES))


def test_inspect_json_shows_what_the_decoder_sees(dataset, tmp_path):
    video = sorted((dataset / "videos").rglob("*.mp4"))[0]  # 8 frames, 32x32, 8 fps
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    result = vidzoo("inspect", video, broken, "--json")
    assert result.exit_code == 1, result.output  # one of the videos is unreadable
    good, bad = json.loads(result.stdout)
    assert (good["num_frames"], good["width"], good["height"], good["fps"]) == (8, 32, 32, 8.0)
    assert (bad["path"], bad["error"]) == (str(broken), "NotAVideoError") and bad["reason"]


def test_probe_given_a_video_points_at_inspect(dataset):
    video = sorted((dataset / "videos").rglob("*.mp4"))[0]
    result = vidzoo("probe", video)
    assert_user_error(result, "is a video", f"vidzoo inspect {video}")


def test_models_json_lists_c3d_with_the_paper_parameter_count():
    result = vidzoo("models", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert {"c3d", "c3d_bn"} <= set(rows)
    assert rows["c3d"]["params"] == C3D_PARAMS


# --------------------------------------------------------------------------- user errors


def test_unknown_model_is_a_user_error_with_did_you_mean(dataset, tmp_path):
    result = vidzoo("train", "--data", dataset / "train.csv", "--model", "c3d_bnn", "--out", tmp_path / "run")
    assert_user_error(result, "unknown model 'c3d_bnn'", "Did you mean 'c3d_bn'")


def test_missing_data_path_is_a_user_error(tmp_path):
    missing = tmp_path / "no_such.csv"
    result = vidzoo("train", "--data", missing, "--out", tmp_path / "run")
    assert_user_error(result, missing.name, "no such file or directory")


def test_corrupt_model_file_is_a_user_error_naming_sha256(model_file, dataset, tmp_path):
    data = bytearray(model_file.read_bytes())
    header_len = int.from_bytes(data[:8], "little")  # safetensors: u64 length, JSON header, tensors
    data[8 + header_len + 100] ^= 0xFF
    corrupt = tmp_path / model_file.name
    corrupt.write_bytes(bytes(data))
    result = vidzoo("eval", corrupt, dataset / "test.csv", "--workers", 0)
    assert_user_error(result, "tensors_sha256 mismatch")


def test_eval_on_a_class_the_model_does_not_know_is_a_user_error(model_file, dataset, tmp_path):
    video = sorted((dataset / "videos").rglob("*.mp4"))[0]
    (tmp_path / "data" / "jump").mkdir(parents=True)
    os.symlink(video, tmp_path / "data" / "jump" / "a.mp4")
    result = vidzoo("eval", model_file, tmp_path / "data", "--workers", 0)
    assert_user_error(result, "class 'jump' is not among the 8 known classes")


# --------------------------------------------------------------------------- quickstart


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path):
    # The real console script, as `make quickstart` runs it, with a smaller dataset.
    command = [str(Path(sys.executable).with_name("vidzoo")), "quickstart", "--out", str(tmp_path),
               "--epochs", "1", "--videos-per-class", "3", "--workers", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0.0 <= summary["test_video_accuracy"] <= 1.0
    assert 0.0 <= summary["test_clip_accuracy"] <= 1.0
    assert Path(summary["model_file"]).is_file()
    assert summary["seconds"] > 0


# --------------------------------------------------------------------------- output


@pytest.mark.parametrize("verbose", [False, True])
def test_train_prints_its_progress_and_lightnings_banners_only_with_verbose(dataset, tmp_path, capfd, caplog,
                                                                         verbose):
    args = ["train", "--model", "c3d_bn", "--model-arg", "width=0.0625", "--frames", 8, "--size", 16,
            "--data", dataset / "train.csv", "--val", dataset / "val.csv", "--epochs", 2, "--batch-size", 4,
            "--workers", 0, "--out", tmp_path / "run", *(["--verbose"] if verbose else [])]
    result = vidzoo(*args)
    assert result.exit_code == 0, result.output
    captured = capfd.readouterr()  # Lightning's handler writes to the process's own stderr...
    # ...unless the root logger had a handler when Lightning was imported (pytest's, when
    # another test imported it first): then its records reach pytest's log capture instead.
    text = result.output + captured.out + captured.err + caplog.text
    assert ("GPU available" in text) == verbose and ("Tip:" in text) == verbose
    # Not a terminal: plain lines, no carriage returns; one kept summary line per epoch.
    assert "\r" not in text
    summaries = [line for line in text.splitlines() if line.startswith("epoch ") and "val_acc" in line]
    assert [line.split()[1] for line in summaries] == ["1/2", "2/2"]
    assert all("clips/s" in line and "data wait" in line for line in summaries)

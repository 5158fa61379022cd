"""A new user's first day: the defects a user hit on real videos, each fixed and checked here
(annotation paths, label typos, broken files, short videos, splits, the report before training,
pretrained files, predictions over several files, the network, interrupts, file modes)."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import pytest
import yaml
from conftest import TINY_ARGS, require_videos
from typer.testing import CliRunner

from vidzoo.cli import app
from vidzoo.data.sources import AnnotationError, data_warnings, from_csv, load_source, stratified_split
from vidzoo.models import create_model, save_model
from vidzoo.train import TrainConfig, TrainingError, train
from vidzoo.train.callbacks import worker_failure

# The module's fixtures are costly: one xdist worker runs all its tests (make test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("first_day")

runner = CliRunner()
CORRUPT = "decord-testdata/tests/test_data/corrupted.mp4"  # decoding fails from frame 28 on
CLIP = {"frames": 8, "size": 16}


def vidzoo(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 classes x 5 videos of 8 frames, 32 px: labels.csv holds all 40."""
    from vidzoo.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("first_day")
    make_synthetic_dataset(root, videos_per_class=5, frames=8, size=32, fps=8, splits=(5, 0, 0), overwrite=True)
    return root


def rows(videos: Path) -> list[list[str]]:
    """labels.csv's rows, with absolute paths."""
    return [[str(videos / path), label] for path, label in list(csv.reader((videos / "labels.csv").open()))[1:]]


def write_csv(path: Path, lines: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["path", "label"], *lines])
    return path


def config(data: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(model="c3d_bn", model_args=TINY_ARGS, **CLIP, data=str(data), epochs=1, batch_size=4, workers=0,
                  progress=False, out=str(out))
    return TrainConfig(**{**values, **overrides})


# --------------------------------------------------------------------------- 1. paths in a CSV


def test_1_absolute_paths_in_a_users_csv_are_read(videos, tmp_path):
    csv_file = write_csv(tmp_path / "mine.csv", rows(videos))
    source = load_source(csv_file)
    assert len(source) == 40 and Path(source.samples[0].path).is_absolute()


def test_1_relative_paths_start_at_data_root(videos, tmp_path):
    relative = [[str(Path(path).relative_to(videos)), label] for path, label in rows(videos)]
    csv_file = write_csv(tmp_path / "elsewhere.csv", relative)
    with pytest.raises(AnnotationError, match=r"missing file .*\(relative paths are read from .*or --data-root\)"):
        load_source(csv_file)
    assert len(load_source(csv_file, root=videos)) == 40


def test_1_confinement_is_there_for_what_a_server_is_sent(videos, tmp_path):
    csv_file = write_csv(tmp_path / "sent.csv", [[rows(videos)[0][0], "grow"], ["../x.mp4", "grow"]])
    with pytest.raises(AnnotationError) as err:
        from_csv(csv_file, root=tmp_path, confine=True)
    assert "absolute path" in str(err.value) and "escapes the dataset root" in str(err.value)


# --------------------------------------------------------------------------- 2. label typos


def test_2_a_label_typo_is_named_before_training(videos, tmp_path):
    lines = rows(videos)
    lines[0][1] = "move_lefft" if lines[0][1] != "move_left" else "grow"
    typo = [[p, "move_lefft"] for p, label in lines[:1]]
    source = load_source(write_csv(tmp_path / "typo.csv", [*lines[1:], *typo]))
    warnings = data_warnings(source)
    assert any("'move_lefft' (1 videos) looks like a typo of 'move_left'" in w for w in warnings), warnings
    assert any("fewer than 5 training videos" in w and "move_lefft (1)" in w for w in warnings)


def test_2_a_typo_is_judged_on_every_split_not_just_training(videos, tmp_path):
    # After a split a typo's class may look big next to the real one in training alone
    # (3 vs 1 here); over all splits (5 vs 1) it is a typo.
    left = [line for line in rows(videos) if line[1] == "move_left"]
    grow = [line for line in rows(videos) if line[1] == "grow"]
    train_rows = [*left[:3], [grow[0][0], "move_lft"], *grow[1:]]
    train_source = load_source(write_csv(tmp_path / "train.csv", train_rows))
    val_source = load_source(write_csv(tmp_path / "val.csv", left[3:]))
    assert not any("typo" in w for w in data_warnings(train_source))
    assert any("'move_lft' (1 videos) looks like a typo of 'move_left' (5 videos)" in w
               for w in data_warnings(train_source, val_source))


def test_2_classes_that_differ_by_design_are_not_typos(videos):
    # rotate_cw / rotate_ccw are one edit apart, with as many videos each: not a typo.
    assert data_warnings(load_source(videos / "labels.csv")) == []


def test_2_a_class_list_makes_any_other_label_an_error(videos, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(sorted({label for _, label in rows(videos)})))
    lines = [*rows(videos), [rows(videos)[0][0].replace("_0000", "_0001"), "move_lefft"]]
    with pytest.raises(AnnotationError, match="unknown label 'move_lefft'.*did you mean 'move_left'"):
        load_source(write_csv(videos / "with_typo.csv", lines), classes)


# --------------------------------------------------------------------------- 3. broken files


@pytest.fixture(scope="module")
def with_broken(videos: Path) -> Path:
    """labels.csv plus a corrupt MP4, a text file named .mp4 and an empty .webm."""
    root = require_videos()
    broken = videos / "broken"
    broken.mkdir()
    os.symlink(root / CORRUPT, broken / "corrupt.mp4")
    (broken / "notes.mp4").write_text("this is not a video\n")
    (broken / "empty.webm").write_bytes(b"")
    lines = [*rows(videos), [str(broken / "corrupt.mp4"), "grow"], [str(broken / "notes.mp4"), "shrink"],
             [str(broken / "empty.webm"), "move_up"]]
    return write_csv(videos / "with_broken.csv", lines)


def test_3_broken_files_are_skipped_named_and_listed(with_broken, tmp_path, caplog):
    with caplog.at_level("INFO", logger="vidzoo.train"):
        result = train(config(with_broken, tmp_path / "run", max_bad_fraction=0.1, val_split=0.4))
    # The split counts said before the preflight are said again without the broken files.
    kept = {name: len((Path(result.run_dir) / f"{name}_split.csv").read_text().splitlines()) - 1
            for name in ("train", "val")}
    assert f"left out 3 unusable video(s); videos per split now: train {kept['train']}, val {kept['val']}" in caplog.text
    with open(Path(result.run_dir) / "bad_videos.csv", newline="") as f:
        listed = {Path(row["path"]).name: row for row in csv.DictReader(f)}
    assert set(listed) == {"corrupt.mp4", "notes.mp4", "empty.webm"}
    assert listed["notes.mp4"]["error"] == "NotAVideoError" and listed["empty.webm"]["reason"] == "the file is empty (0 bytes)"
    assert result.bad_videos == 3 and result.preflight["unreadable"] == 3


def test_3_a_broken_video_in_validation_is_skipped_and_listed_not_fatal(with_broken, tmp_path):
    # Without the preflight, the broken files reach the loaders: training skips and substitutes,
    # validation leaves them out; both are listed.
    result = train(config(with_broken, tmp_path / "run", max_bad_fraction=0.2, val_split=0.4, preflight=0))
    listed = (Path(result.run_dir) / "bad_videos.csv").read_text()
    val = (Path(result.run_dir) / "val_split.csv").read_text()
    assert any(name in val and name in listed for name in ("corrupt.mp4", "notes.mp4", "empty.webm"))


def test_3_an_error_raised_in_a_worker_is_not_called_a_dead_worker(tmp_path):
    error = RuntimeError("Caught NotAVideoError in DataLoader worker process 0.\nOriginal Traceback ...")
    assert worker_failure(error, tmp_path, since=0) is None


def test_11_a_worker_killed_while_idle_is_not_blamed_on_a_file(tmp_path):
    error = RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated.")
    failure = worker_failure(error, tmp_path, since=0)
    assert "not while decoding a video" in str(failure) and "vidzoo inspect" not in str(failure)


# --------------------------------------------------------------------------- 4. short videos


def test_4_videos_shorter_than_a_clip_are_counted_and_the_policy_said(videos, tmp_path, caplog):
    with caplog.at_level("INFO", logger="vidzoo.train"):
        result = train(config(videos / "labels.csv", tmp_path / "run", frames=32))
    assert result.preflight["shorter_than_a_clip"] == 40 and result.preflight["short_policy"] == "loop"
    assert "40 of 40 videos have fewer frames than a clip (32" in caplog.text
    assert "played again from its start" in caplog.text and "--short-policy" in caplog.text


def test_4_short_policy_error_leaves_short_videos_out(videos, tmp_path):
    with pytest.raises(TrainingError, match="40 of 40 videos cannot be used.*8 frames < clip length 32"):
        train(config(videos / "labels.csv", tmp_path / "run", frames=32, short_policy="error"))


# --------------------------------------------------------------------------- 5. splits


def test_5_the_split_is_printed_per_class_and_written_to_the_run(videos, tmp_path, caplog):
    with caplog.at_level("INFO", logger="vidzoo.train"):
        result = train(config(videos / "labels.csv", tmp_path / "run", test_split=0.2))
    run = Path(result.run_dir)
    # 5 videos a class: 0.2 holds out 1 for test, then 0.2 of the 4 left (round(0.8) = 1) for val.
    assert result.splits[0] == {"class": "grow", "train": 3, "val": 1, "test": 1}
    assert "videos per split: train 24, val 8, test 8" in caplog.text
    assert len(list(csv.reader((run / "val_split.csv").open()))) == 9
    assert result.test is not None and result.test["num_videos"] == 8  # --test-split evaluated at the end


def test_5_small_classes_keep_their_videos_and_say_so():
    source = load_source_of_counts({"big": 10, "small": 2})
    kept, held = stratified_split(source, 0.2, seed=0)
    assert held.class_counts() == {"big": 2, "small": 0} and kept.class_counts() == {"big": 8, "small": 2}


def load_source_of_counts(counts: dict[str, int]):
    from vidzoo.data.sources import VideoSample, VideoSource

    samples = [VideoSample(f"/v/{name}{i}.mp4", label, f"{name}{i}")
               for label, (name, n) in enumerate(counts.items()) for i in range(n)]
    return VideoSource(list(counts), samples, "/v", "counts")


def test_5_an_empty_validation_split_is_refused_with_what_to_do(videos, tmp_path):
    lines = [[p, label] for p, label in rows(videos) if p.endswith(("_0000.mp4", "_0001.mp4"))]
    with pytest.raises(AnnotationError, match="validation split is empty.*--val DATA or a larger --val-split"):
        train(config(write_csv(videos / "two_each.csv", lines), tmp_path / "run"))


# --------------------------------------------------------------------------- 7 and 8. pretrained


@pytest.fixture(scope="module")
def start_file(tmp_path_factory) -> Path:
    model = create_model("c3d_bn", num_classes=3, width=0.0625, frames=8, size=16, dropout=0.0)
    return save_model(model, tmp_path_factory.mktemp("start") / "start.safetensors", classes=["a", "b", "c"])


def test_7_8_a_model_file_gives_its_architecture_and_the_load_report_comes_first(videos, start_file, tmp_path, capfd):
    result = vidzoo("train", "--pretrained", start_file, "--data", videos / "labels.csv", "--epochs", 1,
                    "--batch-size", 4, "--workers", 0, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    err = result.stderr + capfd.readouterr().err
    assert err.index("pretrained weights") < err.index("epoch 1/1")  # said before the first step
    said = result.stdout + err
    assert said.count("pretrained weights") == 1 and said.count(str(start_file)) == 1  # once, the path named once
    assert "skipped (old head, freshly initialised): fc8.weight, fc8.bias" in err
    assert "model c3d_bn: 184,964 parameters" in err  # the file's width and clip, not c3d_bn's defaults


def test_8_another_architecture_than_the_files_is_one_line(videos, start_file, tmp_path):
    result = vidzoo("train", "--model", "r3d_18", "--pretrained", start_file, "--data", videos / "labels.csv",
                    "--out", tmp_path / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    error = result.stderr.split("error:", 1)[1]
    assert "is a 'c3d_bn' model file but --model is 'r3d_18'" in error
    assert len(error.strip().splitlines()) <= 3 and "missing from the weights" not in error  # one message
    assert "videos per split" not in result.stderr  # said before any data is read


# --------------------------------------------------------------------------- 9. predict


def test_9_predict_answers_every_file_and_fails_only_at_the_end(videos, start_file, tmp_path):
    good = rows(videos)[0][0]
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    result = vidzoo("predict", start_file, good, bad, good, "--json")
    assert result.exit_code == 1
    answers = json.loads(result.stdout)
    assert [("error" in a) for a in answers] == [False, True, False]
    assert answers[1]["error"] == "NotAVideoError"
    assert vidzoo("predict", start_file, good, bad, "--skip-bad").exit_code == 0


# --------------------------------------------------------------------------- 11. interrupts


def test_11_ctrl_c_says_how_to_resume(tmp_path):
    from vidzoo.cli.train import _interrupted

    assert "nothing to resume" in _interrupted(tmp_path / "run")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert f"vidzoo train --resume {tmp_path / 'run'}" in _interrupted(tmp_path / "run")


# --------------------------------------------------------------------------- 12. smaller things


def test_12_a_refused_run_leaves_no_folder_and_a_failed_one_says_it_kept_its_folder(videos, tmp_path, monkeypatch):
    result = vidzoo("train", "--data", videos / "labels.csv", "--model", "c3d_bnn", "--out", tmp_path / "refused")
    assert result.exit_code == 2 and not (tmp_path / "refused").exists()

    def fails_midway(config, **kwargs):  # a run that started, wrote its folder, then stopped
        Path(config.out).mkdir(parents=True)
        (Path(config.out) / "config.yaml").write_text("model: c3d_bn\n")
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr("vidzoo.train.run.train", fails_midway)
    result = vidzoo("train", "--data", videos / "labels.csv", "--out", tmp_path / "failed")
    assert result.exit_code != 0 and (tmp_path / "failed" / "config.yaml").is_file()
    assert f"the run directory {tmp_path / 'failed'} is kept" in " ".join(result.output.split())


def test_12_model_files_get_the_usual_file_mode(start_file):
    mode = stat.S_IMODE(start_file.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_12_a_run_leaves_no_decoding_folder_and_eval_shows_a_per_class_table(videos, tmp_path):
    result = train(config(videos / "labels.csv", tmp_path / "run"))
    assert not (tmp_path / "run" / "decoding").exists()
    shown = vidzoo("eval", result.model_file, videos / "labels.csv", "--workers", 0, "--clips-per-video", 1)
    assert shown.exit_code == 0, shown.output
    assert "per class (worst first)" in shown.stdout and "top-5" in shown.stdout  # 8 classes: top-5 says something
    assert "file sha256" not in shown.stdout


def test_12_top_k_is_not_shown_when_it_covers_every_class(videos, start_file, tmp_path):
    lines = [[p, label] for p, label in rows(videos) if label in ("grow", "shrink", "move_up")]
    data = write_csv(videos / "three.csv", lines)
    model = create_model("c3d_bn", num_classes=3, width=0.0625, frames=8, size=16)
    model.classes = ["grow", "move_up", "shrink"]
    shown = vidzoo("eval", save_model(model, tmp_path / "three.safetensors"), data, "--workers", 0,
                   "--clips-per-video", 1)
    assert shown.exit_code == 0 and "top-" not in shown.stdout


def test_12_curves_mark_the_best_epoch_and_chance(tmp_path):
    from vidzoo.plots import _best_epoch, plot_curves

    rows_ = [{"epoch": 0, "val_acc": 0.3, "train_acc": 0.2}, {"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.5}]
    assert _best_epoch(rows_) == 1  # the first of equal scores, as the checkpoint keeps it
    assert plot_curves(rows_[:1], tmp_path / "one.png", chance=0.125).read_bytes()[:4] == b"\x89PNG"


def test_12_vidzoo_models_lists_from_the_shipped_table_without_importing_torch():
    import subprocess
    import sys

    code = "import sys; from vidzoo.cli import app; from typer.testing import CliRunner; " \
           "r = CliRunner().invoke(app, ['models', '--json']); assert r.exit_code == 0, r.output; " \
           "print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_config_keys_from_an_older_vidzoo_name_their_new_name(tmp_path):
    config_file = tmp_path / "old.yaml"
    config_file.write_text(yaml.safe_dump({"data": "a.csv", "model_kwargs": {"width": 0.5}, "stride": 2}))
    result = vidzoo("train", "--config", config_file)
    assert result.exit_code == 2 and "'model_kwargs': it is called 'model_args' now" in result.stderr


def test_12_the_models_table_is_not_cut_at_80_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    shown = vidzoo("models", "c2d_inception_resnet*")
    assert shown.exit_code == 0, shown.output
    row = next(line for line in shown.stdout.splitlines() if "c2d_inception_resnet_v2" in line)
    assert "54,827,507" in row and "IRv2, IRv2avg" in row and len(row) > 80


def test_12_the_readme_and_the_help_give_the_quickstart_the_same_duration():
    import inspect
    import re

    from vidzoo.cli import quickstart_command

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    said_in_readme = re.search(r"takes about\s+(\d+) minutes", readme)
    said_in_help = re.search(r"about (\d+) minutes on 2 CPU cores", inspect.getdoc(quickstart_command))
    assert said_in_readme and said_in_help
    assert said_in_readme.group(1) == said_in_help.group(1)

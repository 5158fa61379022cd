"""`vidzoo check` and the cross-split annotation validation that `vidzoo train` runs first."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
from test_bad_inputs import _rotated, write_audio, write_video
from typer.testing import CliRunner

import vidzoo.check as check_module
from vidzoo.check import CheckReport, check_dataset
from vidzoo.cli import app
from vidzoo.data.sources import AnnotationError, from_csv, from_folder, validate_sources


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """good (20 frames), short (4), rotated (12), odd-sized (20), broken and audio-only files."""
    root = tmp_path_factory.mktemp("mixed")
    write_video(root / "good.mp4", frames=20)
    write_video(root / "short.mp4", frames=4)
    _rotated((0, 1, -1, 0))(root).rename(root / "rotated.mp4")
    write_video(root / "odd.mkv", frames=20, codec="ffv1", size=(33, 47))
    (root / "broken.mp4").write_bytes(b"\x00\x01" * 500)
    write_audio(root / "audio.mp4")
    (root / "notes.txt").write_text("not a video: not checked")
    return root


def _by_name(report: CheckReport) -> dict:
    return {Path(r.path).name: r for r in report.results}


@pytest.fixture(scope="module")
def report(mixed) -> CheckReport:
    return check_dataset(mixed, workers=0, progress=False)


def test_statuses(report):
    statuses = {name: r.status for name, r in _by_name(report).items()}
    assert statuses == {
        "audio.mp4": "no_video_stream", "broken.mp4": "unreadable", "good.mp4": "ok",
        "odd.mkv": "ok", "rotated.mp4": "too_short", "short.mp4": "too_short",
    }


def test_unreadable_says_why(report):
    broken = _by_name(report)["broken.mp4"]
    assert broken.error == "NotAVideoError" and "not a readable media file" in broken.reason


def test_flags(report):
    flags = {name: r.flags for name, r in _by_name(report).items() if r.flags}
    assert flags == {"rotated.mp4": ["rotated"], "odd.mkv": ["odd_size"]}


def test_too_short_is_a_warning_not_unusable(report):
    assert sorted(Path(r.path).name for r in report.unusable) == ["audio.mp4", "broken.mp4"]


def test_summary_counts(report):
    summary = report.summary()
    assert summary["videos"] == 6 and summary["ok"] == 2 and summary["too_short"] == 2
    assert summary["unreadable"] == 1 and summary["no_video_stream"] == 1 and summary["unusable"] == 2
    assert summary["rotated"] == 1 and summary["odd_size"] == 1


def test_csv_has_one_row_per_video(report, tmp_path):
    rows = list(csv.DictReader(open(report.write_csv(tmp_path / "r.csv"), encoding="utf-8")))
    assert [Path(r["path"]).name for r in rows] == [Path(r.path).name for r in report.results]
    good = next(r for r in rows if r["path"].endswith("good.mp4"))
    assert (good["status"], good["num_frames"], good["width"], good["height"]) == ("ok", "20", "64", "48")


def test_worker_processes_give_the_same_report(mixed, report):
    parallel = check_dataset(mixed, workers=2, progress=False)
    strip = lambda rep: [(r.path, r.status, r.error, r.num_frames, r.flags) for r in rep.results]  # noqa: E731
    assert strip(parallel) == strip(report)


def test_a_file_past_the_timeout_is_reported_not_waited_for(mixed):
    result = check_dataset([str(mixed / "good.mp4")], workers=1, timeout=1e-4, progress=False)
    assert (result.results[0].status, result.results[0].error) == ("unreadable", "Timeout")


def test_a_hanging_file_is_blamed_alone(mixed, monkeypatch):
    # One file hangs the decoder; the videos queued behind it on the same worker are still checked.
    # (Forked workers, so that they inherit the hang; the spawned default is covered by the
    # training preflight test with a 1 s timeout, shorter than a worker's start-up.)
    real_check = check_module.check_video

    def check_video(path, **kwargs):
        if Path(path).name == "odd.mkv":
            time.sleep(3600)
        return real_check(path, **kwargs)

    monkeypatch.setattr(check_module, "check_video", check_video)
    monkeypatch.setattr(check_module, "_POOL_START_METHOD", "fork")
    paths = [str(mixed / name) for name in ("good.mp4", "odd.mkv", "short.mp4", "rotated.mp4")]
    started = time.monotonic()
    result = check_dataset(paths, workers=1, timeout=2.0, progress=False)
    assert [(Path(r.path).name, r.status, r.error) for r in result.results] == [
        ("good.mp4", "ok", ""), ("odd.mkv", "unreadable", "Timeout"), ("short.mp4", "too_short", ""),
        ("rotated.mp4", "too_short", "")]
    assert time.monotonic() - started < 30


def test_csv_annotation_is_checked(mixed, tmp_path):
    labels = mixed / "labels.csv"
    labels.write_text("good.mp4,a\nshort.mp4,b\n")
    result = check_dataset(labels, workers=0, progress=False)
    assert [(Path(r.path).name, r.status) for r in result.results] == [("good.mp4", "ok"), ("short.mp4", "too_short")]


def test_cli_exits_1_when_something_is_unusable(mixed, tmp_path):
    out = CliRunner().invoke(app, ["check", str(mixed), "--workers", "0", "--report", str(tmp_path / "r.csv")])
    assert out.exit_code == 1, out.output
    assert "unusable" in out.output and (tmp_path / "r.csv").is_file()


def test_cli_exits_0_and_prints_json_when_all_usable(mixed, tmp_path):
    args = ["check", str(mixed / "labels.csv"), "--workers", "0", "--json", "--report", str(tmp_path / "r.csv")]
    (mixed / "labels.csv").write_text("good.mp4,a\nshort.mp4,b\n")
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["summary"]["too_short"] == 1


# --------------------------------------------------------------------------- cross-split validation


@pytest.fixture
def splits(tmp_path) -> Path:
    for name in ("a1", "a2", "b1", "c1"):
        (tmp_path / f"{name}.mp4").write_bytes(b"x")
    return tmp_path


def test_validate_sources_lists_every_problem_at_once(splits):
    (splits / "train.csv").write_text("a1.mp4,a\na2.mp4,a\n")
    (splits / "val.csv").write_text("a1.mp4,a\nc1.mp4,c\n")
    train = from_csv(splits / "train.csv", classes=["a", "b"])
    with pytest.raises(AnnotationError) as e:
        validate_sources(train, from_csv(splits / "val.csv"))
    problems = "\n".join(e.value.problems)
    assert len(e.value.problems) == 3
    assert "class 'b' has no training videos" in problems
    assert "class 'c' never seen in training" in problems
    assert "a1.mp4 is in both train and val" in problems


def test_validate_sources_accepts_clean_splits(splits):
    (splits / "train.csv").write_text("a1.mp4,a\nb1.mp4,b\n")
    (splits / "val.csv").write_text("a2.mp4,a\n")
    validate_sources(from_csv(splits / "train.csv"), from_csv(splits / "val.csv"))


def test_zero_based_index_labels(splits):
    (splits / "train.csv").write_text("a1.mp4,0\nb1.mp4,1\n")
    source = from_csv(splits / "train.csv", classes=["a", "b"], label_format="index0")
    assert [(s.video_id, source.classes[s.label]) for s in source.samples] == [("a1.mp4", "a"), ("b1.mp4", "b")]


def test_index_labels_need_the_class_list(splits):
    (splits / "train.csv").write_text("a1.mp4,1\n")
    with pytest.raises(ValueError, match="needs the class list"):
        from_csv(splits / "train.csv", label_format="index1")


def test_folder_source_can_be_validated(splits):
    (splits / "tree" / "a").mkdir(parents=True)
    (splits / "tree" / "a" / "x.mp4").write_bytes(b"x")
    validate_sources(from_folder(splits / "tree"))


def test_cli_shows_unusable_videos_first_and_cuts_a_long_list(mixed, tmp_path, monkeypatch):
    import vidzoo.cli.data as cli_data

    monkeypatch.setattr(cli_data, "_CHECK_ROWS_SHOWN", 2)
    out = CliRunner().invoke(app, ["check", str(mixed), "--workers", "0", "--report", str(tmp_path / "r.csv")])
    shown = [name for name in ("audio.mp4", "broken.mp4", "short.mp4", "rotated.mp4", "odd.mkv") if name in out.output]
    assert shown == ["audio.mp4", "broken.mp4"], out.output  # the two unusable ones, of five noted
    assert f"... and 3 more in {tmp_path / 'r.csv'}" in " ".join(out.output.split())

"""`vidzoo prepare`: re-encoding a dataset once for training, on small real fixtures and one
broken file: sizes, keyframe spacing, rotation, audio, the manifest, the report, resuming."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import require_videos
from typer.testing import CliRunner

from vidzoo.cli import app
from vidzoo.data.sources import load_source, read_class_list
from vidzoo.data.video import VideoReader
from vidzoo.prepare import PrepareSettings, prepare_dataset

VIDEOS = require_videos()
SETTINGS = PrepareSettings(short_side=64, keyframe_interval=8)
# path under VIDEOS -> label; what each one is there for.
SOURCES = {
    "go-mp4-testdata/testdata/sample.mp4": "talk",  # H.264 320x180, 10 frames, with audio
    "decord-testdata/tests/test_data/video_90.mov": "turn",  # 568x320 stored, rotated 90 degrees
    "mmaction2-samples/tests/data/test.avi": "talk",  # MPEG-4 in AVI 320x240, 164 frames, with audio
    "decord-testdata/tests/test_data/corrupted.mp4": "turn",  # decoding fails from frame 28 on
}
BROKEN = "decord-testdata/tests/test_data/corrupted.mp4"
GOOD = [path for path in SOURCES if path != BROKEN]


def _annotation(folder: Path) -> Path:
    path = folder / "train.csv"
    path.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in SOURCES.items()))
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The four sources prepared once with two worker processes: (annotation, dst, report)."""
    folder = tmp_path_factory.mktemp("prepare")
    annotation = _annotation(folder)
    dst = folder / "prepared"
    return annotation, dst, prepare_dataset(annotation, dst, SETTINGS, data_root=VIDEOS, workers=2, progress=False)


def _output(dst: Path, source: str) -> Path:
    return dst / (source if source.endswith(".mp4") else f"{source}.mp4")


def _keyframe_indices(path: Path) -> tuple[list[int], int]:
    """Presentation indices of the keyframe packets, and the number of packets."""
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.pts is not None]
    order = {pts: i for i, pts in enumerate(sorted(p.pts for p in packets))}
    return sorted(order[p.pts] for p in packets if p.is_keyframe), len(packets)


def test_every_good_video_is_prepared_and_the_broken_one_is_reported(prepared):
    _, dst, report = prepared
    status = {Path(v.source).resolve().relative_to(VIDEOS.resolve()).as_posix(): v.status for v in report.videos}
    assert status == {**dict.fromkeys(GOOD, "prepared"), BROKEN: "failed"}
    assert report.summary() == {"videos": 4, "prepared": 3, "skipped": 0, "failed": 1}
    assert report.report == str(dst / "train.report.csv")
    with open(report.report, newline="") as f:
        rows = {Path(r["source"]).resolve().relative_to(VIDEOS.resolve()).as_posix(): r for r in csv.DictReader(f)}
    assert rows[BROKEN]["status"] == "failed"
    assert rows[BROKEN]["error"] == "CorruptVideoError" and "decoding failed" in rows[BROKEN]["reason"]
    assert not _output(dst, BROKEN).exists()


@pytest.mark.parametrize("source", GOOD)
def test_the_short_side_is_scaled_down_and_the_frames_are_all_there(prepared, source):
    _, dst, _ = prepared
    with VideoReader(VIDEOS / source) as original, VideoReader(_output(dst, source)) as new:
        assert min(new.height, new.width) == 64
        assert new.width / new.height == pytest.approx(original.width / original.height, rel=0.05)
        assert new.num_frames == original.num_frames
        assert new.info.codec == "h264"


@pytest.mark.parametrize("source", GOOD)
def test_a_keyframe_every_n_frames_in_the_packets(prepared, source):
    _, dst, _ = prepared
    keyframes, frames = _keyframe_indices(_output(dst, source))
    assert keyframes == list(range(0, frames, SETTINGS.keyframe_interval))


def test_rotation_is_baked_into_the_pixels(prepared):
    _, dst, _ = prepared
    source = "decord-testdata/tests/test_data/video_90.mov"
    with VideoReader(VIDEOS / source) as original, VideoReader(_output(dst, source)) as new:
        assert (original.rotation, new.rotation) == (90, 0)
        assert (new.height, new.width) == (114, 64)  # portrait, as displayed
        expected = original.get_frames([0, 2], size=(114, 64)).numpy().astype(int)
        pixels = new.get_frames([0, 2]).numpy().astype(int)
    # A lossy re-encode of the same picture, not a transposed or mirrored one.
    assert np.abs(pixels - expected).mean() < 6
    assert np.abs(pixels - np.rot90(expected, k=2, axes=(1, 2))).mean() > 20


def test_audio_is_dropped(prepared):
    _, dst, _ = prepared
    source = "go-mp4-testdata/testdata/sample.mp4"
    with av.open(str(VIDEOS / source)) as original, av.open(str(_output(dst, source))) as new:
        assert "audio" in {s.type for s in original.streams}
        assert [s.type for s in new.streams] == ["video"]


def test_the_manifest_carries_the_labels_over(prepared):
    annotation, dst, report = prepared
    assert Path(report.manifest) == dst / annotation.name
    source = load_source(annotation, root=VIDEOS)
    manifest = load_source(report.manifest)
    labels = {_output(dst, s.video_id): source.classes[s.label] for s in source.samples if s.video_id != BROKEN}
    assert {Path(s.path): manifest.classes[s.label] for s in manifest.samples} == labels
    assert read_class_list(dst / "train.classes.txt") == ["talk", "turn"]


def test_a_frame_rate_cap_drops_frames_evenly(tmp_path):
    source = "mmaction2-samples/tests/data/test.avi"
    folder = tmp_path / "src" / "talk"
    folder.mkdir(parents=True)
    (folder / "test.avi").symlink_to(VIDEOS / source)
    settings = PrepareSettings(short_side=32, keyframe_interval=4, max_fps=10)
    report = prepare_dataset(tmp_path / "src", tmp_path / "out", settings, workers=0, progress=False)
    with VideoReader(VIDEOS / source) as original, VideoReader(tmp_path / "out" / "talk" / "test.avi.mp4") as new:
        assert new.fps == pytest.approx(10)
        assert new.num_frames == (original.num_frames - 1) * 10 // round(original.fps) + 1
        assert new.duration == pytest.approx(original.duration, abs=0.2)
    assert report.videos[0].frames == new.num_frames


def test_a_second_run_skips_what_is_finished_and_redoes_the_rest(prepared, tmp_path):
    annotation, first, _ = prepared
    dst = tmp_path / "prepared"
    shutil.copytree(first, dst)
    done = _output(dst, "mmaction2-samples/tests/data/test.avi")
    interrupted = _output(dst, "go-mp4-testdata/testdata/sample.mp4")
    truncated = _output(dst, "decord-testdata/tests/test_data/video_90.mov")
    # An interrupted run: its half-written temporary file, and an output cut short.
    temp = interrupted.with_name(f".{interrupted.name}.12345.0badf00d.tmp")
    temp.write_bytes(interrupted.read_bytes()[: interrupted.stat().st_size // 2])
    interrupted.unlink()
    truncated.write_bytes(truncated.read_bytes()[:2000])
    before = done.stat().st_mtime_ns

    report = prepare_dataset(annotation, dst, SETTINGS, data_root=VIDEOS, workers=0, progress=False)

    status = {Path(v.source).resolve().relative_to(VIDEOS.resolve()).as_posix(): v.status for v in report.videos}
    assert status == {"mmaction2-samples/tests/data/test.avi": "skipped",
                      "go-mp4-testdata/testdata/sample.mp4": "prepared",
                      "decord-testdata/tests/test_data/video_90.mov": "prepared", BROKEN: "failed"}
    assert done.stat().st_mtime_ns == before
    assert not temp.exists()
    for path in (interrupted, truncated):
        with VideoReader(path) as video:
            assert len(list(video.iter_frames())) == video.num_frames > 0
    assert len(load_source(report.manifest)) == 3


def test_another_keyframe_interval_is_not_taken_as_finished(prepared, tmp_path):
    annotation, first, _ = prepared
    dst = tmp_path / "prepared"
    shutil.copytree(first, dst)
    report = prepare_dataset(annotation, dst, PrepareSettings(short_side=64, keyframe_interval=4), data_root=VIDEOS,
                             workers=0, progress=False)
    # The 3-frame video has one keyframe either way: it already is what was asked for.
    assert [v.status for v in report.videos] == ["prepared", "skipped", "prepared", "failed"]


def test_cli_names_the_broken_video_and_exits_1(prepared, tmp_path):
    annotation, first, _ = prepared
    dst = tmp_path / "prepared"
    shutil.copytree(first, dst)
    result = CliRunner().invoke(app, ["prepare", str(annotation), str(dst), "--short-side", "64",
                                      "--keyframe-interval", "8", "--data-root", str(VIDEOS), "--workers", "0"])
    assert result.exit_code == 1, result.output
    assert "corrupted.mp4" in result.output and "CorruptVideoError" in result.output
    assert "skipped  │ 3" in result.output


def test_cli_json_has_the_summary_and_every_video(prepared, tmp_path):
    annotation, first, _ = prepared
    dst = tmp_path / "prepared"
    shutil.copytree(first, dst)
    result = CliRunner().invoke(app, ["prepare", str(annotation), str(dst), "--short-side", "64", "--keyframe-interval",
                                      "8", "--data-root", str(VIDEOS), "--workers", "0", "--json"])
    data = json.loads(result.stdout)
    assert data["summary"] == {"videos": 4, "prepared": 0, "skipped": 3, "failed": 1}
    assert [v["status"] for v in data["videos"]] == ["skipped"] * 3 + ["failed"]
    assert data["settings"]["keyframe_interval"] == 8


def test_sources_differing_only_in_extension_keep_distinct_outputs(tmp_path):
    (tmp_path / "src" / "talk").mkdir(parents=True)
    for name in ("test.avi", "test.mp4"):
        (tmp_path / "src" / "talk" / name).symlink_to(VIDEOS / "mmaction2-samples/tests/data" / name)
    report = prepare_dataset(tmp_path / "src", tmp_path / "out", PrepareSettings(short_side=32), workers=0,
                             progress=False)
    assert [(v.output, v.status) for v in report.videos] == [("talk/test.avi.mp4", "prepared"),
                                                             ("talk/test.mp4", "prepared")]


def test_cli_rejects_a_bad_setting_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["prepare", str(tmp_path), str(tmp_path / "out"), "--keyframe-interval", "0"])
    assert result.exit_code == 2
    assert "keyframe_interval must be at least 1, got 0" in result.output
    assert "Traceback" not in result.output


def test_a_destination_that_would_overwrite_the_sources_is_refused(tmp_path):
    (tmp_path / "a.mp4").symlink_to(VIDEOS / "go-mp4-testdata/testdata/sample.mp4")
    (tmp_path / "train.csv").write_text("a.mp4,talk\n")
    with pytest.raises(ValueError, match="would overwrite 1 source video"):
        prepare_dataset(tmp_path / "train.csv", tmp_path, SETTINGS, workers=0, progress=False)


def test_a_destination_inside_the_dataset_folder_is_refused(tmp_path):
    (tmp_path / "talk").mkdir()
    (tmp_path / "talk" / "a.mp4").symlink_to(VIDEOS / "go-mp4-testdata/testdata/sample.mp4")
    with pytest.raises(ValueError, match="inside the dataset folder"):
        prepare_dataset(tmp_path, tmp_path / "prepared", SETTINGS, workers=0, progress=False)


# --------------------------------------------------------------------------- --decoder


def _two_synthetic_videos(dataset: Path, folder: Path) -> Path:
    """An annotation of the first two videos of the tiny synthetic dataset (8 frames, 32 px)."""
    rows = (dataset / "val.csv").read_text().splitlines()
    path = folder / "two.csv"
    path.write_text("\n".join(rows[:3]) + "\n")
    return path


def test_the_decoder_reads_the_sources_and_verifies_the_outputs(dataset, tmp_path, monkeypatch):
    """prepare_dataset(decoder=...) opens every source and every new output with that backend;
    torchcodec's frames are PyAV's, so the outputs decode to the same pixels either way."""
    from vidzoo.data import video as video_module
    from vidzoo.data.video_torchcodec import torchcodec_status

    if not torchcodec_status()[0]:
        pytest.skip(f"torchcodec cannot load here: {torchcodec_status()[1]}")
    annotation = _two_synthetic_videos(dataset, tmp_path)
    opened = []
    factory = video_module._decoder_factory("torchcodec")

    def spy(path, threads):
        opened.append(Path(path))
        return factory(path, threads)

    monkeypatch.setitem(video_module._DECODERS, "torchcodec", spy)
    settings = PrepareSettings(short_side=16, keyframe_interval=4)
    reports = {decoder: prepare_dataset(annotation, tmp_path / decoder, settings, data_root=dataset, workers=0,
                                        progress=False, decoder=decoder) for decoder in ("pyav", "torchcodec")}
    sources = [Path(v.source) for v in reports["torchcodec"].videos]
    assert [v.status for v in reports["torchcodec"].videos] == ["prepared"] * 2
    assert set(sources) <= set(opened)  # the sources were read with torchcodec ...
    verified = [p for p in opened if p.parent.is_relative_to(tmp_path / "torchcodec")]
    assert len(verified) == 2 and all(p.name.endswith(".tmp") for p in verified)  # ... and each new file verified
    assert not any(p.is_relative_to(tmp_path / "pyav") for p in opened)  # PyAV's run never used it
    for a, b in zip(reports["pyav"].videos, reports["torchcodec"].videos):
        with VideoReader(tmp_path / "pyav" / a.output) as x, VideoReader(tmp_path / "torchcodec" / b.output) as y:
            assert np.array_equal(x.get_frames(range(x.num_frames)).numpy(), y.get_frames(range(y.num_frames)).numpy())


def test_a_decoder_that_cannot_load_is_one_line_before_any_work(dataset, tmp_path, monkeypatch):
    import sys

    import vidzoo.data.video_torchcodec as backend
    from vidzoo.data.video import DecoderUnavailableError

    monkeypatch.setitem(sys.modules, "torchcodec", None)  # `import torchcodec` raises ImportError
    monkeypatch.setattr(backend, "_STATUS", None)  # forget that it loaded
    annotation = _two_synthetic_videos(dataset, tmp_path)
    with pytest.raises(DecoderUnavailableError, match="pip install 'vidzoo\\[torchcodec\\]'"):
        prepare_dataset(annotation, tmp_path / "api", SETTINGS, data_root=dataset, workers=0, progress=False,
                        decoder="torchcodec")
    result = CliRunner().invoke(app, ["prepare", str(annotation), str(tmp_path / "cli"), "--data-root", str(dataset),
                                      "--decoder", "torchcodec"], env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the torchcodec decoder needs torchcodec"), lines
    assert not (tmp_path / "api").exists() and not (tmp_path / "cli").exists()  # nothing was started
    unknown = CliRunner().invoke(app, ["prepare", str(annotation), str(tmp_path / "cli"), "--decoder", "nope"])
    assert unknown.exit_code == 2 and "unknown decoder 'nope'" in unknown.stderr

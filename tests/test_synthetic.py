"""Tests for the synthetic motion dataset (vidzoo.data.synthetic)."""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
from pathlib import Path

import av
import numpy as np
import pytest

from vidzoo.data.synthetic import (
    CLASSES,
    _split_counts,
    make_synthetic_dataset,
    render_clip,
    render_video,
    sample_clip,
    shape_alpha,
)

TINY = dict(videos_per_class=3, frames=8, size=32, fps=8)
SPLITS = ("train", "val", "test")
REVERSED_PAIRS = [
    ("move_left", "move_right"),
    ("move_up", "move_down"),
    ("rotate_cw", "rotate_ccw"),
    ("grow", "shrink"),
]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["path", "label"]
        return list(reader)


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", seed=0, **TINY)


@pytest.fixture(scope="module")
def dataset_again(tmp_path_factory: pytest.TempPathFactory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", seed=0, **TINY)


def test_labels_csv_lists_every_video_once(dataset):
    rows = read_csv(dataset.out_dir / "labels.csv")
    assert len(rows) == dataset.total == 3 * len(CLASSES)
    on_disk = {p.relative_to(dataset.out_dir).as_posix() for p in dataset.out_dir.rglob("*.mp4")}
    assert sorted(r["path"] for r in rows) == sorted(on_disk)
    for row in rows:
        assert row["path"].startswith(f"videos/{row['label']}/{row['label']}_")


def test_split_csvs_partition_labels_with_every_class_in_every_split(dataset):
    all_rows = read_csv(dataset.out_dir / "labels.csv")
    split_rows = {s: read_csv(dataset.out_dir / f"{s}.csv") for s in SPLITS}
    assert sorted(r["path"] for rows in split_rows.values() for r in rows) == sorted(
        r["path"] for r in all_rows
    )
    for split, rows in split_rows.items():
        assert len(rows) == dataset.counts[split] == len(CLASSES)
        assert sorted(r["label"] for r in rows) == sorted(CLASSES)


def test_classes_txt_lists_classes_in_index_order(dataset):
    assert (dataset.out_dir / "classes.txt").read_text().splitlines() == list(CLASSES)


def test_dataset_json_records_parameters_and_counts(dataset):
    meta = json.loads((dataset.out_dir / "dataset.json").read_text())
    assert meta["seed"] == 0
    assert (meta["frames"], meta["height"], meta["width"], meta["fps"]) == (8, 32, 32, 8)
    assert meta["codec"] == dataset.codec
    assert meta["splits"]["videos"] == dataset.counts
    assert meta["total"] == dataset.total


def test_summary_table_shows_counts(dataset):
    table = str(dataset)
    assert str(dataset.out_dir) in table
    assert all(split in table for split in SPLITS)


def test_videos_decode_to_requested_frames_and_size(dataset):
    for row in read_csv(dataset.out_dir / "labels.csv"):
        assert decode(dataset.out_dir / row["path"]).shape == (8, 32, 32, 3), row["path"]


def test_same_seed_writes_identical_files(dataset, dataset_again):
    files = [p for p in sorted(dataset.out_dir.rglob("*")) if p.is_file()]
    assert files
    for path in files:
        rel = path.relative_to(dataset.out_dir)
        assert path.read_bytes() == (dataset_again.out_dir / rel).read_bytes(), rel


def test_different_seed_gives_different_videos(dataset, tmp_path):
    other = make_synthetic_dataset(tmp_path / "ds", seed=1, **TINY)
    rel = "videos/move_left/move_left_0000.mp4"
    assert not np.array_equal(decode(dataset.out_dir / rel), decode(other.out_dir / rel))


def test_more_videos_per_class_keep_the_existing_videos(dataset, tmp_path):
    bigger = make_synthetic_dataset(tmp_path / "ds", seed=0, **{**TINY, "videos_per_class": 4})
    for class_name in CLASSES:
        rel = f"videos/{class_name}/{class_name}_0002.mp4"
        assert (bigger.out_dir / rel).read_bytes() == (dataset.out_dir / rel).read_bytes()


def test_non_empty_out_dir_raises_file_exists_error(dataset):
    with pytest.raises(FileExistsError, match=str(dataset.out_dir)):
        make_synthetic_dataset(dataset.out_dir, **TINY)


def test_overwrite_replaces_a_previous_dataset(tmp_path):
    out = tmp_path / "ds"
    make_synthetic_dataset(out, videos_per_class=2, frames=2, size=16, splits=(1, 1, 0))
    summary = make_synthetic_dataset(
        out, videos_per_class=1, frames=2, size=16, splits=(1, 0, 0), overwrite=True
    )
    assert len(list(out.rglob("*.mp4"))) == summary.total == len(CLASSES)
    assert read_csv(out / "val.csv") == []


def test_overwrite_refuses_a_directory_that_is_not_a_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="does not look like a synthetic dataset"):
        make_synthetic_dataset(tmp_path, overwrite=True, **TINY)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(size=33), "33"),
        (dict(frames=1), "frames"),
        (dict(videos_per_class=2), "videos_per_class=2"),
        (dict(splits=(0.5, 0.2, 0.2)), "sum to 1"),
        (dict(splits=(2, 1, 1)), "videos_per_class is 3"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic_dataset(tmp_path / "ds", **{**TINY, **kwargs})
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    ("n", "expected"), [(3, (1, 1, 1)), (4, (2, 1, 1)), (10, (6, 2, 2)), (40, (24, 8, 8))]
)
def test_default_split_fractions_give_at_least_one_video_per_split(n, expected):
    assert tuple(_split_counts((0.6, 0.2, 0.2), n).values()) == expected


def test_unknown_class_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="move_sideways.*move_left"):
        sample_clip("move_sideways", np.random.default_rng(0), 8)


def test_render_video_returns_uint8_frames_of_requested_shape():
    frames = render_video("rotate_cw", np.random.default_rng(0), 5, (32, 48))
    assert frames.shape == (5, 32, 48, 3) and frames.dtype == np.uint8


# --- the motion is the only cue -------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def per_frame_parameters(class_name: str, videos: int = 1500, frames: int = 8) -> np.ndarray:
    """(videos * frames, 5): x, y, log scale, cos and sin of the angle of every frame."""
    rows = []
    for v in range(videos):
        spec = sample_clip(class_name, np.random.default_rng([7, v]), frames)
        rows.append(
            np.stack(
                [spec.x, spec.y, np.log(spec.scale), np.cos(spec.angle), np.sin(spec.angle)], 1
            )
        )
    return np.concatenate(rows)


@pytest.mark.parametrize("class_name", CLASSES[1:])
def test_single_frame_parameters_have_the_same_distribution_in_every_class(class_name):
    # Equal by construction; the tolerance is about four standard errors of the angle terms,
    # which vary least within a clip, and far below what a class-dependent range would give.
    reference = per_frame_parameters(CLASSES[0])
    other = per_frame_parameters(class_name)
    quantiles = [0.1, 0.25, 0.5, 0.75, 0.9]
    np.testing.assert_allclose(other.mean(0), reference.mean(0), atol=0.07)
    np.testing.assert_allclose(other.std(0), reference.std(0), atol=0.07)
    np.testing.assert_allclose(
        np.quantile(other, quantiles, axis=0), np.quantile(reference, quantiles, axis=0), atol=0.07
    )


@pytest.mark.parametrize(("forward", "backward"), REVERSED_PAIRS)
def test_clip_reversed_in_time_is_the_opposite_class(forward, backward):
    for seed in range(5):
        a = sample_clip(forward, np.random.default_rng(seed), 9)
        b = sample_clip(backward, np.random.default_rng(seed), 9)
        for track in ("x", "y", "angle", "scale"):
            np.testing.assert_allclose(getattr(a, track)[::-1], getattr(b, track), atol=1e-9)
        np.testing.assert_allclose(shape_alpha(a, 32)[::-1], shape_alpha(b, 32), atol=1e-4)


def alpha_centroid_and_area(class_name: str, seed: int) -> tuple[np.ndarray, ...]:
    alpha = shape_alpha(sample_clip(class_name, np.random.default_rng(seed), 8), 48)
    pixels = np.arange(48) / 48
    area = alpha.sum((1, 2))
    x = (alpha.sum(1) * pixels).sum(1) / area
    y = (alpha.sum(2) * pixels).sum(1) / area
    return x, y, area


@pytest.mark.parametrize(
    ("class_name", "axis", "sign"),
    [
        ("move_left", 0, -1),
        ("move_right", 0, 1),
        ("move_up", 1, -1),
        ("move_down", 1, 1),
        ("grow", 2, 1),
        ("shrink", 2, -1),
    ],
)
def test_shape_moves_in_the_direction_of_its_class(class_name, axis, sign):
    for seed in range(5):
        track = alpha_centroid_and_area(class_name, seed)[axis]
        steps = np.diff(track) * sign
        assert (steps > 0).all(), (seed, track)
        if axis < 2:
            # The centroid of a shape cut by the frame edge lags; still, the motion must
            # cover a good part of the frame.
            assert abs(track[-1] - track[0]) > 0.2, (seed, track)
        else:
            assert track.max() / track.min() > 1.8, (seed, track)


@pytest.mark.parametrize("class_name", ["move_left", "rotate_cw", "grow"])
def test_shape_stays_put_in_the_other_parameters(class_name):
    spec = sample_clip(class_name, np.random.default_rng(0), 8)
    moving = [t for t in ("x", "y", "angle", "scale") if np.ptp(getattr(spec, t)) > 0]
    assert len(moving) == 1


def test_rotate_cw_turns_clockwise_on_screen_by_more_than_90_degrees():
    spec = sample_clip("rotate_cw", np.random.default_rng(0), 8)
    assert (np.diff(spec.angle) > 0).all()
    assert spec.angle[-1] - spec.angle[0] > np.pi / 2
    # Centre the shape on a flat background and turn it by exactly 90 degrees: the second
    # frame must be the first one rotated clockwise as displayed (rows run downwards).
    a0 = spec.angle[0]
    centred = dataclasses.replace(
        spec,
        x=np.zeros(2),
        y=np.zeros(2),
        angle=np.array([a0, a0 + np.pi / 2]),
        scale=np.full(2, 0.6),
        ramp=np.zeros(2),
        wave_amp=np.zeros_like(spec.wave_amp),
        noise_sigma=0.0,
    )
    first, second = render_clip(centred, 32).astype(int)
    assert np.abs(second - np.rot90(first, k=-1)).max() <= 2
    assert np.abs(second - np.rot90(first, k=1)).max() > 20

import numpy as np
import pytest

from vidzoo.data.sampling import (
    ClipTooShortError,
    SamplingConfig,
    dense_clip,
    multi_clip,
    seconds_to_frames,
    segment,
    sliding_windows,
    window_bounds,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- dense_clip


@pytest.mark.parametrize(
    "num_frames, frames, stride, expected",
    [
        (10, 4, 1, [3, 4, 5, 6]),  # last start 6, centre 3
        (11, 4, 1, [3, 4, 5, 6]),  # last start 7, centre floor(3.5)
        (100, 8, 4, [35, 39, 43, 47, 51, 55, 59, 63]),
        (8, 8, 1, [0, 1, 2, 3, 4, 5, 6, 7]),  # exactly fits
        (7, 4, 2, [0, 2, 4, 6]),
    ],
)
def test_dense_clip_center_exact(num_frames, frames, stride, expected):
    out = dense_clip(num_frames, frames, stride)
    assert out.dtype == np.int64
    assert out.tolist() == expected


@pytest.mark.parametrize(
    "fps, target_fps, stride, expected",
    [
        (30, 15, 1, [0, 2, 4, 6]),
        (30, 12, 1, [0, 3, 5, 8]),  # step 2.5, half up
        (30, 30, 2, [0, 2, 4, 6]),
        (25, 50, 1, [0, 1, 1, 2]),  # step 0.5 repeats frames
        (30, 15, 2, [0, 4, 8, 12]),  # stride counts frames at target_fps
    ],
)
def test_dense_clip_target_fps_step(fps, target_fps, stride, expected):
    # Clip exactly as long as the video, so the start is 0.
    num_frames = expected[-1] + 1
    out = dense_clip(num_frames, 4, stride, fps=fps, target_fps=target_fps)
    assert out.tolist() == expected


def test_dense_clip_target_fps_needs_fps():
    with pytest.raises(ValueError, match="fps"):
        dense_clip(100, 4, target_fps=15)


@pytest.mark.parametrize("num_frames, frames, stride", [(50, 8, 2), (9, 4, 2), (300, 16, 1)])
def test_dense_clip_random_properties(num_frames, frames, stride):
    out = dense_clip(num_frames, frames, stride, mode="random", rng=rng())
    assert out.shape == (frames,)
    assert out.min() >= 0 and out.max() < num_frames
    assert np.all(np.diff(out) == stride)


def test_dense_clip_random_same_seed_same_clip():
    a = dense_clip(1000, 8, 2, mode="random", rng=rng(3))
    b = dense_clip(1000, 8, 2, mode="random", rng=rng(3))
    np.testing.assert_array_equal(a, b)


def test_dense_clip_random_different_seeds_differ():
    starts = {int(dense_clip(1000, 8, 2, mode="random", rng=rng(s))[0]) for s in range(10)}
    assert len(starts) > 1


def test_dense_clip_random_reaches_both_ends():
    starts = {int(dense_clip(6, 4, mode="random", rng=rng(s))[0]) for s in range(50)}
    assert starts == {0, 1, 2}


@pytest.mark.parametrize("num_frames", [100, 3])
def test_dense_clip_random_needs_rng(num_frames):
    with pytest.raises(ValueError, match="rng"):
        dense_clip(num_frames, 8, mode="random")


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("loop", [0, 2, 4, 1, 3]),  # 6 % 5, 8 % 5
        ("repeat_last", [0, 2, 4, 4, 4]),
    ],
)
def test_dense_clip_short_policy(policy, expected):
    # 5 frames, clip needs 9 (offsets 0..8).
    assert dense_clip(5, 5, 2, short_policy=policy).tolist() == expected


@pytest.mark.parametrize("mode", ["center", "random"])
def test_dense_clip_short_error_names_lengths(mode):
    with pytest.raises(ClipTooShortError, match="5 frames.*needs 9"):
        dense_clip(5, 5, 2, mode=mode, rng=rng(), short_policy="error")


@pytest.mark.parametrize("policy", ["loop", "repeat_last"])
@pytest.mark.parametrize("num_frames", [1, 2, 3])
def test_dense_clip_short_shape_exact(policy, num_frames):
    out = dense_clip(num_frames, 16, 2, mode="random", rng=rng(), short_policy=policy)
    assert out.shape == (16,)
    assert out.min() >= 0 and out.max() < num_frames


def test_clip_too_short_is_value_error():
    assert issubclass(ClipTooShortError, ValueError)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_frames": 0}, "num_frames"),
        ({"num_frames": -3}, "num_frames"),
        ({"num_frames": 10.0}, "num_frames"),
        ({"frames": 0}, "frames"),
        ({"stride": 0}, "stride"),
        ({"mode": "train"}, "'center', 'random'"),
        ({"short_policy": "pad"}, "'loop', 'repeat_last', 'error'"),
        ({"fps": 30, "target_fps": 0}, "target_fps"),
        ({"fps": -1, "target_fps": 15}, "fps"),
    ],
)
def test_dense_clip_bad_arguments(kwargs, match):
    args = {"num_frames": 100, "frames": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        dense_clip(**args)


# --------------------------------------------------------------------------- multi_clip


def test_multi_clip_exact():
    # 100 frames, clip of 8 every 4 needs 29, last start 71: starts floor(71 * [1/6, 3/6, 5/6]).
    out = multi_clip(100, 8, 4, clips_per_video=3)
    assert out[:, 0].tolist() == [11, 35, 59]
    np.testing.assert_array_equal(out[1], np.arange(35, 64, 4))


@pytest.mark.parametrize("num_frames, frames, stride", [(100, 8, 4), (17, 8, 1), (301, 32, 2)])
def test_multi_clip_single_equals_center(num_frames, frames, stride):
    np.testing.assert_array_equal(
        multi_clip(num_frames, frames, stride, clips_per_video=1)[0],
        dense_clip(num_frames, frames, stride),
    )


@pytest.mark.parametrize("num_clips", [1, 2, 5, 10, 30])
def test_multi_clip_shape_range_and_order(num_clips):
    out = multi_clip(120, 16, 2, num_clips, fps=30, target_fps=15)
    assert out.shape == (num_clips, 16)
    assert out.dtype == np.int64
    assert out.min() >= 0 and out.max() < 120
    assert np.all(np.diff(out[:, 0]) >= 0)


def test_multi_clip_short_video_repeats_clip():
    out = multi_clip(3, 4, clips_per_video=2, short_policy="repeat_last")
    assert out.tolist() == [[0, 1, 2, 2], [0, 1, 2, 2]]


def test_multi_clip_short_error():
    with pytest.raises(ClipTooShortError):
        multi_clip(3, 4, clips_per_video=2, short_policy="error")


def test_multi_clip_bad_num_clips():
    with pytest.raises(ValueError, match="clips_per_video"):
        multi_clip(100, 8, clips_per_video=0)


# --------------------------------------------------------------------------- segment


@pytest.mark.parametrize(
    "num_frames, num_segments, expected",
    [
        (10, 3, [1, 5, 8]),
        (9, 3, [1, 4, 7]),
        (2, 5, [0, 0, 1, 1, 1]),
        (1, 3, [0, 0, 0]),
        (4, 4, [0, 1, 2, 3]),
    ],
)
def test_segment_center_exact(num_frames, num_segments, expected):
    assert segment(num_frames, num_segments).tolist() == expected


@pytest.mark.parametrize("num_frames", [1, 2, 7, 8, 9, 100, 1001])
@pytest.mark.parametrize("mode", ["center", "random"])
def test_segment_shape_range_sorted(num_frames, mode):
    out = segment(num_frames, 8, mode=mode, rng=rng())
    assert out.shape == (8,) and out.dtype == np.int64
    assert out.min() >= 0 and out.max() < num_frames
    assert np.all(np.diff(out) >= 0)


def test_segment_random_stays_in_its_segment():
    # 30 frames in 3 segments of 10: every draw of segment k lies in [10k, 10k + 10).
    draws = np.stack([segment(30, 3, mode="random", rng=rng(s)) for s in range(200)])
    for k in range(3):
        assert draws[:, k].min() >= 10 * k and draws[:, k].max() < 10 * k + 10
    assert len(np.unique(draws[:, 0])) == 10  # the whole segment is reachable


def test_segment_random_same_seed_same_frames():
    np.testing.assert_array_equal(
        segment(500, 8, mode="random", rng=rng(7)), segment(500, 8, mode="random", rng=rng(7))
    )


def test_segment_random_different_seeds_differ():
    a = segment(500, 8, mode="random", rng=rng(1))
    b = segment(500, 8, mode="random", rng=rng(2))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((0, 3), {}, "num_frames"),
        ((10, 0), {}, "num_segments"),
        ((10, 3), {"mode": "random"}, "rng"),
        ((10, 3), {"mode": "random", "rng": 0}, "rng"),
        ((10, 3), {"mode": "middle"}, "mode"),
    ],
)
def test_segment_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        segment(*args, **kwargs)


# --------------------------------------------------------------------------- sliding windows


@pytest.mark.parametrize(
    "num_frames, window, stride, expected",
    [
        (10, 4, 3, [[0, 4], [3, 7], [6, 10]]),  # ends exactly at the end
        (11, 4, 3, [[0, 4], [3, 7], [6, 10], [7, 11]]),  # last window aligned to the end
        (4, 4, 2, [[0, 4]]),
        (3, 4, 2, [[0, 3]]),  # shorter than one window
        (10, 2, 5, [[0, 2], [5, 7], [8, 10]]),  # stride > window leaves gaps
    ],
)
def test_window_bounds_exact(num_frames, window, stride, expected):
    out = window_bounds(num_frames, window, stride)
    assert out.dtype == np.int64
    assert out.tolist() == expected


@pytest.mark.parametrize("num_frames", [1, 5, 16, 17, 100, 257])
@pytest.mark.parametrize("window, stride", [(16, 8), (16, 16), (10, 3)])
def test_window_bounds_cover_every_frame(num_frames, window, stride):
    covered = np.zeros(num_frames, dtype=bool)
    for start, end in window_bounds(num_frames, window, stride):
        covered[start:end] = True
    assert covered.all()


def test_sliding_windows_match_bounds():
    out = sliding_windows(11, 4, 3)
    assert out.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [7, 8, 9, 10]]


def test_sliding_windows_subsample_to_clip_len():
    # Window of 8 subsampled to 4: centres of 4 parts of 2 frames, offsets 1, 3, 5, 7.
    out = sliding_windows(16, 8, 8, frames=4)
    assert out.tolist() == [[1, 3, 5, 7], [9, 11, 13, 15]]


@pytest.mark.parametrize(
    "policy, expected", [("loop", [0, 1, 2, 0]), ("repeat_last", [0, 1, 2, 2])]
)
def test_sliding_windows_short_video(policy, expected):
    assert sliding_windows(3, 4, 2, short_policy=policy).tolist() == [expected]


def test_sliding_windows_short_error():
    with pytest.raises(ClipTooShortError):
        sliding_windows(3, 4, 2, short_policy="error")


@pytest.mark.parametrize("kwargs", [{"window": 0}, {"stride": 0}, {"frames": 0}])
def test_sliding_windows_bad_arguments(kwargs):
    args = {"num_frames": 100, "window": 8, "stride": 4, **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        sliding_windows(**args)


@pytest.mark.parametrize(
    "seconds, fps, expected", [(2.0, 30, 60), (1.0, 29.97, 30), (0.5, 25, 13), (0.04, 25, 1)]
)
def test_seconds_to_frames(seconds, fps, expected):
    assert seconds_to_frames(seconds, fps) == expected


@pytest.mark.parametrize(
    "seconds, fps, match",
    [(0.01, 25, "less than one frame"), (0, 25, "seconds"), (-1.0, 25, "seconds"), (1.0, 0, "fps")],
)
def test_seconds_to_frames_errors(seconds, fps, match):
    with pytest.raises(ValueError, match=match):
        seconds_to_frames(seconds, fps)


# --------------------------------------------------------------------------- SamplingConfig


def test_config_dense_train_matches_dense_clip():
    cfg = SamplingConfig(kind="dense", frames=8, stride=2, target_fps=15)
    np.testing.assert_array_equal(
        cfg.train_indices(300, 30, rng(5)),
        dense_clip(300, 8, 2, mode="random", rng=rng(5), fps=30, target_fps=15),
    )


def test_config_dense_eval_matches_multi_clip():
    cfg = SamplingConfig(frames=8, stride=2, clips_per_video=4)
    np.testing.assert_array_equal(cfg.eval_indices(300, 30.0), multi_clip(300, 8, 2, 4))


def test_config_segment_train_matches_segment():
    cfg = SamplingConfig(kind="segment", frames=8)
    np.testing.assert_array_equal(
        cfg.train_indices(300, None, rng(5)), segment(300, 8, mode="random", rng=rng(5))
    )


def test_config_segment_eval_one_clip_is_centres():
    cfg = SamplingConfig(kind="segment", frames=3)
    assert cfg.eval_indices(10, None).tolist() == [segment(10, 3).tolist()]


def test_config_segment_eval_offsets():
    # 12 frames, 3 segments of 4; clips take 1/4 and 3/4 of the way through each segment.
    cfg = SamplingConfig(kind="segment", frames=3, clips_per_video=2)
    assert cfg.eval_indices(12, None).tolist() == [[1, 5, 9], [3, 7, 11]]


@pytest.mark.parametrize("kind", ["dense", "segment"])
@pytest.mark.parametrize("num_frames", [1, 5, 200])
def test_config_shapes(kind, num_frames):
    cfg = SamplingConfig(kind=kind, frames=8, clips_per_video=3)
    assert cfg.train_indices(num_frames, 25.0, rng()).shape == (8,)
    evaluation = cfg.eval_indices(num_frames, 25.0)
    assert evaluation.shape == (3, 8)
    assert evaluation.min() >= 0 and evaluation.max() < num_frames


@pytest.mark.parametrize("kind", ["dense", "segment"])
def test_config_short_error(kind):
    cfg = SamplingConfig(kind=kind, frames=8, short_policy="error")
    with pytest.raises(ClipTooShortError):
        cfg.train_indices(5, 25.0, rng())
    with pytest.raises(ClipTooShortError):
        cfg.eval_indices(5, 25.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "segment", "stride": 2}, "do not apply"),
        ({"kind": "segment", "target_fps": 15}, "do not apply"),
        ({"kind": "tsn"}, "kind"),
        ({"frames": 0}, "frames"),
        ({"short_policy": "pad"}, "short_policy"),
        ({"num_clip": 3}, "num_clip"),  # typo is refused, not ignored
    ],
)
def test_config_rejects_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingConfig(**kwargs)


def test_config_is_frozen():
    cfg = SamplingConfig()
    with pytest.raises(ValueError):
        cfg.frames = 4

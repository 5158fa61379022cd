"""The real-pixel transfer benchmark's time split: no frame of one split is in another."""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "transfer_real.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("transfer_real", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("duration", [30.0, 30.16, 39.855, 139.4])
def test_split_windows_are_ordered_disjoint_and_guarded(bench, duration):
    windows = bench.split_windows(duration, clip_seconds=0.5, guard=1.0)
    assert list(windows) == ["train", "val", "test"]
    for split, items in windows.items():
        assert items, split
        assert all(abs(end - start - 0.5) < 1e-9 for start, end in items)
        assert all(a[1] <= b[0] + 1e-9 for a, b in zip(items, items[1:]))  # no overlap inside a split
    assert windows["train"][-1][1] <= 0.6 * duration - 1.0 + 1e-9
    assert windows["val"][0][0] >= 0.6 * duration - 1e-9
    assert windows["val"][-1][1] <= 0.8 * duration - 1.0 + 1e-9
    assert windows["test"][0][0] >= 0.8 * duration - 1e-9
    assert windows["test"][-1][1] <= duration + 1e-9
    # at least the guard between splits
    assert windows["val"][0][0] - windows["train"][-1][1] >= 1.0 - 1e-9
    assert windows["test"][0][0] - windows["val"][-1][1] >= 1.0 - 1e-9


def test_split_windows_of_a_30s_video(bench):
    windows = bench.split_windows(30.0, clip_seconds=0.5, guard=1.0)
    assert [len(windows[s]) for s in ("train", "val", "test")] == [34, 10, 12]


def test_thin_keeps_both_ends_and_spacing(bench):
    items = list(range(34))
    assert bench.thin(items, 32)[0] == 0 and bench.thin(items, 32)[-1] == 33
    assert len(set(bench.thin(items, 32))) == 32
    assert bench.thin(items, 3) == [0, 16, 33] or bench.thin(items, 3) == [0, 17, 33]
    assert bench.thin(items[:5], 10) == items[:5]

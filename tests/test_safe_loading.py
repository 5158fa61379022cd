"""Nothing vidzoo loads can run code: third-party `.pt` weights and checkpoints are read with
`weights_only=True` (a pickle naming arbitrary globals is refused), model files are checked
against their SHA-256, and configs are YAML/JSON data only.

The "malicious" payloads would write a marker file if they ever ran; each test asserts the
marker does not exist afterwards."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from vidzoo.data.synthetic import make_synthetic_dataset
from vidzoo.model_file import ModelFileError
from vidzoo.models import create_model, load_model, save_model
from vidzoo.models.i3d import load_pytorch_i3d
from vidzoo.train import TrainConfig, train
from vidzoo.train.run import LAST_CHECKPOINT

TINY_MODEL = {"width": 0.0625, "frames": 8, "size": 16, "dropout": 0.0}


class Payload:
    """Unpickling this calls os.system: what a booby-trapped `.pt` file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > {self.marker}",)


def write_malicious_pt(path: Path, marker: Path) -> Path:
    # Pickling only records the call; nothing runs until someone unpickles it unsafely.
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}, "payload": Payload(marker)}, path)
    return path


def test_i3d_weights_with_a_code_payload_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    weights = write_malicious_pt(tmp_path / "rgb_imagenet.pt", marker)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_pytorch_i3d(weights)
    assert not marker.exists()


def test_resume_from_a_checkpoint_with_a_code_payload_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    make_synthetic_dataset(tmp_path / "data", videos_per_class=3, frames=8, size=32, fps=8, overwrite=True)
    run = tmp_path / "run"
    config = TrainConfig(
        model="c3d_bn", model_args={"width": 0.0625, "dropout": 0.0}, frames=8, size=16,
        data=str(tmp_path / "data" / "train.csv"),
        val=str(tmp_path / "data" / "val.csv"), workers=0, progress=False, batch_size=4, epochs=2, out=str(run),
    )
    write_malicious_pt(run / "checkpoints" / LAST_CHECKPOINT, marker)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        train(config, resume=run)
    assert not marker.exists()


def test_model_file_with_a_flipped_tensor_byte_fails_its_checksum(tmp_path: Path) -> None:
    path = save_model(create_model("c3d_bn", num_classes=2, **TINY_MODEL), tmp_path / "model.safetensors")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the end of a safetensors file is tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        load_model(path)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("config.py", "import os\nos.system('echo pwned > {marker}')\n"),
        ("config.yaml", "!!python/object/apply:os.system ['echo pwned > {marker}']\n"),
        ("config.yaml", "data: !!python/object/apply:os.system ['echo pwned > {marker}']\n"),
    ],
    ids=["python-file", "yaml-python-tag", "yaml-python-tag-in-value"],
)
def test_config_that_would_run_code_is_refused(name: str, text: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    config = tmp_path / name
    config.write_text(text.format(marker=marker))
    with pytest.raises((ValueError, yaml.YAMLError)):
        TrainConfig.load(config)
    assert not marker.exists()

"""Interrupted training: a run SIGKILLed at random moments and resumed ends with the same weights
as an uninterrupted one; a crash while saving leaves the previous file intact; a decoder that
crashes or hangs a DataLoader worker ends training with an error naming the video."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import conftest
import pytest
import torch
import yaml
from safetensors.torch import load_file

import vidzoo.data.dataset as datasets_module
import vidzoo.model_file as model_file_module
import vidzoo.train.callbacks as train_module
from vidzoo.data.sources import load_source
from vidzoo.models import create_model, save_model
from vidzoo.train import TrainConfig, TrainingError, train
from vidzoo.train.callbacks import AtomicCheckpointIO
from vidzoo.train.run import LAST_CHECKPOINT

# Subprocesses killed at seeded moments: long, so run first (see conftest).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
VIDZOO = Path(sys.executable).with_name("vidzoo")
SEED = 7
TRIALS = 3
EPOCHS = 5
# Same arithmetic in the killed child and in this process: one compute thread each.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def tiny_config(dataset: Path, out: Path, **overrides) -> TrainConfig:
    return conftest.tiny_config(dataset, out, **{"epochs": EPOCHS, "lr": 1e-3, **overrides})


def _final_weights(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the model file's tensors, last.ckpt's state dict)."""
    (model_file,) = run_dir.glob("*.safetensors")
    last = torch.load(run_dir / "checkpoints" / LAST_CHECKPOINT, map_location="cpu", weights_only=True)
    return load_file(model_file), last["state_dict"]


def _kill_at_random_moments(configs: list[Path], rng: random.Random, max_delay: float) -> list[dict]:
    """Start `vidzoo train --config` for each config at once; SIGKILL each a random delay (up to
    `max_delay` s) after its first checkpoint exists. Returns, per trial, the delay and whether
    the kill landed before the run ended."""
    procs = [subprocess.Popen([str(VIDZOO), "train", "--config", str(c)], cwd=c.parent,
                              env={**os.environ, **ONE_THREAD}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for c in configs]
    delays = [rng.uniform(0, max_delay) for _ in configs]
    kill_at: list[float | None] = [None] * len(configs)
    deadline = time.monotonic() + 240
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            for i, (proc, config) in enumerate(zip(procs, configs)):
                if proc.poll() is not None:
                    continue
                if kill_at[i] is None and (config.parent / "run" / "checkpoints" / LAST_CHECKPOINT).exists():
                    kill_at[i] = time.monotonic() + delays[i]
                if kill_at[i] is not None and time.monotonic() >= kill_at[i]:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
            time.sleep(0.02)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [{"delay_s": round(d, 2), "killed": p.returncode == -signal.SIGKILL} for d, p in zip(delays, procs)]


def test_killed_runs_resume_to_the_same_weights(dataset: Path, tmp_path: Path) -> None:
    reference = tiny_config(dataset, tmp_path / "reference")
    started = time.perf_counter()
    train(reference)
    # Per epoch with validation, checkpoints and plots, at this machine's speed. The killed runs go
    # no faster (three share the cores), so kills land within EPOCHS - 2 epochs of the first checkpoint.
    epoch_seconds = (time.perf_counter() - started) / EPOCHS
    expected_file, expected_last = _final_weights(tmp_path / "reference")

    configs = []
    for trial in range(TRIALS):
        folder = tmp_path / f"trial{trial}"
        folder.mkdir()
        values = tiny_config(dataset, Path("run")).model_dump(mode="json")
        (folder / "cfg.yaml").write_text(yaml.safe_dump(values))
        configs.append(folder / "cfg.yaml")
    trials = _kill_at_random_moments(configs, random.Random(SEED), (EPOCHS - 2) * epoch_seconds)

    for trial, config in zip(trials, configs):
        run_dir = config.parent / "run"
        checkpoint = torch.load(run_dir / "checkpoints" / LAST_CHECKPOINT, map_location="cpu", weights_only=True)
        trial["resumed_after_epoch"] = checkpoint["epoch"]
        train(TrainConfig.load(run_dir / "config.yaml", out=str(run_dir)), resume=run_dir)
        got_file, got_last = _final_weights(run_dir)
        trial["same_weights"] = (
            got_file.keys() == expected_file.keys() and all(torch.equal(got_file[k], expected_file[k]) for k in got_file)
            and all(torch.equal(got_last[k], expected_last[k]) for k in expected_last)
        )
    print(f"kill-and-resume trials (reference epoch {epoch_seconds:.2f} s): {trials}")
    assert all(t["killed"] for t in trials), f"a run finished before its kill: {trials}"
    assert all(t["same_weights"] for t in trials), trials


# --------------------------------------------------------------------------- crash while saving


def _torch_save_that_dies(obj, f, *args, **kwargs) -> None:
    # torch.save takes a path or a file object; leave half a checkpoint in either.
    if hasattr(f, "write"):
        f.write(b"half a checkpoint")
    else:
        Path(f).write_bytes(b"half a checkpoint")
    raise OSError("disk full (simulated)")


def test_crash_while_saving_checkpoint_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / LAST_CHECKPOINT
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(train_module.torch, "save", _torch_save_that_dies)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [LAST_CHECKPOINT]


def test_crash_while_saving_model_file_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    model = create_model("c3d_bn", num_classes=2, **conftest.TINY_MODEL)
    path = save_model(model, tmp_path / "model.safetensors")
    before = path.read_bytes()

    def save_file_that_dies(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a model")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(model_file_module, "save_file", save_file_that_dies)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


# --------------------------------------------------------------------------- dying decoders


@pytest.mark.parametrize("failure", ["crash", "hang"])
def test_worker_that_dies_or_hangs_is_reported_with_its_video(
    failure: str, dataset: Path, tmp_path: Path, monkeypatch
) -> None:
    target = Path(load_source(dataset / "train.csv").samples[0].path)
    real_reader = datasets_module.VideoReader

    class FailingReader(real_reader):
        def __init__(self, path, **kwargs):
            if Path(path) == target:
                if failure == "crash":
                    os._exit(3)  # what a segfault in FFmpeg looks like from outside: no exception
                time.sleep(3600)
            super().__init__(path, **kwargs)

    # DataLoader workers are forked: they inherit the patched reader.
    monkeypatch.setattr(datasets_module, "VideoReader", FailingReader)
    config = tiny_config(dataset, tmp_path / "run", epochs=1, workers=1, sample_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(TrainingError, match=f"while decoding {target}"):
        train(config)
    assert time.monotonic() - started < 60

"""Decoding with several processes per machine: the decoder threads each process's workers get,
and that the number reaches the decoder in `vidzoo train`, `vidzoo eval` and `vidzoo extract`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, tiny_config

from vidzoo.data import video as video_module
from vidzoo.data.sources import load_source
from vidzoo.data.video import PyAVDecoder, decoder_threads
from vidzoo.distributed import Processes

CORES = 8  # what the tests pretend this machine has


def test_decoder_threads_share_the_cores_among_every_local_process():
    assert decoder_threads(0, cores=8, processes=2) == 4  # two main processes decode: half the cores each
    assert decoder_threads(2, cores=8, processes=2) == 2  # 2 x 2 workers
    assert decoder_threads(4, cores=8, processes=2) == 1  # 8 workers fill the 8 cores: one thread each
    assert decoder_threads(2, cores=8, processes=8) == 1  # more workers than cores: never below one
    assert decoder_threads(3, cores=16, processes=2) == 2  # 16 // 6, rounded down
    assert decoder_threads(2, cores=8) == decoder_threads(2, cores=8, processes=1) == 4  # one process: as before


@pytest.fixture
def spy_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The `threads` every PyAV decoder is opened with, on a machine of CORES cores."""
    opened: list[int] = []

    def spy(path: str, threads: int):
        opened.append(threads)
        return PyAVDecoder(path, threads)

    monkeypatch.setitem(video_module._DECODERS, "pyav", spy)
    monkeypatch.setattr(video_module, "_usable_cores", lambda: CORES)
    return opened


def _two_local_processes(monkeypatch: pytest.MonkeyPatch, module) -> None:
    # Two processes on this machine as Lightning would start them, seen from process 0 alone
    # (world_size 1 so that it does all the work itself: only the thread count is under test).
    monkeypatch.setattr(module, "launch", lambda *args, **kwargs: Processes(local_processes=2))


def test_eval_gives_each_local_process_its_share_of_the_cores(dataset: Path, spy_threads, monkeypatch):
    import vidzoo.evaluate as evaluate_module
    from vidzoo.models import create_model

    torch.manual_seed(0)
    source = load_source(dataset / "val.csv")
    model = create_model("c3d_bn", num_classes=len(source.classes), **TINY_MODEL)
    model.classes = list(source.classes)
    _two_local_processes(monkeypatch, evaluate_module)
    evaluate_module.evaluate(model, source, workers=0, progress=False, decoder="pyav", clips_per_video=1)
    assert spy_threads and set(spy_threads) == {CORES // 2}  # 2 processes, decoding in the main process


def test_extract_gives_each_local_process_its_share_of_the_cores(dataset: Path, spy_threads, monkeypatch):
    import vidzoo.features as features_module
    from vidzoo.models import create_model

    torch.manual_seed(0)
    model = create_model("c3d_bn", num_classes=8, **TINY_MODEL)
    _two_local_processes(monkeypatch, features_module)
    source = load_source(dataset / "val.csv")
    features_module.extract_features(model, source, workers=0, progress=False, decoder="pyav", clips_per_video=1)
    assert spy_threads and set(spy_threads) == {CORES // 2}


class _Stop(Exception):
    pass


@pytest.mark.parametrize(("devices", "workers", "threads"), [(1, 2, 4), (2, 2, 2)])
def test_train_gives_each_of_lightnings_processes_its_share_of_the_cores(dataset: Path, tmp_path: Path, monkeypatch,
                                                                         devices, workers, threads):
    """The processes are Lightning's devices on this machine (`Trainer.num_devices`); nothing is
    started: the run stops where it would fit."""
    import vidzoo.train.run as run_module

    monkeypatch.setattr(video_module, "_usable_cores", lambda: CORES)
    seen = {}

    def stop(self, ckpt_path):
        seen.update(train=self.train_set.threads, val=self.val_set.threads, devices=self.trainer.num_devices)
        raise _Stop

    monkeypatch.setattr(run_module._Run, "fit", stop)
    config = tiny_config(dataset, tmp_path / "run", accelerator="cpu", devices=devices,
                         strategy="ddp" if devices > 1 else "auto", workers=workers)
    with pytest.raises(_Stop):
        run_module.train(config)
    assert seen == {"train": threads, "val": threads, "devices": devices}

"""Decoding with several processes per machine: the decoder threads each process's workers get,
and that the number reaches the decoder in `vidzoo train`, `vidzoo eval` and `vidzoo extract`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, tiny_config

from vidzoo.data import video as video_module
from vidzoo.data import video_torchcodec as torchcodec_backend
from vidzoo.data.sources import load_source
from vidzoo.data.video import DecoderUnavailableError, PyAVDecoder, VideoReader, decoder_threads
from vidzoo.data.video_torchcodec import torchcodec_status
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


# --------------------------------------------------------------------------- decoding on the GPU
#
# No test here decodes on a GPU (none where these were written): they check the refusal where
# CUDA is missing, the plumbing, and the GPU path's own code run on the CPU (torchcodec's decoder
# and ColorConverter accept device="cpu" as well as "cuda:N").

CUDA_REFUSAL = ("error: the torchcodec-cuda decoder needs a CUDA GPU and torchcodec's CUDA build; "
                "torch.cuda.is_available() is False")
TORCHCODEC, TORCHCODEC_REASON = torchcodec_status()
needs_torchcodec = pytest.mark.skipif(not TORCHCODEC, reason=f"torchcodec cannot load here: {TORCHCODEC_REASON}")
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: nothing to refuse")


@pytest.fixture
def cuda_path_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchcodec-cuda as if CUDA were there, on device "cpu": its own code, run on the CPU."""
    monkeypatch.setattr(torchcodec_backend, "torchcodec_cuda_status", lambda: (True, "pretend"))
    monkeypatch.setattr(torchcodec_backend, "_cuda_device", lambda: "cpu")


@needs_torchcodec
@no_gpu
def test_the_cuda_decoder_is_refused_in_one_line_without_a_gpu(dataset: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from vidzoo.cli import app

    video = next((dataset / "videos").rglob("*.mp4"))
    with pytest.raises(DecoderUnavailableError) as refused:
        VideoReader(video, decoder="torchcodec-cuda")
    assert f"error: {refused.value}" == CUDA_REFUSAL
    with pytest.raises(DecoderUnavailableError):
        torchcodec_backend.TorchCodecCudaDecoder(str(video))
    commands = {
        "inspect": ["inspect", str(video)],
        "check": ["check", str(dataset / "val.csv"), "--report", str(tmp_path / "check.csv")],
        "prepare": ["prepare", str(dataset / "val.csv"), str(tmp_path / "prepared")],
        "train": ["train", "--data", str(dataset / "train.csv"), "--model", "c3d_bn", "--out", str(tmp_path / "run")],
    }
    for name, args in commands.items():
        result = CliRunner().invoke(app, [*args, "--decoder", "torchcodec-cuda"], env={"COLUMNS": "400"})
        assert result.exit_code == 2, (name, result.output)
        assert result.stderr.strip().splitlines() == [CUDA_REFUSAL], name
    assert not (tmp_path / "prepared").exists() and not (tmp_path / "run").exists()  # refused before any work


@needs_torchcodec
@no_gpu
def test_a_device_torchcodec_cannot_decode_on_is_one_line(dataset: Path, monkeypatch: pytest.MonkeyPatch):
    """Past the checks (pretended), torchcodec's own refusal of the device is still one line
    saying what is needed, not a VideoDecodeError blaming the file."""
    monkeypatch.setattr(torchcodec_backend, "torchcodec_cuda_status", lambda: (True, "pretend"))
    monkeypatch.setattr(torchcodec_backend, "_cuda_device", lambda: "cuda:0")
    video = next((dataset / "videos").rglob("*.mp4"))
    with pytest.raises(DecoderUnavailableError) as refused:
        VideoReader(video, decoder="torchcodec-cuda")
    message = str(refused.value)
    assert message.startswith("the torchcodec-cuda decoder needs a CUDA GPU and torchcodec's CUDA build; "
                              "torchcodec cannot decode on cuda:0 (") and "\n" not in message


@needs_torchcodec
def test_a_cpu_build_of_torch_is_named(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    ok, reason = torchcodec_backend.torchcodec_cuda_status()
    assert not ok and "(a CPU build)" in reason and "download.pytorch.org/whl/cu" in reason and "\n" not in reason


@needs_torchcodec
def test_the_cuda_path_run_on_the_cpu_gives_pyavs_frames(dataset: Path, cuda_path_on_the_cpu):
    """Decoder on the given device, torchcodec's ColorConverter, the resize there and the copy
    back: PyAV's frames at the native size (within one level: two FFmpeg builds convert them, the
    system's and PyAV's, whose SIMD paths differ by CPU; identical on this one), resized within a
    level or so (bilinear, antialiased both; NVDEC's conversion on a GPU may differ more: not measured)."""
    video = next((dataset / "videos").rglob("*.mp4"))
    with VideoReader(video, decoder="pyav") as pyav, VideoReader(video, decoder="torchcodec-cuda") as cuda:
        assert isinstance(cuda._decoder, torchcodec_backend.TorchCodecCudaDecoder) and cuda._decoder.device == "cpu"
        assert cuda.info == pyav.info
        indices = [pyav.num_frames - 1, 0, 3, 3]
        native = cuda.get_frames(indices)
        assert native.dtype == torch.uint8 and tuple(native.shape) == (4, pyav.height, pyav.width, 3)
        assert int((native.int() - pyav.get_frames(indices).int()).abs().max()) <= 1
        resized_a, resized_b = pyav.get_frames(indices, size=(12, 20)), cuda.get_frames(indices, size=(12, 20))
        whole_a, whole_b = list(pyav.iter_frames()), list(cuda.iter_frames())  # whole-video reads too
    assert len(whole_b) == len(whole_a) == pyav.num_frames
    assert max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(whole_a, whole_b)) <= 1
    assert resized_b.shape == resized_a.shape == (4, 12, 20, 3)
    assert float((resized_a.float() - resized_b.float()).abs().mean()) <= 2.5


def test_rgb_frames_come_back_height_width_channels_resized_bilinearly():
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    rgb = torch.stack([torch.full((6, 8), 10), torch.full((6, 8), 20), torch.arange(48).reshape(6, 8)]).to(torch.uint8)
    out = np.empty((6, 8, 3), np.uint8)
    torchcodec_backend.rgb_frame_into(rgb, out, 6, 8)  # the native size: only the layout changes
    assert np.array_equal(out, rgb.permute(1, 2, 0).numpy())
    small = np.empty((3, 4, 3), np.uint8)
    torchcodec_backend.rgb_frame_into(rgb, small, 3, 4)
    assert (small[..., 0] == 10).all() and (small[..., 1] == 20).all()  # flat channels stay flat, in order
    expected = F.resize(rgb, [3, 4], interpolation=InterpolationMode.BILINEAR, antialias=True)
    assert np.array_equal(small, expected.permute(1, 2, 0).numpy())
    assert small[..., 2][0, 0] < small[..., 2][0, 3] < small[..., 2][2, 3]  # the ramp survives, not flipped


def test_a_gpu_decoder_decodes_in_the_main_process(caplog: pytest.LogCaptureFixture):
    assert video_module.loader_workers("pyav", 4) == 4
    assert video_module.loader_workers("torchcodec", 4) == 4
    assert video_module.loader_workers("torchcodec-cuda", 0) == 0 and not caplog.records
    with caplog.at_level("WARNING", logger="vidzoo.data.video"):
        assert video_module.loader_workers("torchcodec-cuda", 4) == 0
    assert "decodes in the main process" in caplog.text and "--workers 4 is not used" in caplog.text


@needs_torchcodec
def test_train_with_the_gpu_decoder_starts_no_workers(dataset: Path, tmp_path: Path, monkeypatch,
                                                      cuda_path_on_the_cpu):
    import vidzoo.train.run as run_module

    monkeypatch.setattr(video_module, "_usable_cores", lambda: CORES)
    seen = {}

    def stop(self, ckpt_path):
        seen.update(workers=(self.train_loader.num_workers, self.val_loader.num_workers), threads=self.train_set.threads,
                    decoder=self.train_set.decoder)
        raise _Stop

    monkeypatch.setattr(run_module._Run, "fit", stop)
    with pytest.raises(_Stop):
        run_module.train(tiny_config(dataset, tmp_path / "run", accelerator="cpu", workers=2,
                                     decoder="torchcodec-cuda"))
    assert seen == {"workers": (0, 0), "threads": CORES, "decoder": "torchcodec-cuda"}


@needs_torchcodec
def test_eval_with_the_gpu_decoder_decodes_in_the_main_process(dataset: Path, cuda_path_on_the_cpu, monkeypatch):
    """--workers 2 asked: every video is opened in this process, and the report scores the videos
    PyAV's does (its predictions may differ where a frame is a level apart: see above)."""
    import os

    from vidzoo.evaluate import evaluate
    from vidzoo.models import create_model

    opened = []
    factory = video_module._decoder_factory("torchcodec-cuda")

    def spy(path: str, threads: int):
        opened.append(os.getpid())  # a forked worker's appends would not come back
        return factory(path, threads)

    monkeypatch.setitem(video_module._DECODERS, "torchcodec-cuda", spy)
    torch.manual_seed(0)
    source = load_source(dataset / "val.csv")
    model = create_model("c3d_bn", num_classes=len(source.classes), **TINY_MODEL)
    model.classes = list(source.classes)
    reports = {decoder: evaluate(model, source, workers=2, progress=False, decoder=decoder, clips_per_video=1)
               for decoder in ("pyav", "torchcodec-cuda")}
    assert len(opened) >= len(source) and set(opened) == {os.getpid()}
    cuda, pyav = reports["torchcodec-cuda"], reports["pyav"]
    assert (cuda.num_videos, cuda.excluded, cuda.classes) == (pyav.num_videos, [], pyav.classes)
    assert [sum(row) for row in cuda.confusion_matrix] == [sum(row) for row in pyav.confusion_matrix]

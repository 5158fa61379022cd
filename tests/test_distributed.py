"""Extraction and evaluation shared out among processes: two CPU processes (gloo) write the
features file and the report one process writes, each computing a disjoint share of the chunks
and none the chunks an interrupted run left; the planning, resuming and errors in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL
from torch import nn

import vidzoo
from vidzoo.data.dataset import VideoDataset
from vidzoo.data.sources import load_source
from vidzoo.distributed import Chunk, ChunkStore, Processes, check_launch, run_chunks
from vidzoo.evaluate import evaluate
from vidzoo.features import extract_features, load_features
from vidzoo.models import create_model, load_model, save_model

CHUNK_SIZE = 5  # 24 videos: 5 chunks, the last one of 4 videos

pytestmark = pytest.mark.xdist_group("distributed")


def spread_model(source) -> nn.Module:
    """The tiny C3D-BN with its BatchNorm statistics measured on `source`'s clips: an untrained
    model whose predictions differ from video to video, so equal reports mean something."""
    torch.manual_seed(0)
    model = create_model("c3d_bn", num_classes=len(source.classes), **TINY_MODEL)
    model.classes = source.classes
    clips = VideoDataset.from_spec(source, model.clip_spec.replace(clips_per_video=2), train=False)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a plain average over the one batch below
    model.train()
    with torch.no_grad():
        model(torch.cat([clips[i][0] for i in range(len(clips))]))
    return model.eval()


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def two_processes(dataset, tmp_path_factory):
    """One process: the features and the report; an extraction interrupted after 2 chunks;
    then two processes resume it and evaluate (tests/distributed_run.py)."""
    work = tmp_path_factory.mktemp("distributed")
    data = dataset / "labels.csv"
    source = load_source(data)
    model_file = save_model(spread_model(source), work / "model.safetensors", history="test")
    one = extract_features(model_file, data, out=work / "one.npy", per="clip", clips_per_video=2,
                           chunk_size=CHUNK_SIZE, progress=False)
    report = evaluate(load_model(model_file), source, clips_per_video=2, chunk_size=CHUNK_SIZE, progress=False)

    def stop_after_two(chunk: int, total: int) -> None:
        if chunk == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        extract_features(model_file, data, out=work / "two.npy", per="clip", clips_per_video=2,
                         chunk_size=CHUNK_SIZE, progress=False, on_chunk=stop_after_two)
    settings = work / "settings.json"
    settings.write_text(json.dumps({"work": str(work), "model": str(model_file), "data": str(data),
                                    "chunk_size": CHUNK_SIZE}))
    # One thread per process, as in this one; and this process's vidzoo, wherever it comes from.
    src = str(Path(vidzoo.__file__).parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("distributed_run.py")), str(settings)],
                          capture_output=True, text=True, timeout=240, env=env, cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    return work, one, report, done


@pytest.mark.slow
def test_two_processes_write_the_features_file_one_process_writes(two_processes):
    work, one, _, _ = two_processes
    assert (work / "two.npy").read_bytes() == (work / "one.npy").read_bytes()
    two = load_features(work / "two.npy")
    assert (two.video_ids, two.clip_index.tolist(), two.labels.tolist()) == (
        one.video_ids, one.clip_index.tolist(), one.labels.tolist())
    assert not (work / "two.npy.parts").exists()


@pytest.mark.slow
def test_two_processes_share_out_only_the_unfinished_chunks(two_processes):
    work, _, _, _ = two_processes
    computed = [json.loads((work / f"computed_rank{rank}.json").read_text()) for rank in (0, 1)]
    # Chunks 0 and 1 were on disk; 2, 3, 4 were left, shared out in turn.
    assert computed == [[2, 4], [3]]


@pytest.mark.slow
def test_two_processes_give_the_report_one_process_gives(two_processes):
    work, _, report, done = two_processes
    two = json.loads((work / "eval" / "report.json").read_text())
    one = report.to_dict()
    predicted = [sum(column) for column in zip(*one["confusion_matrix"])]
    assert sum(n > 0 for n in predicted) >= 3  # the videos get different predictions: equal reports mean something
    assert {k: v for k, v in two.items() if k not in report.RUN_FIELDS} == report.figures()
    assert json.loads(done.stdout)["video_accuracy"] == one["video_accuracy"]  # printed once, by process 0
    assert not (work / "eval" / "parts").exists()


# --------------------------------------------------------------------------- in one process


class FakeFabric:
    """Stands in for Lightning Fabric in one process: every collective returns at once."""

    def __init__(self, shared=None, at_barrier=lambda: None):
        self.shared = shared
        self.at_barrier = at_barrier  # what the other processes did by the barrier
        self.barriers = 0

    def barrier(self) -> None:
        self.barriers += 1
        self.at_barrier()

    def broadcast(self, value, src: int = 0):
        return value if self.shared is None else self.shared


def chunk_of(index: int) -> Chunk:
    return Chunk({"x": np.full((2, 3), index, np.float32)}, {"index": index})


def test_a_process_computes_its_turn_of_the_unfinished_chunks_and_returns_none(tmp_path):
    store = ChunkStore(tmp_path / "parts", {"v": 1})
    store.open()
    store.write(1, chunk_of(1))
    computed = []
    fabric = FakeFabric(shared=(True, [1]))  # what process 0 found finished
    result = run_chunks(Processes(rank=1, world_size=2, fabric=fabric), [3, 3, 3, 3, 3, 3],
                        lambda i, advance: computed.append(i) or chunk_of(i), store=store, progress=False)
    assert result is None and computed == [2, 4]  # unfinished 0, 2, 3, 4, 5: process 1 takes every second
    assert sorted(p.name for p in store.dir.glob("chunk-*")) == [f"chunk-00000{i}.safetensors" for i in (1, 2, 4)]
    assert fabric.barriers == 1


def test_process_zero_merges_every_chunk_in_order(tmp_path):
    store = ChunkStore(tmp_path / "parts", {"v": 1})

    def process_one() -> None:  # its turn: chunks 1 and 3
        for i in (1, 3):
            store.write(i, chunk_of(i))

    computed = []
    result = run_chunks(Processes(rank=0, world_size=2, fabric=FakeFabric(at_barrier=process_one)), [2, 2, 2, 2],
                        lambda i, advance: computed.append(i) or chunk_of(i), store=store, progress=False)
    assert computed == [0, 2]
    assert [c.meta["index"] for c in result] == [0, 1, 2, 3]
    assert [c.arrays["x"][0, 0] for c in result] == [0, 1, 2, 3]


class CountingModel(nn.Module):
    """A model that counts its forward passes and can be told to stop after some."""

    def __init__(self, model: nn.Module, stop_after: int | None = None):
        super().__init__()
        self.model, self.stop_after, self.calls = model, stop_after, 0
        self.classes, self.clip_spec = model.classes, model.clip_spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.stop_after:
            raise Interrupt
        return self.model(x)


def test_an_interrupted_evaluation_resumes_without_rescoring_finished_chunks(dataset, tmp_path):
    source = load_source(dataset / "test.csv")  # 8 videos of 1 clip: chunks of 3 are batches of 3
    model = spread_model(source)
    with pytest.raises(Interrupt):
        evaluate(CountingModel(model, stop_after=3), source, chunk_size=3, batch_size=3, clips_per_video=1,
                 parts=tmp_path / "parts", progress=False)
    assert sorted(p.name for p in (tmp_path / "parts").glob("chunk-*")) == ["chunk-000000.safetensors",
                                                                          "chunk-000001.safetensors"]
    resumed = CountingModel(model)
    report = evaluate(resumed, source, chunk_size=3, batch_size=3, clips_per_video=1, parts=tmp_path / "parts",
                      progress=False)
    assert resumed.calls == 1  # only the last chunk
    straight = evaluate(model, source, chunk_size=3, batch_size=3, clips_per_video=1, progress=False)
    assert report.figures() == straight.figures()
    assert not (tmp_path / "parts").exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"strategy": "fsdp"}, "strategy must be one of auto, ddp, got 'fsdp'"),
    ({"devices": 0}, "devices must be an integer >= 1"),
    ({"devices": 2, "output": None}, "2 processes hand their results over through files: give an output"),
])
def test_launch_arguments_are_checked_before_anything_starts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_launch(**{"devices": 1, "strategy": "auto", "num_nodes": 1, **kwargs})


def test_eval_command_with_several_processes_needs_out(dataset, tmp_path):
    from typer.testing import CliRunner

    from vidzoo.cli import app

    model_file = save_model(create_model("c3d_bn", num_classes=8, **TINY_MODEL), tmp_path / "m.safetensors",
                            history="test", classes=load_source(dataset / "test.csv").classes)
    result = CliRunner().invoke(app, ["eval", str(model_file), str(dataset / "test.csv"), "--devices", "2"])
    assert result.exit_code == 2 and "give an output (out=... / --out)" in result.stderr

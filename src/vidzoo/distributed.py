"""One command's work over many processes: chunks of videos, each saved as soon as it is done,
shared out among the processes and merged by process 0.

::

    videos --chunks of chunk_size--> chunk 0, 1, 2, ...
    process 0:  opens PARTS/ (manifest.json: the settings), lists the finished chunks, shares the plan
    process r:  computes the unfinished chunks todo[r::world_size], each written atomically to
                PARTS/chunk-NNNNNN.safetensors
    barrier;    process 0 reads every chunk, in order, and hands them to the caller to merge

A chunk is computed the same way (same videos, same batches) whatever the number of processes,
so a distributed run gives exactly what one process gives (bit for bit where the model's forward
is deterministic), and a rerun after an interruption, with any number of processes, computes
only the chunks not on disk.

The processes are started as `vidzoo train` starts them: Lightning (Fabric) with the same
``devices`` / ``strategy`` / ``num_nodes``; with ``strategy="ddp"`` it runs the command again
once per extra process on this machine, and under torchrun or SLURM it joins the processes those
started. PARTS must be on a file system every process sees (on several machines: a shared one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from vidzoo.data.sources import VideoSource
from vidzoo.fileio import write_atomically
from vidzoo.progress import progress_bar

__all__ = ["Chunk", "ChunkStore", "OtherProcessFailed", "Processes", "check_launch", "chunk_ranges", "launch",
           "run_chunks", "videos_fingerprint"]

log = logging.getLogger(__name__)
T = TypeVar("T")

STRATEGIES = ("auto", "ddp")
_LIGHTNING_LOGGERS = ("lightning.fabric", "lightning.pytorch", "lightning", "pytorch_lightning")


class OtherProcessFailed(RuntimeError):
    """Another process of a distributed run stopped (its own error says why)."""


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Processes:
    """The processes that share one command's work: this one's `rank` among `world_size`, the
    device it computes on, and `local_processes`, how many of them run on this machine (they
    share its cores). A single process is ``Processes()`` on its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    fabric: Any = field(default=None, repr=False)  # lightning.Fabric when distributed
    local_processes: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.fabric is None:
            return
        try:
            self.fabric.barrier()
        except RuntimeError:  # gloo / NCCL: a peer closed its connection
            raise OtherProcessFailed(f"process {self.rank} stops: another process of the run stopped (its own "
                                     "error says why)") from None

    def share(self, compute: Callable[[], T]) -> T:
        """`compute()` on process 0, its result (or its exception) handed to every process: the
        one place where the processes must agree on something read from disk."""
        if self.fabric is None:
            return compute()
        outcome: tuple[bool, Any] | None = None
        error: Exception | None = None
        if self.is_main:
            try:
                outcome = (True, compute())
            except Exception as e:  # noqa: BLE001 - raised below, after the others are told
                error, outcome = e, (False, type(e).__name__)
        try:
            ok, value = self.fabric.broadcast(outcome, src=0)
        except RuntimeError:
            raise OtherProcessFailed(f"process {self.rank} stops: process 0 stopped (its own error says why)") from None
        if error is not None:
            raise error
        if not ok:
            raise OtherProcessFailed(f"process {self.rank} stops: process 0 failed ({value})")
        return value


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    # Lightning's "Initializing distributed" and backend banners are not this command's output.
    levels = {name: logging.getLogger(name).level for name in _LIGHTNING_LOGGERS}
    for name in _LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _accelerator(device: str) -> str:
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r}: with several processes give a device type: cpu, cuda or mps")
    if index:
        raise ValueError(f"device {device!r} names one device; with several processes give its type ({kind!r}): "
                         "each process takes its own (set CUDA_VISIBLE_DEVICES to choose which)")
    return {"cuda": "gpu"}.get(kind, kind)


def check_launch(devices: int, strategy: str, num_nodes: int, output: object = True) -> None:
    """Raise ValueError for arguments `launch` refuses, before anything starts; `output` is the
    result's file or folder, which several processes need (they hand their chunks over through it)."""
    for name, value in (("devices", devices), ("num_nodes", num_nodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}: the processes only "
                         "share out the videos, each runs the whole model")
    if output is None and devices * num_nodes > 1:
        raise ValueError(f"{devices * num_nodes} processes hand their results over through files: give an output "
                         "(out=... / --out)")


def launch(device: str | torch.device = "cpu", devices: int = 1, strategy: str = "auto",
           num_nodes: int = 1) -> Processes:
    """The processes of a run: this one alone when ``devices == num_nodes == 1``, else started
    (or joined, under torchrun / SLURM / an earlier call) by Lightning Fabric with `devices`
    processes on each of `num_nodes` machines, each on its own `device`-type device.

    With ``strategy="ddp"`` (or ``"auto"``) Lightning runs the program again once per extra process
    on this machine: call this from a script or the command line, not a notebook."""
    check_launch(devices, strategy, num_nodes)
    if devices == 1 and num_nodes == 1:
        return Processes(device=torch.device(device))
    import lightning as L

    accelerator = _accelerator(str(device))
    with _quiet_lightning():
        fabric = L.Fabric(accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
                          precision="32-true")
        fabric.launch()
    # Lightning runs `devices` processes on each machine (under torchrun it checks that
    # --nproc-per-node agrees).
    return Processes(fabric.global_rank, fabric.world_size, fabric.device, fabric, local_processes=devices)


# --------------------------------------------------------------------------- chunks on disk


@dataclass
class Chunk:
    """The result of one chunk of videos: arrays, and JSON-ready values (ids, excluded videos)."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


def chunk_ranges(count: int, chunk_size: int) -> list[range]:
    """``range(0, chunk_size)``, ``range(chunk_size, 2 * chunk_size)``, ... covering `count` items."""
    return [range(start, min(start + chunk_size, count)) for start in range(0, count, chunk_size)]


def videos_fingerprint(source: VideoSource) -> dict[str, Any]:
    """The videos and labels of `source` in a few bytes: part of what a resumed run must match."""
    digest = hashlib.sha256()
    for sample in source.samples:
        digest.update(f"{sample.video_id}\n{source.classes[sample.label]}\n".encode())
    return {"videos": len(source), "videos_sha256": digest.hexdigest()}


class ChunkStore:
    """Finished chunks of one computation in a folder: ``manifest.json`` (the settings, which a
    resumed run must match) and one ``chunk-NNNNNN.safetensors`` per chunk, each written
    atomically, so a chunk file that exists is complete. `what` names the computation in errors."""

    def __init__(self, directory: str | os.PathLike, fingerprint: dict[str, Any], what: str = "computation"):
        self.dir = Path(directory)
        self.fingerprint = fingerprint
        self.what = what

    def open(self, overwrite: bool = False) -> None:
        """Check an existing manifest against the settings (refuse other settings, or discard
        their chunks with `overwrite`) and create the folder. Process 0 only."""
        manifest = self.dir / "manifest.json"
        if manifest.is_file():
            try:
                old = json.loads(manifest.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                old = {}
            differ = sorted(k for k in self.fingerprint.keys() | old.keys() if self.fingerprint.get(k) != old.get(k))
            if differ and not overwrite:
                raise FileExistsError(
                    f"{self.dir} holds an unfinished {self.what} with other settings (differs in: "
                    f"{', '.join(differ)}); rerun it with the same settings to resume, or pass "
                    "overwrite=True (--overwrite) to discard it"
                )
            if differ:
                shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not manifest.is_file():
            text = json.dumps(self.fingerprint, indent=2)
            write_atomically(manifest, lambda p: p.write_text(text, encoding="utf-8"))

    def _path(self, index: int) -> Path:
        return self.dir / f"chunk-{index:06d}.safetensors"

    def has(self, index: int) -> bool:
        return self._path(index).is_file()

    def write(self, index: int, chunk: Chunk) -> None:
        from safetensors.numpy import save_file

        meta = {key: json.dumps(value) for key, value in chunk.meta.items()}
        write_atomically(self._path(index), lambda p: save_file(chunk.arrays, str(p), metadata=meta))

    def read(self, index: int) -> Chunk:
        from safetensors import safe_open

        path = self._path(index)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing after every process finished: the processes must share one file system "
                f"(on several machines, give an output on a shared one)")
        with safe_open(str(path), framework="np") as f:
            arrays = {name: f.get_tensor(name) for name in f.keys()}
            meta = {key: json.loads(value) for key, value in (f.metadata() or {}).items()}
        return Chunk(arrays, meta)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- the run


def run_chunks(
    processes: Processes,
    sizes: list[int],
    compute: Callable[[int, Callable[[], None]], Chunk],
    *,
    store: ChunkStore | None = None,
    overwrite: bool = False,
    progress: bool = True,
    label: str = "working",
    on_chunk: Callable[[int, int], None] | None = None,
) -> list[Chunk] | None:
    """Compute the chunks (``sizes[i]`` videos in chunk i) with ``compute(i, advance)``, where
    `advance` moves the progress bar by one video; this process computes its share of those not
    in `store`, writing each there. Returns every chunk, in order, on process 0; None on the others.

    Several processes need a `store`: they hand their chunks over through its files."""
    if store is None and processes.world_size > 1:
        raise ValueError(f"{processes.world_size} processes hand their results over through files: "
                         "give an output (out=... / --out)")

    def plan() -> list[int]:
        if store is None:
            return []
        store.open(overwrite)
        return [i for i in range(len(sizes)) if store.has(i)]

    reused = processes.share(plan)
    todo = [i for i in range(len(sizes)) if i not in set(reused)]
    if processes.is_main and 1 < processes.world_size and len(todo) < processes.world_size:
        log.warning("%d chunk(s) to compute for %d processes: some have nothing to do (a smaller chunk size "
                    "shares the work out more evenly)", len(todo), processes.world_size)
    share = [todo[rank::processes.world_size] for rank in range(processes.world_size)]
    mine = share[processes.rank]
    done = sum(sizes[i] for i in reused) if processes.world_size == 1 else 0
    if processes.world_size > 1:
        label = f"{label} (process 1 of {processes.world_size})"
    computed: dict[int, Chunk] = {}
    with progress_bar(progress and processes.is_main, done + sum(sizes[i] for i in mine), label, done) as advance:
        for index in mine:
            chunk = compute(index, advance)
            if store is not None:
                store.write(index, chunk)
            if processes.is_main:
                computed[index] = chunk  # no need to read back what it holds
            if on_chunk is not None:
                on_chunk(index, len(sizes))
    processes.barrier()
    if not processes.is_main:
        return None
    return [computed[i] if i in computed else store.read(i) for i in range(len(sizes))]

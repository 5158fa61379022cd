"""What a run does around Lightning's loop: atomic checkpoints, throughput and data-wait
accounting, the per-epoch record (metrics.csv, curves.png, bad videos), the progress display,
gradual unfreezing, and naming the video a dead or stuck DataLoader worker was decoding."""

from __future__ import annotations

import csv
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from vidzoo.fileio import write_atomically
from vidzoo.transfer import unfreeze

__all__ = [
    "AtomicCheckpointIO", "GradualUnfreezing", "ProgressDisplay", "RunRecorder", "SampleRecorder", "Throughput",
    "TrainingError", "read_metrics", "worker_failure", "worker_init", "write_bad_videos",
]

log = logging.getLogger(__name__)

# Per DataLoader worker, a file named by its pid holding the video it is decoding (empty when idle).
DECODING_DIR = "decoding"
_DECODING_LOGGER = "vidzoo.data.dataset.decoding"


class TrainingError(RuntimeError):
    """Training cannot go on (too many broken videos, a resume that does not match...)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file, fsync, then rename: a crash while saving leaves
    the previous checkpoint intact. Loading is done with `weights_only=True` by `train`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        write_atomically(path, lambda temp: torch.save(checkpoint, temp))


# --------------------------------------------------------------------------- throughput


class Throughput(Callback):
    """Clips per second and the share of time spent waiting for the next batch, per epoch (what
    metrics.csv, summary.json and the progress display report)."""

    def __init__(self) -> None:
        self.clips = 0
        self.wait = self.busy = 0.0
        self.history: list[dict[str, int | float]] = []  # one entry per finished epoch
        self._start = self._batch_start = 0.0
        self._batch_end: float | None = None

    @property
    def clips_per_s(self) -> float:
        return self.clips / max(self.wait + self.busy, 1e-9)

    @property
    def data_wait(self) -> float:
        return self.wait / max(self.wait + self.busy, 1e-9)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.clips, self.wait, self.busy, self._batch_end = 0, 0.0, 0.0, None
        self._start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.wait += now - (self._batch_end if self._batch_end is not None else self._start)
        self._batch_start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.busy += now - self._batch_start
        self._batch_end = now
        self.clips += len(batch[1])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.history.append({"epoch": trainer.current_epoch, "clips_per_s": round(self.clips_per_s, 3),
                             "data_wait": round(self.data_wait, 4)})


# --------------------------------------------------------------------------- records


def _scalar(value) -> float | None:
    return None if value is None else round(float(value), 6)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a run's metrics.csv with numbers parsed (empty cells become None)."""
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


def write_bad_videos(run_dir: Path, bad_videos) -> list[str]:
    """Distinct broken videos so far, written to bad_videos.csv (path, error, reason, count);
    returns their paths. Nothing is written when there are none."""
    seen: dict[str, list] = {}
    for bad in bad_videos:
        entry = seen.setdefault(bad.path, [bad.error, bad.reason, 0])
        entry[2] += 1
    if not seen:
        return []
    with open(run_dir / "bad_videos.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "error", "reason", "times_skipped"])
        for path, (error, reason, count) in sorted(seen.items()):
            writer.writerow([path, error, reason, count])
    return list(seen)


class RunRecorder(Callback):
    """Per-epoch metrics.csv and curves.png; bad_videos.csv (the run's skipped videos so far);
    checks the broken-video budget after each epoch."""

    FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "clips_per_s",
              "data_wait", "bad_videos"]

    def __init__(self, run_dir: Path, bad_videos: Callable[[], list], total_videos: int, max_bad_fraction: float,
                 throughput: Throughput):
        self.run_dir = run_dir
        self.bad_videos = bad_videos
        self.total_videos = total_videos
        self.max_bad_fraction = max_bad_fraction
        self.throughput = throughput
        self._epoch_start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        bad = write_bad_videos(self.run_dir, self.bad_videos())
        m = trainer.callback_metrics
        row = {
            "epoch": trainer.current_epoch,
            "train_loss": _scalar(m.get("train_loss_epoch")),
            "train_acc": _scalar(m.get("train_acc_epoch")),
            "val_loss": _scalar(m.get("val_loss")),
            "val_acc": _scalar(m.get("val_acc")),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - self._epoch_start, 3),
            "clips_per_s": round(self.throughput.clips_per_s, 3),
            "data_wait": round(self.throughput.data_wait, 4),
            "bad_videos": len(bad),
        }
        path = self.run_dir / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        try:
            from vidzoo.plots import plot_curves

            chance = 1 / pl_module.model.num_classes
            # The plot counts epochs from 1, as the progress display does (metrics.csv from 0).
            rows = [{**row, "epoch": row["epoch"] + 1} if row.get("epoch") is not None else row
                    for row in read_metrics(path)]
            plot_curves(rows, self.run_dir / "curves.png", chance=chance)
        except Exception as e:  # noqa: BLE001 - a plot must never end a training run
            log.warning("could not draw curves.png: %s", e)
        limit = self.max_bad_fraction * self.total_videos
        if len(bad) > limit:
            raise TrainingError(
                f"{len(bad)} of {self.total_videos} videos failed to decode, more than "
                f"max_bad_fraction={self.max_bad_fraction:g}; see {self.run_dir / 'bad_videos.csv'} "
                "and run `vidzoo check` on the dataset"
            )


class GradualUnfreezing(Callback):
    """`unfreeze_at`: from that epoch on every parameter trains (the frozen ones in the optimizer's
    backbone group, at lr * backbone_lr_mult). Decided from the epoch alone, so a resumed run
    unfreezes exactly when an uninterrupted one would."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.world_size > 1:
            # DDP registers only the parameters that need gradients when it wraps the model.
            raise TrainingError("unfreeze_at does not work with more than one process (DDP): parameters "
                                "frozen when DDP starts never have their gradients averaged; train in two runs")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch >= self.epoch:
            unfreeze(pl_module.model)


class SampleRecorder(Callback):
    """`record_samples`: each rank appends the video ids of its training batches to its own file."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with open(self.run_dir / f"seen_rank{trainer.global_rank}.txt", "a", encoding="utf-8") as f:
            f.writelines(f"{trainer.current_epoch}\t{video_id}\n" for video_id in batch[2])


# --------------------------------------------------------------------------- progress


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class ProgressDisplay(Callback):
    """One progress display for training: epoch k/N, step, running loss and accuracy, clips/s and
    the whole run's ETA, plus one kept summary line per finished epoch (loss, accuracy, val loss
    and accuracy, clips/s, data wait). In a terminal the step line updates in place; otherwise
    (a log file, CI) it prints plain lines, about ten per epoch, and never a carriage return."""

    def __init__(self, throughput: Throughput, stream: TextIO | None = None, live: bool | None = None):
        self.throughput = throughput
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._console = None
        self._progress = None
        self._task = None
        self._loss = self._acc = 0.0
        self._seen = 0
        self._epoch_seconds: list[float] = []
        self._epoch_start = 0.0

    # -- helpers

    def _eta(self, trainer, step: int, steps: int) -> float:
        epochs_left = trainer.max_epochs - trainer.current_epoch - 1
        elapsed = time.perf_counter() - self._epoch_start
        this_epoch = elapsed / max(step, 1) * (steps - step)
        per_epoch = (sum(self._epoch_seconds) / len(self._epoch_seconds)) if self._epoch_seconds \
            else elapsed / max(step, 1) * steps
        return this_epoch + epochs_left * per_epoch

    def _step_text(self, trainer, step: int, steps: int) -> str:
        return (f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  step {step}/{steps}  "
                f"loss {self._loss:.4f}  acc {self._acc:.1%}  {self.throughput.clips_per_s:.1f} clips/s  "
                f"eta {_duration(self._eta(trainer, step, steps))}")

    def _print(self, text: str) -> None:
        if self._console is not None:
            self._console.print(text, highlight=False, markup=False, soft_wrap=True)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    # -- hooks

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = time.perf_counter()
        self._loss = self._acc = 0.0
        self._seen = 0
        if self.live and trainer.is_global_zero:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            self._console = self._console or Console(file=self.stream)
            self._progress = Progress(BarColumn(bar_width=24), TextColumn("{task.description}"),
                                      console=self._console, transient=True)
            self._task = self._progress.add_task("", total=trainer.num_training_batches)
            self._progress.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.is_global_zero:
            return
        n = len(batch[1])
        metrics = trainer.callback_metrics
        loss, acc = metrics.get("train_loss_step"), metrics.get("train_acc_step")
        if loss is not None and acc is not None:  # running means over the epoch so far
            self._loss = (self._loss * self._seen + float(loss) * n) / (self._seen + n)
            self._acc = (self._acc * self._seen + float(acc) * n) / (self._seen + n)
            self._seen += n
        step, steps = batch_idx + 1, trainer.num_training_batches
        if self._progress is not None:
            self._progress.update(self._task, completed=step, description=self._step_text(trainer, step, steps))
        elif step == steps or step % max(1, steps // 10) == 0:
            self._print(self._step_text(trainer, step, steps))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        seconds = time.perf_counter() - self._epoch_start
        self._epoch_seconds.append(seconds)
        m = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        for label, key, percent in (("loss", "train_loss_epoch", False), ("acc", "train_acc_epoch", True),
                                    ("val_loss", "val_loss", False), ("val_acc", "val_acc", True)):
            if m.get(key) is not None:
                value = float(m[key])
                parts.append(f"{label} {value:.1%}" if percent else f"{label} {value:.4f}")
        parts += [f"{self.throughput.clips_per_s:.1f} clips/s", f"data wait {self.throughput.data_wait:.0%}",
                  f"{seconds:.0f} s"]
        left = trainer.max_epochs - trainer.current_epoch - 1
        if left:
            parts.append(f"eta {_duration(left * sum(self._epoch_seconds) / len(self._epoch_seconds))}")
        self._print("  ".join(parts))

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


# --------------------------------------------------------------------------- worker diagnostics


class _DecodingRecord(logging.Handler):
    """In a DataLoader worker: keeps `<run>/decoding/<pid>` holding the video being decoded (from
    `VideoDataset._load`'s debug records), so a worker that dies or hangs can be named."""

    def __init__(self, path: Path):
        super().__init__(logging.DEBUG)
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        self.path.write_text(getattr(record, "video_path", None) or "", encoding="utf-8")


def worker_init(worker_id: int, record_dir: Path | None = None) -> None:
    # Workers decode; more than one BLAS thread each just oversubscribes the cores.
    torch.set_num_threads(1)
    if record_dir is not None:
        decoding = logging.getLogger(_DECODING_LOGGER)
        decoding.setLevel(logging.DEBUG)
        decoding.propagate = False  # the records are for the file, not for the console
        decoding.addHandler(_DecodingRecord(record_dir / str(os.getpid())))


def worker_failure(error: BaseException, record_dir: Path, since: float) -> TrainingError | None:
    """A TrainingError naming the video(s) a dead or stuck DataLoader worker was decoding, if
    `error` is DataLoader's "worker (pid X) exited unexpectedly / killed by signal / timed out",
    or the lost connection a worker leaves when it dies while handing over a batch.
    Records older than `since` (the run's start) belong to earlier runs and are ignored."""
    message = str(error)
    if isinstance(error, (ConnectionError, EOFError)):
        message = f"a DataLoader worker died while handing over a batch ({type(error).__name__}: {error})"
    elif not any(sign in message for sign in ("exited unexpectedly", "killed by signal", "DataLoader timed out")):
        return None  # e.g. "Caught ValueError in DataLoader worker": an error, not a dead worker
    # A dead worker is named by pid; a timeout or a lost connection names none, so every
    # busy worker is a suspect.
    match = re.search(r"pid(?:\(s\))? ([\d, ]+)", message)
    pids = re.findall(r"\d+", match.group(1)) if match else [p.name for p in record_dir.glob("*")]
    records = [record_dir / pid for pid in pids]
    videos = sorted({r.read_text(encoding="utf-8") for r in records if r.is_file() and r.stat().st_mtime >= since})
    videos = [v for v in videos if v]
    if videos:
        return TrainingError(f"{message.splitlines()[0]} while decoding {', '.join(videos)}; "
                             "check that file with `vidzoo inspect`")
    return TrainingError(f"{message.splitlines()[0]} (not while decoding a video: the worker was stopped from "
                         "outside, e.g. killed or out of memory)")

"""Training: one call (or `vidzoo train`) from labeled videos to a model file, metrics and plots.

Lightning runs the loop (devices, precision, DDP across GPUs and nodes); vidzoo adds what a
video run needs around it:

    TrainConfig ──> sources (train / val split) ──> ClipSpec datasets ──> Lightning Trainer
                                                                            │
    run dir: config.yaml, metrics.csv, curves.png, checkpoints/, bad_videos.csv,
             confusion_val.png, <model file>.safetensors, summary.json

Reproducibility does not depend on workers or interruptions: the shuffle order, every clip's
sampling and augmentation, and the dropout RNG are all derived from (seed, epoch), so a run
resumed from its last checkpoint ends with the same weights as one that was never stopped.
"""

from __future__ import annotations

import csv
import json
import functools
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.utils.data import DataLoader, Sampler

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar

from vidzoo.data.datasets import ClipSpec, VideoSource, load_source, stratified_split, validate_sources
from vidzoo.fileio import write_atomically
from vidzoo.model_file import save_model
from vidzoo.models import create_model
from vidzoo.transfer import BACKBONE, freeze, param_groups, train_last, unfreeze

__all__ = ["TrainConfig", "TrainResult", "train", "TrainingError"]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
# Per DataLoader worker, a file named by its pid holding the video it is decoding (empty when idle).
DECODING_DIR = "decoding"


class TrainingError(RuntimeError):
    """Training cannot go on (too many broken videos, a resume that does not match...)."""


class TrainConfig(BaseModel):
    """Everything a run needs. Written to the run directory as `config.yaml`; also loadable
    from a YAML/JSON file (`vidzoo train --config FILE`), CLI flags overriding it."""

    model_config = ConfigDict(extra="forbid")

    # model
    model: str = "c3d_bn"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    pretrained: str | None = None
    # data
    data: str
    classes: str | None = Field(None, description="class-list file (one name per line) fixing the label order")
    val: str | None = None
    val_split: float | None = Field(None, gt=0, lt=1, description="held-out fraction when no --val (default 0.2)")
    test: str | None = None
    frames: int | None = Field(None, ge=1)
    size: int | None = Field(None, ge=1)
    stride: int | None = Field(None, ge=1)
    sampling: Literal["dense", "segment"] | None = None
    flip: bool = Field(True, description="random horizontal flips; turn off when classes depend on direction")
    val_clips: int = Field(1, ge=1)
    # optimisation
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(8, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-4, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "step", "cosine"] = "constant"
    step_epochs: int = Field(10, ge=1, description="step schedule: decay every N epochs")
    step_gamma: float = Field(0.1, gt=0)
    warmup_epochs: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # transfer learning (vidzoo.transfer); layer names as `vidzoo.transfer.layer_names(model)` lists them
    freeze: str = Field("none", description="none, backbone (train only the classifier) or until:LAYER "
                        "(that layer and everything before it stay fixed)")
    train_last: int | None = Field(None, ge=0, description="train only the last N layers and the head")
    backbone_lr_mult: float = Field(1.0, ge=0, description="everything but the classifier learns at lr times this")
    unfreeze_at: int | None = Field(None, ge=1, description="from this epoch (0-based, as in metrics.csv) "
                                    "everything trains; needs freeze or train_last")
    truncate_after: str | None = Field(None, description="cut the model after this layer and put a new linear head on it")
    # stopping
    patience: int | None = Field(None, ge=1, description="stop after N epochs without a better val accuracy")
    target_accuracy: float | None = Field(None, gt=0, le=1, description="stop once val accuracy reaches this")
    # machinery
    workers: int = Field(2, ge=0)
    seed: int = 0
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: str | int = "auto"
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    max_bad_fraction: float = Field(0.01, ge=0, le=1)
    sample_timeout: float = Field(120.0, gt=0, description="seconds one video may take to decode in a DataLoader "
                                  "worker; a batch may take batch_size times this (needs workers >= 1)")
    history: str | None = Field(None, description="training-history field of the model file name")
    out: str = "runs/exp"
    progress: bool = True
    record_samples: bool = Field(False, description="append 'epoch<TAB>video_id' of every training clip to "
                                 "seen_rank<R>.txt in the run dir (to check how DDP shards the data)")

    @model_validator(mode="after")
    def _val_source(self) -> "TrainConfig":
        if self.val is not None and self.val_split is not None:
            raise ValueError("give either val (a separate split) or val_split (a held-out fraction), not both")
        return self

    @model_validator(mode="after")
    def _freezing(self) -> "TrainConfig":
        if self.freeze not in ("none", BACKBONE) and not (self.freeze.startswith("until:") and self.freeze[6:]):
            raise ValueError(f"freeze must be none, backbone or until:LAYER, got {self.freeze!r}")
        if self.freeze != "none" and self.train_last is not None:
            raise ValueError("give either freeze or train_last, not both")
        if self.unfreeze_at is not None and self.freeze == "none" and self.train_last is None:
            raise ValueError("unfreeze_at needs something frozen first: give freeze or train_last too")
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides: Any) -> "TrainConfig":
        """Read YAML or JSON (never Python); `overrides` that are not None win."""
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of option: value, got {type(values).__name__}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


# --------------------------------------------------------------------------- data


class EpochShuffleSampler(Sampler):
    """A fresh permutation each epoch, seeded by (seed, epoch), yielding (epoch, index) keys so
    that every DataLoader worker knows the epoch without shared state. Lightning calls
    `set_epoch` before each epoch (and wraps this sampler for distributed runs)."""

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True):
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        order = np.arange(self.num_samples)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        return iter([(self.epoch, int(i)) for i in order])


def _collate_views(batch):
    """Evaluation items carry all views of one video: stack videos, keep views separate."""
    views = torch.stack([item[0] for item in batch])  # (B, V, C, T, H, W)
    labels = torch.tensor([item[1] for item in batch])
    return views, labels, [item[2] for item in batch]


class _DecodingRecord(logging.Handler):
    """In a DataLoader worker: keeps `<run>/decoding/<pid>` holding the video being decoded (from
    `VideoDataset._load`'s debug records), so a worker that dies or hangs can be named."""

    def __init__(self, path: Path):
        super().__init__(logging.DEBUG)
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        self.path.write_text(getattr(record, "video_path", None) or "", encoding="utf-8")


def _worker_init(worker_id: int, record_dir: Path | None = None) -> None:
    # Workers decode; more than one BLAS thread each just oversubscribes the cores.
    torch.set_num_threads(1)
    if record_dir is not None:
        decoding = logging.getLogger("vidzoo.data.datasets.decoding")
        decoding.setLevel(logging.DEBUG)
        decoding.propagate = False  # the records are for the file, not for the console
        decoding.addHandler(_DecodingRecord(record_dir / str(os.getpid())))


def _worker_failure(error: Exception, record_dir: Path, since: float) -> TrainingError | None:
    """A TrainingError naming the video(s) a dead or stuck DataLoader worker was decoding, if
    `error` is DataLoader's "worker (pid X) exited unexpectedly / killed by signal / timed out",
    or the lost connection a worker leaves when it dies while handing over a batch.
    Records older than `since` (the run's start) belong to earlier runs and are ignored."""
    message = str(error)
    lost_connection = isinstance(error, (ConnectionError, EOFError))
    if lost_connection:
        message = f"a DataLoader worker died while handing over a batch ({type(error).__name__}: {error})"
    elif "DataLoader worker" not in message and "DataLoader timed out" not in message:
        return None
    # A dead worker is named by pid; a timeout or a lost connection names none, so every
    # busy worker is a suspect.
    match = re.search(r"pid(?:\(s\))? ([\d, ]+)", message)
    pids = re.findall(r"\d+", match.group(1)) if match else [p.name for p in record_dir.glob("*")]
    records = [record_dir / pid for pid in pids]
    videos = sorted({r.read_text(encoding="utf-8") for r in records if r.is_file() and r.stat().st_mtime >= since})
    videos = [v for v in videos if v]
    where = f"while decoding {', '.join(videos)}" if videos else "(not while decoding a video)"
    return TrainingError(f"{message.splitlines()[0]} {where}; check that file with `vidzoo inspect`")


# --------------------------------------------------------------------------- module


class VideoClassificationModule(L.LightningModule):
    """Wraps a vidzoo model: cross-entropy on clips, video-level accuracy on validation."""

    def __init__(self, model: nn.Module, config: TrainConfig, steps_per_epoch: int):
        super().__init__()
        self.model = model
        self.config = config
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        # Dropout and any other torch randomness: a function of (seed, epoch), so a resumed run
        # draws exactly what an uninterrupted one would.
        torch.manual_seed(self.config.seed * 100_003 + self.current_epoch)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        clips, labels, _ = batch
        logits = self.model(clips)
        loss = self.criterion(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean()
        # sync_dist: with DDP the epoch figures average all ranks, not rank 0's shard alone.
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels), sync_dist=True)
        self.log("train_acc", acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels), sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        views, labels, _ = batch
        b, v = views.shape[:2]
        logits = self.model(views.flatten(0, 1)).view(b, v, -1)
        probs = logits.softmax(-1).mean(1)  # video level: softmax averaged over views
        loss = nn.functional.nll_loss(probs.clamp_min(1e-8).log(), labels)
        acc = (probs.argmax(1) == labels).float().mean()
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=b, sync_dist=True)
        self.log("val_acc", acc, on_epoch=True, prog_bar=True, batch_size=b, sync_dist=True)

    def configure_optimizers(self):
        c = self.config
        # Every parameter, frozen or not, so the groups (and a checkpoint's optimizer state) stay
        # the same when --unfreeze-at makes frozen ones trainable; frozen ones get no gradient,
        # and the optimizers skip those.
        params = param_groups(self.model, c.lr, c.backbone_lr_mult)
        if c.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        elif c.optimizer == "adamw":
            optimizer = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        else:
            optimizer = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _lr_factor(self, step: int) -> float:
        """Learning-rate multiplier at optimizer step `step` (stepped per batch so warm-up
        can be a fraction of an epoch)."""
        c = self.config
        epoch = step / self.steps_per_epoch
        warm = min(1.0, (epoch + 1 / self.steps_per_epoch) / c.warmup_epochs) if c.warmup_epochs > 0 else 1.0
        if c.schedule == "step":
            return warm * c.step_gamma ** math.floor(epoch / c.step_epochs)
        if c.schedule == "cosine":
            span = max(1e-8, c.epochs - c.warmup_epochs)
            progress = min(1.0, max(0.0, (epoch - c.warmup_epochs) / span))
            return warm * 0.5 * (1 + math.cos(math.pi * progress))
        return warm


# --------------------------------------------------------------------------- callbacks


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file, fsync, then rename: a crash while saving leaves
    the previous checkpoint intact. Loading is done with `weights_only=True` by `train`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        write_atomically(path, lambda temp: torch.save(checkpoint, temp))


class ThroughputMonitor(Callback):
    """Clips per second and the share of time spent waiting for data, on the progress bar."""

    def __init__(self) -> None:
        self._batch_end: float | None = None
        self._wait = self._busy = 0.0
        self._clips = 0
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._wait = self._busy = 0.0
        self._clips = 0
        self._batch_end = None
        self._start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        self._wait += now - (self._batch_end if self._batch_end is not None else self._start)
        self._batch_start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self._busy += now - self._batch_start
        self._batch_end = now
        self._clips += len(batch[1])
        total = self._wait + self._busy
        pl_module.log("clips_per_s", self._clips / max(total, 1e-9), prog_bar=True, on_step=True, on_epoch=False)
        pl_module.log("data_wait", self._wait / max(total, 1e-9), prog_bar=True, on_step=True, on_epoch=False)


class RunRecorder(Callback):
    """Per-epoch metrics.csv and curves.png; checks the broken-video budget after each epoch."""

    FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "bad_videos"]

    def __init__(self, run_dir: Path, train_dataset, max_bad_fraction: float):
        self.run_dir = run_dir
        self.train_dataset = train_dataset
        self.max_bad_fraction = max_bad_fraction
        self._epoch_start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        bad = _write_bad_videos(self.run_dir, self.train_dataset)
        m = trainer.callback_metrics
        row = {
            "epoch": trainer.current_epoch,
            "train_loss": _scalar(m.get("train_loss_epoch")),
            "train_acc": _scalar(m.get("train_acc")),
            "val_loss": _scalar(m.get("val_loss")),
            "val_acc": _scalar(m.get("val_acc")),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - self._epoch_start, 3),
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

            plot_curves(read_metrics(path), self.run_dir / "curves.png")
        except Exception as e:  # noqa: BLE001 - a plot must never end a training run
            log.warning("could not draw curves.png: %s", e)
        limit = self.max_bad_fraction * len(self.train_dataset)
        if len(bad) > limit:
            raise TrainingError(
                f"{len(bad)} of {len(self.train_dataset)} training videos failed to decode, more than "
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


def _scalar(value) -> float | None:
    return None if value is None else round(float(value), 6)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a run's metrics.csv with numbers parsed (empty cells become None)."""
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


def _write_bad_videos(run_dir: Path, dataset) -> list:
    """Distinct broken videos so far, written to bad_videos.csv (path, error, reason, count)."""
    seen: dict[str, list] = {}
    for bad in dataset.bad_videos:
        entry = seen.setdefault(bad.path, [bad.error, bad.reason, 0])
        entry[2] += 1
    with open(run_dir / "bad_videos.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "error", "reason", "times_skipped"])
        for path, (error, reason, count) in sorted(seen.items()):
            writer.writerow([path, error, reason, count])
    return list(seen)


# --------------------------------------------------------------------------- entry point


class TrainResult(BaseModel):
    run_dir: str
    model_file: str
    best_val_accuracy: float | None
    best_epoch: int | None
    epochs_run: int
    seconds: float
    bad_videos: int
    classes: list[str]
    stopped_early: bool
    # What --pretrained loaded and which old-head keys it skipped (vidzoo.weights.LoadReport).
    load_report: str | None = None
    trainable_parameters: int | None = None
    total_parameters: int | None = None


def _sources(config: TrainConfig) -> tuple[VideoSource, VideoSource]:
    train_source = load_source(config.data, config.classes)
    if config.val is not None:
        val_source = load_source(config.val)
        # Every cross-split problem (unseen classes, empty classes, leaked videos) at once.
        validate_sources(train_source, val_source)
        return train_source, val_source.with_classes(train_source.classes)
    train_source, val_source = stratified_split(train_source, config.val_split or 0.2, seed=config.seed)
    validate_sources(train_source)
    return train_source, val_source


def _history(config: TrainConfig) -> str:
    if config.history:
        return config.history
    name = Path(config.data).resolve()
    name = name.parent.name if name.is_file() else name.name
    cleaned = "".join(ch if ch.isalnum() or ch in "_.+" else "_" for ch in name)
    return cleaned or "custom"


def _model_kwargs(config: TrainConfig) -> dict[str, Any]:
    """`config.model_kwargs`; fine-tuning an imported Keras model (`keras_graph`) from its model
    file takes the architecture (the Keras model_config) from that file, the given kwargs winning."""
    from vidzoo.keras.model import ARCH as KERAS_ARCH

    if config.model != KERAS_ARCH or not config.pretrained or not Path(config.pretrained).is_file():
        return dict(config.model_kwargs)
    from vidzoo.model_file import read_model_metadata

    meta = read_model_metadata(config.pretrained)
    if meta["arch"] != KERAS_ARCH:
        raise ValueError(f"--pretrained {config.pretrained} is a {meta['arch']!r} model file, not {KERAS_ARCH!r}")
    inherited = {k: v for k, v in meta["kwargs"].items() if k != "num_classes"}
    return {**inherited, **config.model_kwargs}


def train(config: TrainConfig, *, resume: str | os.PathLike | None = None) -> TrainResult:
    """Train `config.model` on `config.data`; write the run directory; return its summary.

    `resume` is a run directory (or a checkpoint file) to continue: model, optimizer,
    scheduler and epoch are restored from its last checkpoint and training goes on to
    `config.epochs` (the CLI's `--resume` reads the run's own config.yaml).
    """
    started = time.perf_counter()
    run_dir = Path(config.out)
    ckpt_path = None
    if resume is not None:
        resume = Path(resume)
        ckpt_path = resume if resume.is_file() else resume / CHECKPOINT_DIR / LAST_CHECKPOINT
        if not ckpt_path.is_file():
            raise TrainingError(f"nothing to resume: {ckpt_path} does not exist")
        run_dir = ckpt_path.parent.parent
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
        for stale in [run_dir / "metrics.csv", run_dir / "bad_videos.log", *run_dir.glob("seen_rank*.txt")]:
            stale.unlink(missing_ok=True)

    L.seed_everything(config.seed, workers=True, verbose=False)
    train_source, val_source = _sources(config)
    classes = train_source.classes
    model_kwargs = _model_kwargs(config)
    # --frames/--size describe the clips, so a model sized by its input (C3D's fc6) is built for
    # them, and its file records the clip size it was trained on.
    if config.frames is not None:
        model_kwargs.setdefault("num_frames", config.frames)
    if config.size is not None:
        model_kwargs.setdefault("img_size", config.size)
    if config.truncate_after is not None:
        model_kwargs["truncate"] = {**model_kwargs.get("truncate", {}), "after": config.truncate_after}
    model = create_model(config.model, num_classes=len(classes), pretrained=config.pretrained, **model_kwargs)
    model.classes = classes
    _freeze(model, config)
    # Counted before --unfreeze-at changes it: what the frozen phase trains.
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    spec = ClipSpec.from_model(
        model, frames=config.frames, size=config.size, stride=config.stride, sampling=config.sampling,
        flip=config.flip, num_clips=config.val_clips,
    )
    train_set = spec.dataset(train_source, train=True, seed=config.seed, bad_video_log=run_dir / "bad_videos.log")
    val_set = spec.dataset(val_source, train=False)
    persistent = config.workers > 0
    record_dir = run_dir / DECODING_DIR
    record_dir.mkdir(exist_ok=True)
    run_started = time.time() - 2  # records older than this are from earlier runs (2 s: coarse file clocks)
    # A worker decodes a whole batch before handing it over, so the batch gets batch_size
    # times the per-video timeout; a hang then ends in an error naming the video.
    worker_init = functools.partial(_worker_init, record_dir=record_dir)
    timeout = config.sample_timeout * config.batch_size if config.workers > 0 else 0
    train_loader = DataLoader(
        train_set, batch_size=config.batch_size, sampler=EpochShuffleSampler(len(train_set), config.seed),
        num_workers=config.workers, worker_init_fn=worker_init, persistent_workers=persistent, timeout=timeout,
        # A last batch of one clip breaks BatchNorm on small inputs (1x1x1 maps); with shuffling
        # every clip is still seen across epochs.
        drop_last=len(train_set) > config.batch_size,
    )
    val_loader = DataLoader(
        val_set, batch_size=max(1, config.batch_size // max(1, config.val_clips)), num_workers=config.workers,
        worker_init_fn=worker_init, persistent_workers=persistent, collate_fn=_collate_views, timeout=timeout,
    )
    module = VideoClassificationModule(model, config, steps_per_epoch=len(train_loader))

    checkpoints = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR, filename="best", monitor="val_acc", mode="max", save_top_k=1,
        enable_version_counter=False,
    )
    # Not save_last=True: since Lightning 2.6 that writes last.ckpt only when val_acc improved,
    # so a resume would silently restart from the best epoch. A monitor-less callback saves every epoch.
    last = ModelCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, filename=Path(LAST_CHECKPOINT).stem, save_top_k=1,
                           enable_version_counter=False)
    callbacks: list[Callback] = [checkpoints, last, ThroughputMonitor(),
                                 RunRecorder(run_dir, train_set, config.max_bad_fraction)]
    if config.patience is not None or config.target_accuracy is not None:
        callbacks.append(EarlyStopping(
            monitor="val_acc", mode="max", patience=config.patience or config.epochs + 1,
            stopping_threshold=config.target_accuracy,
        ))
    if config.unfreeze_at is not None:
        callbacks.append(GradualUnfreezing(config.unfreeze_at))
    if config.record_samples:
        callbacks.append(SampleRecorder(run_dir))
    if config.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, len(train_loader) // 20)))
    trainer = L.Trainer(
        max_epochs=config.epochs, accelerator=config.accelerator, devices=config.devices, strategy=config.strategy,
        num_nodes=config.num_nodes, precision=config.precision, callbacks=callbacks, logger=False,
        default_root_dir=run_dir, enable_progress_bar=config.progress, enable_model_summary=False,
        plugins=[AtomicCheckpointIO()], num_sanity_val_steps=0, deterministic=False,
    )
    try:
        trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path, weights_only=True)
    except (RuntimeError, ConnectionError, EOFError) as e:
        failure = _worker_failure(e, record_dir, since=run_started)
        if failure is None:
            raise
        raise failure from e

    # Everything below runs on rank 0 only: the model file and reports.
    best_path = checkpoints.best_model_path or str(run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT)
    best_score = checkpoints.best_model_score
    best_state = torch.load(best_path, map_location="cpu", weights_only=True)
    best_epoch = int(best_state.get("epoch", trainer.current_epoch))
    module.load_state_dict(best_state["state_dict"])
    model = module.model.cpu().eval()
    model.classes = classes
    # The model file must describe the clips the model was trained on (a --stride or --size
    # given to train overrides the architecture's default), so eval and predict cut the same.
    model.default_cfg = model.default_cfg.replace(
        input_size=(spec.frames, spec.size, spec.size), frame_stride=spec.stride, sampling=spec.sampling,
        norm=spec.norm,
    )
    if not trainer.is_global_zero:
        return TrainResult(run_dir=str(run_dir), model_file="", best_val_accuracy=None, best_epoch=None,
                           epochs_run=trainer.current_epoch, seconds=0.0, bad_videos=0, classes=classes,
                           stopped_early=False)
    model_file = save_model(
        model, directory=run_dir, classes=classes,
        history={"name": _history(config), "trained_on": str(config.data), "epochs": trainer.current_epoch,
                 "best_epoch": best_epoch, "pretrained": config.pretrained, "clip": spec.model_dump()},
    )
    _confusion_on_val(model, val_source, spec, run_dir, config)
    bad = _write_bad_videos(run_dir, train_set)
    result = TrainResult(
        run_dir=str(run_dir),
        model_file=str(model_file),
        best_val_accuracy=None if best_score is None else round(float(best_score), 6),
        best_epoch=best_epoch,
        epochs_run=trainer.current_epoch,
        seconds=round(time.perf_counter() - started, 2),
        bad_videos=len(bad),
        classes=classes,
        stopped_early=trainer.current_epoch < config.epochs,
        load_report=str(model.load_report) if getattr(model, "load_report", None) is not None else None,
        trainable_parameters=trainable,
        total_parameters=sum(p.numel() for p in model.parameters()),
    )
    (run_dir / "summary.json").write_text(json.dumps(result.model_dump(), indent=2))
    return result


def _freeze(model, config: TrainConfig) -> None:
    """Apply `freeze` / `train_last` (an unknown layer is a ValueError listing the model's layers)."""
    if config.train_last is not None:
        frozen = train_last(model, config.train_last)
    elif config.freeze == "none":
        return
    else:
        frozen = freeze(model, until=config.freeze.removeprefix("until:"))
    log.info("frozen: %d of %d parameter tensors", len(frozen), len(list(model.parameters())))


def _confusion_on_val(model, val_source: VideoSource, spec: ClipSpec, run_dir: Path, config: TrainConfig) -> None:
    """confusion_val.png of the best model on the validation split (same views as validation)."""
    from vidzoo.evaluate import evaluate
    from vidzoo.plots import plot_confusion

    report = evaluate(
        model, val_source, spec=spec, num_clips=config.val_clips, batch_size=config.batch_size,
        workers=0, progress=False,
    )
    plot_confusion(np.asarray(report.confusion_matrix), report.classes, run_dir / "confusion_val.png",
                   title=f"validation, video accuracy {report.video_accuracy:.1%}")

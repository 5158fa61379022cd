"""`train()`: from labeled videos to a model file, metrics and plots.

Lightning runs the loop (devices, precision, DDP across GPUs and nodes); vidzoo adds what a
video run needs around it::

    TrainConfig ──> sources (train / val / test) ──> model + its clip description (resolved once)
                ──> datasets (ClipPipeline) ──> Lightning Trainer ──> best model file
    run dir: config.yaml, metrics.csv, curves.png, checkpoints/, bad_videos.csv (when any),
             confusion_val.png, <model file>.safetensors, test/ (with --test), summary.json

Reproducibility does not depend on workers or interruptions: the shuffle order, every clip's
sampling and augmentation, and the dropout RNG are all derived from (seed, epoch), so a run
resumed from its last checkpoint ends with the same weights as one that was never stopped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pydantic import BaseModel
from torch.utils.data import DataLoader

from vidzoo.data.balance import class_weights
from vidzoo.data.clip import ClipSpec, resolve_clip_spec
from vidzoo.data.dataset import BadVideo, VideoDataset
from vidzoo.data.sources import VideoSource
from vidzoo.data.video import check_decoder, decoder_threads, loader_workers
from vidzoo.evaluate import evaluate, write_report
from vidzoo.models._base import VideoClassifier
from vidzoo.models._registry import check_model_args, get_model_entry
from vidzoo.models.factory import (
    create_model,
    get_model_cfg,
    resolve_pretrained,
    save_model,
)
from vidzoo.plots import plot_confusion
from vidzoo.train.callbacks import (
    DECODING_DIR,
    AtomicCheckpointIO,
    GradualUnfreezing,
    ProgressDisplay,
    RunRecorder,
    SampleRecorder,
    Throughput,
    TrainingError,
    worker_failure,
    worker_init,
    write_bad_videos,
)
from vidzoo.train.config import DEFAULT_MODEL, TrainConfig
from vidzoo.train.data import RunData, preflight, prepare_data, say
from vidzoo.train.module import (
    EpochShuffleSampler,
    VideoClassificationModule,
    collate_views,
)
from vidzoo.transfer import freeze, train_last
from vidzoo.weights import Weights, vidzoo_file_metadata

__all__ = ["TrainResult", "train", "resolve_run_model"]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning")


class TrainResult(BaseModel):
    """What a run produced (also ``summary.json`` in the run directory)."""

    run_dir: str
    model_file: str
    best_val_accuracy: float | None
    best_epoch: int | None
    epochs_run: int
    seconds: float
    bad_videos: int
    classes: list[str]
    stopped_early: bool
    clip: dict[str, Any] | None = None  # the resolved clip description (ClipSpec)
    # What --pretrained loaded and which old-head keys it skipped (vidzoo.weights.LoadReport).
    load_report: str | None = None
    trainable_parameters: int | None = None
    total_parameters: int | None = None
    throughput: list[dict[str, int | float]] = []  # per epoch: epoch, clips_per_s, data_wait (share of time)
    test: dict[str, Any] | None = None  # the best model on the test split (--test / --test-split)
    splits: list[dict[str, Any]] = []  # videos per class and split
    warnings: list[str] = []  # labels that look like mistakes, classes with few videos
    preflight: dict[str, Any] = {}  # videos checked before training, unreadable, shorter than a clip


@contextlib.contextmanager
def quiet_lightning(verbose: bool = False) -> Iterator[None]:
    """Lightning's banners ("GPU available", tips) and third-party deprecation warnings off,
    unless `verbose`: a run's output is its own progress and results."""
    if verbose:
        yield
        return
    levels = {name: logging.getLogger(name).level for name in _LIGHTNING_LOGGERS}
    for name in _LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", module=r"lightning(\.|$)")
            warnings.filterwarnings("ignore", module=r"pytorch_lightning(\.|$)")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


# --------------------------------------------------------------------------- model and clip


def resolve_run_model(config: TrainConfig, num_classes: int) -> VideoClassifier:
    """The model of a run, built for its clip description, which is resolved here once:
    ``config``'s clip fields (command line over config file), then the pretrained weights'
    (a model file's or a tag's), then the architecture's default. The model carries the result
    (``model.clip_spec``) into its model file."""
    file_meta = vidzoo_file_metadata(config.pretrained) if config.pretrained else None
    name = config.model or (file_meta["arch"] if file_meta else DEFAULT_MODEL)
    weights_clip: ClipSpec | None = None
    file_args: dict[str, Any] = {}
    if config.pretrained is not None:
        source, _ = resolve_pretrained(name, config.pretrained)
        if isinstance(source, Weights):
            weights_clip = source.clip
            file_args = dict(source.model_args)  # a transformers checkpoint's architecture
        elif file_meta is not None:
            _check_file_arch(name, config.pretrained, file_meta)
            weights_clip = ClipSpec(**file_meta["clip"])
            file_args = {k: v for k, v in file_meta["model_args"].items() if k != "num_classes"}
    arch_args = {k: v for k, v in {**file_args, **config.model_args}.items() if k != "truncate"}
    check_model_args(name, arch_args)
    arch_clip = get_model_cfg(name, **arch_args).clip
    spec = resolve_clip_spec(arch_clip, weights_clip, config.clip_layer())
    args = dict(config.model_args)
    if config.truncate_after is not None:
        args["truncate"] = {**file_args.get("truncate", {}), "after": config.truncate_after}
    model = create_model(name, num_classes=num_classes, pretrained=config.pretrained, frames=spec.frames,
                         size=spec.size, **args)
    model.default_cfg = model.default_cfg.replace(clip=spec)
    return model


def _freeze(model: VideoClassifier, config: TrainConfig) -> None:
    """Apply `freeze` / `train_last` (an unknown layer is a ValueError listing the model's layers)."""
    if config.train_last is not None:
        frozen = train_last(model, config.train_last)
    elif config.freeze == "none":
        return
    else:
        frozen = freeze(model, until=config.freeze.removeprefix("until:"))
    log.info("frozen: %d of %d parameter tensors", len(frozen), len(list(model.parameters())))


# --------------------------------------------------------------------------- data


def _loaders(config: TrainConfig, spec: ClipSpec, train_set: VideoDataset, val_set: VideoDataset,
             record_dir: Path, workers: int) -> tuple[DataLoader, DataLoader]:
    persistent = workers > 0
    init = functools.partial(worker_init, record_dir=record_dir)
    # A worker decodes a whole batch before handing it over, so the batch gets batch_size
    # times the per-video timeout; a hang then ends in an error naming the video.
    timeout = config.sample_timeout * config.batch_size if workers > 0 else 0
    train_loader = DataLoader(
        train_set, batch_size=config.batch_size, sampler=EpochShuffleSampler(
            len(train_set), config.seed,
            balance_labels=[s.label for s in train_set.source.samples] if config.balance == "sampling" else None),
        num_workers=workers, worker_init_fn=init, persistent_workers=persistent, timeout=timeout,
        # A last batch of one clip breaks BatchNorm on small inputs (1x1x1 maps); with shuffling
        # every clip is still seen across epochs.
        drop_last=len(train_set) > config.batch_size,
    )
    val_loader = DataLoader(
        val_set, batch_size=max(1, config.batch_size // max(1, config.val_clips)), num_workers=workers,
        worker_init_fn=init, persistent_workers=persistent, collate_fn=collate_views, timeout=timeout,
    )
    return train_loader, val_loader


# --------------------------------------------------------------------------- the run


def _history(config: TrainConfig) -> str:
    if config.history:
        return config.history
    name = Path(config.data).resolve()
    name = name.parent.name if name.is_file() else name.name
    cleaned = "".join(ch if ch.isalnum() or ch in "_.+" else "_" for ch in name)
    return cleaned or "custom"


def _run_dir(config: TrainConfig, resume: str | os.PathLike | None) -> tuple[Path, Path | None]:
    """The run directory and, when resuming, the checkpoint to resume from (nothing is written)."""
    if resume is None:
        return Path(config.out), None
    resume = Path(resume)
    ckpt_path = resume if resume.is_file() else resume / CHECKPOINT_DIR / LAST_CHECKPOINT
    if not ckpt_path.is_file():
        raise TrainingError(f"nothing to resume: {ckpt_path} does not exist")
    return ckpt_path.parent.parent, ckpt_path


def _start_run_dir(config: TrainConfig, run_dir: Path, data: RunData, resuming: bool) -> None:
    """The run directory, once the data and the model are known to be right (a mistake in them
    leaves nothing behind): config.yaml and the split files; a new run clears an old run's records."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resuming:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        for stale in [run_dir / "metrics.csv", run_dir / "bad_videos.log", run_dir / "bad_videos.csv",
                      *run_dir.glob("seen_rank*.txt")]:
            stale.unlink(missing_ok=True)
    data.write_splits(run_dir)


def _callbacks(config: TrainConfig, run_dir: Path, bad_videos, total_videos: int, throughput: Throughput,
               checkpoints: ModelCheckpoint) -> list[Callback]:
    # Not save_last=True: since Lightning 2.6 that writes last.ckpt only when val_acc improved,
    # so a resume would silently restart from the best epoch. A monitor-less callback saves every epoch.
    last = ModelCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, filename=Path(LAST_CHECKPOINT).stem, save_top_k=1,
                           enable_version_counter=False)
    callbacks: list[Callback] = [throughput, checkpoints, last,
                                 RunRecorder(run_dir, bad_videos, total_videos, config.max_bad_fraction, throughput)]
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
        callbacks.append(ProgressDisplay(throughput))
    return callbacks


def train(config: TrainConfig, *, resume: str | os.PathLike | None = None, verbose: bool = False) -> TrainResult:
    """Train `config.model` on `config.data`; write the run directory; return its summary.

    Before the first step the run reports (``vidzoo.train`` logger) its splits per class, label
    warnings, the model and its clip description, what pretrained weights loaded, and a
    preflight over the videos. `resume` is a run directory (or a checkpoint file) to continue:
    model, optimizer, scheduler and epoch are restored from its last checkpoint and training goes
    on to `config.epochs` (the CLI's `--resume` reads the run's own config.yaml). `verbose` keeps
    Lightning's own messages and third-party warnings.
    """
    started = time.perf_counter()
    check_decoder(config.decoder)  # a decoder that cannot run here: one line before the run directory exists
    run_dir, ckpt_path = _run_dir(config, resume)
    with quiet_lightning(verbose):
        L.seed_everything(config.seed, workers=True, verbose=False)
        _check_model_names(config)  # a typo in --model or --pretrained is reported before any data is read
        data = prepare_data(config)
        model = resolve_run_model(config, len(data.train.classes))
        model.classes = data.train.classes
        _freeze(model, config)
        # Counted before --unfreeze-at changes it: what the frozen phase trains.
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        _report_model(model, trainable)
        preflight(data, model.clip_spec, config)
        _start_run_dir(config, run_dir, data, resuming=resume is not None)
        run = _Run(config, run_dir, model, data, trainable, started)
        return run.fit(ckpt_path)


def _check_model_names(config: TrainConfig) -> None:
    """Raise UnknownModelError / UnknownWeightsError (with a did-you-mean) for a wrong name, and
    TrainingError for a --model other than a --pretrained model file's architecture."""
    if config.model is None:
        return
    get_model_entry(config.model)
    if config.pretrained is not None:
        resolve_pretrained(config.model, config.pretrained)
        _check_file_arch(config.model, config.pretrained, vidzoo_file_metadata(config.pretrained))


def _check_file_arch(name: str, pretrained: str, file_meta: dict[str, Any] | None) -> None:
    if file_meta is not None and file_meta["arch"] != name:
        raise TrainingError(f"--pretrained {pretrained} is a {file_meta['arch']!r} model file but --model is "
                            f"{name!r}: leave --model out to fine-tune the file's architecture")


def _report_model(model: VideoClassifier, trainable: int) -> None:
    total = sum(p.numel() for p in model.parameters())
    say(f"model {model.default_cfg.arch}: {total:,} parameters, {trainable:,} trained; clips "
        f"{model.clip_spec.describe()}")
    report = getattr(model, "load_report", None)
    if report is not None:
        for line in str(report).splitlines():
            say(line)


class _Run:
    """One fit: datasets, loaders, the Lightning trainer, and what is written after it."""

    def __init__(self, config: TrainConfig, run_dir: Path, model: VideoClassifier, data: RunData, trainable: int,
                 started: float):
        self.config, self.run_dir, self.data, self.trainable, self.started = config, run_dir, data, trainable, started
        spec = model.clip_spec
        log_file = run_dir / "bad_videos.log"
        self.throughput = Throughput()
        self.checkpoints = ModelCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, filename="best", monitor="val_acc",
                                           mode="max", save_top_k=1, enable_version_counter=False)
        self.trainer = self._trainer()
        # Every process on this machine (Lightning's devices per node) has its own workers: they
        # share the cores.
        workers = loader_workers(config.decoder, config.workers)  # 0 for a GPU decoder
        threads = decoder_threads(workers, processes=self.trainer.num_devices)
        decoding = dict(decoder=config.decoder, threads=threads)
        self.train_set = VideoDataset.from_spec(data.train, spec, train=True, flip=config.flip, seed=config.seed,
                                                bad_video_log=log_file, **decoding)
        self.val_set = VideoDataset.from_spec(data.val, spec, train=False, clips_per_video=config.val_clips,
                                              bad_video_log=log_file, skip_bad=True, **decoding)
        self.record_dir = run_dir / DECODING_DIR
        self.record_dir.mkdir(exist_ok=True)
        self.train_loader, self.val_loader = _loaders(config, spec, self.train_set, self.val_set, self.record_dir,
                                                      workers)
        weights = None
        if config.balance == "loss":
            weights = class_weights([s.label for s in data.train.samples], len(data.train.classes))
            say("class-balanced loss weights: " + ", ".join(
                f"{name} {w:.3g}" for name, w in zip(data.train.classes, weights)))
        self.module = VideoClassificationModule(model, config, steps_per_epoch=len(self.train_loader),
                                                class_weights=weights)

    def bad_videos(self) -> list[BadVideo]:
        """Every video left out so far: by the preflight, in training and in validation."""
        return [*self.data.bad, *self.train_set.bad_videos]  # one log file holds train and val

    def _trainer(self) -> L.Trainer:
        config, data = self.config, self.data
        total = len(data.train) + len(data.val) + len(data.bad)
        return L.Trainer(
            max_epochs=config.epochs, accelerator=config.accelerator, devices=config.devices,
            strategy=config.strategy, num_nodes=config.num_nodes, precision=config.precision,
            callbacks=_callbacks(config, self.run_dir, self.bad_videos, total, self.throughput, self.checkpoints),
            logger=False, default_root_dir=self.run_dir, enable_progress_bar=False, enable_model_summary=False,
            plugins=[AtomicCheckpointIO()], num_sanity_val_steps=0, deterministic=False,
        )

    def fit(self, ckpt_path: Path | None) -> TrainResult:
        trainer = self.trainer
        run_started = time.time() - 2  # records older than this are from earlier runs (2 s: coarse file clocks)
        try:
            trainer.fit(self.module, self.train_loader, self.val_loader, ckpt_path=ckpt_path, weights_only=True)
        except SystemExit:
            if trainer.interrupted:  # Lightning ends a Ctrl-C with exit(1): say it as what it was
                raise KeyboardInterrupt from None
            raise
        except (RuntimeError, ConnectionError, EOFError) as e:
            failure = worker_failure(e, self.record_dir, since=run_started)
            if failure is None:
                raise
            raise failure from e
        finally:
            shutil.rmtree(self.record_dir, ignore_errors=True)
        if trainer.interrupted:
            raise KeyboardInterrupt  # Lightning stopped on Ctrl-C; the caller says how to resume
        if not trainer.is_global_zero:  # rank 0 writes the model file and the reports
            return TrainResult(run_dir=str(self.run_dir), model_file="", best_val_accuracy=None, best_epoch=None,
                               epochs_run=trainer.current_epoch, seconds=0.0, bad_videos=0,
                               classes=self.data.train.classes, stopped_early=False)
        return self._finish(trainer)

    def _finish(self, trainer: L.Trainer) -> TrainResult:
        """Rank 0, after training: the best model's file, the validation confusion matrix, the
        test evaluation, bad_videos.csv and summary.json."""
        config, run_dir = self.config, self.run_dir
        best_path = self.checkpoints.best_model_path or str(run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT)
        best_state = torch.load(best_path, map_location="cpu", weights_only=True)
        best_epoch = int(best_state.get("epoch", trainer.current_epoch))
        self.module.load_state_dict(best_state["state_dict"])
        model = self.module.model.cpu().eval()
        model_file = save_model(
            model, directory=run_dir, classes=model.classes,
            history={"name": _history(config), "trained_on": str(config.data), "epochs": trainer.current_epoch,
                     "best_epoch": best_epoch, "pretrained": config.pretrained},
        )
        _confusion_on_val(model, self.data.val, run_dir, config)
        test = _evaluate_test(model, self.data.test, run_dir, config) if self.data.test is not None else None
        best_score = self.checkpoints.best_model_score
        load_report = getattr(model, "load_report", None)
        result = TrainResult(
            run_dir=str(run_dir),
            model_file=str(model_file),
            best_val_accuracy=None if best_score is None else round(float(best_score), 6),
            best_epoch=best_epoch,
            epochs_run=trainer.current_epoch,
            seconds=round(time.perf_counter() - self.started, 2),
            bad_videos=len(write_bad_videos(run_dir, self.bad_videos())),
            classes=model.classes,
            stopped_early=trainer.current_epoch < config.epochs,
            clip=model.clip_spec.model_dump(mode="json"),
            load_report=None if load_report is None else str(load_report),
            trainable_parameters=self.trainable,
            total_parameters=sum(p.numel() for p in model.parameters()),
            throughput=self.throughput.history,
            test=test,
            splits=self.data.counts,
            warnings=self.data.warnings,
            preflight=self.data.preflight,
        )
        (run_dir / "summary.json").write_text(json.dumps(result.model_dump(), indent=2))
        return result


def _confusion_on_val(model: VideoClassifier, val_source: VideoSource, run_dir: Path, config: TrainConfig) -> None:
    """confusion_val.png of the best model on the validation split (same views as validation)."""
    report = evaluate(model, val_source, clips_per_video=config.val_clips, batch_size=config.batch_size,
                      workers=0, skip_bad=True, progress=False, decoder=config.decoder)
    plot_confusion(np.asarray(report.confusion_matrix), report.classes, run_dir / "confusion_val.png",
                   title=f"validation, video accuracy {report.video_accuracy:.1%}")


def _evaluate_test(model: VideoClassifier, test_source: VideoSource, run_dir: Path,
                   config: TrainConfig) -> dict[str, Any]:
    """The best model on the test split, with the model's own views; reports in run_dir/test."""
    report = evaluate(model, test_source, batch_size=config.batch_size, workers=config.workers, skip_bad=True,
                      progress=False, decoder=config.decoder)
    write_report(report, run_dir / "test")
    keys = ("video_accuracy", "clip_accuracy", "top5_accuracy", "top_k", "mean_class_accuracy", "num_videos",
            "clips_per_video", "crops", "excluded")
    return {key: getattr(report, key) for key in keys}

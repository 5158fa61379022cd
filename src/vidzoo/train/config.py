"""The training config: every option of a run, typed, with its default and help. The command
line (``vidzoo train``) is generated from it, so flags, config files and the Python API share
one set of names and defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from vidzoo.data.balance import BALANCE_HELP, Balance
from vidzoo.data.clip import ClipOverrides
from vidzoo.settings import validation_message

__all__ = ["DEFAULT_MODEL", "SECTIONS", "TrainConfig", "ConfigError"]

DEFAULT_MODEL = "c3d_bn"
FREEZE_HELP = ("none, backbone (train only the classifier) or until:LAYER (that layer and everything "
               "before it stay fixed; layers as `vidzoo models --layers` lists them)")


# The fields of TrainConfig by topic (the command line's help groups them so); the clip fields
# are ClipSpec's.
SECTIONS: dict[str, tuple[str, ...]] = {
    "Model": ("model", "model_args", "pretrained"),
    "Data": ("data", "data_root", "classes", "val", "val_split", "test", "test_split", "val_clips", "flip",
             "preflight"),
    "Clip": ("frames", "frame_stride", "sampling", "size", "resize_short", "crops", "clips_per_video", "norm",
             "short_policy"),
    "Optimisation": ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule",
                     "step_epochs", "step_gamma", "warmup_epochs", "label_smoothing", "balance"),
    "Transfer learning": ("freeze", "train_last", "backbone_lr_mult", "unfreeze_at", "truncate_after"),
    "Stopping": ("patience", "target_accuracy"),
    "Machinery": ("workers", "decoder", "seed", "precision", "accelerator", "devices", "strategy", "num_nodes",
                  "max_bad_fraction", "sample_timeout", "history", "out", "progress", "record_samples"),
}


class ConfigError(ValueError):
    """A config file or option that is not valid: one line per problem."""


class TrainConfig(ClipOverrides):
    """Everything a run needs. Written to the run directory as ``config.yaml``; also loadable from
    a YAML/JSON file (``vidzoo train --config FILE``), command-line flags overriding it.

    The clip fields (``frames``, ``frame_stride``, ``sampling``, ``size``, ``resize_short``,
    ``crops``, ``clips_per_video``, ``norm``, ``short_policy``) are `ClipSpec`'s; unset ones come
    from the pretrained model file or the architecture (see `vidzoo.data.clip.resolve_clip_spec`).
    """

    # model
    model: str | None = Field(None, description=f"architecture (see `vidzoo models`); default {DEFAULT_MODEL}, "
                              "or the --pretrained model file's")
    model_args: dict[str, Any] = Field(default_factory=dict, description="constructor arguments, e.g. width=0.25 "
                                       "or backbone=efficientnet_b0 (see `vidzoo models NAME --json`)")
    pretrained: str | None = Field(None, description="start from weights: a tag (see `vidzoo models --pretrained`), "
                                   "a file, hf-hub:ORG/NAME for a model file on the Hugging Face hub, or for the hf_* "
                                   "models a transformers checkpoint (hub id or folder); a vidzoo model file also "
                                   "gives its architecture and clip")
    # data
    data: str = Field(description="training videos: a folder per class, or a CSV/TSV 'path,label' file (paths "
                      "absolute, or relative to the file's folder or --data-root)")
    data_root: str | None = Field(None, description="the folder relative paths in the CSV files start from "
                                  "(default: each CSV's own folder)")
    classes: str | None = Field(None, description="class-list file (one name per line) fixing the label order; "
                                "a label outside it is an error")
    val: str | None = Field(None, description="validation videos (folder or CSV)")
    val_split: float | None = Field(None, gt=0, lt=1, description="without --val: hold out this stratified "
                                    "fraction of every class (default 0.2; a class gives round(fraction x its "
                                    "videos), so a class of 2 at 0.2 gives none)")
    test: str | None = Field(None, description="test videos: the best model is evaluated on them when training "
                             "ends, figures in summary.json")
    test_split: float | None = Field(None, gt=0, lt=1, description="without --test: hold out this stratified "
                                     "fraction of the training videos as a test split, evaluated at the end")
    preflight: int = Field(1000, ge=0, description="before training, open up to this many videos (a sample of "
                           "larger sets) to find broken ones and count those shorter than a clip (0: skip)")
    val_clips: int = Field(1, ge=1, description="clips per validation video during training (the final test "
                           "evaluation uses clips_per_video)")
    flip: bool = Field(True, description="random horizontal flips; turn off when classes depend on direction")
    # optimisation
    epochs: int = Field(30, ge=1, description="maximum epochs")
    batch_size: int = Field(8, ge=1, description="clips per batch")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="optimizer")
    lr: float = Field(1e-4, gt=0, description="learning rate")
    momentum: float = Field(0.9, ge=0, description="SGD momentum")
    weight_decay: float = Field(0.0, ge=0, description="weight decay")
    schedule: Literal["constant", "step", "cosine"] = Field("constant", description="learning-rate schedule")
    step_epochs: int = Field(10, ge=1, description="step schedule: decay every N epochs")
    step_gamma: float = Field(0.1, gt=0, description="step schedule: multiply the rate by this")
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up length in epochs")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the loss")
    balance: Balance = Field("none", description=BALANCE_HELP)
    # transfer learning (vidzoo.transfer)
    freeze: str = Field("none", description=FREEZE_HELP)
    train_last: int | None = Field(None, ge=0, description="train only the last N layers and the head")
    backbone_lr_mult: float = Field(1.0, ge=0, description="everything but the classifier learns at lr times this")
    unfreeze_at: int | None = Field(None, ge=1, description="from this epoch (0-based, as in metrics.csv) "
                                    "everything trains; needs freeze or train_last")
    truncate_after: str | None = Field(None, description="cut the model after this layer (e.g. Mixed_4f) and put "
                                       "a new linear head on it")
    # stopping
    patience: int | None = Field(None, ge=1, description="stop after N epochs without a better val accuracy")
    target_accuracy: float | None = Field(None, gt=0, le=1, description="stop once val accuracy reaches this")
    # machinery
    workers: int = Field(2, ge=0, description="DataLoader worker processes")
    decoder: Literal["auto", "pyav", "torchcodec", "torchcodec-cuda"] = Field(
        "auto", description="video decoder: pyav, torchcodec (needs vidzoo's torchcodec extra and FFmpeg's "
        "shared libraries), torchcodec-cuda (torchcodec decoding on the GPU with NVDEC: needs a CUDA GPU and "
        "torchcodec's CUDA build; decodes in the main process), or auto (per file type, the one measured faster)")
    seed: int = Field(0, description="random seed: the run is a function of it")
    precision: str = Field("32-true", description="Lightning precision: 32-true, bf16-mixed, 16-mixed")
    accelerator: str = Field("auto", description="Lightning accelerator: auto, cpu, gpu")
    devices: str | int = Field("auto", description="Lightning devices: auto, a count, or a list")
    strategy: str = Field("auto", description="Lightning strategy, e.g. ddp")
    num_nodes: int = Field(1, ge=1, description="machines for multi-node DDP")
    # 5%: a few broken files in a few hundred are left out and listed; a missing codec or a
    # wrong folder, which break most videos, still stops the run.
    max_bad_fraction: float = Field(0.05, ge=0, le=1, description="stop when more than this fraction of the "
                                    "videos cannot be decoded (the rest are left out and listed)")
    sample_timeout: float = Field(120.0, gt=0, description="seconds one video may take to decode in a DataLoader "
                                  "worker (a batch may take batch_size times this)")
    history: str | None = Field(None, description="training-history field of the model file name (default: the "
                                "data folder's name)")
    out: str = Field("runs/exp", description="run directory")
    progress: bool = Field(True, description="show progress (plain lines when not a terminal)")
    record_samples: bool = Field(False, description="append 'epoch<TAB>video_id' of every training clip to "
                                 "seen_rank<R>.txt in the run dir (to check how DDP shards the data)")

    @field_validator("devices", mode="before")
    @classmethod
    def _devices(cls, value: Any) -> Any:
        return int(value) if isinstance(value, str) and value.isdigit() else value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.val is not None and self.val_split is not None:
            raise ValueError("give either val (a separate split) or val_split (a held-out fraction), not both")
        if self.test is not None and self.test_split is not None:
            raise ValueError("give either test (a separate split) or test_split (a held-out fraction), not both")
        if self.freeze not in ("none", "backbone") and not (self.freeze.startswith("until:") and self.freeze[6:]):
            raise ValueError(f"freeze must be none, backbone or until:LAYER, got {self.freeze!r}")
        if self.freeze != "none" and self.train_last is not None:
            raise ValueError("give either freeze or train_last, not both")
        if self.unfreeze_at is not None and self.freeze == "none" and self.train_last is None:
            raise ValueError("unfreeze_at needs something frozen first: give freeze or train_last too")
        clip_args = sorted(set(self.model_args) & {"frames", "size", "num_frames", "img_size"})
        if clip_args:
            raise ValueError(f"model_args {', '.join(clip_args)}: the clip length and size are clip fields, set "
                             "once for the model and the clips: use frames/size (--frames/--size) instead")
        if "truncate" in self.model_args:
            raise ValueError("model_args truncate: use truncate_after (--truncate-after LAYER)")
        return self

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, **overrides: Any) -> TrainConfig:
        """A config from a YAML or JSON file (never Python), `overrides` that are not None
        winning (the command line); raises ConfigError with one line per problem."""
        values: dict[str, Any] = {}
        if path is not None:
            try:
                loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as err:
                raise ConfigError(f"{path}: cannot read the config: {err}") from None
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path}: expected a mapping of option: value, got {type(loaded).__name__}")
            values = loaded
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "model_args" in overrides and overrides["model_args"]:
            values["model_args"] = {**(values.get("model_args") or {}), **overrides["model_args"]}
        try:
            return cls(**values)
        except ValidationError as err:
            raise ConfigError(validation_message(err, str(path) if path else "")) from None

    def clip_layer(self) -> dict[str, Any]:
        """The clip fields this config sets (flags and config file): one layer of the clip
        description's resolution."""
        return self.clip_values()

"""The Lightning module of a run: cross-entropy on clips, video-level validation accuracy, the
optimizer, and the learning-rate schedule; and the sampler that makes a run a function of its
seed."""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler

from vidzoo.data.balance import balanced_draw
from vidzoo.train.config import TrainConfig
from vidzoo.transfer import param_groups

__all__ = ["EpochShuffleSampler", "VideoClassificationModule", "collate_views"]


class EpochShuffleSampler(Sampler):
    """A fresh permutation each epoch, seeded by (seed, epoch), yielding (epoch, index) keys so
    that every DataLoader worker knows the epoch without shared state. Lightning calls
    `set_epoch` before each epoch (and wraps this sampler for distributed runs). Given
    `balance_labels` (the label of every item), each epoch is instead as many items drawn with
    replacement, every class equally often in expectation (``--balance sampling``)."""

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True,
                 balance_labels: Sequence[int] | None = None):
        if balance_labels is not None and len(balance_labels) != num_samples:
            raise ValueError(f"balance_labels has {len(balance_labels)} labels for {num_samples} samples")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.balance_labels = None if balance_labels is None else np.asarray(balance_labels, dtype=np.int64)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        order = np.arange(self.num_samples)
        if self.balance_labels is not None:
            order = balanced_draw(self.balance_labels, np.random.default_rng([self.seed, self.epoch]))
        elif self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        return iter([(self.epoch, int(i)) for i in order])


def collate_views(batch):
    """Evaluation items carry all views of one video: stack videos, keep views separate. Videos
    that failed to decode (None, already recorded by the dataset) are left out; a batch of
    nothing but those is None."""
    batch = [item for item in batch if item is not None]
    if not batch:
        return None
    views = torch.stack([item[0] for item in batch])  # (B, V, C, T, H, W)
    labels = torch.tensor([item[1] for item in batch])
    return views, labels, [item[2] for item in batch]


class VideoClassificationModule(L.LightningModule):
    """Wraps a vidzoo model: cross-entropy on clips (weighted by `class_weights` when given),
    video-level accuracy on validation."""

    def __init__(self, model: nn.Module, config: TrainConfig, steps_per_epoch: int,
                 class_weights: Sequence[float] | None = None):
        super().__init__()
        self.model = model
        self.config = config
        self.steps_per_epoch = max(1, steps_per_epoch)
        # --balance loss: the weights come with the training labels, so the caller passes them.
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)

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
        self.log("train_loss", loss, on_step=True, on_epoch=True, batch_size=len(labels), sync_dist=True)
        self.log("train_acc", acc, on_step=True, on_epoch=True, batch_size=len(labels), sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        if batch is None:  # every video of the batch failed to decode (recorded and reported)
            return
        views, labels, _ = batch
        b, v = views.shape[:2]
        logits = self.model(views.flatten(0, 1)).view(b, v, -1)
        probs = logits.softmax(-1).mean(1)  # video level: softmax averaged over views
        loss = nn.functional.nll_loss(probs.clamp_min(1e-8).log(), labels)
        acc = (probs.argmax(1) == labels).float().mean()
        self.log("val_loss", loss, on_epoch=True, batch_size=b, sync_dist=True)
        self.log("val_acc", acc, on_epoch=True, batch_size=b, sync_dist=True)

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

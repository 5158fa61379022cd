"""An attentive probe: a learned query attends over a video's rows of features (its clips, or
tokens), then a linear layer classifies what it gathered. This is how frozen video encoders are
evaluated when their features are more than one vector per video (V-JEPA's attentive probe: a
cross-attention block with a learned query over the encoder's outputs)::

    rows of one video (N, D) --standardise (train mean, std)--> Linear(D, dim)
        learned query (1, dim) --cross-attention over the N rows, heads--> + query
        --> + MLP(LayerNorm(.))  --> LayerNorm --> Linear(dim, classes) --> logits

Many probes with different learning rates and weight decays train together (`fit_attentive_probes`):
one pass over the batches feeds every probe, each with its own AdamW; all start from the same
seeded weights and see the same batches, so they differ only in their settings, and the same
seed gives the same probes. A probe is saved as safetensors with JSON metadata (no pickle).
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidzoo.data.balance import Balance, balanced_draw, check_balance, class_weights
from vidzoo.features import Features
from vidzoo.fileio import read_safetensors_with_metadata

__all__ = ["AttentivePooler", "AttentiveProbe", "VideoRows", "fit_attentive_probes", "load_attentive_probe",
           "video_rows"]

_METADATA_KEY = "vidzoo_attentive_probe"
_FORMAT_VERSION = 1


class AttentivePooler(nn.Module):
    """Rows ``(B, N, in_dim)`` (padding marked in ``mask``, True = padding) to logits ``(B, classes)``."""

    def __init__(self, in_dim: int, num_classes: int, dim: int = 128, heads: int = 4, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.proj = nn.Linear(in_dim, dim)
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.norm_rows = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, rows: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        keys = self.norm_rows(self.proj(rows))
        query = self.query.expand(len(rows), -1, -1)
        pooled = query + self.attn(query, keys, keys, key_padding_mask=mask, need_weights=False)[0]
        pooled = pooled + self.mlp(self.norm_mlp(pooled))
        return self.head(self.norm(pooled[:, 0]))


@dataclass
class VideoRows:
    """A `Features` regrouped by video: ``rows[v, :counts[v]]`` are video v's rows, in order."""

    video_ids: list[str]
    rows: np.ndarray  # (videos, max rows, D) float32, zero-padded
    counts: np.ndarray  # (videos,) int64
    labels: np.ndarray  # (videos,) int64

    @property
    def mask(self) -> np.ndarray:
        """True where a row is padding."""
        return np.arange(self.rows.shape[1])[None, :] >= self.counts[:, None]


def video_rows(features: Features) -> VideoRows:
    """`features` grouped by video id (videos in order of first appearance)."""
    if features.labels is None:
        raise ValueError("an attentive probe needs labeled features")
    order: dict[str, list[int]] = {}
    for row, video in enumerate(features.video_ids):
        order.setdefault(video, []).append(row)
    longest = max(map(len, order.values()), default=0)
    rows = np.zeros((len(order), longest, features.dim), np.float32)
    labels = np.zeros(len(order), np.int64)
    for v, (video, indices) in enumerate(order.items()):
        rows[v, :len(indices)] = features.features[indices]
        if len(set(features.labels[indices].tolist())) != 1:
            raise ValueError(f"video {video!r} has rows with different labels")
        labels[v] = features.labels[indices[0]]
    return VideoRows(list(order), rows, np.array([len(i) for i in order.values()], np.int64), labels)


@dataclass
class AttentiveProbe:
    """A trained `AttentivePooler` with the standardisation of its inputs and its class names."""

    pooler: AttentivePooler
    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    classes: list[str]
    info: dict[str, Any] = field(default_factory=dict)  # lr, weight_decay, dim, heads, epochs, seed, ...
    classifier: str = "attentive"

    @property
    def num_features(self) -> int:
        return len(self.mean)

    def video_logits(self, videos: VideoRows) -> np.ndarray:
        """``(videos, classes)`` logits, one row per video."""
        if videos.rows.shape[2] != self.num_features:
            raise ValueError(f"the probe takes {self.num_features} features per row, got {videos.rows.shape[2]}")
        self.pooler.eval()
        with torch.no_grad():
            return self.pooler(_standardise(videos, self.mean, self.scale), torch.from_numpy(videos.mask)).numpy()

    def predict(self, videos: VideoRows) -> np.ndarray:
        """Class indices into `classes`, one per video."""
        return self.video_logits(videos).argmax(axis=1)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the probe to a ``.safetensors`` file (tensors + JSON metadata, no pickle)."""
        from safetensors.torch import save_file

        from vidzoo.fileio import write_atomically

        tensors = {f"pooler.{k}": v.contiguous() for k, v in self.pooler.state_dict().items()}
        tensors.update(mean=torch.from_numpy(np.ascontiguousarray(self.mean, np.float32)),
                       scale=torch.from_numpy(np.ascontiguousarray(self.scale, np.float32)))
        meta = {"format_version": _FORMAT_VERSION, "classifier": self.classifier, "classes": self.classes,
                "in_dim": self.num_features, "dim": self.pooler.head.in_features,
                "heads": self.pooler.attn.num_heads, "info": self.info}
        path = Path(path)
        write_atomically(path, lambda p: save_file(tensors, str(p), metadata={_METADATA_KEY: json.dumps(meta)}))
        return path


def _standardise(videos: VideoRows, mean: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """The rows standardised as in training (float32), padding left at 0."""
    x = (videos.rows - mean.astype(np.float32)) / scale.astype(np.float32)
    x[videos.mask] = 0.0
    return torch.from_numpy(np.ascontiguousarray(x, np.float32))


def load_attentive_probe(path: str | os.PathLike) -> AttentiveProbe:
    """The probe saved by `AttentiveProbe.save`."""
    tensors, meta = read_safetensors_with_metadata(path, key=_METADATA_KEY, what="attentive probe",
                                                   format_version=_FORMAT_VERSION, framework="pt")
    pooler = AttentivePooler(meta["in_dim"], len(meta["classes"]), dim=meta["dim"], heads=meta["heads"])
    try:
        pooler.load_state_dict({k.removeprefix("pooler."): v for k, v in tensors.items() if k.startswith("pooler.")})
    except RuntimeError as e:
        raise ValueError(f"{path}: the tensors do not fit the probe its metadata describes: {e}") from None
    return AttentiveProbe(pooler, tensors["mean"].numpy(), tensors["scale"].numpy(), list(meta["classes"]),
                          meta.get("info", {}))


def fit_attentive_probes(
    videos: VideoRows,
    classes: Sequence[str],
    settings: Sequence[tuple[float, float]],
    *,
    dim: int = 128,
    heads: int = 4,
    epochs: int = 50,
    batch_size: int = 32,
    seed: int = 0,
    balance: Balance = "none",
) -> list[AttentiveProbe]:
    """Train one attentive probe per ``(lr, weight_decay)`` in `settings` on `videos`, together:
    AdamW, cosine learning-rate decay over `epochs`, mini-batches of `batch_size` videos,
    cross-entropy. `balance` ``"loss"`` weights the loss by class (`class_weights`),
    ``"sampling"`` draws each epoch's videos with replacement, every class equally often.
    Deterministic for a `seed` on a given machine; the caller's random state is left as it was."""
    check_balance(balance)
    if not settings:
        raise ValueError("no (lr, weight_decay) settings to train")
    for lr, weight_decay in settings:
        if not lr > 0 or weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got lr={lr!r}, weight_decay={weight_decay!r}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    flat = videos.rows[~videos.mask]
    mean = flat.mean(axis=0, dtype=np.float64).astype(np.float32)
    scale = flat.std(axis=0, dtype=np.float64).astype(np.float32)
    scale[scale == 0] = 1.0  # a constant feature: centred, not divided by zero
    x = _standardise(videos, mean, scale)
    mask = torch.from_numpy(videos.mask)
    y = torch.from_numpy(videos.labels)
    weight = None
    if balance == "loss":
        weight = torch.from_numpy(class_weights(videos.labels, len(classes)))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        first = AttentivePooler(videos.rows.shape[2], len(classes), dim=dim, heads=heads)
    poolers = [copy.deepcopy(first) for _ in settings]
    optimizers = [torch.optim.AdamW(p.parameters(), lr=lr, weight_decay=wd) for p, (lr, wd) in zip(poolers, settings)]
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = epochs * steps_per_epoch
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
                  for o in optimizers]
    order_rng = np.random.default_rng(seed)
    for pooler in poolers:
        pooler.train()
    for _ in range(epochs):
        order = balanced_draw(videos.labels, order_rng) if balance == "sampling" else order_rng.permutation(len(x))
        order = torch.from_numpy(order)
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            # Each probe's loss reaches only its own parameters: one backward trains them all.
            loss = sum(nn.functional.cross_entropy(p(x[batch], mask[batch]), y[batch], weight=weight) for p in poolers)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer, scheduler in zip(optimizers, schedulers):
                optimizer.step()
                scheduler.step()
    info = {"dim": dim, "heads": heads, "epochs": epochs, "batch_size": batch_size, "seed": seed,
            "num_train": len(x), "balance": balance}
    return [AttentiveProbe(p.eval(), mean, scale, list(classes), {"lr": lr, "weight_decay": wd, **info})
            for p, (lr, wd) in zip(poolers, settings)]

"""The contract every vidzoo model follows, and the metadata it carries.

A model maps a clip batch ``(B, C, T, H, W)`` to logits ``(B, num_classes)`` in two steps::

    clip --forward_features--> features --forward_head--> logits

so the same model serves as a classifier, a feature extractor (``forward_features`` or
``forward_head(feats, pre_logits=True)``) and a fine-tuning start (``reset_classifier``).
"""

from __future__ import annotations

import abc
import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

SAMPLING_KINDS = ("dense", "segment")
# Pixel scalings a model may expect when it has no per-channel mean/std.
SCALE_RANGES = ((0.0, 1.0), (-1.0, 1.0))


@dataclass(frozen=True)
class ModelCfg:
    """What a model expects as input and where it comes from.

    Attributes:
        arch: registered model name (``create_model`` stamps it).
        input_size: default clip size as (frames, height, width).
        in_chans: channels per frame.
        norm: ``{"mean": [...], "std": [...]}`` applied to pixels scaled to [0, 1], or
            ``{"scale": [0, 1]}`` / ``{"scale": [-1, 1]}`` for models that only rescale pixels.
        sampling: ``"dense"`` (consecutive frames, every ``frame_stride``-th) or
            ``"segment"`` (one frame from each of T equal segments of the video).
        frame_stride: step between sampled frames for dense sampling.
        classes: class names in logit order, when known.
        paper_title, paper_url: the publication that defines the architecture.
    """

    arch: str
    input_size: tuple[int, int, int]
    in_chans: int = 3
    norm: Mapping[str, Sequence[float]] = field(default_factory=lambda: {"scale": [0.0, 1.0]})
    sampling: str = "dense"
    frame_stride: int = 1
    classes: tuple[str, ...] | None = None
    paper_title: str = ""
    paper_url: str = ""

    def __post_init__(self) -> None:
        if len(self.input_size) != 3 or any(s < 1 for s in self.input_size):
            raise ValueError(
                "input_size must be (frames, height, width) of positive ints, "
                f"got {self.input_size!r}"
            )
        check_norm(self.norm, self.in_chans)
        if self.sampling not in SAMPLING_KINDS:
            raise ValueError(f"sampling must be one of {SAMPLING_KINDS}, got {self.sampling!r}")
        if self.frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {self.frame_stride}")

    def replace(self, **changes: Any) -> ModelCfg:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


def check_norm(norm: Mapping[str, Sequence[float]], in_chans: int) -> None:
    """Raise ValueError unless ``norm`` is a valid normalisation spec for ``in_chans`` channels."""
    keys = set(norm)
    if keys == {"mean", "std"}:
        mean, std = list(norm["mean"]), list(norm["std"])
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(
                f"norm mean/std need {in_chans} values (one per channel), "
                f"got mean {mean!r} and std {std!r}"
            )
        if any(s <= 0 for s in std):
            raise ValueError(f"norm std values must be > 0, got {std!r}")
    elif keys == {"scale"}:
        if tuple(float(v) for v in norm["scale"]) not in SCALE_RANGES:
            raise ValueError(
                f"norm scale must be one of {[list(r) for r in SCALE_RANGES]}, "
                f"got {list(norm['scale'])!r}"
            )
    else:
        raise ValueError(
            f"norm must have keys {{'mean', 'std'}} or {{'scale'}}, got {sorted(keys)!r}"
        )


def check_num_classes(num_classes: int) -> int:
    """Return ``num_classes`` if it is a positive int, else raise ValueError."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


class VideoClassifier(nn.Module, abc.ABC):
    """Base class of every registered model.

    Subclasses set ``num_classes``, ``num_features``, ``default_cfg`` and ``feature_info`` in
    ``__init__`` and implement the abstract methods. ``feature_info`` lists the layers worth
    tapping or freezing, as dicts ``{"name": module path, "channels": int,
    "reduction": (t, h, w)}`` where ``reduction`` is the layer output's stride relative to the
    input clip along time, height and width.
    """

    num_classes: int
    num_features: int
    default_cfg: ModelCfg
    feature_info: list[dict[str, Any]]
    # The kwargs ``create_model`` was called with, so a saved model can be rebuilt; None when
    # the class was instantiated directly.
    init_kwargs: dict[str, Any] | None = None

    @abc.abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip batch ``(B, C, T, H, W)`` to the features the head consumes."""

    @abc.abstractmethod
    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features to logits ``(B, num_classes)``; to ``(B, num_features)`` if ``pre_logits``."""

    @abc.abstractmethod
    def get_classifier(self) -> nn.Module:
        """The final layer that ``reset_classifier`` replaces."""

    @abc.abstractmethod
    def _replace_classifier(self, num_classes: int) -> None:
        """Swap in a freshly initialised final layer with ``num_classes`` outputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace only the final layer, e.g. to fine-tune on a new label set.

        The old class names no longer describe the outputs, so ``classes`` becomes None.
        """
        self._replace_classifier(check_num_classes(num_classes))
        self.num_classes = num_classes
        self.default_cfg = self.default_cfg.replace(classes=None)

    @property
    def classes(self) -> list[str] | None:
        """Class names in logit order, or None when unknown."""
        names = self.default_cfg.classes
        return None if names is None else list(names)

    @classes.setter
    def classes(self, names: Sequence[str] | None) -> None:
        if names is not None:
            names = tuple(names)
            if len(names) != self.num_classes:
                raise ValueError(
                    f"got {len(names)} class names for a model with {self.num_classes} outputs"
                )
        self.default_cfg = self.default_cfg.replace(classes=names)


def pool_output_size(size: int, kernel: int, stride: int, ceil_mode: bool = False) -> int:
    """Output length of an unpadded max pool along one axis, as PyTorch computes it.

    Zero or less means PyTorch would refuse the input as too small.
    """
    span = size - kernel
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    # PyTorch drops a ceil-mode window that would start past the input's end.
    if ceil_mode and (out - 1) * stride >= size:
        out -= 1
    return out


def frame_size(img_size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from an int or a pair (kwargs come back from model files as lists)."""
    if isinstance(img_size, int):
        return img_size, img_size
    # A list, too: kwargs come back from JSON model files as lists.
    if len(img_size) == 2 and all(isinstance(s, int) for s in img_size):
        return img_size[0], img_size[1]
    raise ValueError(f"img_size must be an int or (height, width), got {img_size!r}")


def scaled_channels(channels: int, width: float) -> int:
    """A layer's channel count under a width multiplier (at least 1)."""
    return max(1, round(channels * width))


def check_clip_model_args(in_chans: int, num_frames: int, width: float, dropout: float, paper: str) -> None:
    """The constructor checks every 3D CNN family shares; `paper` names the width-1.0 network."""
    if in_chans < 1 or num_frames < 1:
        raise ValueError(f"in_chans and num_frames must be >= 1, got in_chans={in_chans}, num_frames={num_frames}")
    if not width > 0:
        raise ValueError(f"width must be > 0 (1.0 is {paper}), got {width!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def build_variant(model_cls: type, variant: str, fixed: Mapping[str, Any], hint: str, **kwargs: Any):
    """`model_cls(**fixed, **kwargs)` for a registered variant whose `fixed` arguments define it;
    a caller passing one of them gets an error (with `hint`) instead of a silent override."""
    clash = sorted(set(fixed) & set(kwargs))
    if clash:
        raise ValueError(f"{', '.join(clash)} is fixed by variant {variant!r} ({dict(fixed)}); {hint}")
    return model_cls(**fixed, **kwargs)


def describe_keys(keys: Sequence[str], hints: Sequence[str] = (), *, limit: int = 10, cutoff: float = 0.8) -> str:
    """State-dict keys for an error message: at most `limit`, each with the closest of `hints`
    as a did-you-mean when one is at least `cutoff` similar (a typo, a renamed layer, a prefix)."""
    shown = []
    for key in keys[:limit]:
        close = difflib.get_close_matches(key, hints, n=1, cutoff=cutoff) if hints else []
        shown.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(shown) + more

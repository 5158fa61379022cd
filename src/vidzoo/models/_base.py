"""The contract every vidzoo model follows, the metadata it carries, and the one layer API.

A model maps a clip batch ``(B, C, T, H, W)`` to logits ``(B, num_classes)`` in two steps::

    clip --forward_features--> features --forward_head--> logits
                                       \\--forward_head(pre_logits=True)--> (B, num_features)

- ``forward_features(x)``: the last features *before* the head pools them, in the layout the
  model's config declares (``default_cfg.feature_layout``): ``"clip"`` ``(B, C, T, H, W)``
  (3D CNNs), ``"sequence"`` ``(B, T, C)`` (per-frame features, LSTM steps, tokens) or
  ``"vector"`` ``(B, C)`` (a network whose own graph pools before its classifier).
- ``forward_head(feats, pre_logits=False)``: pooling, dropout and the classifier;
  ``pre_logits=True`` returns the ``(B, num_features)`` vector the classifier reads (what
  feature extraction and linear probes use by default).

So the same model serves as a classifier, a feature extractor and a fine-tuning start
(``reset_classifier``). ``forward_intermediates`` runs a model up to any of its layers
(``feature_info``, one format for clip-level and per-frame layers); feature extraction,
freezing and truncation all go through it and through ``layer_names``/``resolve_layer``.
"""

from __future__ import annotations

import abc
import dataclasses
import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vidzoo.data.clip import ClipSpec, parse_size

FEATURE_LAYOUTS = ("clip", "sequence", "vector")
LAYER_LAYOUTS = ("clip", "frames", "tokens")


@dataclass(frozen=True)
class FeatureInfo:
    """A layer worth tapping, freezing up to, or cutting after.

    Attributes:
        module: its module path in the model (``"features.Mixed_4f"``, ``"backbone.net.layer3"``).
        channels: channels of its output.
        reduction: the output's stride relative to the input clip, as (time, height, width).
        layout: ``"clip"``: the module outputs ``(B, C, T, H, W)``; ``"frames"``: it runs per
            frame and outputs ``(B*T, C, H, W)`` (C2D and LRCN backbones), which
            ``forward_intermediates`` gives back as ``(B, C, T, H, W)``; ``"tokens"``:
            ``(B, N, C)``.
    """

    module: str
    channels: int
    reduction: tuple[int, int, int] = (1, 1, 1)
    layout: str = "clip"

    def __post_init__(self) -> None:
        if self.layout not in LAYER_LAYOUTS:
            raise ValueError(f"layout must be one of {LAYER_LAYOUTS}, got {self.layout!r}")


@dataclass(frozen=True)
class ModelCfg:
    """What a model expects as input and where it comes from.

    Attributes:
        arch: registered model name (``create_model`` stamps it).
        clip: the clip description (frames, stride, sampling, size, norm, views...). A model
            built by ``create_model`` carries its architecture's default; a model loaded from a
            file carries the clips it was trained on.
        in_chans: channels per frame.
        classes: class names in logit order, when known.
        feature_layout: the layout ``forward_features`` returns (see the module docstring).
        fixed_input_size: the model accepts only ``clip.frames`` x ``clip.size`` clips (its
            layers are sized to them: C3D's fc6, MViT's positional grid).
        paper_title, paper_url: the publication that defines the architecture.
    """

    arch: str
    clip: ClipSpec
    in_chans: int = 3
    classes: tuple[str, ...] | None = None
    feature_layout: str = "clip"
    fixed_input_size: bool = False
    paper_title: str = ""
    paper_url: str = ""

    def __post_init__(self) -> None:
        mean = self.clip.norm.get("mean")
        if mean is not None and len(mean) != self.in_chans:
            raise ValueError(f"norm mean/std need {self.in_chans} values (one per channel), got {self.clip.norm}")
        if self.feature_layout not in FEATURE_LAYOUTS:
            raise ValueError(f"feature_layout must be one of {FEATURE_LAYOUTS}, got {self.feature_layout!r}")

    def replace(self, **changes: Any) -> ModelCfg:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


def check_num_classes(num_classes: int) -> int:
    """Return ``num_classes`` if it is a positive int, else raise ValueError."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


class _StopForward(Exception):
    """Raised by ``forward_intermediates``' hook once the last wanted layer has run: the rest of
    the network is not needed, and not running it keeps later in-place ops off the outputs."""


class VideoClassifier(nn.Module, abc.ABC):
    """Base class of every registered model.

    Subclasses set ``num_classes``, ``num_features``, ``default_cfg`` and ``feature_info`` in
    ``__init__`` and implement the abstract methods.
    """

    num_classes: int
    num_features: int
    default_cfg: ModelCfg
    feature_info: list[FeatureInfo]
    # The kwargs ``create_model`` was called with, so a saved model can be rebuilt; None when
    # the class was instantiated directly.
    model_args: dict[str, Any] | None = None

    @abc.abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip batch ``(B, C, T, H, W)`` to the unpooled features the head consumes."""

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
    def clip_spec(self) -> ClipSpec:
        """The clips this model expects (``default_cfg.clip``)."""
        return self.default_cfg.clip

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

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless `x` is a clip batch this model takes: ``(B, in_chans, T, H, W)``,
        and exactly the configured clip size when ``default_cfg.fixed_input_size``."""
        cfg = self.default_cfg
        if x.ndim != 5 or x.shape[1] != cfg.in_chans:
            got = "x".join(map(str, x.shape[1:])) if x.ndim == 5 else f"a {x.ndim}-d tensor"
            raise ValueError(f"{cfg.arch} takes clips (B, C, T, H, W) with C = {cfg.in_chans}, got {got}")
        expected = (cfg.clip.frames, *cfg.clip.size)
        if cfg.fixed_input_size and tuple(x.shape[2:]) != expected:
            raise ValueError(
                f"{cfg.arch} was built for {'x'.join(map(str, expected))} clips (T x H x W; its layers are "
                f"sized to them), got {'x'.join(map(str, x.shape[2:]))}; build it with matching frames/size "
                "or resize the clips"
            )

    # ------------------------------------------------------------------ the one layer API

    def layer_names(self) -> list[str]:
        """The layers of ``feature_info``, in forward order: what features, freezing and
        truncation accept."""
        return [info.module for info in self.feature_info]

    def resolve_layer(self, name: str) -> FeatureInfo:
        """The ``feature_info`` entry of layer `name`; a unique last part is enough
        (``"Mixed_4f"`` for ``"features.Mixed_4f"``). Raises ValueError listing the layers,
        with a did-you-mean, for any other name."""
        by_name = {info.module: info for info in self.feature_info}
        if name in by_name:
            return by_name[name]
        matches = [full for full in by_name if full.endswith(f".{name}")]
        if len(matches) == 1:
            return by_name[matches[0]]
        arch = self.default_cfg.arch
        if not by_name:
            raise ValueError(
                f"unknown layer {name!r}: {arch} lists no layers (its feature_info is empty); "
                "use its pre-logits features, or 'backbone' to freeze everything but the classifier"
            )
        if len(matches) > 1:
            hint = f" It is the end of {', '.join(map(repr, matches))}; give the full name."
        else:
            # Compare with the last parts too: "pool6" is far from "features.pool5" as a whole.
            by_part = {full.rpartition(".")[2]: full for full in by_name}
            close = difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.6) or [
                by_part[part] for part in difflib.get_close_matches(name, list(by_part), n=3, cutoff=0.6)
            ]
            hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown layer {name!r} for {arch}.{hint} Layers of {arch}: {', '.join(by_name)}")

    def forward_intermediates(
        self, x: torch.Tensor, layers: Sequence[str], *, stop_early: bool = True
    ) -> dict[str, torch.Tensor]:
        """Run the model on clips `x` and return the outputs of `layers` (names as
        ``resolve_layer`` takes them), keyed by their full names.

        Clip layers come back as ``(B, C, T, H, W)``, per-frame layers re-assembled from
        ``(B*T, C, H, W)`` into ``(B, C, T, H, W)`` too, token layers as ``(B, N, C)``. With
        `stop_early` the forward pass stops as soon as the last of them has run.
        """
        infos = [self.resolve_layer(name) for name in layers]
        wanted = {info.module: info for info in infos}
        captured: dict[str, torch.Tensor] = {}

        def hook_for(name: str):
            def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
                if name in captured:
                    return  # a module called twice: its first call is the layer's output
                if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
                    output = output[0]  # transformers' blocks return (hidden states, attentions...)
                if not isinstance(output, torch.Tensor):
                    raise TypeError(f"layer {name!r} returns {type(output).__name__}, not a tensor")
                captured[name] = output
                if stop_early and len(captured) == len(wanted):
                    raise _StopForward

            return hook

        handles = [self.get_submodule(name).register_forward_hook(hook_for(name)) for name in wanted]
        try:
            self.forward_features(x)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [name for name in wanted if name not in captured]
        if missing:
            raise RuntimeError(f"{self.default_cfg.arch}'s forward pass did not run layer(s) {', '.join(missing)}")
        return {name: _clip_layout(captured[name], wanted[name], x) for name in wanted}


def _clip_layout(out: torch.Tensor, info: FeatureInfo, x: torch.Tensor) -> torch.Tensor:
    if info.layout != "frames":
        return out
    # Per-frame maps: (B*T, C, H, W) with a clip's frames consecutive.
    b, t = x.shape[0], x.shape[2]
    return out.reshape(b, t, *out.shape[1:]).transpose(1, 2)


def pool_features(out: torch.Tensor) -> torch.Tensor:
    """An intermediate output averaged to one vector per clip: ``(B, C, T, H, W)`` over time and
    space, ``(B, N, C)`` tokens over N; ``(B, C)`` stays."""
    if out.ndim == 5:
        return out.mean(dim=(2, 3, 4))
    if out.ndim == 3:
        return out.mean(dim=1)
    return out


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


def frame_size(size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from an int or a pair (kwargs come back from model files as lists)."""
    return parse_size(size)


def scaled_channels(channels: int, width: float) -> int:
    """A layer's channel count under a width multiplier (at least 1)."""
    return max(1, round(channels * width))


def check_clip_model_args(in_chans: int, frames: int, width: float, dropout: float, paper: str) -> None:
    """The constructor checks every 3D CNN family shares; `paper` names the width-1.0 network."""
    if in_chans < 1 or frames < 1:
        raise ValueError(f"in_chans and frames must be >= 1, got in_chans={in_chans}, frames={frames}")
    if not width > 0:
        raise ValueError(f"width must be > 0 (1.0 is {paper}), got {width!r}")
    check_dropout(dropout)


def check_dropout(dropout: float) -> float:
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return dropout


def describe_keys(keys: Sequence[str], hints: Sequence[str] = (), *, limit: int = 10, cutoff: float = 0.8) -> str:
    """State-dict keys for an error message: at most `limit`, each with the closest of `hints`
    as a did-you-mean when one is at least `cutoff` similar (a typo, a renamed layer, a prefix)."""
    shown = []
    for key in keys[:limit]:
        close = difflib.get_close_matches(key, hints, n=1, cutoff=cutoff) if hints else []
        shown.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(shown) + more

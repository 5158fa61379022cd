"""Cut a model after one of its layers and put a new head on it.

::

    clip -> body: the model's own forward, up to the cut layer (the rest is removed)
         -> its output (body.forward_intermediates): (B, C, T, H, W)  = forward_features
            (per-frame maps of C2D/LRCN re-assembled into clips), or tokens (B, N, C)
         -> global average over time and space (tokens: over N)  (B, C) = pre_logits
         -> dropout -> linear, or linear-ReLU-dropout-linear    classes = forward_head

The result is a ``VideoClassifier`` like any other: it trains, evaluates, predicts and is saved
and loaded by model files. ``truncate`` records the cut in the model's ``model_args`` as
``truncate={"after": ..., "head": ..., "dropout": ..., "hidden": ...}``, and
``create_model(arch, truncate={...})`` rebuilds it, so ``load_model`` needs nothing else:

>>> model = create_model("i3d", pretrained="imagenet", num_classes=5,
...                      truncate={"after": "Mixed_4f"})
>>> model = truncate(create_model("c3d", num_classes=5), after="pool5", head="mlp")
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from vidzoo.models._base import (
    VideoClassifier,
    check_dropout,
    check_num_classes,
    pool_features,
)
from vidzoo.transfer.layers import trace_forward

HEADS = ("linear", "mlp")
_SPEC_KEYS = ("after", "head", "dropout", "hidden")


class TruncatedClassifier(VideoClassifier):
    """A model (``body``) cut after the layer ``after``, with a new head; see the module docstring.

    Build it with ``truncate``. The body keeps only the modules that run before the cut; its
    own forward pass is used up to there (so C3D's input check, the per-frame folding of C2D
    and LRCN, I3D's "SAME" padding all still apply) through ``body.forward_intermediates``.

    ``num_features`` is the cut layer's channel count. ``get_classifier()`` is the whole new
    head (for ``"mlp"`` both linear layers), which ``reset_classifier`` replaces.
    ``feature_info`` keeps the body's layers up to the cut, under ``body.``.
    """

    def __init__(
        self,
        body: VideoClassifier,
        after: str,
        num_classes: int,
        head: str = "linear",
        dropout: float = 0.5,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        check_dropout(dropout)
        if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1):
            raise ValueError(f"hidden must be a positive int or None, got {hidden!r}")
        names = body.layer_names()
        cut = body.resolve_layer(after)
        after = cut.module
        trace = trace_forward(body)
        started = trace.started_by(trace.index("end", after))
        # A container whose children are called directly (torchvision's ``net``) never starts.
        keep = started | {".".join(name.split(".")[:i]) for name in started for i in range(1, name.count(".") + 1)}
        _remove_unused(body, keep=keep)

        self.body = body
        self.after = after
        self.head_type = head
        self.hidden = hidden
        self.head_drop = nn.Dropout(dropout)
        self.num_features = cut.channels
        self.num_classes = num_classes
        self.head = self._new_head(num_classes)
        kept = names[: names.index(after) + 1]
        self.feature_info = [replace(info, module=f"body.{info.module}") for info in body.feature_info
                             if info.module in kept]
        self.default_cfg = body.default_cfg.replace(
            classes=None, feature_layout="sequence" if cut.layout == "tokens" else "clip")

    def _new_head(self, num_classes: int) -> nn.Module:
        if self.head_type == "linear":
            return nn.Linear(self.num_features, num_classes)
        hidden = self.hidden or self.num_features
        return nn.Sequential(
            nn.Linear(self.num_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(self.head_drop.p),
            nn.Linear(hidden, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, C, T, H, W)`` to the cut layer's output (clip layout, or tokens)."""
        return self.body.forward_intermediates(x, [self.after])[self.after]

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The cut layer's output averaged to ``(B, C)``, then the head; ``pre_logits=True``
        stops before the head."""
        x = self.head_drop(pool_features(feats))
        return x if pre_logits else self.head(x)

    def get_classifier(self) -> nn.Module:
        return self.head

    def _replace_classifier(self, num_classes: int) -> None:
        old = next(self.head.parameters())
        self.head = self._new_head(num_classes).to(device=old.device, dtype=old.dtype)


def truncate(
    model: VideoClassifier,
    after: str,
    head: str = "linear",
    num_classes: int | None = None,
    dropout: float = 0.5,
    hidden: int | None = None,
) -> TruncatedClassifier:
    """Cut ``model`` after the layer ``after`` and give it a new head.

    Args:
        model: a registered model; it becomes the ``body`` of the result and loses the modules
            after the cut (its weights up to there are kept, pretrained ones included).
        after: a layer name (``model.layer_names()``; a unique last part such as ``"Mixed_4f"``
            or ``"pool5"`` will do).
        head: ``"linear"`` (dropout, linear) or ``"mlp"`` (dropout, linear to ``hidden``, ReLU,
            dropout, linear).
        num_classes: outputs of the new head; None keeps the model's.
        dropout: dropout probability in the head.
        hidden: width of the MLP's hidden layer; None takes the cut layer's channel count.

    The result's ``model_args`` are the model's plus ``truncate`` (the arguments above), so
    ``save_model``/``load_model`` rebuild it. Raises ValueError for an unknown layer (listing
    the model's layers) or a bad head setting.
    """
    if isinstance(model, TruncatedClassifier):
        raise ValueError(f"the model is already cut after {model.after!r}; truncate the original model instead")
    num_classes = model.num_classes if num_classes is None else num_classes
    truncated = TruncatedClassifier(model, after, num_classes, head=head, dropout=dropout, hidden=hidden)
    if model.model_args is not None:
        spec = {"after": truncated.after, "head": head, "dropout": dropout, "hidden": hidden}
        truncated.model_args = {**model.model_args, "num_classes": num_classes, "truncate": spec}
    return truncated


def truncate_from_spec(model: VideoClassifier, spec: Mapping[str, Any]) -> TruncatedClassifier:
    """``truncate(model, **spec)`` for the ``truncate=`` argument of ``create_model``; raises
    ValueError naming unknown keys."""
    if not isinstance(spec, Mapping) or "after" not in spec:
        raise ValueError(f"truncate must be a mapping with at least 'after' (a layer name), got {spec!r}")
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f"unknown truncate keys {unknown}; allowed: {', '.join(_SPEC_KEYS)}")
    return truncate(model, **spec)


def _remove_unused(model: nn.Module, keep: set[str]) -> None:
    """Replace every module outside ``keep`` (and not inside a removed one) by ``nn.Identity``:
    their weights go, the module tree around them stays valid."""
    for name, module in list(model.named_modules()):
        if not name or name in keep:
            continue
        parent_name, _, child = name.rpartition(".")
        if parent_name and parent_name not in keep:
            continue  # its parent is removed (or inside a removed module) already
        setattr(model.get_submodule(parent_name) if parent_name else model, child, nn.Identity())

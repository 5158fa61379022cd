"""Cut a model after one of its layers and put a new head on it.

::

    clip -> body: the model's own forward, up to the cut layer (the rest is removed)
         -> its output map: (B, C, T, H, W), or (B*T, C, H, W) per frame for C2D/LRCN
         -> global average over time and space                 (B, C)    = forward_features
         -> dropout -> linear, or linear-ReLU-dropout-linear    classes   = forward_head

The result is a ``VideoClassifier`` like any other: it trains, evaluates, predicts and is saved
and loaded by model files. ``truncate`` records the cut in the model's ``init_kwargs`` as
``truncate={"after": ..., "head": ..., "dropout": ..., "hidden": ...}``, and
``create_model(arch, truncate={...})`` rebuilds it, so ``load_model`` needs nothing else:

>>> model = create_model("i3d", pretrained="imagenet", num_classes=5,
...                      truncate={"after": "Mixed_4f"})
>>> model = truncate(create_model("c3d", num_classes=5), after="pool5", head="mlp")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vidzoo.models._base import VideoClassifier, check_num_classes
from vidzoo.transfer.layers import layer_names, resolve_layer, trace_forward

HEADS = ("linear", "mlp")
_SPEC_KEYS = ("after", "head", "dropout", "hidden")


class _CutReached(Exception):
    """Raised by the hook on the cut layer to end the body's forward pass there."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__("cut layer reached")
        self.output = output


def _stop_here(module: nn.Module, args: Any, output: torch.Tensor) -> None:
    raise _CutReached(output)


class TruncatedClassifier(VideoClassifier):
    """A model (``body``) cut after the layer ``after``, with a new head; see the module docstring.

    Build it with ``truncate``. The body keeps only the modules that run before the cut; its
    own forward pass is used up to there (so C3D's input check, the per-frame folding of C2D
    and LRCN, I3D's "SAME" padding all still apply) and stopped by a hook on the cut layer.

    ``num_features`` is the cut layer's channel count. ``get_classifier()`` is the whole new
    head (for ``"mlp"`` both linear layers), which ``reset_classifier`` replaces.
    ``feature_info`` keeps the body's clip-level layers up to the cut, under ``body.``.
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
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1):
            raise ValueError(f"hidden must be a positive int or None, got {hidden!r}")
        names = layer_names(body)
        after = resolve_layer(body, after)
        trace = trace_forward(body)
        cut = trace.index("end", after)
        started = trace.started_by(cut)
        # A container whose children are called directly (torchvision's ``net``) never starts.
        keep = started | {".".join(name.split(".")[:i]) for name in started for i in range(1, name.count(".") + 1)}
        _remove_unused(body, keep=keep)

        self.body = body
        self.after = after
        self.layers = [f"body.{name}" for name in names[: names.index(after) + 1]]
        self.head_type = head
        self.hidden = hidden
        self.head_drop = nn.Dropout(dropout)
        self.num_features = trace.shapes[after][1]
        self.num_classes = num_classes
        self.head = self._new_head(num_classes)
        self.feature_info = [
            {**info, "name": f"body.{info['name']}"}
            for info in body.feature_info
            if f"body.{info['name']}" in self.layers
        ]
        self.default_cfg = body.default_cfg.replace(classes=None)
        self._cut_hook = body.get_submodule(after).register_forward_hook(_stop_here)

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
        """Clips ``(B, C, T, H, W)`` to the cut layer's output averaged over time and space."""
        try:
            self.body.forward_features(x)
        except _CutReached as cut:
            out = cut.output
        else:  # the body took a path that skips the cut layer
            raise RuntimeError(f"{self.default_cfg.arch}'s forward pass did not reach {self.after!r}")
        if out.ndim == 5:
            return out.mean(dim=(2, 3, 4))
        # Per-frame maps of a C2D/LRCN body: (B*T, C, H, W), frames of a clip consecutive.
        b, t = x.shape[0], x.shape[2]
        return out.mean(dim=(2, 3)).reshape(b, t, -1).mean(1)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled features to logits; ``pre_logits=True`` stops before the head."""
        x = self.head_drop(feats)
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
        after: a layer name (``layer_names(model)``; a unique last part such as ``"Mixed_4f"``
            or ``"pool5"`` will do).
        head: ``"linear"`` (dropout, linear) or ``"mlp"`` (dropout, linear to ``hidden``, ReLU,
            dropout, linear).
        num_classes: outputs of the new head; None keeps the model's.
        dropout: dropout probability in the head.
        hidden: width of the MLP's hidden layer; None takes the cut layer's channel count.

    The result's ``init_kwargs`` are the model's plus ``truncate`` (the arguments above), so
    ``save_model``/``load_model`` rebuild it. Raises ValueError for an unknown layer (listing
    the model's layers) or a bad head setting.
    """
    if isinstance(model, TruncatedClassifier):
        raise ValueError(f"the model is already cut after {model.after!r}; truncate the original model instead")
    num_classes = model.num_classes if num_classes is None else num_classes
    truncated = TruncatedClassifier(model, after, num_classes, head=head, dropout=dropout, hidden=hidden)
    if model.init_kwargs is not None:
        spec = {"after": truncated.after, "head": head, "dropout": dropout, "hidden": hidden}
        truncated.init_kwargs = {**model.init_kwargs, "num_classes": num_classes, "truncate": spec}
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

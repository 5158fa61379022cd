"""Which layers of a model freezing and truncation can name, and in what order they run.

Layer names are module paths: a model's ``feature_info`` (the one layer API of the model
contract, ``VideoClassifier.layer_names``/``resolve_layer``): ``features.Mixed_4f`` for I3D,
``features.pool5`` for C3D, ``net.layer3`` for R3D, and for per-frame models (C2D, LRCN) the
frame CNN's stages, ``backbone.net.layer3`` for ResNet50, ``backbone.net.features.29`` for VGG16,
``backbone.net.block2`` for LRCN's small CNN. A truncated model names its body's layers up to
the cut, under ``body.``.

The order of parameters and layers is the order in which a forward pass runs them, found by one
forward pass on the meta device (shapes only, nothing computed or allocated).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from vidzoo.models._base import VideoClassifier


def layer_names(model: VideoClassifier) -> list[str]:
    """The layer names ``freeze``, ``unfreeze``, ``train_last`` and ``truncate`` accept, in
    forward order: the model's ``feature_info`` (``model.layer_names()``)."""
    return model.layer_names()


def resolve_layer(model: VideoClassifier, name: str) -> str:
    """``name`` as a full layer name of ``model`` (a unique last part is enough); raises
    ValueError listing the model's layers, with a did-you-mean, for any other name."""
    return model.resolve_layer(name).module


@dataclass
class ForwardTrace:
    """One forward pass, module by module.

    Attributes:
        events: ``("start", name)`` and ``("end", name)`` in the order they happened; a module
            called twice appears twice.
        shapes: the output shape of each module's first call (tensor outputs only).
    """

    events: list[tuple[str, str]]
    shapes: dict[str, torch.Size]

    def index(self, kind: str, name: str) -> int:
        """Position of the first ``(kind, name)`` event."""
        return self.events.index((kind, name))

    def finished_by(self, position: int) -> set[str]:
        """Modules whose first call had ended at ``events[position]`` (inclusive)."""
        return {name for kind, name in self.events[: position + 1] if kind == "end"}

    def started_by(self, position: int) -> set[str]:
        """Modules whose first call had started at ``events[position]`` (inclusive)."""
        return {name for kind, name in self.events[: position + 1] if kind == "start"}


def trace_forward(model: VideoClassifier) -> ForwardTrace:
    """Run ``model`` once on a meta clip of its default input size and record every module call.

    The parameters and buffers are swapped for meta tensors for the pass, so nothing is computed
    and the model itself is left untouched (its train/eval mode included).
    """
    events: list[tuple[str, str]] = []
    shapes: dict[str, torch.Size] = {}

    def on_start(name: str):
        return lambda module, args: events.append(("start", name))

    def on_end(name: str):
        def hook(module, args, output):
            events.append(("end", name))
            if isinstance(output, torch.Tensor):
                shapes.setdefault(name, output.shape)

        return hook

    handles = []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(on_start(name)))
            handles.append(module.register_forward_hook(on_end(name)))
    meta = {
        name: torch.empty_like(tensor, device="meta")
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
    }
    cfg = model.default_cfg
    clip = torch.empty(1, cfg.in_chans, cfg.clip.frames, *cfg.clip.size, device="meta")
    modes = {module: module.training for module in model.modules()}
    try:
        # Eval mode: BatchNorm would refuse a batch of one in training mode.
        model.eval()
        with torch.no_grad():
            functional_call(model, meta, (clip,), strict=False)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return ForwardTrace(events, shapes)


def owned_parameters(model: nn.Module, modules: set[str]) -> list[tuple[str, nn.Parameter]]:
    """``(full name, parameter)`` of the parameters held directly by the named modules."""
    found = []
    for name, module in model.named_modules():
        if name in modules:
            found.extend((f"{name}.{pname}", p) for pname, p in module.named_parameters(recurse=False))
    return found

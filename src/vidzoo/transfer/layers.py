"""Which layers of a model freezing and truncation can name, and in what order they run.

Layer names are module paths. A clip model names the layers of its ``feature_info``
(``features.Mixed_4f`` for I3D, ``features.pool5`` for C3D, ``net.layer3`` for R3D). A per-frame
model (C2D, LRCN) has no clip-level layers: its names are the frame CNN's stages, under the path
of the CNN inside the model, ``backbone.net.<module>`` with ``<module>`` from timm's
``feature_info`` (``backbone.net.layer3`` for ResNet50, ``backbone.net.features.29`` for VGG16,
``backbone.net.block2`` for LRCN's small CNN). A truncated model names its body's layers up to
the cut, under ``body.``.

The order of parameters and layers is the order in which a forward pass runs them, found by one
forward pass on the meta device (shapes only, nothing computed or allocated).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from vidzoo.models._base import VideoClassifier


def layer_names(model: VideoClassifier) -> list[str]:
    """The layer names ``freeze``, ``unfreeze``, ``train_last`` and ``truncate`` accept, in
    forward order (see the module docstring)."""
    from vidzoo.models.c2d import FrameEncoder
    from vidzoo.transfer.truncation import TruncatedClassifier

    if isinstance(model, TruncatedClassifier):
        return list(model.layers)
    names = [info["name"] for info in model.feature_info]
    encoder = getattr(model, "backbone", None)
    if isinstance(encoder, FrameEncoder):
        frame_layers = getattr(encoder.net, "feature_info", None) or []
        names += [f"backbone.net.{info['module']}" for info in frame_layers]
    return names


def resolve_layer(model: VideoClassifier, name: str) -> str:
    """``name`` as a full layer name of ``model``.

    A unique last part is enough (``"Mixed_4f"`` for ``"features.Mixed_4f"``). Raises
    ValueError listing the model's layers, with a did-you-mean, for any other name.
    """
    names = layer_names(model)
    if name in names:
        return name
    matches = [full for full in names if full.endswith(f".{name}")]
    if len(matches) == 1:
        return matches[0]
    arch = model.default_cfg.arch
    if not names:
        raise ValueError(
            f"{arch} names no layers to freeze or cut at (its feature_info is empty); "
            "use 'backbone' (everything but the classifier) instead"
        )
    if len(matches) > 1:
        hint = f" It is the end of {', '.join(map(repr, matches))}; give the full name."
    else:
        # Compare with the last parts too: "pool6" is far from "features.pool5" as a whole.
        by_part = {full.rpartition(".")[2]: full for full in names}
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6) or [
            by_part[part] for part in difflib.get_close_matches(name, by_part, n=3, cutoff=0.6)
        ]
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"unknown layer {name!r} for {arch}.{hint} Layers of {arch}: {', '.join(names)}")


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
    clip = torch.empty(1, cfg.in_chans, *cfg.input_size, device="meta")
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

"""Freeze and unfreeze parts of a model, and split its parameters for per-part learning rates.

>>> freeze(model, until="backbone")          # train only the classifier
>>> freeze(model, until="features.Mixed_4f") # I3D: Mixed_4f and everything before it stay fixed
>>> train_last(model, 2)                     # the last two layers and the head train
>>> optimizer = torch.optim.Adam(param_groups(model, lr=1e-3, backbone_lr_mult=0.1))

A frozen parameter has ``requires_grad=False``. A frozen BatchNorm layer also stays in eval mode
when ``model.train()`` is called, so its running statistics never change: frozen means every
tensor of the layer stays bit-identical. ``unfreeze`` undoes both.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from vidzoo.models._base import VideoClassifier
from vidzoo.models._layers import FrameEncoder
from vidzoo.transfer.layers import (
    layer_names,
    owned_parameters,
    resolve_layer,
    trace_forward,
)

BACKBONE = "backbone"
# A frozen BatchNorm keeps the handle of the hook that holds it in eval mode under this attribute.
_HOLD = "_vidzoo_frozen_bn"


def freeze(model: VideoClassifier, until: str | None = None) -> list[str]:
    """Freeze ``model`` in place; return the names of the parameters frozen.

    Args:
        until: None freezes the whole model; ``"backbone"`` everything except
            ``model.get_classifier()``; a layer name (``layer_names(model)``; a unique last part
            such as ``"Mixed_4f"`` will do) freezes that layer and every module that has run by
            the time it has, in forward order.

    Raises ValueError for an unknown layer, listing the model's layers.
    """
    modules = _modules_until(model, until)
    frozen = []
    for name, param in owned_parameters(model, modules):
        param.requires_grad_(False)
        frozen.append(name)
    for name, module in model.named_modules():
        if name in modules and isinstance(module, _BatchNorm):
            _hold_eval(module)
    return frozen


def unfreeze(model: VideoClassifier, from_layer: str | None = None) -> list[str]:
    """Make parameters trainable again, in place; return the names of those unfrozen.

    Args:
        from_layer: None unfreezes the whole model; a layer name unfreezes that layer and every
            module after it (the complement of ``freeze(model, until=<the layer before>)``).

    Frozen BatchNorm layers among them follow ``model.train()``/``eval()`` again. A per-frame
    CNN built with ``freeze_backbone=True`` (C2D, LRCN) is unfrozen too when any of its
    parameters is.
    """
    everything = {name for name, _ in model.named_modules()}
    if from_layer is None:
        modules = everything
    else:
        trace = trace_forward(model)
        modules = everything - trace.finished_by(trace.index("start", resolve_layer(model, from_layer)))
    unfrozen = []
    for name, param in owned_parameters(model, modules):
        if not param.requires_grad:
            unfrozen.append(name)
        param.requires_grad_(True)
    for name, module in model.named_modules():
        if name not in modules:
            continue
        if isinstance(module, _BatchNorm) and _HOLD in module.__dict__:
            module.__dict__.pop(_HOLD).remove()
            module.train(model.training)
        if isinstance(module, FrameEncoder) and module.frozen:
            if any(p.requires_grad for p in module.parameters()):
                module.frozen = False
                module.train(model.training)
    return unfrozen


def train_last(model: VideoClassifier, n: int) -> list[str]:
    """Train only the last ``n`` layers (``layer_names(model)``) and everything after them,
    the head included; freeze the rest. Returns the names of the frozen parameters.

    ``n=0`` trains only what follows the last layer (the head; for C3D also fc6 and fc7).
    """
    names = layer_names(model)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(names):
        raise ValueError(
            f"train_last needs 0 <= n <= {len(names)} (the number of layers of "
            f"{model.default_cfg.arch}: {', '.join(names) or 'none'}), got {n!r}"
        )
    unfreeze(model)
    return [] if n == len(names) else freeze(model, until=names[len(names) - n - 1])


def is_frozen_batchnorm(module: nn.Module) -> bool:
    """Whether ``freeze`` holds this BatchNorm layer in eval mode."""
    return _HOLD in module.__dict__


def param_groups(model: VideoClassifier, lr: float, backbone_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """Optimizer parameter groups: ``head`` (``model.get_classifier()``) at ``lr``, then
    ``backbone`` (every other parameter) at ``lr * backbone_lr_mult``.

    Frozen parameters are included, so the groups stay the same when layers are unfrozen later
    (an optimizer state saved before unfreezing still loads); PyTorch's optimizers skip
    parameters without a gradient, so frozen ones are never updated, weight decay included.
    """
    if not lr > 0 or not backbone_lr_mult >= 0:
        raise ValueError(f"need lr > 0 and backbone_lr_mult >= 0, got lr={lr!r}, backbone_lr_mult={backbone_lr_mult!r}")
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    head = [p for p in model.parameters() if id(p) in head_ids]
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    return [
        {"name": "head", "params": head, "lr": lr},
        {"name": BACKBONE, "params": backbone, "lr": lr * backbone_lr_mult},
    ]


def _modules_until(model: VideoClassifier, until: str | None) -> set[str]:
    everything = {name for name, _ in model.named_modules()}
    if until is None:
        return everything
    if until == BACKBONE:
        classifier = model.get_classifier()
        head = next(name for name, module in model.named_modules() if module is classifier)
        return {name for name in everything if name != head and not name.startswith(f"{head}.")}
    trace = trace_forward(model)
    return trace.finished_by(trace.index("end", resolve_layer(model, until)))


def _hold_eval(module: _BatchNorm) -> None:
    module.eval()
    if _HOLD not in module.__dict__:
        # model.train() reaches every submodule, so the mode is set back right before each call.
        module.__dict__[_HOLD] = module.register_forward_pre_hook(_set_eval)


def _set_eval(module: nn.Module, args: Any) -> None:
    module.training = False

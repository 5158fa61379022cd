"""Inflate 2D networks to 3D (Carreira & Zisserman 2017, section 2.3).

A 2D kernel ``W`` (out, in, kh, kw) becomes a 3D kernel (out, in, kt, kh, kw) by repeating it
``kt`` times along a new time axis and dividing by ``kt``. On a video whose frames are all the
same image, a 3D convolution with that kernel then gives exactly the 2D convolution's output at
every time step whose temporal window lies inside the clip (zero padding at the clip's ends
breaks the equality there): the "boring video" fixed point the paper bootstraps I3D from.
BatchNorm statistics, biases and fully connected layers carry over unchanged; a fully connected
layer mapped onto a 1x1x1 convolution is reshaped.

>>> inflate(resnet2d, model3d, mapping={"conv1.weight": "stem.0.weight", ...})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from vidzoo.models._base import describe_keys

_LIST_AT_MOST = 10


def inflate_weight(weight: torch.Tensor, time: int) -> torch.Tensor:
    """A 2D conv kernel ``(out, in, kh, kw)`` as a 3D kernel ``(out, in, time, kh, kw)``:
    repeated ``time`` times along time and divided by ``time``."""
    if weight.ndim != 4:
        raise ValueError(f"a 2D conv kernel has 4 dims (out, in, kh, kw), got shape {tuple(weight.shape)}")
    if isinstance(time, bool) or not isinstance(time, int) or time < 1:
        raise ValueError(f"time must be a positive int, got {time!r}")
    return weight.unsqueeze(2).repeat(1, 1, time, 1, 1) / time


def inflate_tensor(tensor: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """``tensor`` fitted to ``shape``: unchanged when the shapes agree, a conv kernel inflated
    along time, or a linear layer's ``(out, in)`` weight reshaped to a ``(out, in, 1, 1, 1)``
    convolution. Raises ValueError for anything else."""
    shape = tuple(shape)
    if tuple(tensor.shape) == shape:
        return tensor
    if tensor.ndim == 4 and len(shape) == 5 and (shape[:2] + shape[3:]) == tuple(tensor.shape):
        return inflate_weight(tensor, shape[2])
    if tensor.ndim == 2 and len(shape) == 5 and shape[:2] == tuple(tensor.shape) and shape[2:] == (1, 1, 1):
        return tensor.reshape(shape)
    raise ValueError(f"cannot inflate a tensor of shape {tuple(tensor.shape)} to {shape}")


def inflate_state_dict(
    state_dict_2d: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor] | nn.Module,
    mapping: Mapping[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """The 2D tensors under their 3D names, each fitted to the target's shape (``inflate_tensor``).

    Args:
        state_dict_2d: the 2D network's state dict.
        target: the 3D network, or its state dict (only the shapes are used).
        mapping: 2D key -> 3D key for every 2D key to carry over; None carries every 2D key over
            under the same name (a 3D twin built with the same module names).

    Raises ValueError naming every mapped key missing on either side or whose shape cannot be
    fitted. Target keys that nothing maps to are simply absent from the result.
    """
    shapes = {k: v.shape for k, v in (target.state_dict() if isinstance(target, nn.Module) else target).items()}
    mapping = {key: key for key in state_dict_2d} if mapping is None else dict(mapping)
    missing_2d = [key for key in mapping if key not in state_dict_2d]
    missing_3d = [new for new in mapping.values() if new not in shapes]
    problems = []
    if missing_2d:
        problems.append(f"not in the 2D weights: {describe_keys(missing_2d, list(state_dict_2d), limit=_LIST_AT_MOST)}")
    if missing_3d:
        problems.append(f"not in the 3D model: {describe_keys(missing_3d, list(shapes), limit=_LIST_AT_MOST)}")
    inflated: dict[str, torch.Tensor] = {}
    wrong = []
    for old, new in mapping.items():
        if old in state_dict_2d and new in shapes:
            try:
                inflated[new] = inflate_tensor(state_dict_2d[old], shapes[new])
            except ValueError as err:
                wrong.append(f"{old} -> {new}: {err}")
    if wrong:
        problems.append("shapes that do not fit: " + "; ".join(wrong[:_LIST_AT_MOST]))
    if problems:
        raise ValueError("cannot inflate the 2D weights: " + "; ".join(problems))
    return inflated


def inflate(
    source_2d: nn.Module | Mapping[str, torch.Tensor],
    target_3d: nn.Module,
    mapping: Mapping[str, str] | None = None,
    *,
    skip: Iterable[str] = (),
) -> list[str]:
    """Load a 2D network's weights, inflated, into ``target_3d`` in place; return the keys loaded.

    Args:
        source_2d: the 2D network or its state dict.
        target_3d: the 3D network.
        mapping: 2D key -> 3D key, see ``inflate_state_dict``; None means the same names.
        skip: 3D keys that are meant to keep their own values (e.g. a new classifier).

    Every other key of ``target_3d`` must be covered: a key left over raises ValueError naming
    it, rather than being silently left at its initial value.
    """
    state_2d = source_2d.state_dict() if isinstance(source_2d, nn.Module) else source_2d
    inflated = inflate_state_dict(state_2d, target_3d, mapping)
    expected = target_3d.state_dict()
    skip = set(skip)
    unknown_skip = sorted(skip - set(expected))
    if unknown_skip:
        raise ValueError(f"skip names keys the 3D model does not have: {describe_keys(unknown_skip, list(expected))}")
    left = [key for key in expected if key not in inflated and key not in skip]
    if left:
        raise ValueError(
            f"the 2D weights leave {len(left)} keys of the 3D model unset: "
            f"{describe_keys(left, limit=_LIST_AT_MOST)}; map them or list them in skip"
        )
    target_3d.load_state_dict({**expected, **inflated}, strict=True)
    return list(inflated)

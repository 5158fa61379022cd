"""Map a weights-only Keras ``.h5`` (``model.save_weights``: no ``model_config``) onto a vidzoo
architecture the caller names, since the file does not say how to build the network.

Mappable today: ``c3d``, from the widely used Keras C3D (a Sequential port of the Caffe Sports-1M
C3D)::

    conv1 64 -> pool1 1x2x2 -> conv2 128 -> pool2 -> conv3a, conv3b 256 -> pool3
    -> conv4a, conv4b 512 -> pool4 -> conv5a, conv5b 512 -> ZeroPadding3D((0, 1, 1)) -> pool5
    -> Flatten -> fc6 4096 relu -> fc7 4096 relu -> fc8 softmax       (3x3x3 "same" convs, relu)

On post-ReLU (non-negative) inputs, zero padding then floor pooling equals vidzoo's ceil-mode pool5,
so the result is a plain vidzoo ``c3d`` whose softmax output equals the Keras model's. The layers
that carry weights are matched by their names (conv1 ... fc8), or by their order when the file has
Keras' automatic names (conv3d, conv3d_1, ..., dense_2); every shape is checked.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from vidzoo.keras.h5file import KerasFile, KerasImportError
from vidzoo.keras.layers import KerasWeightError, weight_kind
from vidzoo.models._base import VideoClassifier, frame_size, pool_output_size
from vidzoo.models._registry import get_model_entry
from vidzoo.models.factory import create_model

Layers = dict[str, tuple[str, dict[str, np.ndarray]]]  # vidzoo layer -> (Keras layer, kind -> array)

_C3D_CONVS = ("conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b")
_C3D_FCS = ("fc6", "fc7", "fc8")
# The Keras C3D's input: 16 frames of 112x112 (only fc6's size depends on it).
_C3D_CLIP = (16, 112)
_C3D_CONV1 = 64  # conv1's channels at width 1; vidzoo's width multiplier is read from it


def mappable_archs() -> list[str]:
    """The vidzoo architectures a weights-only Keras file can be mapped onto."""
    return sorted(_MAPPERS)


def load_weights_only(
    keras_file: KerasFile,
    arch: str,
    *,
    frames: int | None = None,
    size: int | Sequence[int] | None = None,
) -> VideoClassifier:
    """A vidzoo ``arch`` model holding the weights of the weights-only ``keras_file``.

    ``frames`` / ``size``: the clip the Keras model was built for, which fixes the size of a
    fully connected layer fed by a flatten (default: the architecture's standard clip).

    Raises:
        KerasImportError: ``arch`` cannot be mapped (the message lists those that can).
        KerasWeightError: missing, unexpected or mis-shaped layers or weights, all named.
    """
    if arch not in _MAPPERS:
        get_model_entry(arch)  # an unknown name raises with a did-you-mean
        raise KerasImportError(
            f"{keras_file.path} holds weights only; mapping a Keras weights-only file onto the vidzoo architecture "
            f"{arch!r} is not available (it can be mapped onto: {', '.join(mappable_archs())}). Save the Keras model "
            "with model.save('x.h5') to include its architecture"
        )
    try:
        return _MAPPERS[arch](keras_file, frames, size)
    except KerasWeightError as err:
        raise KerasWeightError(f"{keras_file.path}: {err}") from err


def _c3d(keras_file: KerasFile, frames: int | None, size: int | Sequence[int] | None) -> VideoClassifier:
    ranks = {**dict.fromkeys(_C3D_CONVS, 5), **dict.fromkeys(_C3D_FCS, 2)}
    layers = _match_layers(keras_file, ranks, "c3d")
    conv1 = layers["conv1"][1]["kernel"]
    frames = frames if frames is not None else _C3D_CLIP[0]
    size = size if size is not None else _C3D_CLIP[1]
    kwargs: dict[str, Any] = {
        "num_classes": int(layers["fc8"][1]["kernel"].shape[1]), "in_chans": int(conv1.shape[3]),
        "frames": frames, "size": size, "width": conv1.shape[4] / _C3D_CONV1,
    }
    try:
        model = create_model("c3d", **kwargs)
    except ValueError as err:
        raise KerasWeightError(f"cannot build vidzoo's c3d for this file ({kwargs}): {err}") from err
    pooled = _pooled_size(model.features, frame_size(size), frames)
    to_t = lambda k: k.t()  # noqa: E731  Dense kernel (in, out) -> Linear weight (out, in)
    targets = {**{name: (f"features.{name}.conv", lambda k: k.permute(4, 3, 0, 1, 2)) for name in _C3D_CONVS},
               "fc6": ("fc6", _flatten_reorder(pooled, model.features.conv5b.conv.out_channels)),
               "fc7": ("fc7", to_t), "fc8": ("fc8", to_t)}
    state, problems, fc6_misfits = {}, [], False
    for name, (path, kernel_to_torch) in targets.items():
        source, weights = layers[name]
        module = model.get_submodule(path)
        for kind, param, to_torch in (("kernel", "weight", kernel_to_torch), ("bias", "bias", torch.as_tensor)):
            target, value = getattr(module, param), to_torch(torch.from_numpy(weights[kind]))
            if value.shape != target.shape:
                problems.append(f"{_label(name, source)} {kind} {tuple(weights[kind].shape)}: vidzoo's c3d needs "
                                f"{_keras_shape(target, kind, module)}")
                fc6_misfits |= name == "fc6" and kind == "kernel"
            else:
                state[f"{path}.{param}"] = value
    if problems:
        clip = "x".join(map(str, (frames, *frame_size(size))))
        hint = (f" (fc6 takes the flattened pool5 output: {model.features.conv5b.conv.out_channels} channels x "
                f"{'x'.join(map(str, pooled))} for a {clip} clip{_clip_hint(layers['fc6'][1]['kernel'], model, frames)})"
                if fc6_misfits else "")
        raise KerasWeightError(f"{len(problems)} weight(s) do not fit vidzoo's c3d (width {kwargs['width']:g}, "
                               f"{kwargs['in_chans']} input channels, from conv1): {'; '.join(problems)}{hint}")
    model.load_state_dict(state, strict=True)
    # The file does not record its input; the Keras (MiT) zoo fed RGB in [0, 1] without mean subtraction,
    # so that is assumed (and stated in the metadata) instead of c3d's own Kinetics mean/std.
    model.default_cfg = model.default_cfg.replace(clip=model.clip_spec.replace(norm={"scale": [0.0, 1.0]}))
    return model


_MAPPERS: dict[str, Callable[[KerasFile, int | None, int | Sequence[int] | None], VideoClassifier]] = {"c3d": _c3d}


def _match_layers(keras_file: KerasFile, ranks: dict[str, int], arch: str) -> Layers:
    """The file's layers that carry weights, as vidzoo layer -> (Keras layer, kind -> array): by name when
    the file uses vidzoo's names, else by order; each must have exactly a kernel of ``ranks[name]``
    dimensions and a bias."""
    weighted = {name: weights for name, weights in keras_file.weights.items() if weights}
    expected = list(ranks)
    found = ", ".join(f"{name} {_shapes(w)}" for name, w in weighted.items()) or "none"
    if any(name in weighted for name in expected):
        missing = [name for name in expected if name not in weighted]
        extra = [name for name in weighted if name not in ranks]
        if missing or extra:
            hints = [f"is {name!r} {close[0]!r}?" for name in extra
                     if (close := difflib.get_close_matches(name, missing, n=1))]
            raise KerasWeightError(
                f"the layers with weights do not match vidzoo's {arch} ({', '.join(expected)}): "
                f"missing {', '.join(missing) or 'none'}; unexpected {', '.join(extra) or 'none'}"
                f"{' (' + '; '.join(hints) + ')' if hints else ''}. The file has: {found}"
            )
        pairs = [(name, name) for name in expected]
    elif len(weighted) == len(expected):
        pairs = list(zip(expected, weighted))  # Keras' automatic names: the Sequential's order
    else:
        raise KerasWeightError(
            f"the file's layer names are not vidzoo's {arch} names ({', '.join(expected)}), and it has "
            f"{len(weighted)} layers with weights where {arch} has {len(expected)}, so they cannot be matched "
            f"by order either. The file has: {found}"
        )
    layers: Layers = {}
    problems = []
    for name, source in pairs:
        by_kind = {weight_kind(weight): array for weight, array in weighted[source]}
        kernel = by_kind.get("kernel")
        if sorted(by_kind) != ["bias", "kernel"] or kernel is None or kernel.ndim != ranks[name]:
            problems.append(f"{_label(name, source)} has {_shapes(weighted[source])}; it needs a "
                            f"{ranks[name]}-d kernel and a bias")
        layers[name] = (source, {kind: np.ascontiguousarray(a, dtype=np.float32) for kind, a in by_kind.items()})
    if problems:
        raise KerasWeightError(f"layer(s) that do not fit vidzoo's {arch}: {'; '.join(problems)}")
    return layers


def _pooled_size(features: nn.Module, size: tuple[int, int], frames: int) -> tuple[int, ...]:
    """(T, H, W) after the last pool of ``features`` for a ``frames`` x ``size`` clip."""
    shape: tuple[int, ...] = (frames, *size)
    for module in features.modules():
        if isinstance(module, nn.MaxPool3d):
            kernel, stride = module.kernel_size, module.stride
            shape = tuple(pool_output_size(s, k, st, module.ceil_mode) for s, k, st in zip(shape, kernel, stride))
    return shape


def _flatten_reorder(pooled: tuple[int, ...], channels: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Keras' Dense kernel (T*H*W*C, out) after a channels-last Flatten as PyTorch's (out, C*T*H*W)
    weight after a channels-first flatten."""
    def to_torch(kernel: torch.Tensor) -> torch.Tensor:
        if kernel.shape[0] != channels * math.prod(pooled):
            return kernel.t()  # the shape check reports it
        out = kernel.shape[1]
        return kernel.reshape(*pooled, channels, out).permute(3, 0, 1, 2, 4).reshape(-1, out).t()
    return to_torch


def _clip_hint(fc6_kernel: np.ndarray, model: nn.Module, frames: int) -> str:
    """Which square frame size gives fc6's input count at ``frames`` frames, when one does."""
    channels = model.features.conv5b.conv.out_channels
    time = _pooled_size(model.features, (112, 112), frames)[0]
    per_frame, rest = divmod(fc6_kernel.shape[0], channels * time) if time > 0 else (0, 1)
    side = math.isqrt(per_frame)
    if rest or side < 1 or side * side != per_frame:
        return "; the file's fc6 fits no square frame size at this frame count: give frames (--frames)"
    # pool1..4 halve the frame four times (floor), pool5 once more (ceil): 16 * (2 * side - 1) is the smallest.
    return f"; the file's fc6 fits {frames}x{16 * (2 * side - 1)}x{16 * (2 * side - 1)}: give frames/size (--frames/--size)"


def _keras_shape(target: torch.Tensor, kind: str, module: nn.Module) -> tuple[int, ...]:
    """The Keras shape of the array that would fill ``target``."""
    if kind == "bias":
        return tuple(target.shape)
    if isinstance(module, nn.Conv3d):
        out, inp, *kernel = target.shape
        return (*kernel, inp, out)
    return tuple(reversed(target.shape))


def _label(name: str, source: str) -> str:
    return name if name == source else f"{name} (file layer {source!r})"


def _shapes(weights: Sequence[tuple[str, np.ndarray]]) -> str:
    return "[" + ", ".join(f"{weight_kind(n)} {tuple(a.shape)}" for n, a in weights) + "]"

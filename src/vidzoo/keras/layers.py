"""PyTorch modules that compute what Keras layers compute, and the converters that build them
from a layer's config.

Every tensor between layers stays in Keras' layout (batch first, channels last), so Flatten,
Reshape, Dense on any axis, Concatenate and broadcasting Multiply keep Keras' element order with
no bookkeeping. Convolutions and pools view their input channels-first (``movedim``, no copy:
PyTorch then runs them in its channels-last memory format) and view the result back.

Each module knows the Keras weights it takes (``load_keras``: weight kind -> array, kinds being
the last part of a Keras weight name without ``:0``) and checks every shape.

Semantics kept from Keras:

- ``padding="same"`` is TensorFlow's: total padding ``max((ceil(n/s)-1)*s + (k-1)*d + 1 - n, 0)``,
  the extra pixel at the end; same-padded average pools divide by the number of real pixels.
- BatchNormalization: ``center``/``scale`` flags, ``epsilon``; Keras momentum m is PyTorch's 1 - m.
- ``hard_sigmoid`` is the version that wrote the file: Keras 2's ``clip(0.2 x + 0.5, 0, 1)``,
  Keras 3's ``relu6(x + 3) / 6``.
- LSTM gates i, f, c, o (PyTorch's i, f, g, o) with the configured activations;
  ``go_backwards`` returns the outputs in reversed time order, as Keras does.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidzoo.keras.config import LayerSpec
from vidzoo.keras.h5file import KerasImportError

Shape = tuple[int, ...]


class KerasWeightError(KerasImportError):
    """Weights in the file that are missing, unexpected or mis-shaped for a layer."""


def weight_kind(name: str) -> str:
    """``"block1/conv1/kernel:0"`` -> ``"kernel"``."""
    return name.rsplit("/", 1)[-1].split(":", 1)[0]


# --------------------------------------------------------------------------- activations


def activation_fn(name: Any, keras_major: int, where: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function of a Keras activation name (a string, or Keras 3's serialized form)."""
    if isinstance(name, dict):  # {"class_name": "function", "config": "relu", ...}
        name = name.get("config") if isinstance(name.get("config"), str) else name.get("class_name")
    name = "linear" if name is None else str(name)
    if name == "hard_sigmoid":
        return _hard_sigmoid_k2 if keras_major < 3 else F.hardsigmoid
    fn = _ACTIVATIONS.get(name)
    if fn is None:
        raise KerasImportError(
            f"layer {where!r}: activation {name!r} is not supported; supported: {', '.join(sorted(_ACTIVATIONS) + ['hard_sigmoid'])}"
        )
    return fn


def _hard_sigmoid_k2(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": _identity,
    "relu": F.relu,
    "relu6": F.relu6,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "log_softmax": lambda x: torch.log_softmax(x, dim=-1),
    "softplus": F.softplus,
    "softsign": F.softsign,
    "elu": F.elu,
    "selu": F.selu,
    "exponential": torch.exp,
    "swish": F.silu,
    "silu": F.silu,
    "gelu": F.gelu,  # Keras' default is the exact (erf) form, as PyTorch's
    "hard_swish": F.hardswish,
    "hard_silu": F.hardswish,
    "mish": F.mish,
}


# --------------------------------------------------------------------------- base


class KerasLayer(nn.Module):
    """A module standing for one Keras layer; ``keras_name`` is the layer's name."""

    weight_kinds: tuple[str, ...] = ()
    # Keras 3 renamed some weights; both names are accepted.
    kind_aliases: dict[str, str] = {}

    def __init__(self, keras_name: str) -> None:
        super().__init__()
        self.keras_name = keras_name

    def load_keras(self, weights: Sequence[tuple[str, np.ndarray]]) -> None:
        """Copy the layer's weights ``[(keras weight name, array)]`` in; errors name each problem."""
        by_kind: dict[str, tuple[str, np.ndarray]] = {}
        for name, array in weights:
            kind = weight_kind(name)
            kind = self.kind_aliases.get(kind, kind)
            if kind not in self.expected_kinds() or kind in by_kind:
                raise KerasWeightError(
                    f"layer {self.keras_name!r} ({type(self).__name__}): unexpected weight {name!r} "
                    f"{tuple(array.shape)}; it takes {', '.join(self.expected_kinds()) or 'no weights'}"
                )
            by_kind[kind] = (name, array)
        missing = [kind for kind in self.expected_kinds() if kind not in by_kind]
        if missing:
            raise KerasWeightError(
                f"layer {self.keras_name!r} ({type(self).__name__}): the file lacks its weight(s) "
                f"{', '.join(missing)} (found {[n for n, _ in weights] or 'none'})"
            )
        with torch.no_grad():
            self._load(by_kind)

    def expected_kinds(self) -> tuple[str, ...]:
        return self.weight_kinds

    def _load(self, weights: dict[str, tuple[str, np.ndarray]]) -> None:
        """Copy the arrays in; called with exactly ``expected_kinds()``."""

    def _copy(self, target: torch.Tensor, weight: tuple[str, np.ndarray], to_torch: Callable[[torch.Tensor], torch.Tensor] = _identity) -> None:
        name, array = weight
        value = to_torch(torch.from_numpy(np.ascontiguousarray(array)).to(target.dtype))
        if value.shape != target.shape:
            raise KerasWeightError(
                f"layer {self.keras_name!r}: weight {name!r} has shape {tuple(array.shape)}, which gives "
                f"{tuple(value.shape)} where the layer's config needs {tuple(target.shape)}"
            )
        target.copy_(value)

    def extra_repr(self) -> str:
        return f"keras_name={self.keras_name!r}"


def channels_first(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(-1, 1)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(1, -1)


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding (before, after) along one axis: the extra pixel goes at the end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int], value: float = 0.0) -> torch.Tensor:
    """Pad a channels-first tensor's spatial axes the TensorFlow SAME way."""
    pads: list[int] = []
    for size, k, s, d in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride), reversed(dilation)):
        pads.extend(same_padding(size, k, s, d))
    return F.pad(x, pads, value=value) if any(pads) else x


def _tuple(value: Any, rank: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * rank
    return tuple(int(v) for v in value)


# --------------------------------------------------------------------------- convolutions


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class Conv(KerasLayer):
    """Conv1D/2D/3D and DepthwiseConv2D (``groups``), channels-last in and out."""

    def __init__(self, keras_name: str, rank: int, in_channels: int, out_channels: int, kernel: Shape,
                 stride: Shape, dilation: Shape, padding: str, groups: int, use_bias: bool,
                 activation: Callable[[torch.Tensor], torch.Tensor], depthwise: bool = False) -> None:
        super().__init__(keras_name)
        if in_channels % groups or out_channels % groups:
            raise KerasImportError(f"layer {keras_name!r}: {in_channels} input and {out_channels} output channels do not split into {groups} groups")
        self.rank, self.kernel, self.stride, self.dilation = rank, kernel, stride, dilation
        self.padding, self.groups, self.depthwise = padding, groups, depthwise
        self.in_channels, self.out_channels = in_channels, out_channels
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if use_bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if padding == "same" and all(s == 1 for s in stride):
            # Stride 1: the padding does not depend on the input size; symmetric goes to the conv.
            pairs = [same_padding(1, k, 1, d) for k, d in zip(kernel, dilation)]
            self._static = tuple(before for before, _ in pairs) if all(a == b for a, b in pairs) else None
        else:
            self._static = (0,) * rank if padding == "valid" else None

    def expected_kinds(self) -> tuple[str, ...]:
        kernel = "depthwise_kernel" if self.depthwise else "kernel"
        return (kernel, "bias") if self.bias is not None else (kernel,)

    @property
    def kind_aliases(self) -> dict[str, str]:  # Keras 3 names a depthwise kernel "kernel"
        return {"kernel": "depthwise_kernel"} if self.depthwise else {}

    def _load(self, weights: dict[str, tuple[str, np.ndarray]]) -> None:
        rank = self.rank
        if self.depthwise:
            # (k..., in, multiplier) -> (in * multiplier, 1, k...): output channel c*m + j, as Keras.
            def to_torch(k: torch.Tensor) -> torch.Tensor:
                return k.permute(rank, rank + 1, *range(rank)).reshape(self.out_channels, 1, *self.kernel)
            self._copy(self.weight, weights["depthwise_kernel"], to_torch)
        else:
            self._copy(self.weight, weights["kernel"], lambda k: k.permute(rank + 1, rank, *range(rank)))
        if self.bias is not None:
            self._copy(self.bias, weights["bias"])

    def conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
        """Convolve a channels-first tensor with this layer's geometry."""
        if self._static is None:
            x = _pad_same(x, self.kernel, self.stride, self.dilation)
            padding: Any = 0
        else:
            padding = self._static
        return _CONV[self.rank](x, weight, bias, self.stride, padding, self.dilation, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(channels_last(self.conv(channels_first(x), self.weight, self.bias, self.groups)))


class SeparableConv(Conv):
    """SeparableConv1D/2D: a depthwise conv (``depth_multiplier``) then a 1x1 pointwise conv."""

    def __init__(self, keras_name: str, rank: int, in_channels: int, out_channels: int, multiplier: int,
                 kernel: Shape, stride: Shape, dilation: Shape, padding: str, use_bias: bool,
                 activation: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__(keras_name, rank, in_channels, in_channels * multiplier, kernel, stride, dilation,
                         padding, in_channels, False, activation, depthwise=True)
        self.pointwise = nn.Parameter(torch.empty(out_channels, in_channels * multiplier, *(1,) * rank))
        nn.init.kaiming_uniform_(self.pointwise, a=math.sqrt(5))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if use_bias else None
        self.filters = out_channels

    def expected_kinds(self) -> tuple[str, ...]:
        return ("depthwise_kernel", "pointwise_kernel") + (("bias",) if self.bias is not None else ())

    @property
    def kind_aliases(self) -> dict[str, str]:
        return {}

    def _load(self, weights: dict[str, tuple[str, np.ndarray]]) -> None:
        rank = self.rank
        self._copy(self.weight, weights["depthwise_kernel"],
                   lambda k: k.permute(rank, rank + 1, *range(rank)).reshape(self.out_channels, 1, *self.kernel))
        self._copy(self.pointwise, weights["pointwise_kernel"], lambda k: k.permute(rank + 1, rank, *range(rank)))
        if self.bias is not None:
            self._copy(self.bias, weights["bias"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(channels_first(x), self.weight, None, self.groups)
        y = _CONV[self.rank](y, self.pointwise, self.bias)
        return self.activation(channels_last(y))


class Dense(KerasLayer):
    """Dense on the last axis of any tensor; kernel (in, out) is PyTorch's weight transposed."""

    def __init__(self, keras_name: str, in_features: int, units: int, use_bias: bool,
                 activation: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__(keras_name)
        self.in_features, self.out_features = in_features, units
        linear = nn.Linear(in_features, units, bias=use_bias)
        self.weight, self.bias = linear.weight, linear.bias
        self.activation = activation

    def expected_kinds(self) -> tuple[str, ...]:
        return ("kernel", "bias") if self.bias is not None else ("kernel",)

    def _load(self, weights: dict[str, tuple[str, np.ndarray]]) -> None:
        self._copy(self.weight, weights["kernel"], lambda k: k.t())
        if self.bias is not None:
            self._copy(self.bias, weights["bias"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(F.linear(x, self.weight, self.bias))


class BatchNorm(KerasLayer):
    """BatchNormalization over the last axis, with Keras' center/scale flags and epsilon."""

    def __init__(self, keras_name: str, channels: int, epsilon: float, momentum: float, center: bool, scale: bool) -> None:
        super().__init__(keras_name)
        self.epsilon = epsilon
        self.momentum = 1.0 - momentum  # Keras keeps m of the old average, PyTorch 1 - m
        self.weight = nn.Parameter(torch.ones(channels)) if scale else None
        self.bias = nn.Parameter(torch.zeros(channels)) if center else None
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def expected_kinds(self) -> tuple[str, ...]:
        return (("gamma",) if self.weight is not None else ()) + (("beta",) if self.bias is not None else ()) + (
            "moving_mean", "moving_variance")

    def _load(self, weights: dict[str, tuple[str, np.ndarray]]) -> None:
        if self.weight is not None:
            self._copy(self.weight, weights["gamma"])
        if self.bias is not None:
            self._copy(self.bias, weights["beta"])
        self._copy(self.running_mean, weights["moving_mean"])
        self._copy(self.running_var, weights["moving_variance"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.batch_norm(channels_first(x), self.running_mean, self.running_var, self.weight, self.bias,
                         self.training, self.momentum, self.epsilon)
        return channels_last(y)


class Recurrent(KerasLayer):
    """Keras LSTM and GRU over (B, T, F), unrolled in Python (Keras' activations are free to
    choose, e.g. hard_sigmoid, which cuDNN-style fused kernels do not offer).

    Dropout and recurrent_dropout are training-time only and not applied here.
    """

    def __init__(self, keras_name: str, cell: str, in_features: int, units: int, use_bias: bool,
                 activation: Callable[[torch.Tensor], torch.Tensor], recurrent_activation: Callable[[torch.Tensor], torch.Tensor],
                 return_sequences: bool, go_backwards: bool, reset_after: bool = False) -> None:
        super().__init__(keras_name)
        gates = 4 if cell == "lstm" else 3
        self.cell, self.units, self.gates = cell, units, gates
        self.activation, self.recurrent_activation = activation, recurrent_activation
        self.return_sequences, self.go_backwards, self.reset_after = return_sequences, go_backwards, reset_after
        bound = 1.0 / math.sqrt(units)
        self.kernel = nn.Parameter(torch.empty(in_features, gates * units).uniform_(-bound, bound))
        self.recurrent_kernel = nn.Parameter(torch.empty(units, gates * units).uniform_(-bound, bound))
        bias_shape = (2, gates * units) if reset_after else (gates * units,)
        self.bias = nn.Parameter(torch.zeros(bias_shape)) if use_bias else None
        if self.bias is not None and cell == "lstm":
            with torch.no_grad():  # unit_forget_bias, Keras' default
                self.bias[units:2 * units] = 1.0

    def expected_kinds(self) -> tuple[str, ...]:
        return ("kernel", "recurrent_kernel") + (("bias",) if self.bias is not None else ())

    def _load(self, weights: dict[str, tuple[str, np.ndarray]]) -> None:
        self._copy(self.kernel, weights["kernel"])
        self._copy(self.recurrent_kernel, weights["recurrent_kernel"])
        if self.bias is not None:
            self._copy(self.bias, weights["bias"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.go_backwards:
            x = x.flip(1)
        batch, steps = x.shape[:2]
        u = self.units
        input_bias = None if self.bias is None else (self.bias[0] if self.reset_after else self.bias)
        xz = F.linear(x, self.kernel.t(), input_bias)  # all steps at once: (B, T, gates*u)
        h = x.new_zeros(batch, u)
        c = x.new_zeros(batch, u)
        outputs = []
        for t in range(steps):
            if self.cell == "lstm":
                z = xz[:, t] + h @ self.recurrent_kernel
                i, f, g, o = z.split(u, dim=-1)
                c = self.recurrent_activation(f) * c + self.recurrent_activation(i) * self.activation(g)
                h = self.recurrent_activation(o) * self.activation(c)
            else:
                h = self._gru_step(xz[:, t], h)
            outputs.append(h)
        return torch.stack(outputs, 1) if self.return_sequences else h

    def _gru_step(self, xz: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        u = self.units
        x_z, x_r, x_h = xz.split(u, dim=-1)
        rec_z, rec_r, rec_h = self.recurrent_kernel.split(u, dim=-1)
        if self.reset_after:
            hz = h @ self.recurrent_kernel
            if self.bias is not None:
                hz = hz + self.bias[1]
            h_z, h_r, h_h = hz.split(u, dim=-1)
            z = self.recurrent_activation(x_z + h_z)
            r = self.recurrent_activation(x_r + h_r)
            candidate = self.activation(x_h + r * h_h)
        else:
            z = self.recurrent_activation(x_z + h @ rec_z)
            r = self.recurrent_activation(x_r + h @ rec_r)
            candidate = self.activation(x_h + (r * h) @ rec_h)
        return z * h + (1 - z) * candidate


# --------------------------------------------------------------------------- pooling, shape


class Pool(KerasLayer):
    """Max/AveragePooling1D/2D/3D with Keras' valid/same padding."""

    def __init__(self, keras_name: str, kind: str, rank: int, pool: Shape, stride: Shape, padding: str) -> None:
        super().__init__(keras_name)
        self.kind, self.rank, self.pool, self.stride, self.padding = kind, rank, pool, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = channels_first(x)
        ones = (1,) * self.rank
        if self.kind == "max":
            if self.padding == "same":
                x = _pad_same(x, self.pool, self.stride, ones, value=float("-inf"))
            y = getattr(F, f"max_pool{self.rank}d")(x, self.pool, self.stride)
        else:
            avg = getattr(F, f"avg_pool{self.rank}d")
            if self.padding == "same":
                # TF averages over the real pixels of each window only.
                mask = _pad_same(x.new_ones(1, 1, *x.shape[2:]), self.pool, self.stride, ones)
                y = avg(_pad_same(x, self.pool, self.stride, ones), self.pool, self.stride) / avg(mask, self.pool, self.stride)
            else:
                y = avg(x, self.pool, self.stride)
        return channels_last(y)


class GlobalPool(KerasLayer):
    """GlobalAverage/MaxPooling1D/2D/3D: reduce every axis between batch and channels."""

    def __init__(self, keras_name: str, kind: str, keepdims: bool) -> None:
        super().__init__(keras_name)
        self.kind, self.keepdims = kind, keepdims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.ndim - 1))
        if self.kind == "max":
            return x.amax(dim=dims, keepdim=self.keepdims)
        return x.mean(dim=dims, keepdim=self.keepdims)


class ZeroPad(KerasLayer):
    """ZeroPadding1D/2D/3D and Cropping1D/2D/3D: ((before, after), ...) per spatial axis."""

    def __init__(self, keras_name: str, amounts: Sequence[tuple[int, int]], crop: bool = False) -> None:
        super().__init__(keras_name)
        self.amounts, self.crop = [tuple(a) for a in amounts], crop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop:
            index = [slice(None)] + [slice(b, x.shape[i + 1] - a) for i, (b, a) in enumerate(self.amounts)]
            return x[tuple(index)]
        pads = [0, 0]  # channels, last in F.pad's order
        for before, after in reversed(self.amounts):
            pads.extend((before, after))
        return F.pad(x, pads)


class Reshape(KerasLayer):
    """Reshape/Flatten (``target=None``): Keras' element order, as tensors are in Keras' layout."""

    def __init__(self, keras_name: str, target: Sequence[int] | None) -> None:
        super().__init__(keras_name)
        self.target = None if target is None else [int(t) for t in target]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1) if self.target is None else x.reshape(x.shape[0], *self.target)


class Permute(KerasLayer):
    def __init__(self, keras_name: str, dims: Sequence[int]) -> None:
        super().__init__(keras_name)
        self.dims = [int(d) for d in dims]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, *self.dims)


class Elementwise(KerasLayer):
    """Activation, ReLU/LeakyReLU/Softmax layers, Rescaling, and the identity layers
    (InputLayer, Dropout in eval mode)."""

    def __init__(self, keras_name: str, fn: Callable[[torch.Tensor], torch.Tensor], name: str = "") -> None:
        super().__init__(keras_name)
        self.fn, self.fn_name = fn, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fn={self.fn_name!r}"


class Dropout(KerasLayer):
    """Dropout, and SpatialDropout (whole channels, ``spatial=True``); identity in eval mode."""

    def __init__(self, keras_name: str, rate: float, spatial: bool) -> None:
        super().__init__(keras_name)
        self.rate, self.spatial = rate, spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        if not self.spatial:
            return F.dropout(x, self.rate, True)
        keep = torch.bernoulli(x.new_full((x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],), 1 - self.rate))
        return x * keep / (1 - self.rate)


class Merge(KerasLayer):
    """Concatenate, Add, Subtract, Multiply, Average, Maximum, Minimum (with broadcasting), and
    the residual scaling of InceptionResNetV2 (``scale_sum``: inputs[0] + inputs[1] * scale)."""

    def __init__(self, keras_name: str, op: str, axis: int = -1, scale: float = 1.0) -> None:
        super().__init__(keras_name)
        self.op, self.axis, self.scale = op, axis, scale

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.op == "concat":
            return torch.cat(xs, dim=self.axis)
        if self.op == "scale_sum":
            return xs[0] + xs[1] * self.scale
        if self.op == "subtract":
            return xs[0] - xs[1]
        out = xs[0]
        for x in xs[1:]:
            out = {"add": torch.add, "multiply": torch.mul, "average": torch.add,
                   "maximum": torch.maximum, "minimum": torch.minimum}[self.op](out, x)
        return out / len(xs) if self.op == "average" else out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, op={self.op!r}" + (f", scale={self.scale}" if self.op == "scale_sum" else "")


class TimeDistributed(KerasLayer):
    """Apply ``inner`` to every time step: (B, T, ...) -> (B*T, ...) -> inner -> (B, T, ...)."""

    def __init__(self, keras_name: str, inner: nn.Module) -> None:
        super().__init__(keras_name)
        self.inner = inner

    def load_keras(self, weights: Sequence[tuple[str, np.ndarray]]) -> None:
        self.inner.load_keras(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps = x.shape[:2]
        y = self.inner(x.reshape(batch * steps, *x.shape[2:]))
        return y.reshape(batch, steps, *y.shape[1:])


# --------------------------------------------------------------------------- Lambda recognition

# Names the recognised Lambda code may use besides its reduction: module aliases, keyword names
# and the usual parameter names.
_MODULE_ALIASES = {"K", "backend", "tf", "keras", "ops", "math", "np", "numpy"}
_PARAM_NAMES = {"x", "t", "y", "z", "v", "s", "inputs", "input", "tensor", "args"}
_MEAN_NAMES = {"mean", "reduce_mean"}
_MEAN_KWARGS = {"axis", "keepdims", "keep_dims"}
# marshal's short-ASCII string records: type byte ('z' or 'Z', optionally with the 0x80
# reference flag), one length byte, the characters.
_MARSHAL_SHORT_STR = re.compile(rb"[\x5a\x7a\xda\xfa]([\x01-\x40])")
_IDENTIFIER = re.compile(r"[A-Za-z_<][A-Za-z0-9_>]*")


@dataclass(frozen=True)
class LambdaPattern:
    """What a recognised Lambda computes: ``"scale_sum"`` (with ``scale``) or ``"mean_time"``."""

    kind: str
    scale: float = 1.0


def code_identifiers(encoded: str) -> set[str]:
    """The identifier strings inside a base64 marshalled code object, found by scanning its
    bytes for marshal's short-string records. The code is neither unmarshalled nor run."""
    try:
        raw = base64.b64decode(encoded.encode("ascii") if isinstance(encoded, str) else encoded)
    except (ValueError, TypeError, UnicodeEncodeError):
        return set()
    names = set()
    for match in _MARSHAL_SHORT_STR.finditer(raw):
        length = match.group(1)[0]
        text = raw[match.end(): match.end() + length]
        try:
            word = text.decode("ascii")
        except UnicodeDecodeError:
            continue
        if len(word) == length and _IDENTIFIER.fullmatch(word):
            names.add(word)
    return names


def lambda_code(config: dict[str, Any]) -> str | None:
    """The base64 code of a Lambda config (Keras 2: ``[code, defaults, closure]`` with
    ``function_type="lambda"``; Keras 3: ``{"class_name": "__lambda__", "config": {"code": ...}}``),
    or None for a named function (which the file does not contain)."""
    function = config.get("function")
    if isinstance(function, dict) and function.get("class_name") == "__lambda__":
        return function.get("config", {}).get("code")
    if isinstance(function, list) and function and isinstance(function[0], str) and config.get("function_type", "lambda") == "lambda":
        return function[0]
    return None


def recognise_lambda(spec: LayerSpec, in_shapes: Sequence[Shape]) -> LambdaPattern:
    """The native implementation of a known Lambda, recognised from its config alone.

    - InceptionResNetV2's residual scaling (keras_applications): two inputs,
      ``arguments={"scale": s}``, code naming nothing but its parameters.
    - A mean over time: one (batch, time, channels) input, no arguments, code that calls only a
      mean (``K.mean``, ``tf.reduce_mean``, ``keras.ops.mean``) -- the zoo's I3D head. It is taken
      over axis 1, the one mean that turns its input into the (batch, channels) a head gives.

    Anything else raises KerasImportError naming the layer and showing its config (never its code).
    """
    config = spec.config
    code = lambda_code(config)
    # "<lambda>", "<stdin>" and the like are the code's own and file names, not what it calls.
    names = set() if code is None else {n for n in code_identifiers(code) if not n.startswith("<")}
    arguments = config.get("arguments") or {}
    if code is not None:
        if (len(in_shapes) == 2 and set(arguments) == {"scale"} and isinstance(arguments["scale"], (int, float))
                and names <= {"inputs", "scale", "x"} | _PARAM_NAMES):
            return LambdaPattern("scale_sum", float(arguments["scale"]))
        if (len(in_shapes) == 1 and len(in_shapes[0]) == 3 and not arguments and names & _MEAN_NAMES
                and names <= _MEAN_NAMES | _MEAN_KWARGS | _MODULE_ALIASES | _PARAM_NAMES):
            return LambdaPattern("mean_time")
    shown = {k: v for k, v in config.items() if k not in ("function", "output_shape")}
    raise KerasImportError(
        f"Lambda layer {spec.name!r} is not one vidzoo recognises, and its code is never run. "
        f"Recognised: InceptionResNetV2's residual scaling (two inputs, arguments {{'scale': s}}) and a "
        f"mean over time of a (batch, time, channels) tensor. This one has {len(in_shapes)} input(s) of "
        f"shape {[list(s) for s in in_shapes]}, code naming {sorted(names) if code else 'no code (a named function)'}, "
        f"config {shown}"
    )


class MeanTime(KerasLayer):
    """The recognised mean-over-time Lambda: (B, T, C) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)

"""From one Keras layer config (and the shapes it is called on) to the module in ``layers.py``.

``CONVERTERS`` maps Keras class names to builders; ``unsupported_layers`` lists every layer of a
model (nested models and wrapped layers included) that has none, so a refusal names them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vidzoo.keras import layers as L
from vidzoo.keras.config import LayerSpec, ModelSpec
from vidzoo.keras.h5file import KerasImportError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class BuildContext:
    """What converters need besides the layer: which Keras wrote the file (hard_sigmoid differs)."""

    keras_major: int


Converter = Callable[[LayerSpec, Sequence[Shape], BuildContext], nn.Module]
CONVERTERS: dict[str, Converter] = {}


def converter(*class_names: str) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for name in class_names:
            CONVERTERS[name] = fn
        return fn
    return register


def build_layer(spec: LayerSpec, in_shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    """The module for ``spec`` called on tensors of ``in_shapes`` (Keras shapes, batch first)."""
    fn = CONVERTERS.get(spec.class_name)
    if fn is None:
        raise KerasImportError(f"layer {spec.name!r}: Keras layer type {spec.class_name!r} is not supported")
    fmt = spec.config.get("data_format")
    if fmt not in (None, "channels_last"):
        raise KerasImportError(f"layer {spec.name!r} ({spec.class_name}) uses data_format={fmt!r}; vidzoo reads channels_last models")
    return fn(spec, in_shapes, ctx)


def unsupported_layers(model: ModelSpec) -> list[str]:
    """``"name (ClassName)"`` for every layer, at any depth, that no converter handles."""
    found = []
    for layer in model.layers:
        found.extend(_unsupported(layer))
    return found


def _unsupported(layer: LayerSpec) -> list[str]:
    if layer.model is not None:
        return unsupported_layers(layer.model)
    if layer.class_name not in CONVERTERS:
        return [f"{layer.name} ({layer.class_name})"]
    return _unsupported(layer.inner) if layer.inner is not None else []


def _one(spec: LayerSpec, shapes: Sequence[Shape]) -> Shape:
    if len(shapes) != 1:
        raise KerasImportError(f"layer {spec.name!r} ({spec.class_name}) takes one input, got {len(shapes)}")
    return shapes[0]


def _act(spec: LayerSpec, ctx: BuildContext, key: str = "activation") -> Callable[[torch.Tensor], torch.Tensor]:
    return L.activation_fn(spec.config.get(key), ctx.keras_major, spec.name)


# --------------------------------------------------------------------------- converters


@converter("InputLayer")
def _input(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    return L.Elementwise(spec.name, L._identity, "identity")


def _conv_geometry(spec: LayerSpec, rank: int) -> dict[str, Any]:
    cfg = spec.config
    padding = str(cfg.get("padding", "valid")).lower()
    if padding not in ("valid", "same"):
        raise KerasImportError(f"layer {spec.name!r}: padding {padding!r} is not supported (valid, same)")
    return dict(kernel=L._tuple(cfg["kernel_size"], rank), stride=L._tuple(cfg.get("strides", 1), rank),
                dilation=L._tuple(cfg.get("dilation_rate", 1), rank), padding=padding)


@converter("Conv1D", "Conv2D", "Conv3D")
def _conv(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    rank = int(spec.class_name[-2])
    shape = _one(spec, shapes)
    cfg = spec.config
    return L.Conv(spec.name, rank, shape[-1], int(cfg["filters"]), groups=int(cfg.get("groups", 1)),
                  use_bias=bool(cfg.get("use_bias", True)), activation=_act(spec, ctx), **_conv_geometry(spec, rank))


@converter("DepthwiseConv1D", "DepthwiseConv2D")
def _depthwise(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    rank = int(spec.class_name[-2])
    channels = _one(spec, shapes)[-1]
    cfg = spec.config
    return L.Conv(spec.name, rank, channels, channels * int(cfg.get("depth_multiplier", 1)), groups=channels,
                  use_bias=bool(cfg.get("use_bias", True)), activation=_act(spec, ctx), depthwise=True,
                  **_conv_geometry(spec, rank))


@converter("SeparableConv1D", "SeparableConv2D")
def _separable(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    rank = int(spec.class_name[-2])
    cfg = spec.config
    return L.SeparableConv(spec.name, rank, _one(spec, shapes)[-1], int(cfg["filters"]), int(cfg.get("depth_multiplier", 1)),
                           use_bias=bool(cfg.get("use_bias", True)), activation=_act(spec, ctx), **_conv_geometry(spec, rank))


@converter("Dense")
def _dense(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    cfg = spec.config
    return L.Dense(spec.name, _one(spec, shapes)[-1], int(cfg["units"]), bool(cfg.get("use_bias", True)), _act(spec, ctx))


@converter("BatchNormalization")
def _batchnorm(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    shape = _one(spec, shapes)
    cfg = spec.config
    axis = cfg.get("axis", -1)
    axes = axis if isinstance(axis, list) else [axis]
    if len(axes) != 1 or int(axes[0]) % len(shape) != len(shape) - 1:
        raise KerasImportError(f"layer {spec.name!r}: BatchNormalization over axis {axis} is not supported, only the last (channels) axis")
    return L.BatchNorm(spec.name, shape[-1], float(cfg.get("epsilon", 1e-3)), float(cfg.get("momentum", 0.99)),
                       bool(cfg.get("center", True)), bool(cfg.get("scale", True)))


@converter("Activation")
def _activation(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    name = spec.config.get("activation")
    return L.Elementwise(spec.name, _act(spec, ctx), str(name))


@converter("ReLU")
def _relu(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    cfg = spec.config
    max_value = cfg.get("max_value")
    slope = float(cfg.get("negative_slope", 0.0) or 0.0)
    threshold = float(cfg.get("threshold", 0.0) or 0.0)

    def relu(x: torch.Tensor) -> torch.Tensor:
        y = torch.where(x >= threshold, x, slope * (x - threshold)) if slope or threshold else torch.relu(x)
        return y if max_value is None else torch.clamp(y, max=float(max_value))
    return L.Elementwise(spec.name, relu, f"relu(max_value={max_value}, negative_slope={slope}, threshold={threshold})")


@converter("LeakyReLU")
def _leaky(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    slope = float(spec.config.get("negative_slope", spec.config.get("alpha", 0.3)))
    return L.Elementwise(spec.name, lambda x: torch.nn.functional.leaky_relu(x, slope), f"leaky_relu({slope})")


@converter("Softmax")
def _softmax(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    axis = spec.config.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if not isinstance(axis, int):
        raise KerasImportError(f"layer {spec.name!r}: Softmax over several axes {axis} is not supported")
    return L.Elementwise(spec.name, lambda x: torch.softmax(x, dim=axis), "softmax")


@converter("Rescaling")
def _rescaling(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    scale, offset = spec.config.get("scale", 1.0), spec.config.get("offset", 0.0)
    if not isinstance(scale, (int, float)) or not isinstance(offset, (int, float)):
        raise KerasImportError(f"layer {spec.name!r}: Rescaling with per-channel scale/offset is not supported")
    return L.Elementwise(spec.name, lambda x: x * float(scale) + float(offset), f"x*{scale}+{offset}")


def _pool_converter(kind: str) -> Converter:
    def build(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
        rank = int(spec.class_name[-2])
        cfg = spec.config
        pool = L._tuple(cfg.get("pool_size", 2), rank)
        strides = cfg.get("strides")
        padding = str(cfg.get("padding", "valid")).lower()
        if padding not in ("valid", "same"):
            raise KerasImportError(f"layer {spec.name!r}: padding {padding!r} is not supported (valid, same)")
        _one(spec, shapes)
        return L.Pool(spec.name, kind, rank, pool, pool if strides is None else L._tuple(strides, rank), padding)
    return build


for _rank in (1, 2, 3):
    converter(f"MaxPooling{_rank}D", f"MaxPool{_rank}D")(_pool_converter("max"))
    converter(f"AveragePooling{_rank}D", f"AvgPool{_rank}D")(_pool_converter("avg"))


def _global_pool_converter(kind: str) -> Converter:
    def build(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
        _one(spec, shapes)
        return L.GlobalPool(spec.name, kind, bool(spec.config.get("keepdims", False)))
    return build


for _rank in (1, 2, 3):
    converter(f"GlobalAveragePooling{_rank}D", f"GlobalAvgPool{_rank}D")(_global_pool_converter("avg"))
    converter(f"GlobalMaxPooling{_rank}D", f"GlobalMaxPool{_rank}D")(_global_pool_converter("max"))


def _pairs(value: Any, rank: int, where: str) -> list[tuple[int, int]]:
    """Keras padding/cropping: an int, one int per axis, or a (before, after) pair per axis."""
    if isinstance(value, int):
        return [(value, value)] * rank
    value = list(value)
    if rank == 1 and len(value) == 2 and all(isinstance(v, int) for v in value):
        return [(value[0], value[1])]
    if len(value) == rank and all(isinstance(v, int) for v in value):
        return [(v, v) for v in value]
    if len(value) == rank and all(isinstance(v, (list, tuple)) and len(v) == 2 for v in value):
        return [(int(a), int(b)) for a, b in value]
    raise KerasImportError(f"layer {where!r}: cannot read padding/cropping {value!r} for {rank} axes")


@converter("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")
def _zero_padding(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    _one(spec, shapes)
    rank = int(spec.class_name[-2])
    return L.ZeroPad(spec.name, _pairs(spec.config.get("padding", 1), rank, spec.name))


@converter("Cropping1D", "Cropping2D", "Cropping3D")
def _cropping(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    _one(spec, shapes)
    rank = int(spec.class_name[-2])
    return L.ZeroPad(spec.name, _pairs(spec.config.get("cropping", 1), rank, spec.name), crop=True)


@converter("Flatten")
def _flatten(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    _one(spec, shapes)
    return L.Reshape(spec.name, None)


@converter("Reshape")
def _reshape(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    _one(spec, shapes)
    return L.Reshape(spec.name, spec.config["target_shape"])


@converter("Permute")
def _permute(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    _one(spec, shapes)
    return L.Permute(spec.name, spec.config["dims"])


@converter("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D")
def _dropout(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    _one(spec, shapes)
    return L.Dropout(spec.name, float(spec.config.get("rate", 0.0)), spec.class_name.startswith("Spatial"))


_MERGE_OPS = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply", "Average": "average",
              "Maximum": "maximum", "Minimum": "minimum", "Concatenate": "concat"}


@converter(*_MERGE_OPS)
def _merge(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    if len(shapes) < 2 or (spec.class_name == "Subtract" and len(shapes) != 2):
        raise KerasImportError(f"layer {spec.name!r} ({spec.class_name}) got {len(shapes)} input(s)")
    return L.Merge(spec.name, _MERGE_OPS[spec.class_name], axis=int(spec.config.get("axis", -1)))


@converter("CustomScaleLayer")
def _custom_scale(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    # Keras 3's InceptionResNetV2 residual scaling: inputs[0] + inputs[1] * scale.
    scale = spec.config.get("scale")
    if len(shapes) != 2 or not isinstance(scale, (int, float)):
        raise KerasImportError(
            f"layer {spec.name!r} (CustomScaleLayer) is recognised only as InceptionResNetV2's residual "
            f"scaling: two inputs and a numeric 'scale'; got {len(shapes)} input(s) and config {spec.config}"
        )
    return L.Merge(spec.name, "scale_sum", scale=float(scale))


@converter("Lambda")
def _lambda(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    pattern = L.recognise_lambda(spec, shapes)
    if pattern.kind == "scale_sum":
        return L.Merge(spec.name, "scale_sum", scale=pattern.scale)
    return L.MeanTime(spec.name)


@converter("LSTM", "GRU")
def _recurrent(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    shape = _one(spec, shapes)
    cfg = spec.config
    if len(shape) != 3:
        raise KerasImportError(f"layer {spec.name!r} ({spec.class_name}) needs (batch, time, features) input, got shape {list(shape)}")
    for flag in ("return_state", "time_major"):
        if cfg.get(flag):
            raise KerasImportError(f"layer {spec.name!r}: {spec.class_name} with {flag}=True is not supported")
    cell = spec.class_name.lower()
    return L.Recurrent(
        spec.name, cell, shape[-1], int(cfg["units"]), bool(cfg.get("use_bias", True)), _act(spec, ctx),
        _act(spec, ctx, "recurrent_activation"), bool(cfg.get("return_sequences", False)),
        bool(cfg.get("go_backwards", False)), reset_after=cell == "gru" and bool(cfg.get("reset_after", False)),
    )


@converter("TimeDistributed")
def _time_distributed(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    shape = _one(spec, shapes)
    assert spec.inner is not None  # config.layer_spec parses the wrapped layer
    inner = build_layer(spec.inner, [(shape[0] * shape[1], *shape[2:])], ctx)
    return L.TimeDistributed(spec.name, inner)


# Nested models (a Sequential or Functional model used as a layer) are built by
# vidzoo.keras.graph, which registers its converter for MODEL_CLASSES: the graph builds its
# layers with this module, so this module does not import it.

"""An imported Keras model as a vidzoo model: the ``keras_graph`` architecture.

``create_model("keras_graph", model_config=..., keras_version=...)`` rebuilds the PyTorch graph
from the Keras architecture JSON alone, so a saved model file (weights + that JSON in its kwargs)
loads like any other. Clips come in as vidzoo's ``(B, C, T, H, W)``; the model moves channels
last itself. Two kinds of Keras model::

    clip model (input T x H x W x C: C3D, I3D, LRCN)
        clip -> graph up to the classifier's input = forward_features
             -> classifier -> [reshape, mean over time] = logits; Keras' output = softmax(logits)

    frame model (input H x W x C, or the zoo's "avg" wrapper: TimeDistributed(frame model) then
    a mean over time)
        clip -> every frame through the frame graph up to the classifier's input = forward_features
             -> per-frame classifier -> per-frame softmax -> mean over T = Keras' output
             logits = log(mean of per-frame softmax), so softmax(logits) is exactly that mean

``forward_features`` gives the classifier's input in vidzoo's layouts: ``(B, F)`` ("vector"),
``(B, T, F)`` ("sequence", per-frame or per-step features) or, for maps, ``(B, F, T, H, W)``
("clip"; Keras keeps channels last, so the head moves them back).

``predict_proba`` returns Keras' output directly. The classifier (``get_classifier``) is the
Dense or 1x1 convolution that feeds the final softmax; ``reset_classifier`` replaces it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vidzoo.data.clip import ClipSpec
from vidzoo.keras.config import LayerSpec, TensorRef, parse_model
from vidzoo.keras.convert import BuildContext, unsupported_layers
from vidzoo.keras.graph import KerasGraph, module_key
from vidzoo.keras.h5file import KerasImportError, keras_major
from vidzoo.keras.layers import (
    Conv,
    Dense,
    Dropout,
    Elementwise,
    GlobalPool,
    MeanTime,
    Reshape,
    SeparableConv,
    TimeDistributed,
    _identity,
)
from vidzoo.models._base import ModelCfg, VideoClassifier, check_num_classes
from vidzoo.models._registry import register_model

ARCH = "keras_graph"
# Frames a frame (2D) model averages over when nothing else says: vidzoo's C2D default.
DEFAULT_FRAMES = 16
DEFAULT_SIZE = 224
_HEAD_PASSTHROUGH = (Reshape, MeanTime, Dropout)


@dataclass
class Head:
    """Where the classifier sits in the graph that runs per clip (or per frame)."""

    classifier: str  # layer name
    features: TensorRef  # the classifier's input
    chain: list[str]  # single-input layers from the classifier to the logits
    softmax: bool  # Keras applies a softmax to the logits


class KerasModel(VideoClassifier):
    """A Keras model rebuilt in PyTorch from its ``model_config`` (see the module docstring).

    Args:
        model_config: the Keras ``model_config`` JSON as a dict (Keras 2 or Keras 3 format).
        num_classes: outputs; None keeps the Keras classifier's; another count replaces it.
        keras_version: the ``keras_version`` that wrote the file (``hard_sigmoid`` differs
            between Keras 2 and 3).
        frames: default clip length for frame models, or for a clip model whose time
            dimension is free (16 if not given).
        size: frame size where the Keras input leaves it free (224 if not given).
    """

    def __init__(
        self,
        model_config: Mapping[str, Any],
        num_classes: int | None = None,
        keras_version: str = "3",
        frames: int | None = None,
        size: int | None = None,
    ) -> None:
        super().__init__()
        spec = parse_model(dict(model_config))
        missing = unsupported_layers(spec)
        if missing:
            raise KerasImportError(
                f"the Keras model {spec.name!r} uses {len(missing)} layer(s) of types vidzoo does not support: "
                f"{', '.join(missing)}"
            )
        shapes = spec.input_shapes()
        if len(shapes) != 1:
            raise KerasImportError(f"the Keras model {spec.name!r} has {len(shapes)} inputs; vidzoo models take one clip")
        shape = shapes[0]
        if len(shape) not in (4, 5):
            raise KerasImportError(
                f"the Keras model {spec.name!r} takes inputs of shape {list(shape)}; vidzoo reads frame "
                "models (batch, height, width, channels) and clip models (batch, frames, height, width, channels)"
            )
        in_chans = shape[-1]
        if in_chans is None:
            raise KerasImportError(f"the Keras model {spec.name!r} leaves its channel count free: {list(shape)}")
        height, width = (s if s is not None else (size or DEFAULT_SIZE) for s in shape[-3:-1])
        free_frames = len(shape) == 4 or shape[1] is None
        frames = (frames or DEFAULT_FRAMES) if free_frames else shape[1]
        ctx = BuildContext(keras_major(keras_version))
        example = (1, frames, height, width, in_chans) if len(shape) == 5 else (1, height, width, in_chans)
        self.graph = KerasGraph(spec, [example], ctx)
        self.keras_name = spec.name
        # The frame graph runs per frame: the whole graph for a 2D model, the wrapped model for
        # the zoo's "avg" construction; None for a clip model.
        self._frame_path = "graph" if len(shape) == 4 else _avg_wrapper_path(self.graph)
        self.head = _find_head(self.run_graph)
        classifier = self.get_classifier()
        self.num_features = classifier.in_features if isinstance(classifier, Dense) else classifier.in_channels
        self.num_classes = classifier.out_features if isinstance(classifier, Dense) else classifier.out_channels
        self.feature_info = []
        # The rank of the classifier's input, with time as an axis for frame models.
        rank = len(self.run_graph.shapes[self.head.features]) + (1 if self.frame_mode else 0)
        layouts = {2: "vector", 3: "sequence", 5: "clip"}
        if rank not in layouts:
            raise KerasImportError(
                f"the classifier of {spec.name!r} reads a {rank}-d tensor; vidzoo reads (batch, features), "
                "(batch, time, features) or (batch, time, height, width, features)"
            )
        self.default_cfg = ModelCfg(
            arch=ARCH,
            # A 2D model sees frames spread over the video, as vidzoo's C2D; the zoo's 64-frame
            # "avg" wrapper and clip models take consecutive frames.
            clip=ClipSpec(frames=frames, size=(height, width), norm={"scale": [0.0, 1.0]},
                          sampling="segment" if len(shape) == 4 else "dense"),
            in_chans=in_chans,
            feature_layout=layouts[rank],
            # A clip model's Keras input fixes the clip size when it leaves nothing free (None).
            fixed_input_size=not free_frames and all(s is not None for s in shape[-3:-1]),
        )
        if num_classes is not None and check_num_classes(num_classes) != self.num_classes:
            self.reset_classifier(num_classes)

    @property
    def frame_mode(self) -> bool:
        """True when the model classifies frames and averages their softmax over time."""
        return self._frame_path is not None

    @property
    def run_graph(self) -> KerasGraph:
        """The graph holding the classifier: the frame graph of a frame model, else the whole graph."""
        if self._frame_path is None:
            return self.graph
        graph = self.get_submodule(self._frame_path)
        assert isinstance(graph, KerasGraph)
        return graph

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, C, T, H, W)`` to the classifier's input (see the module docstring)."""
        self.check_input(x)
        x = x.permute(0, 2, 3, 4, 1)  # Keras' (B, T, H, W, C)
        if not self.frame_mode:
            feats = self.run_graph.run([x], [self.head.features])[0]
        else:
            batch, steps = x.shape[:2]
            feats = self.run_graph.run([x.reshape(batch * steps, *x.shape[2:])], [self.head.features])[0]
            feats = feats.reshape(batch, steps, *feats.shape[1:])
        return feats.movedim(-1, 1) if self.default_cfg.feature_layout == "clip" else feats

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features to logits ``(B, num_classes)``, or with ``pre_logits`` to ``(B, num_features)``
        (the features averaged over every axis but batch and channels)."""
        if self.default_cfg.feature_layout == "clip":
            feats = feats.movedim(1, -1)  # back to Keras' channels last
        if feats.shape[-1] != self.num_features:
            raise ValueError(f"{self.keras_name}'s head takes features (..., {self.num_features}), got shape {tuple(feats.shape)}")
        if pre_logits:
            return feats.mean(dim=tuple(range(1, feats.ndim - 1))) if feats.ndim > 2 else feats
        if not self.frame_mode:
            return self._classify(feats)
        batch, steps = feats.shape[:2]
        logits = self._classify(feats.reshape(batch * steps, *feats.shape[2:])).reshape(batch, steps, -1)
        if not self.head.softmax:
            return logits.mean(1)
        # log(mean_t softmax_t), computed stably: softmax of it is exactly the mean probability.
        return torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=1) - math.log(steps)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """What the Keras model outputs for clips ``x``: its softmax probabilities (for a frame
        model, the mean over frames of the per-frame softmax)."""
        logits = self(x)
        return torch.softmax(logits, dim=-1) if self.head.softmax else logits

    def _classify(self, feats: torch.Tensor) -> torch.Tensor:
        graph = self.run_graph
        y = graph.module(self.head.classifier)(feats)
        for name in self.head.chain:
            y = graph.module(name)(y)
        return y

    def get_classifier(self) -> nn.Module:
        return self.run_graph.module(self.head.classifier)

    def _replace_classifier(self, num_classes: int) -> None:
        old = self.get_classifier()
        weight = old.weight
        if isinstance(old, Dense):
            new: nn.Module = Dense(old.keras_name, old.in_features, num_classes, old.bias is not None, _identity)
        else:
            new = Conv(old.keras_name, old.rank, old.in_channels, num_classes, old.kernel, old.stride, old.dilation,
                       old.padding, 1, old.bias is not None, _identity)
        graph = self.run_graph
        graph.layers[module_key(self.head.classifier)] = new.to(device=weight.device, dtype=weight.dtype)
        for name in self.head.chain:  # e.g. I3D's Reshape((frames, classes)) after its logits conv
            module = graph.module(name)
            if isinstance(module, Reshape) and module.target and module.target[-1] == self.num_classes:
                module.target[-1] = num_classes


def _avg_wrapper_path(graph: KerasGraph) -> str | None:
    """``"graph.layers.<td>.inner"`` when the model is the zoo's "avg" construction: input ->
    TimeDistributed(a frame model) -> mean over time (GlobalAveragePooling1D or a mean Lambda)."""
    spec = graph.spec
    if len(spec.outputs) != 1:
        return None
    out = spec.layer(spec.outputs[0].layer)
    pool = graph.module(out.name)
    if not (isinstance(pool, MeanTime) or isinstance(pool, GlobalPool) and pool.kind == "avg" and not pool.keepdims):
        return None
    if len(out.nodes) != 1 or len(out.nodes[0]) != 1:
        return None
    wrapper = spec.layer(out.nodes[0][0].layer)
    td = graph.module(wrapper.name)
    if not (isinstance(td, TimeDistributed) and isinstance(td.inner, KerasGraph)):
        return None
    if [ref.layer for node in wrapper.nodes for ref in node] != [ref.layer for ref in spec.inputs]:
        return None
    return f"graph.layers.{module_key(wrapper.name)}.inner"


def _single_input(layer: LayerSpec) -> TensorRef:
    if len(layer.nodes) != 1 or len(layer.nodes[0]) != 1:
        raise KerasImportError(
            f"layer {layer.name!r} ({layer.class_name}) is part of the classification head but is called "
            f"{len(layer.nodes)} time(s) on {[len(n) for n in layer.nodes]} input(s); the head must be a chain"
        )
    return layer.nodes[0][0]


def _find_head(graph: KerasGraph) -> Head:
    """Walk back from the output: [softmax] <- [reshape / mean over time or space / dropout]* <- classifier."""
    spec = graph.spec
    if len(spec.outputs) != 1:
        raise KerasImportError(f"the Keras model {spec.name!r} has {len(spec.outputs)} outputs; vidzoo models have one")
    ref = spec.outputs[0]
    softmax = False
    layer = spec.layer(ref.layer)
    module = graph.module(layer.name)
    if isinstance(module, Elementwise) and module.fn_name == "softmax":
        softmax = True
        ref = _single_input(layer)
    chain: list[str] = []
    while True:
        layer = spec.layer(ref.layer)
        module = graph.module(layer.name)
        if isinstance(module, Dense) or isinstance(module, Conv) and not isinstance(module, SeparableConv) and not module.depthwise:
            activation = layer.config.get("activation")
            activation = activation.get("config") if isinstance(activation, dict) else activation
            if activation == "softmax" and not softmax and not chain:
                softmax = True
                module.activation = _identity  # the model returns logits; predict_proba applies it
            elif activation not in (None, "linear"):
                raise KerasImportError(
                    f"the classifier {layer.name!r} of {spec.name!r} has activation {activation!r}; vidzoo "
                    "expects a linear classifier, optionally followed by a softmax"
                )
            _single_input(layer)
            return Head(layer.name, layer.nodes[0][0], chain, softmax)
        if (isinstance(module, _HEAD_PASSTHROUGH) or isinstance(module, GlobalPool) and module.kind == "avg"
                or isinstance(module, Elementwise) and module.fn_name in ("linear", "None")):
            chain.insert(0, layer.name)
            ref = _single_input(layer)
            continue
        raise KerasImportError(
            f"cannot find the classifier of {spec.name!r}: walking back from its output, layer {layer.name!r} "
            f"({layer.class_name}) is neither a Dense/Conv classifier nor a reshape, mean over time or dropout "
            "between the classifier and the output"
        )


# A tiny clip model in the Keras 2 config format, for the registry's contract tests.
_TINY_CONFIG: dict[str, Any] = {
    "class_name": "Sequential",
    "config": {"name": "tiny", "layers": [
        {"class_name": "Conv3D", "config": {
            "name": "conv1", "batch_input_shape": [None, 4, 16, 16, 3], "filters": 4, "kernel_size": [3, 3, 3],
            "strides": [1, 2, 2], "padding": "same", "activation": "linear", "use_bias": False}},
        {"class_name": "BatchNormalization", "config": {
            "name": "bn1", "axis": -1, "epsilon": 0.001, "momentum": 0.99, "center": True, "scale": False}},
        {"class_name": "Activation", "config": {"name": "relu1", "activation": "relu"}},
        {"class_name": "GlobalAveragePooling3D", "config": {"name": "pool"}},
        {"class_name": "Dense", "config": {"name": "fc", "units": 5, "activation": "softmax"}},
    ]},
}


register_model(
    ARCH, KerasModel, test_args={"model_config": _TINY_CONFIG, "keras_version": "2.2.4-tf"},
    description="a Keras model rebuilt from its model_config: made by `vidzoo import-keras FILE.h5`",
)

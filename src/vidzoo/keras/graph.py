"""Run a Keras functional/Sequential graph with PyTorch modules, nested models included.

``KerasGraph`` builds one module per layer (``convert.build_layer``) in dependency order, finding
each layer's input shapes by running the layers before it on the meta device (shapes only, no
data), and then evaluates the graph's nodes in that order, dropping every intermediate tensor
after its last use. A layer called several times (shared weights) is one module run per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from vidzoo.keras.config import MODEL_CLASSES, LayerSpec, ModelSpec, TensorRef
from vidzoo.keras.convert import BuildContext, build_layer, converter
from vidzoo.keras.h5file import KerasImportError
from vidzoo.keras.layers import KerasLayer, KerasWeightError

Shape = tuple[int, ...]
Node = tuple[LayerSpec, int]


def module_key(name: str) -> str:
    """A Keras layer name as a ModuleDict key ('.' is not allowed there)."""
    return name.replace(".", "_")


class KerasGraph(KerasLayer):
    """A Keras model as a module: ``forward(*inputs)`` returns its output (a tuple if several).

    Args:
        spec: the parsed model.
        input_shapes: concrete Keras shapes (batch first) of the inputs it is built for; channel
            counts and Flatten sizes come from them.
        ctx: the build context (Keras major version).
        keras_name: the layer name when this graph is a nested model.
    """

    def __init__(self, spec: ModelSpec, input_shapes: Sequence[Shape], ctx: BuildContext, keras_name: str = "") -> None:
        super().__init__(keras_name or spec.name)
        if len(input_shapes) != len(spec.inputs):
            raise KerasImportError(f"model {spec.name!r} has {len(spec.inputs)} input(s), called with {len(input_shapes)}")
        self.spec = spec
        self.layers = nn.ModuleDict()
        self.nodes: list[tuple[str, int, list[TensorRef]]] = []  # (layer, call index, inputs) in run order
        shapes: dict[TensorRef, Shape] = dict(zip(spec.inputs, (tuple(s) for s in input_shapes)))
        for ref in spec.inputs:
            self.layers[module_key(ref.layer)] = build_layer(spec.layer(ref.layer), [shapes[ref]], ctx)
        for layer, call in _schedule(spec):
            inputs = layer.nodes[call]
            in_shapes = [shapes[ref] for ref in inputs]
            key = module_key(layer.name)
            if key not in self.layers:
                self.layers[key] = build_layer(layer, in_shapes, ctx)
            for index, shape in enumerate(_meta_output_shapes(self.layers[key], in_shapes, layer.name)):
                shapes[TensorRef(layer.name, call, index)] = shape
            self.nodes.append((layer.name, call, list(inputs)))
        self.shapes = shapes
        self._last_use = _last_uses(self.nodes, spec.outputs)

    def module(self, name: str) -> nn.Module:
        return self.layers[module_key(name)]

    def run(self, inputs: Sequence[torch.Tensor], targets: Sequence[TensorRef]) -> list[torch.Tensor]:
        """The tensors ``targets`` for ``inputs``, computing only the nodes up to the last one needed."""
        env: dict[TensorRef, torch.Tensor] = {}
        for ref, x in zip(self.spec.inputs, inputs):
            env[ref] = self.layers[module_key(ref.layer)](x)
        wanted = set(targets)
        for step, (name, call, refs) in enumerate(self.nodes):
            if all(t in env for t in wanted):
                break
            out = self.layers[module_key(name)](*[env[r] for r in refs])
            for index, tensor in enumerate(out if isinstance(out, tuple) else (out,)):
                env[TensorRef(name, call, index)] = tensor
            for ref in refs:  # free what no later node, and no target, reads
                if self._last_use.get(ref, -1) <= step and ref not in wanted:
                    env.pop(ref, None)
        missing = [t for t in targets if t not in env]
        if missing:
            raise KerasImportError(f"model {self.spec.name!r}: tensors {missing} are not computed by the graph")
        return [env[t] for t in targets]

    def forward(self, *inputs: torch.Tensor) -> Any:
        outs = self.run(inputs, self.spec.outputs)
        return outs[0] if len(outs) == 1 else tuple(outs)

    # ----------------------------------------------------------------------- weights

    def load_keras(self, weights: Sequence[tuple[str, np.ndarray]]) -> None:
        """Weights of a nested model, named ``[...]/<inner layer>/[...]/<kind>``: each goes to the
        inner layer named closest to its kind."""
        self.load_layer_weights(self._assign(weights))

    def load_layer_weights(self, by_layer: dict[str, Sequence[tuple[str, np.ndarray]]]) -> None:
        """Copy ``{layer name: [(weight name, array)]}`` into the layers; every problem (unknown
        layers, missing/unexpected/mis-shaped weights) is collected into one error."""
        problems = []
        unknown = sorted(set(by_layer) - {layer.name for layer in self.spec.layers})
        if unknown:
            problems.append(f"the file has weights for layers not in model {self.spec.name!r}: {', '.join(unknown)}")
        for layer in self.spec.layers:
            try:
                self.module(layer.name).load_keras(by_layer.get(layer.name, []))
            except KerasWeightError as err:
                problems.append(str(err))
        if problems:
            raise KerasWeightError("weights do not fit the model:\n  " + "\n  ".join(problems))

    def _assign(self, weights: Sequence[tuple[str, np.ndarray]]) -> dict[str, list[tuple[str, np.ndarray]]]:
        owner: dict[str, str] = {}  # any layer name in the subtree -> direct layer that holds it
        for layer in self.spec.layers:
            owner.setdefault(layer.name, layer.name)
        for layer in self.spec.layers:
            for name in _subtree_names(layer):
                owner.setdefault(name, layer.name)
        with_weights = [layer.name for layer in self.spec.layers if any(True for _ in self.module(layer.name).parameters())]
        out: dict[str, list[tuple[str, np.ndarray]]] = {}
        for name, array in weights:
            parts = name.split("/")[:-1]
            match = next((owner[p] for p in reversed(parts) if p in owner), None)
            if match is None and len(with_weights) == 1:
                match = with_weights[0]
            if match is None:
                raise KerasWeightError(
                    f"nested model {self.keras_name!r}: cannot tell which of its layers weight {name!r} belongs to"
                )
            out.setdefault(match, []).append((name, array))
        return out


def _subtree_names(layer: LayerSpec) -> list[str]:
    names = [layer.name]
    if layer.model is not None:
        for inner in layer.model.layers:
            names.extend(_subtree_names(inner))
    if layer.inner is not None:
        names.extend(_subtree_names(layer.inner))
    return names


def _schedule(spec: ModelSpec) -> list[Node]:
    """Every call of every non-input layer, ordered so that a call comes after its inputs."""
    done = {(ref.layer, ref.node) for ref in spec.inputs}
    pending = [(layer, call) for layer in spec.layers if (layer.name, 0) not in done for call in range(len(layer.nodes))]
    order: list[Node] = []
    while pending:
        still = []
        for layer, call in pending:
            if all((ref.layer, ref.node) in done for ref in layer.nodes[call]):
                order.append((layer, call))
                done.add((layer.name, call))
            else:
                still.append((layer, call))
        if len(still) == len(pending):
            names = sorted({layer.name for layer, _ in still})
            raise KerasImportError(
                f"model {spec.name!r}: layers {names[:10]} wait for tensors no layer produces "
                "(a cycle or a reference to a missing layer)"
            )
        pending = still
    return order


def _last_uses(nodes: Sequence[tuple[str, int, list[TensorRef]]], outputs: Sequence[TensorRef]) -> dict[TensorRef, int]:
    last: dict[TensorRef, int] = {}
    for step, (_, _, refs) in enumerate(nodes):
        for ref in refs:
            last[ref] = step
    for ref in outputs:
        last[ref] = len(nodes)
    return last


def _meta_output_shapes(module: nn.Module, in_shapes: Sequence[Shape], name: str) -> list[Shape]:
    """Output shapes of ``module`` for inputs of ``in_shapes``, computed on the meta device."""
    state = {key: torch.empty(t.shape, dtype=t.dtype, device="meta")
             for key, t in [*module.named_parameters(), *module.named_buffers()]}
    args = tuple(torch.empty(shape, device="meta") for shape in in_shapes)
    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = torch.func.functional_call(module, state, args)
    except (RuntimeError, ValueError, IndexError) as err:
        raise KerasImportError(
            f"layer {name!r} cannot take inputs of shape {[list(s) for s in in_shapes]}: {err}"
        ) from err
    finally:
        module.train(training)
    return [tuple(t.shape) for t in (out if isinstance(out, tuple) else (out,))]


def _nested(spec: LayerSpec, shapes: Sequence[Shape], ctx: BuildContext) -> nn.Module:
    """A model used as a layer (nested Sequential/Functional) is a graph of its own."""
    assert spec.model is not None
    return KerasGraph(spec.model, shapes, ctx, keras_name=spec.name)


converter(*MODEL_CLASSES)(_nested)

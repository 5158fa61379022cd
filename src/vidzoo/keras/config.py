"""Parse a Keras ``model_config`` (JSON) into a plain graph description, for Keras 2 and Keras 3.

Both formats describe a model as layers, each with its inbound nodes (one per call) naming the
tensors it was called on as ``(layer, node index, tensor index)``::

    Keras 2 (tf.keras)  "inbound_nodes": [[["input_1", 0, 0, {}], ["conv", 0, 0, {}]]]
    Keras 3             "inbound_nodes": [{"args": [[{"class_name": "__keras_tensor__",
                                            "config": {"keras_history": ["input_1", 0, 0]}}, ...]],
                                           "kwargs": {}}]

A Sequential model becomes the same description (a chain). Nested models and the layer inside a
TimeDistributed are parsed recursively. Nothing here knows what a layer computes (``layers.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vidzoo.keras.h5file import KerasImportError

MODEL_CLASSES = ("Functional", "Model", "Sequential")
WRAPPER_CLASSES = ("TimeDistributed",)
# Config keys that only matter for training from scratch; dropped to keep saved configs small.
_TRAINING_ONLY_SUFFIXES = ("_initializer", "_regularizer", "_constraint")


@dataclass(frozen=True)
class TensorRef:
    """The ``index``-th output of the ``node``-th call of layer ``layer``."""

    layer: str
    node: int = 0
    index: int = 0


@dataclass
class LayerSpec:
    """One layer: its Keras class and config, its calls, and what it contains.

    ``model`` is set for a nested model (a Functional/Sequential used as a layer), ``inner``
    for a wrapper (TimeDistributed) around another layer.
    """

    name: str
    class_name: str
    config: dict[str, Any]
    nodes: list[list[TensorRef]] = field(default_factory=list)
    model: ModelSpec | None = None
    inner: LayerSpec | None = None


@dataclass
class ModelSpec:
    """A Keras model as a graph: layers in config order, input and output tensors."""

    name: str
    layers: list[LayerSpec]
    inputs: list[TensorRef]
    outputs: list[TensorRef]

    def layer(self, name: str) -> LayerSpec:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KerasImportError(f"model {self.name!r} has no layer {name!r}")

    def input_shapes(self) -> list[tuple[int | None, ...]]:
        """Keras shapes (batch first, None where free) of the model's inputs."""
        return [input_shape(self.layer(ref.layer)) for ref in self.inputs]


def parse_model(config: dict[str, Any]) -> ModelSpec:
    """A ``{"class_name": ..., "config": ...}`` model config to a ModelSpec."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise KerasImportError(
            f"model_config must be an object with 'class_name' and 'config', got keys "
            f"{sorted(config) if isinstance(config, dict) else type(config).__name__}"
        )
    class_name = config["class_name"]
    body = config.get("config")
    if class_name == "Sequential":
        return _parse_sequential(body)
    if class_name in ("Functional", "Model"):
        return _parse_functional(body)
    raise KerasImportError(
        f"model_config describes a {class_name!r}; vidzoo reads Sequential and functional "
        f"(Model/Functional) models"
    )


def strip_training_config(obj: Any) -> Any:
    """A copy of a config without initializers, regularizers and constraints (unused at import)."""
    if isinstance(obj, dict):
        return {k: strip_training_config(v) for k, v in obj.items()
                if not (isinstance(k, str) and k.endswith(_TRAINING_ONLY_SUFFIXES))}
    if isinstance(obj, list):
        return [strip_training_config(v) for v in obj]
    return obj


def input_shape(layer: LayerSpec) -> tuple[int | None, ...]:
    """The batch shape an InputLayer declares (Keras 2 ``batch_input_shape``, Keras 3 ``batch_shape``)."""
    cfg = layer.config
    shape = cfg.get("batch_shape", cfg.get("batch_input_shape"))
    if shape is None:
        raise KerasImportError(f"input layer {layer.name!r} declares no shape (config {cfg})")
    return tuple(shape)


def layer_spec(entry: dict[str, Any], nodes: list[list[TensorRef]] | None = None) -> LayerSpec:
    """One layer entry ``{"class_name", "config", ...}`` to a LayerSpec (nested parts parsed)."""
    class_name = entry.get("class_name")
    config = entry.get("config")
    if not isinstance(class_name, str) or not isinstance(config, dict):
        raise KerasImportError(f"a layer entry needs 'class_name' and an object 'config', got {str(entry)[:200]}")
    name = entry.get("name") or config.get("name")
    if not name:
        raise KerasImportError(f"a {class_name} layer has no name: {str(entry)[:200]}")
    spec = LayerSpec(name, class_name, config, nodes or [])
    if class_name in MODEL_CLASSES:
        spec.model = parse_model({"class_name": class_name, "config": config})
    elif class_name in WRAPPER_CLASSES or "layer" in config and isinstance(config["layer"], dict):
        spec.inner = layer_spec(config["layer"])
    return spec


# --------------------------------------------------------------------------- functional


def _parse_functional(body: Any) -> ModelSpec:
    if not isinstance(body, dict) or not isinstance(body.get("layers"), list):
        raise KerasImportError("a functional model config needs a 'layers' list")
    layers = []
    for entry in body["layers"]:
        nodes = [_parse_node(node, entry.get("name", "?")) for node in entry.get("inbound_nodes", [])]
        layers.append(layer_spec(entry, nodes))
    name = body.get("name", "model")
    return ModelSpec(name, layers, _refs(body.get("input_layers"), name), _refs(body.get("output_layers"), name))


def _refs(value: Any, model: str) -> list[TensorRef]:
    """``input_layers``/``output_layers``: ``[[name, node, index], ...]`` or Keras 3's single
    ``[name, node, index]``."""
    if not isinstance(value, list) or not value:
        raise KerasImportError(f"model {model!r}: input_layers/output_layers missing or empty")
    if isinstance(value[0], str):
        value = [value]
    return [TensorRef(str(v[0]), int(v[1]), int(v[2])) for v in value]


def _parse_node(node: Any, layer: str) -> list[TensorRef]:
    if isinstance(node, dict):  # Keras 3
        if _tensors_in(node.get("kwargs", {})):
            raise KerasImportError(
                f"layer {layer!r} is called with tensors as keyword arguments "
                f"({sorted(node.get('kwargs', {}))}), which vidzoo does not support"
            )
        return _tensors_in(node.get("args", []))
    if isinstance(node, list):  # Keras 2: [[name, node, index, kwargs], ...]
        return [TensorRef(str(item[0]), int(item[1]), int(item[2])) for item in node]
    raise KerasImportError(f"layer {layer!r}: cannot read inbound node {str(node)[:200]}")


def _tensors_in(obj: Any) -> list[TensorRef]:
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            history = obj["config"]["keras_history"]
            return [TensorRef(str(history[0]), int(history[1]), int(history[2]))]
        return [ref for value in obj.values() for ref in _tensors_in(value)]
    if isinstance(obj, list):
        return [ref for value in obj for ref in _tensors_in(value)]
    return []


# --------------------------------------------------------------------------- sequential


def _parse_sequential(body: Any) -> ModelSpec:
    # Keras 1 and early Keras 2 wrote a bare list of layers.
    if isinstance(body, list):
        body = {"name": "sequential", "layers": body}
    if not isinstance(body, dict) or not isinstance(body.get("layers"), list) or not body["layers"]:
        raise KerasImportError("a Sequential model config needs a non-empty 'layers' list")
    name = body.get("name", "sequential")
    entries = list(body["layers"])
    if entries[0].get("class_name") != "InputLayer":
        first = entries[0].get("config", {})
        shape = first.get("batch_input_shape") or first.get("batch_shape") or body.get("build_input_shape")
        if shape is None:
            raise KerasImportError(
                f"Sequential model {name!r} declares no input shape (no InputLayer, no "
                "batch_input_shape on its first layer, no build_input_shape)"
            )
        entries.insert(0, {"class_name": "InputLayer",
                           "config": {"name": f"{name}_input", "batch_input_shape": list(shape)}})
    layers: list[LayerSpec] = []
    for entry in entries:
        nodes = [[TensorRef(layers[-1].name)]] if layers else []
        layers.append(layer_spec(entry, nodes))
    return ModelSpec(name, layers, [TensorRef(layers[0].name)], [TensorRef(layers[-1].name)])

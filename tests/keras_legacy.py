"""Test helper: rewrite a Keras-3-saved ``.h5`` into the layout tf.keras 2.x (TF 1.14,
``keras_version`` "2.2.4-tf") wrote, with h5py, so the importer is tested on both layouts.

The legacy ``tf_keras`` package needs TensorFlow, which is not installed here, so the groups and
attributes are written directly. What changes:

- ``model_config``: Keras 2 JSON. ``Functional`` is ``Model``; no ``module`` / ``registered_name`` /
  ``build_config``; dtypes are plain strings; InputLayer has ``batch_input_shape``; a Sequential
  has no InputLayer entry (its first layer carries ``batch_input_shape``); ``inbound_nodes`` are
  nested lists ``[[[layer, node, index, {}], ...], ...]``; Lambda functions are
  ``[code, defaults, closure]`` with ``function_type``; Keras 3's ``CustomScaleLayer`` becomes the
  ``Lambda`` with ``arguments={"scale": s}`` that keras_applications' InceptionResNetV2 used.
- weights: ``<layer>/<layer>/kernel:0``; a wrapped layer's and an RNN cell's weights are named by
  the wrapper/RNN layer (``td/td/kernel:0``, ``lstm/lstm/kernel:0``); a nested model's (plain or
  inside TimeDistributed) by its inner layers, nested under the outer group
  (``td/conv1/kernel:0`` with weight name ``conv1/kernel:0``).
- attributes: ``keras_version`` "2.2.4-tf", ``backend`` "tensorflow"; optionally ``layer_names``
  split into chunks as Keras does for long lists.
"""

from __future__ import annotations

import base64
import json
import marshal
from pathlib import Path
from typing import Any

import h5py
import numpy as np

TF_KERAS_VERSION = "2.2.4-tf"
_MODEL_CLASSES = ("Functional", "Model", "Sequential")
_DROP_KEYS = ("module", "registered_name", "build_config", "compile_config", "shared_object_id")


def _irv2_scale_lambda_code() -> str:
    """The marshalled code of keras_applications' InceptionResNetV2 residual-scaling lambda."""
    return base64.b64encode(marshal.dumps((lambda inputs, scale: inputs[0] + inputs[1] * scale).__code__)).decode()


def to_tf_keras2(src: str | Path, dst: str | Path, *, chunk_layer_names: int = 1,
                 activations: dict[str, str] | None = None) -> Path:
    """Write ``dst``: the Keras-3 ``.h5`` model ``src`` in tf.keras 2.x's layout.

    ``chunk_layer_names`` > 1 splits ``layer_names`` into that many ``layer_names0``, ... attributes.
    ``activations`` renames custom activation functions, e.g. ``{"k2_hard_sigmoid": "hard_sigmoid"}``
    for a model built in Keras 3 with Keras 2's hard sigmoid written as a function.
    """
    src, dst = Path(src), Path(dst)
    with h5py.File(src, "r") as old, h5py.File(dst, "w") as new:
        config = json.loads(old.attrs["model_config"])
        converted = _rename_activations(model_config_to_keras2(config), activations or {})
        new.attrs["model_config"] = json.dumps(converted).encode()
        new.attrs["keras_version"] = TF_KERAS_VERSION.encode()
        new.attrs["backend"] = b"tensorflow"
        old_weights, weights = old["model_weights"], new.create_group("model_weights")
        layer_names = [_text(n) for n in old_weights.attrs["layer_names"]]
        _write_list_attr(weights, "layer_names", layer_names, chunk_layer_names)
        weights.attrs["keras_version"] = TF_KERAS_VERSION.encode()
        weights.attrs["backend"] = b"tensorflow"
        layers = {entry["config"]["name"]: entry for entry in _layer_entries(config)}
        for name in layer_names:
            group = weights.create_group(name)
            names = []
            for old_name in (_text(n) for n in old_weights[name].attrs["weight_names"]):
                new_name = keras2_weight_name(name, old_name, layers.get(name))
                group.create_dataset(new_name, data=np.asarray(old_weights[name][old_name]))
                names.append(new_name)
            _write_list_attr(group, "weight_names", names, 1)
    return dst


def keras2_weight_name(layer: str, keras3_name: str, entry: dict[str, Any] | None) -> str:
    """A Keras 3 weight path (``td/c/kernel``, ``frame/c1/kernel``, ``lstm/lstm_cell/kernel``) as
    tf.keras 2.x named it."""
    parts = keras3_name.split("/")
    kind = parts[-1]
    if entry is not None and _holds_model(entry):
        # Inner layers of a nested model keep their own names (no outer scope); RNN cells and
        # the model's own name drop out.
        inner = [p for p in parts[:-1] if not p.endswith("_cell")]
        return f"{inner[-1]}/{kind}:0"
    return f"{layer}/{kind}:0"


def model_config_to_keras2(config: dict[str, Any]) -> dict[str, Any]:
    """A Keras 3 ``{"class_name", "config"}`` model config in tf.keras 2.x's format."""
    class_name = config["class_name"]
    body = config["config"]
    if class_name == "Sequential":
        layers = [layer_to_keras2(entry, sequential=True) for entry in body["layers"]]
        if layers and layers[0]["class_name"] == "InputLayer":
            shape = layers.pop(0)["config"]["batch_input_shape"]
            layers[0]["config"]["batch_input_shape"] = shape
        return {"class_name": "Sequential", "config": {"name": body["name"], "layers": layers}}
    return {"class_name": "Model", "config": {
        "name": body["name"],
        "layers": [layer_to_keras2(entry) for entry in body["layers"]],
        "input_layers": _ref_list(body["input_layers"]),
        "output_layers": _ref_list(body["output_layers"]),
    }}


def layer_to_keras2(entry: dict[str, Any], sequential: bool = False) -> dict[str, Any]:
    """One Keras 3 layer entry in tf.keras 2.x's format."""
    class_name = entry["class_name"]
    if class_name in _MODEL_CLASSES:
        converted = model_config_to_keras2({"class_name": class_name, "config": entry["config"]})
        out = {"name": entry["config"]["name"], **converted}
    else:
        out = {"name": entry["config"]["name"], "class_name": class_name, "config": _config_to_keras2(class_name, entry["config"])}
        if class_name == "CustomScaleLayer":
            out["class_name"] = "Lambda"
            out["config"] = {"name": entry["config"]["name"], "trainable": True, "dtype": "float32",
                             "function": [_irv2_scale_lambda_code(), None, None], "function_type": "lambda",
                             "module": "keras_applications.inception_resnet_v2", "output_shape": None,
                             "output_shape_type": "raw", "output_shape_module": None,
                             "arguments": {"scale": entry["config"]["scale"]}}
    if not sequential:
        out["inbound_nodes"] = [_node_to_keras2(node) for node in entry.get("inbound_nodes", [])]
    if sequential:
        out.pop("name")
    return out


def _config_to_keras2(class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if key in _DROP_KEYS:
            continue
        if key == "dtype":
            value = "float32"
        elif key == "batch_shape":
            key = "batch_input_shape"
        elif key == "layer" and isinstance(value, dict):
            value = layer_to_keras2(value, sequential=True)
            if value["class_name"] not in _MODEL_CLASSES:
                value.pop("inbound_nodes", None)
        elif key == "function" and isinstance(value, dict) and value.get("class_name") == "__lambda__":
            code = value["config"]
            out.update(function_type="lambda", module="__main__", output_shape=None,
                       output_shape_type="raw", output_shape_module=None)
            value = [code["code"], code.get("defaults"), code.get("closure")]
        elif key in ("optional", "sparse", "ragged", "use_cudnn", "seed", "quantization_config", "synchronized"):
            continue
        out[key] = value
    return out


def _node_to_keras2(node: Any) -> list[list[Any]]:
    refs = []

    def collect(obj: Any) -> None:
        if isinstance(obj, dict):
            if obj.get("class_name") == "__keras_tensor__":
                history = obj["config"]["keras_history"]
                refs.append([history[0], history[1], history[2], {}])
            else:
                for value in obj.values():
                    collect(value)
        elif isinstance(obj, list):
            for value in obj:
                collect(value)

    collect(node.get("args", []) if isinstance(node, dict) else node)
    return refs


def _ref_list(value: list[Any]) -> list[list[Any]]:
    return [value] if value and isinstance(value[0], str) else value


def _layer_entries(config: dict[str, Any]) -> list[dict[str, Any]]:
    return list(config["config"]["layers"])


def _holds_model(entry: dict[str, Any]) -> bool:
    if entry["class_name"] in _MODEL_CLASSES:
        return True
    inner = entry["config"].get("layer")
    return isinstance(inner, dict) and inner.get("class_name") in _MODEL_CLASSES


def _rename_activations(obj: Any, names: dict[str, str]) -> Any:
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if key.endswith("activation") and isinstance(value, dict) and value.get("config") in names:
                value = names[value["config"]]
            out[key] = _rename_activations(value, names)
        return out
    if isinstance(obj, list):
        return [_rename_activations(v, names) for v in obj]
    return obj


def _write_list_attr(group: h5py.Group, name: str, items: list[str], chunks: int) -> None:
    data = np.array([item.encode() for item in items], dtype="S") if items else np.array([], dtype="S1")
    if chunks <= 1:
        group.attrs[name] = data
        return
    for index, part in enumerate(np.array_split(data, chunks)):
        group.attrs[f"{name}{index}"] = part


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

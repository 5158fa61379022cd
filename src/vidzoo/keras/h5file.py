"""Read a Keras HDF5 (``.h5``) file with h5py: the architecture JSON and the weights, nothing else.

Nothing in the file is executed: the ``model_config`` attribute is parsed as JSON, and the
weights are plain datasets found through each layer group's ``weight_names`` attribute (never by
guessing paths), which covers both layouts::

    tf.keras 2.x   model_weights/conv1/conv1/kernel:0          weight_names ["conv1/kernel:0", ...]
    Keras 3        model_weights/conv1/conv1/kernel            weight_names ["conv1/kernel", ...]

Long attribute lists are split by Keras into ``layer_names0``, ``layer_names1``, ...; they are
joined here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidzoo.fileio import file_sha256


class KerasImportError(ValueError):
    """A Keras file that vidzoo cannot import: the message says what and why."""


@dataclass
class KerasFile:
    """What a Keras ``.h5`` file holds.

    Attributes:
        path: the file read.
        sha256: SHA-256 of the file's bytes.
        keras_version: the ``keras_version`` attribute ("2.2.4-tf", "3.3.3", ...; "" if absent).
        backend: the ``backend`` attribute ("tensorflow", "torch", ...).
        model_config: the parsed ``model_config`` JSON, or None for a weights-only file.
        weights: layer name -> [(weight name, array)] in the file's order, for every layer listed
            in ``layer_names`` (layers without weights map to an empty list).
    """

    path: Path
    sha256: str
    keras_version: str
    backend: str
    model_config: dict[str, Any] | None
    weights: dict[str, list[tuple[str, np.ndarray]]] = field(default_factory=dict)

    @property
    def keras_major(self) -> int:
        """2 for files from Keras 1/2 and tf.keras (TF 1.x/2.x), 3 for Keras 3."""
        return keras_major(self.keras_version)


def keras_major(version: str) -> int:
    """The major version in a ``keras_version`` string; files without one are taken as Keras 2
    (the attribute exists since Keras 2.0; Keras 3 always writes it)."""
    head = version.strip().split(".", 1)[0]
    return int(head) if head.isdigit() and int(head) >= 3 else 2


def read_keras_file(path: str | os.PathLike[str]) -> KerasFile:
    """Read the architecture and all weights of a Keras ``.h5`` file.

    Raises:
        FileNotFoundError: no such file.
        KerasImportError: not an HDF5 file, not a Keras file, or unreadable attributes.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise KerasImportError(
            f"{path} is not an HDF5 file, so not a Keras .h5 model (Keras 3's .keras zip files and "
            "TensorFlow SavedModel folders are not read; save the model with model.save('x.h5'))"
        )
    with h5py.File(path, "r") as handle:
        keras_version = _text(handle.attrs.get("keras_version", b""))
        backend = _text(handle.attrs.get("backend", b""))
        raw = handle.attrs.get("model_config")
        config = None
        if raw is not None:
            try:
                config = json.loads(_text(raw))
            except json.JSONDecodeError as err:
                raise KerasImportError(f"{path}: the model_config attribute is not valid JSON: {err}") from err
            if not isinstance(config, dict):
                raise KerasImportError(f"{path}: model_config must be a JSON object, got {type(config).__name__}")
        # model.save puts the weights under model_weights; model.save_weights at the root.
        root = handle["model_weights"] if "model_weights" in handle else handle
        if not keras_version:
            keras_version = _text(root.attrs.get("keras_version", b""))
            backend = backend or _text(root.attrs.get("backend", b""))
        layer_names = read_list_attr(root, "layer_names")
        if not layer_names and config is None:
            raise KerasImportError(
                f"{path} is an HDF5 file but not a Keras model: it has no model_config attribute and "
                f"no layer_names list (top-level keys: {sorted(handle.keys())[:10]})"
            )
        weights = {name: _layer_weights(root, name, path) for name in layer_names}
    return KerasFile(path, file_sha256(path), keras_version, backend, config, weights)


def read_list_attr(group: Any, name: str) -> list[str]:
    """A list-of-strings attribute, joined from Keras' ``name0``, ``name1``, ... chunks if split."""
    if name in group.attrs:
        return [_text(item) for item in group.attrs[name]]
    items: list[str] = []
    chunk = 0
    while f"{name}{chunk}" in group.attrs:
        items.extend(_text(item) for item in group.attrs[f"{name}{chunk}"])
        chunk += 1
    return items


def _layer_weights(root: Any, layer: str, path: Path) -> list[tuple[str, np.ndarray]]:
    if layer not in root:
        raise KerasImportError(f"{path}: layer_names lists {layer!r} but the file has no group for it")
    group = root[layer]
    out = []
    for name in read_list_attr(group, "weight_names"):
        if name not in group:
            raise KerasImportError(
                f"{path}: layer {layer!r} lists weight {name!r} in weight_names but has no such dataset"
            )
        out.append((name, np.asarray(group[name][()])))
    return out


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    return str(value)

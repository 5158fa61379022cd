"""Model files: one ``.safetensors`` file with the weights and a description to rebuild the model.

The safetensors header carries one metadata entry, ``"vidzoo"``, whose value is a JSON object:

- ``format_version``: 1.
- ``arch``, ``kwargs``: ``create_model(arch, **kwargs)`` rebuilds the module.
- ``classes``: class names in logit order.
- ``input`` (``frames``, ``height``, ``width``, ``channels``), ``norm``, ``sampling``
  (``kind``, ``frame_stride``): the preprocessing the model expects.
- ``history``: ``{"name": ..., "details": {...}}``, what the weights were trained on.
- ``extra``: free-form metadata (metrics, notes).
- ``vidzoo_version``, ``created`` (ISO 8601, UTC), ``tensors_sha256`` (see ``tensors_sha256``).

Loading never unpickles: safetensors holds only raw tensor bytes and JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vidzoo import __version__
from vidzoo.fileio import write_atomically
from vidzoo.models import VideoClassifier, create_model

FORMAT_VERSION = 1
METADATA_KEY = "vidzoo"
SUFFIX = ".safetensors"
_REQUIRED_KEYS = (
    "format_version", "arch", "kwargs", "classes", "norm", "sampling", "tensors_sha256"
)
# History names are one field of the file name, where '-' separates fields.
_HISTORY_RE = re.compile(r"[A-Za-z0-9_.+]+")


class ModelFileError(ValueError):
    """A file that is not a valid vidzoo model file."""


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 hex digest of named tensors, independent of how a file lays them out.

    For each name in sorted order, the hash is fed the UTF-8 text
    ``f"{name}\\n{dtype}\\n{shape}\\n"`` (``dtype`` like ``float32``, ``shape`` as
    comma-separated sizes such as ``64,3,3,3,3``, empty for a scalar), then the tensor's
    elements as raw bytes in C order and the machine's byte order (little-endian, as in
    safetensors files, on x86 and ARM).
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        dtype = str(tensor.dtype).removeprefix("torch.")
        shape = ",".join(map(str, tensor.shape))
        digest.update(f"{name}\n{dtype}\n{shape}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def default_model_filename(model: VideoClassifier, history: str) -> str:
    """The zoo file name ``(arch)-(T)x(H)x(W)x(C)-(classes)-(history).safetensors``.

    For example ``c3d-16x112x112x3-101-ucf101.safetensors``. ``history`` may use letters,
    digits, '_', '.' and '+' (no '-' or '/', which would break the name apart).
    """
    _check_history_name(history)
    cfg = model.default_cfg
    frames, height, width = cfg.input_size
    shape = f"{frames}x{height}x{width}x{cfg.in_chans}"
    return f"{cfg.arch}-{shape}-{model.num_classes}-{history}{SUFFIX}"


def save_model(
    model: VideoClassifier,
    path: str | os.PathLike[str] | None = None,
    *,
    directory: str | os.PathLike[str] = ".",
    classes: Sequence[str] | None = None,
    history: str | Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` and its description to one ``.safetensors`` file, atomically.

    Args:
        model: a model built by ``create_model`` (it records the arch and kwargs to rebuild).
        path: file to write; None means ``default_model_filename`` inside ``directory``.
        directory: where a default-named file goes; unused when ``path`` is given.
        classes: class names in logit order; defaults to ``model.classes``, else
            ``class_000``, ``class_001``, ...
        history: what the weights were trained on: a name such as ``"synthetic"`` or
            ``"ucf101"``, or a mapping with ``"name"`` plus free-form details. None: ``"unknown"``.
        extra: free-form JSON-serialisable metadata, e.g. metrics.

    Returns:
        The path written. Missing parent folders are created; an existing file is replaced
        only once the new one is complete on disk.
    """
    if model.init_kwargs is None:
        raise ValueError(
            f"{type(model).__name__} was not built by vidzoo.models.create_model, so the file "
            "could not say how to rebuild it; build it with create_model(name, ...)"
        )
    history_meta = _history_metadata(history)
    classes = _class_names(model, classes)
    if path is None:
        path = Path(directory) / default_model_filename(model, history_meta["name"])
    path = Path(path)

    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    cfg = model.default_cfg
    frames, height, width = cfg.input_size
    meta = {
        "format_version": FORMAT_VERSION,
        "arch": cfg.arch,
        # reset_classifier may have changed the class count since create_model saw the kwargs.
        # The file holds the weights: rebuilding must not fetch a pretrained backbone again.
        "kwargs": {**{k: (False if k.startswith("pretrained") else v) for k, v in model.init_kwargs.items()},
                   "num_classes": model.num_classes},
        "classes": classes,
        "input": {"frames": frames, "height": height, "width": width, "channels": cfg.in_chans},
        "norm": {key: list(values) for key, values in cfg.norm.items()},
        "sampling": {"kind": cfg.sampling, "frame_stride": cfg.frame_stride},
        "history": history_meta,
        "extra": dict(extra or {}),
        "vidzoo_version": __version__,
        "tensors_sha256": tensors_sha256(tensors),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for key in ("kwargs", "history", "extra"):
        try:
            json.dumps(meta[key])
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{key} must be JSON-serialisable to go in a model file: {err}"
            ) from None

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda temp: save_file(tensors, temp, metadata={METADATA_KEY: json.dumps(meta)}))
    return path


def read_model_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``"vidzoo"`` description of a model file, read from its header only.

    The tensors are not read, so their checksum is not verified here (``load_model`` does).
    """
    return _read(Path(path), with_tensors=False)[0]


def load_model(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> VideoClassifier:
    """Rebuild the model saved in ``path``, verified against its checksum, in eval mode.

    The model's ``classes`` and ``default_cfg`` (classes, input size, norm, sampling) come from
    the file: the preprocessing it was trained with, which may differ from the architecture's default.
    Raises ModelFileError for anything that is not an intact vidzoo model file.
    """
    path = Path(path)
    meta, tensors = _read(path, with_tensors=True)
    actual = tensors_sha256(tensors)
    if actual != meta["tensors_sha256"]:
        raise ModelFileError(
            f"{path}: tensors_sha256 mismatch: the header records {meta['tensors_sha256']}, "
            f"the tensors hash to {actual}; the file is corrupted or was modified"
        )
    try:
        model = create_model(meta["arch"], **meta["kwargs"])
        model.load_state_dict(tensors, strict=True)
        model.classes = meta["classes"]
        clip = meta["input"]
        model.default_cfg = model.default_cfg.replace(
            input_size=(clip["frames"], clip["height"], clip["width"]),
            norm=meta["norm"],
            sampling=meta["sampling"]["kind"],
            frame_stride=meta["sampling"]["frame_stride"],
        )
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        raise ModelFileError(
            f"{path}: cannot rebuild {meta['arch']!r} with kwargs {meta['kwargs']}: {err}"
        ) from err
    return model.to(map_location).eval()


def _read(path: Path, with_tensors: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        with safe_open(path, framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            names = handle.keys() if with_tensors else []
            tensors = {name: handle.get_tensor(name) for name in names}
    except SafetensorError as err:
        raise ModelFileError(f"{path} is not a safetensors file: {err}") from err

    if METADATA_KEY not in header:
        raise ModelFileError(
            f"{path} is a safetensors file but not a vidzoo model file: its header has no "
            f"{METADATA_KEY!r} metadata (found {sorted(header) or 'none'})"
        )
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise ModelFileError(f"{path}: {METADATA_KEY!r} metadata is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ModelFileError(
            f"{path}: {METADATA_KEY!r} metadata must be a JSON object, got {meta!r}"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in meta]
    if missing:
        raise ModelFileError(f"{path}: {METADATA_KEY!r} metadata lacks {', '.join(missing)}")
    if not isinstance(meta["format_version"], int) or meta["format_version"] > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has format_version {meta['format_version']!r}; this vidzoo {__version__} "
            f"reads up to {FORMAT_VERSION}, so upgrade vidzoo to load it"
        )
    if not isinstance(meta["kwargs"], dict):
        raise ModelFileError(f"{path}: kwargs must be a JSON object, got {meta['kwargs']!r}")
    return meta, tensors


def _check_history_name(name: str) -> None:
    if not isinstance(name, str) or not _HISTORY_RE.fullmatch(name):
        raise ValueError(
            f"history name {name!r} must be letters, digits, '_', '.' or '+' "
            "(it is a field of the model file name, so no '-' or '/'), e.g. 'ucf101' or 'synthetic'"
        )


def _history_metadata(history: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if history is None:
        history = "unknown"
    if isinstance(history, str):
        name, details = history, {}
    elif "name" in history:
        details = dict(history)
        name = details.pop("name")
    else:
        raise ValueError(f"a history mapping needs a 'name' key, got keys {sorted(history)}")
    _check_history_name(name)
    return {"name": name, "details": details}


def _class_names(model: VideoClassifier, classes: Sequence[str] | None) -> list[str]:
    if classes is None:
        classes = model.classes
    if classes is None:
        digits = max(3, len(str(model.num_classes - 1)))
        return [f"class_{i:0{digits}d}" for i in range(model.num_classes)]
    classes = list(classes)
    if len(classes) != model.num_classes:
        raise ValueError(
            f"got {len(classes)} class names for a model with {model.num_classes} outputs"
        )
    if not all(isinstance(c, str) for c in classes):
        raise ValueError(f"class names must be strings, got {classes!r}")
    duplicates = sorted(name for name, count in Counter(classes).items() if count > 1)
    if duplicates:
        raise ValueError(f"class names must be unique, repeated: {duplicates}")
    return classes

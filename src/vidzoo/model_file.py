"""The model file format: one ``.safetensors`` file with the weights and a description to rebuild
the model. This module reads and writes the format; ``vidzoo.models.save_model`` /
``load_model`` turn models into files and back.

The safetensors header carries one metadata entry, ``"vidzoo"``, whose value is a JSON object:

- ``format_version``: 2 (version 1 files are read and upgraded on the fly, see `upgrade`).
- ``arch``, ``model_args``: ``create_model(arch, **model_args)`` rebuilds the module.
- ``classes``: class names in logit order.
- ``clip``: the clip description (`vidzoo.data.clip.ClipSpec`): frames, frame_stride, sampling,
  size, resize_short, crops, clips_per_video, norm, short_policy. What the model was trained on,
  and what every later stage cuts.
- ``in_chans``: channels per frame.
- ``history``: ``{"name": ..., "details": {...}}``, what the weights were trained on.
- ``extra``: free-form metadata (metrics, notes).
- ``vidzoo_version``, ``created`` (ISO 8601, UTC), ``tensors_sha256`` (see ``tensors_sha256``;
  a hash of the tensors, not of the file's bytes).

Loading never unpickles: safetensors holds only raw tensor bytes and JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vidzoo import __version__
from vidzoo.data.clip import ClipSpec
from vidzoo.fileio import write_atomically

__all__ = [
    "FORMAT_VERSION", "METADATA_KEY", "SUFFIX", "ModelFileError", "history_metadata", "model_filename",
    "read_model_file", "read_model_metadata", "tensors_sha256", "upgrade", "write_model_file",
]

FORMAT_VERSION = 2
METADATA_KEY = "vidzoo"
SUFFIX = ".safetensors"
_REQUIRED_KEYS = ("format_version", "arch", "model_args", "classes", "clip", "tensors_sha256")
# History names are one field of the file name, where '-' separates fields.
_HISTORY_RE = re.compile(r"[A-Za-z0-9_.+]+")
# Version 1 constructor argument names, as version 2 (and the rest of vidzoo) spells them.
_V1_KWARGS = {"num_frames": "frames", "img_size": "size", "drop_rate": "dropout"}


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


def model_filename(arch: str, clip: ClipSpec, in_chans: int, num_classes: int, history: str) -> str:
    """The zoo file name ``(arch)-(T)x(H)x(W)x(C)-(classes)-(history).safetensors``.

    For example ``c3d-16x112x112x3-101-ucf101.safetensors``. ``history`` may use letters,
    digits, '_', '.' and '+' (no '-' or '/', which would break the name apart).
    """
    check_history_name(history)
    height, width = clip.size
    return f"{arch}-{clip.frames}x{height}x{width}x{in_chans}-{num_classes}-{history}{SUFFIX}"


def write_model_file(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write `tensors` with the description `meta` (the keys above, `tensors_sha256` and the
    version fields are added here), atomically. Missing parent folders are created."""
    meta = {
        "format_version": FORMAT_VERSION, **meta,
        "vidzoo_version": __version__, "tensors_sha256": tensors_sha256(tensors),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for key, value in meta.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{key} must be JSON-serialisable to go in a model file: {err}") from None
    path = Path(path)
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    write_atomically(path, lambda temp: save_file(tensors, temp, metadata={METADATA_KEY: json.dumps(meta)}))
    return path


def read_model_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``"vidzoo"`` description of a model file, read from its header only (upgraded to the
    current format). The tensors are not read, so their checksum is not verified here."""
    return read_model_file(path, with_tensors=False)[0]


def read_model_file(
    path: str | os.PathLike[str], *, with_tensors: bool = True, verify: bool = True
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The description and (with `with_tensors`) the tensors of a model file; with `verify` the
    tensors are checked against the header's ``tensors_sha256``. Raises ModelFileError for
    anything that is not an intact vidzoo model file."""
    path = Path(path)
    try:
        with safe_open(path, framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            names = handle.keys() if with_tensors else []
            tensors = {name: handle.get_tensor(name) for name in names}
    except (SafetensorError, OSError) as err:
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
        raise ModelFileError(f"{path}: {METADATA_KEY!r} metadata must be a JSON object, got {meta!r}")
    meta = upgrade(meta, path)
    if with_tensors and verify:
        actual = tensors_sha256(tensors)
        if actual != meta["tensors_sha256"]:
            raise ModelFileError(
                f"{path}: tensors_sha256 mismatch: the header records {meta['tensors_sha256']}, "
                f"the tensors hash to {actual}; the file is corrupted or was modified"
            )
    return meta, tensors


def upgrade(meta: dict[str, Any], path: str | os.PathLike[str] = "model file") -> dict[str, Any]:
    """`meta` in the current format, checked. Version 1 described the clip as ``input``,
    ``norm`` and ``sampling``, kept the constructor arguments as ``kwargs`` and named them
    ``num_frames``/``img_size``/``drop_rate``; those become ``clip``, ``in_chans`` and
    ``model_args`` with ``frames``/``size``/``dropout``."""
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has format_version {version!r}; this vidzoo {__version__} reads up to "
            f"{FORMAT_VERSION}, so upgrade vidzoo to load it"
        )
    if version == 1:
        meta = _from_version_1(meta, path)
    missing = [key for key in _REQUIRED_KEYS if key not in meta]
    if missing:
        raise ModelFileError(f"{path}: {METADATA_KEY!r} metadata lacks {', '.join(missing)}")
    if not isinstance(meta["model_args"], dict):
        raise ModelFileError(f"{path}: model_args must be a JSON object, got {meta['model_args']!r}")
    try:
        meta["clip"] = ClipSpec(**meta["clip"]).model_dump(mode="json")
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: invalid clip description: {err}") from None
    return meta


def _from_version_1(meta: dict[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        clip, sampling = meta["input"], meta["sampling"]
        meta = {key: value for key, value in meta.items() if key not in ("input", "norm", "sampling", "kwargs")} | {
            "format_version": FORMAT_VERSION,
            "clip": {"frames": clip["frames"], "size": [clip["height"], clip["width"]], "norm": meta["norm"],
                     "sampling": sampling["kind"], "frame_stride": sampling["frame_stride"]},
            "in_chans": clip["channels"],
            "model_args": {_V1_KWARGS.get(k, k): v for k, v in meta["kwargs"].items()},
        }
    except (KeyError, TypeError, AttributeError) as err:
        raise ModelFileError(f"{path}: a version 1 model file lacks {err}") from None
    return meta


def check_history_name(name: str) -> None:
    if not isinstance(name, str) or not _HISTORY_RE.fullmatch(name):
        raise ValueError(
            f"history name {name!r} must be letters, digits, '_', '.' or '+' "
            "(it is a field of the model file name, so no '-' or '/'), e.g. 'ucf101' or 'synthetic'"
        )


def history_metadata(history: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"name": ..., "details": {...}}`` from a history name or a mapping with a ``"name"``."""
    if history is None:
        history = "unknown"
    if isinstance(history, str):
        name, details = history, {}
    elif "name" in history:
        details = dict(history)
        name = details.pop("name")
    else:
        raise ValueError(f"a history mapping needs a 'name' key, got keys {sorted(history)}")
    check_history_name(name)
    return {"name": name, "details": details}

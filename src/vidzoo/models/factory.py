"""The model factory: build a registered model, then load its weights, then adapt it (truncate);
and turn models into model files and back.

    create_model(name, num_classes, pretrained, **args)
        registry entry --check args--> model_cls(**fixed, **args)
        --pretrained: a tag's Weights entry, a file (or hf-hub:ORG/NAME), or what the family
          reads itself (a transformers checkpoint)--> load_pretrained (head replaced if needed)
        --truncate={...}--> transfer.truncate
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from vidzoo.data.clip import ClipSpec, resolve_clip_spec
from vidzoo.model_file import (
    ModelFileError,
    history_metadata,
    model_filename,
    read_model_file,
    write_model_file,
)
from vidzoo.models._base import ModelCfg, VideoClassifier
from vidzoo.models._registry import ModelEntry, check_model_args, get_model_entry
from vidzoo.transfer.truncation import truncate_from_spec
from vidzoo.weights import (
    HF_HUB_PREFIX,
    UnknownWeightsError,
    Weights,
    file_num_classes,
    load_pretrained,
    resolve_model_file,
    vidzoo_file_metadata,
)

__all__ = [
    "create_model", "default_class_names", "get_model_cfg", "load_model", "model_flops", "model_parameter_count",
    "resolve_pretrained", "save_model",
]

# Constructor arguments that describe the clip: they size the model and its default clip.
CLIP_ARGS = ("frames", "size")


def resolve_pretrained(name: str, pretrained: str | os.PathLike[str]) -> tuple[Weights | Path, str]:
    """A weights tag of model `name` as its `Weights` entry, an existing file (or a
    ``hf-hub:ORG/NAME[@REV]`` model file, fetched) as its path, or what the model's family reads
    itself (``ModelEntry.weights_from``: a transformers checkpoint's hub id, directory or tag) as
    a `Weights` entry; with the name to report. Raises UnknownWeightsError (listing the tags, with
    a did-you-mean) for anything else."""
    entry = get_model_entry(name)
    key = os.fspath(pretrained)
    if key in entry.weights:
        # A family that reads its own weights (a transformers checkpoint's config) reads its tags too.
        weights = entry.weights_from(key) if entry.weights_from is not None else None
        return weights or entry.weights[key], f"{name}.{key}"
    if key.startswith(HF_HUB_PREFIX):
        return resolve_model_file(key), key
    path = Path(key)
    if path.is_file():
        return path, key
    weights = entry.weights_from(key) if entry.weights_from is not None else None
    if weights is not None:
        return weights, key
    import difflib

    tags = sorted(entry.weights)
    close = difflib.get_close_matches(key, tags, n=3)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise UnknownWeightsError(
        f"no pretrained weights {key!r} for model {name!r}: neither one of its tags nor an "
        f"existing file ({path.resolve()}).{hint} Tags of {name}: {', '.join(tags) or 'none'}"
    )


def create_model(
    name: str, num_classes: int | None = None, pretrained: str | os.PathLike[str] | None = None, **kwargs: Any
) -> VideoClassifier:
    """Build a registered model.

    Args:
        name: a name from ``list_models()``.
        num_classes: outputs of the classifier; None keeps the variant's default, or with
            `pretrained` the weights' class count. Another count than the weights' gets a fresh
            classifier, and ``model.load_report`` names exactly the skipped head keys.
        pretrained: a weights tag of this model (``list_pretrained()`` lists ``name.tag``) or a
            path to a weights file; see ``vidzoo.weights.load_pretrained``.
        **kwargs: constructor arguments, e.g. ``frames=8, size=32, width=0.25`` for C3D (checked
            against the constructor, with a did-you-mean); a vidzoo model file given as
            `pretrained` supplies its own, which these override. One more is understood by every
            model: ``truncate={"after": LAYER, ...}`` cuts the model (after loading
            `pretrained`) and puts a new head on it, see ``vidzoo.transfer.truncate``.

    The model remembers ``model_args`` (``num_classes`` included) and its ``default_cfg.arch``
    is `name`: what ``save_model`` needs to rebuild it. Its clip description is the
    architecture's, updated by the pretrained weights' (a tag's or a model file's) except where
    `kwargs` set ``frames``/``size``.
    """
    entry = get_model_entry(name)
    explicit_clip = {key: kwargs[key] for key in CLIP_ARGS if key in kwargs}
    source = tag = None
    if pretrained is not None:
        source, tag = resolve_pretrained(name, pretrained)
        kwargs = {**_file_arguments(name, source), **kwargs}
    truncate = kwargs.pop("truncate", None)
    check_model_args(name, kwargs)
    if source is not None:
        if num_classes is None:
            num_classes = source.class_count if isinstance(source, Weights) else file_num_classes(source)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = _build(entry, kwargs)
    if source is not None:
        model.load_report = load_pretrained(model, source, tag=tag, checkpoint_filter=entry.checkpoint_filter)
        weights_clip = source.clip if isinstance(source, Weights) else _file_clip(source)
        if weights_clip is not None:
            clip = resolve_clip_spec(model.clip_spec, weights_clip, explicit_clip)
            model.default_cfg = model.default_cfg.replace(clip=clip)
    if truncate is not None:
        load_report = getattr(model, "load_report", None)
        model = truncate_from_spec(model, truncate)
        if load_report is not None:
            model.load_report = load_report
    return model


def _build(entry: ModelEntry, kwargs: dict[str, Any]) -> VideoClassifier:
    try:
        model = entry.model_cls(**entry.fixed, **kwargs)
    except TypeError as err:  # a wrong type that check_model_args cannot see
        raise ValueError(f"cannot build {entry.name} with {kwargs}: {err}") from None
    model.default_cfg = model.default_cfg.replace(arch=entry.name)
    model.model_args = dict(kwargs)
    return model


def _file_arguments(name: str, source: Weights | Path) -> dict[str, Any]:
    """A vidzoo model file's constructor arguments (its class count aside), so that a model
    started from it has its architecture (width, frames, size, a cut); a Weights entry's
    ``model_args``; nothing for other files. Raises ValueError when the file holds another
    architecture than `name`."""
    if isinstance(source, Weights):
        return dict(source.model_args)
    meta = vidzoo_file_metadata(source)
    if meta is None:
        return {}
    if meta["arch"] != name:
        raise ValueError(f"{source} is a {meta['arch']!r} model file, not {name!r}: start from it with "
                         f"model {meta['arch']!r} (or leave the model out to take the file's)")
    return {k: v for k, v in meta["model_args"].items() if k != "num_classes" and not k.startswith("pretrained")}


def _file_clip(path: Path) -> ClipSpec | None:
    meta = vidzoo_file_metadata(path)
    return None if meta is None else ClipSpec(**meta["clip"])


@contextmanager
def _on_meta_device():
    # On the meta device parameters have shapes but no storage: building costs nothing.
    with torch.device("meta"):
        yield


def get_model_cfg(name: str, **kwargs: Any) -> ModelCfg:
    """The ``default_cfg`` of ``create_model(name, **kwargs)``, without allocating the model."""
    with _on_meta_device():
        return create_model(name, **kwargs).default_cfg


def model_parameter_count(name: str, **kwargs: Any) -> int:
    """Parameters of ``create_model(name, **kwargs)`` (as ``sum(p.numel())``), counted on the
    meta device so even an 80M-parameter model costs nothing to count."""
    with _on_meta_device():
        model = create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def model_flops(name: str, **kwargs: Any) -> int:
    """FLOPs of one forward pass of ``create_model(name, **kwargs)`` on one clip of its default
    input, as ``torch.utils.flop_counter`` counts them (a multiply-add is 2 FLOPs). Counted on the
    meta device: nothing is allocated or computed."""
    from torch.utils.flop_counter import FlopCounterMode

    with _on_meta_device():
        model = create_model(name, **kwargs).eval()
        cfg = model.default_cfg
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, cfg.in_chans, cfg.clip.frames, *cfg.clip.size))
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------- model files


def default_class_names(num_classes: int) -> list[str]:
    """``class_000``, ``class_001``, ... for a model without class names."""
    digits = max(3, len(str(num_classes - 1)))
    return [f"class_{i:0{digits}d}" for i in range(num_classes)]


def save_model(
    model: VideoClassifier,
    path: str | os.PathLike[str] | None = None,
    *,
    directory: str | os.PathLike[str] = ".",
    classes: Sequence[str] | None = None,
    history: str | Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `model` and its description (arch, arguments, classes, clip description, history)
    to one ``.safetensors`` file, atomically.

    Args:
        model: a model built by ``create_model`` (it records the arch and kwargs to rebuild).
        path: file to write; None means the zoo name (``model_filename``) inside `directory`.
        directory: where a default-named file goes; unused when `path` is given.
        classes: class names in logit order; defaults to ``model.classes``, else
            ``class_000``, ``class_001``, ...
        history: what the weights were trained on: a name such as ``"synthetic"`` or
            ``"ucf101"``, or a mapping with ``"name"`` plus free-form details. None: ``"unknown"``.
        extra: free-form JSON-serialisable metadata, e.g. metrics.

    Returns the path written; an existing file is replaced only once the new one is complete.
    """
    if model.model_args is None:
        raise ValueError(
            f"{type(model).__name__} was not built by vidzoo.models.create_model, so the file "
            "could not say how to rebuild it; build it with create_model(name, ...)"
        )
    history_meta = history_metadata(history)
    classes = _class_names(model, classes)
    cfg = model.default_cfg
    if path is None:
        path = Path(directory) / model_filename(cfg.arch, cfg.clip, cfg.in_chans, model.num_classes,
                                                history_meta["name"])
    meta = {
        "arch": cfg.arch,
        # reset_classifier may have changed the class count since create_model saw the kwargs.
        # The file holds the weights: rebuilding must not fetch a pretrained backbone again.
        "model_args": {**{k: (False if k.startswith("pretrained") else v) for k, v in model.model_args.items()},
                   "num_classes": model.num_classes},
        "classes": classes,
        "clip": cfg.clip.model_dump(mode="json"),
        "in_chans": cfg.in_chans,
        "history": history_meta,
        "extra": dict(extra or {}),
    }
    return write_model_file(path, model.state_dict(), meta)


def load_model(ref: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> VideoClassifier:
    """Rebuild the model saved in `path`, verified against its checksum, in eval mode.

    `ref` is a model file, or ``hf-hub:ORG/NAME[@REV]`` for one on the Hugging Face hub
    (fetched through its cache; offline, read from the cache only: see
    ``vidzoo.weights.resolve_model_file``). The model's ``classes`` and clip description come
    from the file: the preprocessing it was trained with, which may differ from the
    architecture's default. ``model.source_file`` (`ref`) and ``model.tensors_sha256`` record
    where it came from. Raises ModelFileError for anything that is not an intact vidzoo model file.
    """
    path = resolve_model_file(ref)
    meta, tensors = read_model_file(path, with_tensors=True, verify=True)
    try:
        model = create_model(meta["arch"], **meta["model_args"])
        model.load_state_dict(tensors, strict=True)
        model.classes = meta["classes"]
        model.default_cfg = model.default_cfg.replace(clip=ClipSpec(**meta["clip"]))
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        raise ModelFileError(f"{path}: cannot rebuild {meta['arch']!r} with model_args {meta['model_args']}: {err}") from err
    model.source_file = os.fspath(ref)
    model.tensors_sha256 = meta["tensors_sha256"]
    return model.to(map_location).eval()


def _class_names(model: VideoClassifier, classes: Sequence[str] | None) -> list[str]:
    if classes is None:
        classes = model.classes
    if classes is None:
        return default_class_names(model.num_classes)
    classes = list(classes)
    if len(classes) != model.num_classes:
        raise ValueError(f"got {len(classes)} class names for a model with {model.num_classes} outputs")
    if not all(isinstance(c, str) for c in classes):
        raise ValueError(f"class names must be strings, got {classes!r}")
    duplicates = sorted({name for name in classes if classes.count(name) > 1})
    if duplicates:
        raise ValueError(f"class names must be unique, repeated: {duplicates}")
    return classes

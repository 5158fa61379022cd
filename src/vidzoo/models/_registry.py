"""The one model registry: a dict of names filled by ``@register_model``, and its string API."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from vidzoo.models._base import ModelCfg, VideoClassifier

# Names end up in model file names, where '-' separates fields, so keep them to one token.
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")


class UnknownModelError(ValueError):
    """A model name that is not registered."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered model variant.

    Attributes:
        name: registered name.
        builder: callable taking constructor kwargs and returning the model.
        test_kwargs: kwargs that build a tiny, fast version of the model for tests and
            quick starts (small clips, narrow layers).
        weights: pretrained weights by tag (source, checksum, classes, preprocessing, ...).
    """

    name: str
    builder: Callable[..., VideoClassifier]
    test_kwargs: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


_MODELS: dict[str, ModelEntry] = {}

BuilderT = TypeVar("BuilderT", bound=Callable[..., VideoClassifier])


def register_model(
    *,
    test_kwargs: Mapping[str, Any] | None = None,
    weights: Mapping[str, Mapping[str, Any]] | None = None,
) -> Callable[[BuilderT], BuilderT]:
    """Decorator registering a builder under its function name.

    Usage: ``@register_model(test_kwargs={"width": 0.125})`` above ``def c3d(**kwargs)``.
    Registering a name twice is an error, so one family cannot shadow another.
    """

    def decorate(builder: BuilderT) -> BuilderT:
        name = builder.__name__
        if not _NAME_RE.fullmatch(name):
            raise ValueError(
                f"model name {name!r} must be lowercase letters, digits and '_', "
                "starting with a letter"
            )
        if name in _MODELS:
            existing = _MODELS[name].builder
            raise ValueError(
                f"model name {name!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}"
            )
        _MODELS[name] = ModelEntry(name, builder, dict(test_kwargs or {}), dict(weights or {}))
        return builder

    return decorate


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; raises UnknownModelError with a did-you-mean."""
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Available: {', '.join(sorted(_MODELS))}"
        ) from None


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by an fnmatch pattern like ``"c3d*"``."""
    names = sorted(_MODELS)
    return names if pattern is None else fnmatch.filter(names, pattern)


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Available pretrained weights as ``"model.tag"``, sorted, optionally fnmatch-filtered."""
    tags = sorted(f"{name}.{tag}" for name, entry in _MODELS.items() for tag in entry.weights)
    return tags if pattern is None else fnmatch.filter(tags, pattern)


def create_model(
    name: str, num_classes: int | None = None, pretrained: str | None = None, **kwargs: Any
) -> VideoClassifier:
    """Build a registered model.

    Args:
        name: a name from ``list_models()``.
        num_classes: outputs of the classifier; None keeps the variant's default.
        pretrained: a weights tag of this model (``list_pretrained()`` lists ``name.tag``) or a
            path to a weights file; see ``vidzoo.weights.load_pretrained``. With
            ``num_classes=None`` the model takes the weights' class count; another count gets a
            fresh classifier, and ``model.load_report`` names exactly the skipped head keys.
        **kwargs: constructor overrides, e.g. ``num_frames=8, width=0.25`` for C3D. One more is
            understood by every model: ``truncate={"after": LAYER, ...}`` cuts the model (after
            loading ``pretrained``) and puts a new head on it, see ``vidzoo.transfer.truncate``.

    The model remembers ``init_kwargs`` (``num_classes`` included) and its ``default_cfg.arch``
    is ``name``, which is what ``save_model`` needs to rebuild it later.
    """
    entry = get_model_entry(name)
    if pretrained is not None and num_classes is None:
        from vidzoo.weights import weights_num_classes  # imported here: weights imports models

        num_classes = weights_num_classes(name, pretrained)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    truncate = kwargs.pop("truncate", None)
    model = entry.builder(**kwargs)
    model.default_cfg = model.default_cfg.replace(arch=name)
    model.init_kwargs = dict(kwargs)
    if pretrained is not None:
        from vidzoo.weights import load_pretrained

        model.load_report = load_pretrained(model, pretrained)
    if truncate is not None:
        # Imported here: vidzoo.transfer builds on the models. The cut is recorded in
        # init_kwargs, so a saved truncated model is rebuilt by this same call.
        from vidzoo.transfer.truncation import truncate_from_spec

        load_report = getattr(model, "load_report", None)
        model = truncate_from_spec(model, truncate)
        if load_report is not None:
            model.load_report = load_report
    return model


def get_model_cfg(name: str, **kwargs: Any) -> ModelCfg:
    """The ``default_cfg`` of ``create_model(name, **kwargs)``, without allocating the model."""
    # On the meta device parameters have shapes but no storage, so this is instant.
    with torch.device("meta"):
        return create_model(name, **kwargs).default_cfg


def model_parameter_count(name: str, **kwargs: Any) -> int:
    """Parameters of ``create_model(name, **kwargs)`` (as ``sum(p.numel())``), counted on the
    meta device so even an 80M-parameter model costs nothing to count."""
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def model_flops(name: str, **kwargs: Any) -> int:
    """FLOPs of one forward pass of ``create_model(name, **kwargs)`` on one clip of its default
    input, as ``torch.utils.flop_counter`` counts them (a multiply-add is 2 FLOPs). Counted on the
    meta device: nothing is allocated or computed."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = create_model(name, **kwargs).eval()
        cfg = model.default_cfg
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, cfg.in_chans, *cfg.input_size))
    return int(counter.get_total_flops())

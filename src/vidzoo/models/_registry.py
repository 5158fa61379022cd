"""The one model registry: entries only (a name, the model class, the variant's own arguments,
tiny test arguments, pretrained weights as data), filled by ``register_model``.

Family modules register their variants when imported. The registry imports them the first time
it is asked for anything (`_discover`), by name, so importing the contract or the registry does
not build the zoo; other packages register models through the ``vidzoo.models`` entry-point
group (vidzoo's Keras importer registers ``keras_graph`` that way).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vidzoo.models._base import VideoClassifier

if TYPE_CHECKING:
    from vidzoo.weights import Converter, Weights

# A family's reading of a `pretrained` that is neither one of its tags nor a file (a transformers
# checkpoint: a hub id or a directory) as a Weights entry; None when it is not one of its own.
WeightsResolver = Callable[[str], "Weights | None"]

log = logging.getLogger(__name__)

# Names end up in model file names, where '-' separates fields, so keep them to one token.
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
# Imported (and so registered) on first use of the registry, in this order.
BUILTIN_FAMILIES = (
    "vidzoo.models.c3d",
    "vidzoo.models.c2d",
    "vidzoo.models.lrcn",
    "vidzoo.models.i3d",
    "vidzoo.models.torchvision_video",
    "vidzoo.models.x3d",
    "vidzoo.models.hf_video",
)
ENTRY_POINT_GROUP = "vidzoo.models"


class UnknownModelError(ValueError):
    """A model name that is not registered."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered model variant.

    Attributes:
        name: registered name (``create_model(name)``).
        model_cls: the family's model class.
        fixed: constructor arguments that define the variant (``{"batch_norm": True}`` for
            ``c3d_bn``); a caller cannot override them.
        test_args: arguments that build a tiny, fast version for tests (small clips, narrow layers).
        weights: pretrained weights by tag.
        checkpoint_filter: the family's converter of foreign checkpoint keys (torchvision's,
            piergiaj's), applied to every state dict loaded into the model.
        description: one line for ``vidzoo models``.
        weights_from: the family's own reading of weights named outside its tags (the
            transformers families: a hub id or a checkpoint directory), see `WeightsResolver`.
    """

    name: str
    model_cls: type[VideoClassifier]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    test_args: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, Weights] = field(default_factory=dict)
    checkpoint_filter: Converter | None = None
    description: str = ""
    weights_from: WeightsResolver | None = None

    @property
    def family(self) -> str:
        """The family's short name: its module in vidzoo.models (``"c3d"``), else its package
        (``"keras"``)."""
        module = self.model_cls.__module__
        if module.startswith("vidzoo.models."):
            return module.rpartition(".")[2]
        return module.split(".")[1] if module.startswith("vidzoo.") else module.split(".")[0]

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The constructor arguments a caller may give (the variant's fixed ones excluded)."""
        signature = inspect.signature(self.model_cls.__init__)
        return {name: p for name, p in signature.parameters.items()
                if name != "self" and p.kind is not p.VAR_KEYWORD and name not in self.fixed}

    def required(self) -> list[str]:
        """Constructor arguments without a default (``c2d_timm``'s ``backbone``)."""
        return [name for name, p in self.parameters().items() if p.default is p.empty]


_MODELS: dict[str, ModelEntry] = {}
_discovered = False


def register_model(
    name: str,
    model_cls: type[VideoClassifier],
    *,
    fixed: Mapping[str, Any] | None = None,
    test_args: Mapping[str, Any] | None = None,
    weights: Mapping[str, Weights] | None = None,
    checkpoint_filter: Converter | None = None,
    description: str = "",
    weights_from: WeightsResolver | None = None,
) -> ModelEntry:
    """Register ``name`` as ``model_cls(**fixed, **caller's arguments)``; returns the entry.

    Registering a name twice is an error, so one family cannot shadow another.
    """
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"model name {name!r} must be lowercase letters, digits and '_', starting with a letter")
    if name in _MODELS:
        existing = _MODELS[name].model_cls
        raise ValueError(f"model name {name!r} is already registered by {existing.__module__}.{existing.__qualname__}")
    entry = ModelEntry(
        name, model_cls, MappingProxyType(dict(fixed or {})), MappingProxyType(dict(test_args or {})),
        MappingProxyType(dict(weights or {})), checkpoint_filter, description, weights_from,
    )
    unknown = sorted(set(entry.test_args) - set(entry.parameters()))
    if unknown:
        raise ValueError(f"test_args of {name!r} name unknown arguments {unknown}")
    _MODELS[name] = entry
    return entry


def _discover() -> None:
    """Import the built-in families and the entry-point plugins once (they register themselves)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in BUILTIN_FAMILIES:
        importlib.import_module(module)
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry_point.load()
        except Exception as err:  # noqa: BLE001 - a broken plugin must not hide the zoo
            log.warning("could not load vidzoo model plugin %s (%s): %s", entry_point.name, entry_point.value, err)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; raises UnknownModelError with a did-you-mean."""
    _discover()
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
    _discover()
    names = sorted(_MODELS)
    return names if pattern is None else fnmatch.filter(names, pattern)


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Available pretrained weights as ``"model.tag"``, sorted, optionally fnmatch-filtered."""
    _discover()
    tags = sorted(f"{name}.{tag}" for name, entry in _MODELS.items() for tag in entry.weights)
    return tags if pattern is None else fnmatch.filter(tags, pattern)


def check_model_args(name: str, args: Mapping[str, Any]) -> None:
    """Raise ValueError for an argument ``create_model(name, ...)`` would not take: an unknown
    one (with a did-you-mean among the constructor's), one the variant fixes, or a required one
    that is missing."""
    entry = get_model_entry(name)
    allowed = entry.parameters()
    for key in args:
        if key in entry.fixed:
            raise ValueError(f"{key}={args[key]!r} is fixed by the variant {name!r} ({dict(entry.fixed)}); "
                             "pick the variant that has the value you want instead")
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{name} has no argument {key!r}.{hint} Its arguments: {', '.join(allowed)}")
    missing = [key for key in entry.required() if key not in args]
    if missing:
        raise ValueError(f"{name} needs {', '.join(missing)} (e.g. --model-arg {missing[0]}=...); "
                         f"{entry.description or entry.model_cls.__doc__.splitlines()[0]}")


def builder_of(entry: ModelEntry) -> Callable[..., VideoClassifier]:
    """``model_cls(**fixed, **args)`` for `entry`."""
    return lambda **args: entry.model_cls(**entry.fixed, **args)

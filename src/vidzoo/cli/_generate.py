"""Command-line options generated from a typed config (a pydantic model): names, types,
choices, defaults and help come from the config's fields, so the two cannot drift apart."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, Optional

import typer
import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def _unwrap(annotation: Any) -> Any:
    """`X` from ``X | None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _default_text(field: Any) -> str:
    if field.default_factory is not None:
        return ""
    if field.default is None or field.default is PydanticUndefined:
        return ""
    default = field.default
    if isinstance(default, bool):
        return ""
    return f" (default: {default})"


def option_parameters(config: type[BaseModel], *, exclude: Iterable[str] = (),
                      unset_help: dict[str, str] | None = None,
                      panels: dict[str, str] | None = None) -> list[inspect.Parameter]:
    """One keyword parameter per field of `config` (except `exclude`), each a ``typer.Option``
    whose default is None (so an option not given leaves the config's own value): ``--kebab-name``,
    the field's type (Literal fields as a choice, bools as ``--x/--no-x``) and its description
    with the default. `unset_help` adds a note to fields whose default is None; `panels` groups
    the options in the help under headings (field name -> heading)."""
    params = []
    for name, field in config.model_fields.items():
        if name in exclude:
            continue
        annotation = _unwrap(field.annotation)
        flag = "--" + name.replace("_", "-")
        help_text = (field.description or name.replace("_", " ")) + _default_text(field)
        if unset_help and name in unset_help:
            help_text += f" (default: {unset_help[name]})"
        kwargs: dict[str, Any] = {"help": help_text, "show_default": False,
                                  "rich_help_panel": (panels or {}).get(name)}
        if annotation is bool:
            option = typer.Option(None, f"{flag}/--no-{name.replace('_', '-')}", **kwargs)
            python_type: Any = Optional[bool]
        elif annotation in (int, float, str) or typing.get_origin(annotation) is Literal:
            # typer shows a Literal's values as the choices and refuses others.
            option = typer.Option(None, flag, **kwargs)
            python_type = Optional[annotation]
        else:  # unions (devices), sizes like 112x160: text the config parses
            option = typer.Option(None, flag, **kwargs)
            python_type = Optional[str]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=python_type))
    return params


def parse_key_values(items: Iterable[str], what: str = "--model-arg") -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a dict, each value read as YAML (``0.25`` a float, ``true`` a bool,
    ``[1, 2]`` a list, anything else a string)."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} takes KEY=VALUE, e.g. {what} width=0.25, got {item!r}")
        try:
            values[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            values[key.strip()] = raw
    return values

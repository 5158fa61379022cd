"""Typed settings: the base class of vidzoo's configs (unknown keys refused with a did-you-mean)
and one-line messages for invalid values."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

__all__ = ["StrictModel", "validation_message"]

# Keys older vidzoo versions used, and what they are called now.
RENAMED = {"model_kwargs": "model_args", "stride": "frame_stride", "num_frames": "frames", "img_size": "size",
           "drop_rate": "dropout", "num_clips": "clips_per_video", "clip_len": "frames"}


class StrictModel(BaseModel):
    """A config that refuses unknown keys, naming the closest known ones."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_keys(cls, values: Any) -> Any:
        if isinstance(values, dict):
            known = list(cls.model_fields)
            for key in values:
                if key not in cls.model_fields:
                    raise ValueError(unknown_key_message(str(key), known, what=f"{cls.__name__} key"))
        return values


def unknown_key_message(key: str, known: list[str], what: str = "key") -> str:
    """``unknown <what> 'x'; did you mean 'y'?`` (renamed keys name their new name)."""
    if RENAMED.get(key) in known:
        return f"unknown {what} {key!r}: it is called {RENAMED[key]!r} now"
    close = difflib.get_close_matches(key, known, n=2, cutoff=0.6)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    return f"unknown {what} {key!r}{hint} (known: {', '.join(known)})"


def validation_message(error: ValidationError, source: str = "") -> str:
    """A pydantic error as one line per problem: ``source: field: message``."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        lines.append(": ".join(part for part in (source, where, message) if part))
    return "; ".join(lines)

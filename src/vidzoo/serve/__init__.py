"""``vidzoo serve``: an HTTP API and a web page for trying models (install ``vidzoo[serve]``).

`create_app(model_files, ServeSettings(...))` builds the FastAPI app; see `vidzoo.serve.app`.
The names are imported on first use: the worker processes import `vidzoo.serve.worker`
without FastAPI or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ServeSettings", "ServedModel", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("vidzoo.serve.app"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Registered video classifiers, built by name.

>>> from vidzoo.models import create_model, list_models
>>> list_models("c3d*")
['c3d', 'c3d_bn']
>>> model = create_model("c3d", num_classes=101)

The names below load on first use, so importing the contract (``vidzoo.models._base``) or the
registry does not build the zoo.
"""

import importlib

_LAZY = {
    "FeatureInfo": "vidzoo.models._base",
    "ModelCfg": "vidzoo.models._base",
    "VideoClassifier": "vidzoo.models._base",
    "ModelEntry": "vidzoo.models._registry",
    "UnknownModelError": "vidzoo.models._registry",
    "check_model_args": "vidzoo.models._registry",
    "get_model_entry": "vidzoo.models._registry",
    "list_models": "vidzoo.models._registry",
    "list_pretrained": "vidzoo.models._registry",
    "register_model": "vidzoo.models._registry",
    "create_model": "vidzoo.models.factory",
    "default_class_names": "vidzoo.models.factory",
    "get_model_cfg": "vidzoo.models.factory",
    "load_model": "vidzoo.models.factory",
    "model_flops": "vidzoo.models.factory",
    "model_parameter_count": "vidzoo.models.factory",
    "save_model": "vidzoo.models.factory",
    "parse_model_name": "vidzoo.models.names",
    "resolve_alias": "vidzoo.models.names",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vidzoo.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__

"""Registered video classifiers, built by name.

>>> from vidzoo.models import create_model, list_models
>>> list_models("c3d*")
['c3d', 'c3d_bn']
>>> model = create_model("c3d", num_classes=101)
"""

from vidzoo.models import c3d  # noqa: F401  (importing a family module registers its variants)
from vidzoo.models._base import ModelCfg, VideoClassifier
from vidzoo.models._registry import (
    ModelEntry,
    UnknownModelError,
    create_model,
    get_model_cfg,
    get_model_entry,
    list_models,
    list_pretrained,
    model_parameter_count,
    register_model,
)

__all__ = [
    "ModelCfg",
    "ModelEntry",
    "UnknownModelError",
    "VideoClassifier",
    "create_model",
    "get_model_cfg",
    "get_model_entry",
    "list_models",
    "list_pretrained",
    "model_parameter_count",
    "register_model",
]

"""Registered video classifiers, built by name.

>>> from vidzoo.models import create_model, list_models
>>> list_models("c3d*")
['c3d', 'c3d_bn']
>>> model = create_model("c3d", num_classes=101)
"""

from vidzoo.models import c3d  # noqa: F401  (importing a family module registers its variants)
from vidzoo.models import torchvision_video  # noqa: F401
from vidzoo.models import c2d  # noqa: F401
from vidzoo.models import lrcn  # noqa: F401
from vidzoo.models import i3d  # noqa: F401
from vidzoo.models._base import ModelCfg, VideoClassifier
from vidzoo.models._registry import (
    ModelEntry,
    UnknownModelError,
    create_model,
    get_model_cfg,
    get_model_entry,
    list_models,
    list_pretrained,
    model_flops,
    model_parameter_count,
    register_model,
)
from vidzoo.models.names import parse_model_name, resolve_alias

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
    "model_flops",
    "model_parameter_count",
    "parse_model_name",
    "register_model",
    "resolve_alias",
]

# Last: the imported-Keras architecture (keras_graph) builds on the names above.
from vidzoo.keras import model as _keras_model  # noqa: E402,F401

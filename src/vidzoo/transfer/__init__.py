"""Transfer learning on any registered model: freeze and unfreeze layers, per-part learning
rates, cut a network after a layer and put a new head on it, inflate 2D weights to 3D.

Layer names are the module paths listed by ``layer_names(model)`` (a model's ``feature_info``;
for per-frame models the frame CNN's stages), see ``vidzoo.transfer.layers``.
"""

from vidzoo.transfer.freezing import (
    BACKBONE,
    freeze,
    is_frozen_batchnorm,
    param_groups,
    train_last,
    unfreeze,
)
from vidzoo.transfer.inflate import (
    inflate,
    inflate_state_dict,
    inflate_tensor,
    inflate_weight,
)
from vidzoo.transfer.layers import layer_names, resolve_layer
from vidzoo.transfer.truncation import HEADS, TruncatedClassifier, truncate

__all__ = [
    "BACKBONE",
    "HEADS",
    "TruncatedClassifier",
    "freeze",
    "inflate",
    "inflate_state_dict",
    "inflate_tensor",
    "inflate_weight",
    "is_frozen_batchnorm",
    "layer_names",
    "param_groups",
    "resolve_layer",
    "train_last",
    "truncate",
    "unfreeze",
]

"""vidzoo: a zoo of video classifiers, and the tools to train, evaluate and run them.

>>> import vidzoo
>>> model = vidzoo.create_model("c3d", num_classes=101)
>>> vidzoo.save_model(model, directory="models", classes=[...], history="ucf101")
"""

__version__ = "0.1.0"

# The public API, importable as vidzoo.X; heavy modules load on first use.
_LAZY = {
    "create_model": "vidzoo.models",
    "list_models": "vidzoo.models",
    "list_pretrained": "vidzoo.models",
    "parse_model_name": "vidzoo.models.names",
    "save_model": "vidzoo.models",
    "load_model": "vidzoo.models",
    "ClipSpec": "vidzoo.data.clip",
    "VideoReader": "vidzoo.data.video",
    "train": "vidzoo.train",
    "TrainConfig": "vidzoo.train",
    "evaluate": "vidzoo.evaluate",
    "predict_video": "vidzoo.predict",
    "predict_windows": "vidzoo.predict",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vidzoo' has no attribute {name!r}")

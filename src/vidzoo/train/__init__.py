"""Training: one call (or `vidzoo train`) from labeled videos to a model file, metrics and plots.

- `config`: `TrainConfig`, every option of a run (the command line is generated from it);
- `module`: the Lightning module (loss, validation, optimizer, schedule) and the epoch sampler;
- `callbacks`: checkpoints, throughput, metrics.csv, progress display, worker diagnostics;
- `run`: `train()` itself.

The names below load on first use (Lightning takes seconds to import).
"""

import importlib

_LAZY = {
    "ConfigError": "vidzoo.train.config",
    "TrainConfig": "vidzoo.train.config",
    "TrainingError": "vidzoo.train.callbacks",
    "read_metrics": "vidzoo.train.callbacks",
    "VideoClassificationModule": "vidzoo.train.module",
    "TrainResult": "vidzoo.train.run",
    "resolve_run_model": "vidzoo.train.run",
    "train": "vidzoo.train.run",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vidzoo.train' has no attribute {name!r}")

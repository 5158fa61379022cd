"""Class balance for imbalanced labels: loss weights, or sampling that draws every class equally
often. ``vidzoo train --balance`` and ``vidzoo probe --balance`` both use these.

``"loss"`` weights class c by ``N / (K * n_c)`` (N rows, K classes present, n_c rows of c: scikit-
learn's ``class_weight="balanced"``), so every class adds the same total weight to the loss.
``"sampling"`` draws rows with replacement, each with probability proportional to its class's
weight, so every class is drawn equally often in expectation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["BALANCE", "BALANCE_HELP", "Balance", "balanced_draw", "check_balance", "class_weights"]

Balance = Literal["none", "loss", "sampling"]
BALANCE: tuple[str, ...] = ("none", "loss", "sampling")
BALANCE_HELP = ("class balance for imbalanced data: none, loss (cross-entropy weighted by N / (classes x "
                "videos of the class)) or sampling (draw training items with replacement, every class equally "
                "often)")


def check_balance(balance: str) -> None:
    """Raise a one-line ValueError unless `balance` is one of `BALANCE`."""
    if balance not in BALANCE:
        raise ValueError(f"balance must be one of {', '.join(BALANCE)}, got {balance!r}")


def class_weights(labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """``(num_classes,)`` float32: ``N / (K * n_c)`` for the K classes present in `labels`, 0 for
    absent ones (no row carries them)."""
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels):
        raise ValueError("class weights need at least one label")
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    if len(counts) > num_classes:
        raise ValueError(f"labels must be class indices below {num_classes}, got {int(labels.max())}")
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights.astype(np.float32)


def balanced_draw(labels: Sequence[int] | np.ndarray, rng: np.random.Generator, size: int | None = None) -> np.ndarray:
    """`size` (default: as many as `labels`) row indices drawn with replacement, every class
    present equally likely."""
    labels = np.asarray(labels, dtype=np.int64)
    weights = class_weights(labels, int(labels.max()) + 1)[labels].astype(np.float64)
    return rng.choice(len(labels), size=len(labels) if size is None else size, replace=True, p=weights / weights.sum())

"""Plots for evaluation and training reports, written straight to PNG files.

Figures are built on `matplotlib.figure.Figure` and saved with Agg, never through `pyplot`:
no global backend is switched, no window opens, and nothing leaks between calls, so the
functions are safe on headless servers, in DataLoader-heavy scripts and in notebooks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from vidzoo.fileio import write_atomically

__all__ = ["plot_confusion", "plot_curves", "plot_probe_grid", "plot_timeline"]

_ANNOTATE_MAX_CLASSES = 20  # above this, numbers in the cells would overlap


def plot_confusion(
    matrix: np.ndarray,
    classes: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    normalize: bool = True,
) -> Path:
    """Draw a confusion matrix (rows = true class, columns = predicted) as a PNG at `path`.

    `normalize=True` shows each row as fractions of that class's videos (a class with no
    videos stays at 0). Each row's label carries its count of videos, ``walk (12)``. The figure
    and the label font scale with the class count, so 8 to 101 classes stay readable; cells carry
    their value only up to 20 classes.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    n = len(classes)
    if matrix.shape != (n, n):
        raise ValueError(f"confusion matrix must be {n}x{n} for {n} classes, got shape {matrix.shape}")
    if n == 0:
        raise ValueError("cannot plot a confusion matrix with no classes")
    row_labels = [f"{name} ({int(total)})" for name, total in zip(classes, matrix.sum(axis=1))]
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)

    # About a fifth of an inch per class plus 3 inches for the labels, capped so 400 classes
    # still give a picture a viewer can open; labels fill about half a cell's height.
    side = min(30.0, max(5.0, 0.2 * n + 3.0))
    cell_points = (side - 3.0) / n * 72
    font = min(10.0, max(4.0, 0.55 * cell_points))
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(matrix.max(), 1.0))
    fig.colorbar(image, ax=ax, shrink=0.8, pad=0.02)
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels=list(classes), rotation=90, fontsize=font)
    ax.set_yticks(ticks, labels=row_labels, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (videos)")
    default_title = "Confusion matrix (fraction of each true class)" if normalize else "Confusion matrix (videos)"
    ax.set_title(title or default_title, fontsize=max(12.0, side / 2))
    if n <= _ANNOTATE_MAX_CLASSES:
        threshold = 0.5 * (1.0 if normalize else max(matrix.max(), 1.0))
        for (row, col), value in np.ndenumerate(matrix):
            text = f"{value:.2f}" if normalize else f"{int(value)}"
            color = "white" if value > threshold else "black"
            ax.text(col, row, text, ha="center", va="center", fontsize=font * 0.9, color=color)
    return _save(fig, path)


def plot_curves(rows: Sequence[dict], path: str | os.PathLike, *, chance: float | None = None) -> Path:
    """Draw loss and accuracy per epoch, side by side, as a PNG at `path`.

    Each row is one epoch: ``epoch``, ``train_loss``, ``val_loss``, ``train_acc``, ``val_acc``.
    Any key may be missing or None (no validation that epoch, say): that point is left out.
    A row without ``epoch`` is placed at its position in `rows`, counting from 1. The epoch of
    the best ``val_acc`` is marked on both panels; `chance` (1 / classes) is drawn on the
    accuracy panel. A single epoch gets an axis around that one point.
    """
    if not rows:
        raise ValueError("no epochs to plot: rows is empty")
    fig = Figure(figsize=(11.0, 4.0), layout="constrained")
    panels = (("loss", ("train_loss", "val_loss")), ("accuracy", ("train_acc", "val_acc")))
    for i, (label, keys) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, 2, i)
        drawn = False
        for key in keys:
            points = [
                (position if row.get("epoch") is None else row["epoch"], row[key])
                for position, row in enumerate(rows, start=1)
                if row.get(key) is not None and _finite(row[key])
            ]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", markersize=3, label=key.split("_")[0])
                drawn = True
        best = _best_epoch(rows)
        if best is not None:
            ax.axvline(best, color="grey", linestyle=":", linewidth=1, label=f"best val (epoch {best:g})")
        if label == "accuracy" and chance is not None:
            ax.axhline(chance, color="red", linestyle="--", linewidth=1, alpha=0.6, label=f"chance ({chance:.1%})")
        if drawn:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        epochs = [row.get("epoch", i) for i, row in enumerate(rows, start=1)]
        if len(set(epochs)) == 1:  # one epoch: an axis around it, not an arbitrary span
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
            ax.set_xticks([epochs[0]])
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_timeline(
    windows: Sequence[Mapping],
    segments: Sequence[Mapping],
    path: str | os.PathLike,
    *,
    classes_shown: int = 5,
    title: str | None = None,
) -> Path:
    """Draw class probabilities over time as a PNG at `path`: one line per class among the
    `classes_shown` that reach the highest probability in some window (each window's value at
    its centre), and the top-1 `segments` shaded in their class's colour (grey for a class
    without a line).

    `windows` are ``{"start_s", "end_s", "top": [{"class", "probability"}, ...]}`` (as
    ``WindowPrediction.to_dict()``; a class missing from a window's ``top`` counts as 0) and
    `segments` ``{"start_s", "end_s", "label"}`` (as ``Segment.to_dict()``).
    """
    if not windows:
        raise ValueError("no windows to plot")
    if classes_shown < 1:
        raise ValueError(f"classes_shown must be at least 1, got {classes_shown}")
    probs = [{t["class"]: t["probability"] for t in w["top"]} for w in windows]
    peak: dict[str, float] = {}
    for p in probs:
        for name, value in p.items():
            peak[name] = max(peak.get(name, 0.0), value)
    shown = sorted(peak, key=lambda name: -peak[name])[:classes_shown]
    colours = {name: f"C{k}" for k, name in enumerate(shown)}
    fig = Figure(figsize=(11.0, 3.6), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for seg in segments:
        ax.axvspan(seg["start_s"], seg["end_s"], color=colours.get(seg["label"], "grey"), alpha=0.15, linewidth=0)
    centres = [(w["start_s"] + w["end_s"]) / 2 for w in windows]
    for name in shown:
        ax.plot(centres, [p.get(name, 0.0) for p in probs], color=colours[name], marker="o", markersize=2,
                linewidth=1.5, label=name)
    ax.set_xlim(windows[0]["start_s"], max(w["end_s"] for w in windows))
    ax.set_ylim(0, 1)
    ax.set_xlabel("seconds")
    ax.set_ylabel("probability")
    ax.set_title(title or "class probabilities per window (shaded: top-1 segments)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_probe_grid(cells: Sequence[dict], path: str | os.PathLike, *, best: int | None = None) -> Path:
    """A probe sweep's grid as a PNG at `path`: one panel per classifier, validation accuracy
    (and training accuracy, dashed) against C for linear probes, a learning rate x weight decay
    map for attentive ones; `best` (an index into `cells`) is ringed. `cells` are
    `vidzoo.probe_sweep.SweepCell` dicts."""
    if not cells:
        raise ValueError("no cells to plot")
    kinds = list(dict.fromkeys(cell["classifier"] for cell in cells))
    fig = Figure(figsize=(5.0 * len(kinds), 4.0), layout="constrained")
    for panel, kind in enumerate(kinds, start=1):
        ax = fig.add_subplot(1, len(kinds), panel)
        mine = [(i, cell) for i, cell in enumerate(cells) if cell["classifier"] == kind]
        if "C" in mine[0][1]["settings"]:
            mine.sort(key=lambda pair: pair[1]["settings"]["C"])
            cs = [cell["settings"]["C"] for _, cell in mine]
            ax.plot(cs, [cell["val_accuracy"] for _, cell in mine], "o-", label="validation")
            ax.plot(cs, [cell["train_accuracy"] for _, cell in mine], "s--", alpha=0.6, label="train")
            for i, cell in mine:
                if i == best:
                    ax.plot(cell["settings"]["C"], cell["val_accuracy"], "o", ms=14, mfc="none", mec="red",
                            label="chosen")
            ax.set_xscale("log")
            ax.set_xlabel("C (inverse regularisation)")
            ax.set_ylabel("video accuracy")
            ax.set_ylim(-0.02, 1.02)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        else:
            lrs = sorted({cell["settings"]["lr"] for _, cell in mine})
            wds = sorted({cell["settings"]["weight_decay"] for _, cell in mine})
            grid = np.full((len(lrs), len(wds)), np.nan)
            for i, cell in mine:
                row, col = lrs.index(cell["settings"]["lr"]), wds.index(cell["settings"]["weight_decay"])
                grid[row, col] = cell["val_accuracy"]
                ax.text(col, row, f"{cell['val_accuracy']:.2f}", ha="center", va="center", fontsize=9,
                        color="white" if cell["val_accuracy"] > 0.5 else "black",
                        weight="bold" if i == best else "normal")
                if i == best:
                    ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=3))
            image = ax.imshow(grid, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
            fig.colorbar(image, ax=ax, shrink=0.8, label="validation video accuracy")
            ax.set_xticks(range(len(wds)), labels=[f"{w:g}" for w in wds])
            ax.set_yticks(range(len(lrs)), labels=[f"{lr:g}" for lr in lrs])
            ax.set_xlabel("weight decay")
            ax.set_ylabel("learning rate")
        ax.set_title(kind)
    return _save(fig, path)


def _best_epoch(rows: Sequence[dict]) -> float | None:
    scored = [(row["val_acc"], row.get("epoch", i)) for i, row in enumerate(rows, start=1)
              if row.get("val_acc") is not None and _finite(row["val_acc"])]
    # The first of equal scores, as ModelCheckpoint keeps it.
    return max(scored, key=lambda pair: (pair[0], -pair[1]))[1] if scored else None


def _finite(value: object) -> bool:
    return isinstance(value, (int, float, np.number)) and math.isfinite(float(value))


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    # A viewer watching the file sees the old plot or the new one, never half a PNG.
    return write_atomically(path, lambda temp: fig.savefig(temp, format="png", dpi=100), fsync=False)

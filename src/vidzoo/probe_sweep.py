"""Probe sweeps: many probes on one set of cached features, chosen by validation accuracy.

::

    Features --held out by video--> train | val (--val FILE or --val-split) | test (--test FILE or --test-split)
        logreg, linear_svm:  one scikit-learn fit per C                  (rows: videos or clips)
        attentive:           every (lr, weight decay) trained together   (a video's rows, attended over)
    --> grid: validation video accuracy of every cell --> the best cell's probe --> its test accuracy

Every probe is scored the same way, on videos: a linear probe's video score is the softmax of its
rows (clips) averaged, an attentive probe sees all of a video's rows at once. The best cell is
the one with the highest validation video accuracy; ties go to the first in grid order
(classifiers in the order given, then C or lr, then weight decay, as given).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vidzoo.attentive_probe import AttentiveProbe, fit_attentive_probes, video_rows
from vidzoo.data.balance import Balance, check_balance
from vidzoo.evaluate import aggregate
from vidzoo.features import Features
from vidzoo.linear_probe import (
    CLASSIFIERS,
    LinearProbe,
    ProbeReport,
    fit_linear_probe,
    labeled_features,
    onto_classes,
    split_videos,
    write_probe_report,
)

__all__ = ["PROBE_KINDS", "SweepCell", "SweepResult", "probe_sweep", "write_sweep"]

PROBE_KINDS = (*CLASSIFIERS, "attentive")


@dataclass
class SweepCell:
    """One probe of the grid and how it did (accuracies over videos)."""

    classifier: str
    settings: dict[str, float]  # {"C": ...} or {"lr": ..., "weight_decay": ...}
    val_accuracy: float
    train_accuracy: float
    converged: bool
    seconds: float  # an attentive cell's share of the joint training


@dataclass
class SweepResult:
    """The grid, the chosen probe with its validation report, and its test figures."""

    cells: list[SweepCell]
    best: int  # index of the chosen cell
    probe: LinearProbe | AttentiveProbe
    report: ProbeReport  # the chosen probe on the validation videos, and its test figures
    info: dict[str, Any] = field(default_factory=dict)  # balance, splits, epochs, seconds

    def to_dict(self) -> dict[str, Any]:
        """The grid as JSON: every cell, the chosen one, its test figures."""
        best = self.cells[self.best]
        return {"best": {"index": self.best, "classifier": best.classifier, "settings": best.settings,
                         "val_accuracy": best.val_accuracy},
                "test": self.report.test, "cells": [dataclasses.asdict(c) for c in self.cells], **self.info}


def _video_scores(probe: LinearProbe | AttentiveProbe, data: Features) -> tuple[list[torch.Tensor], list[int]]:
    """Each video's ``(rows, classes)`` logits and its label, videos in order of first appearance."""
    if isinstance(probe, AttentiveProbe):
        videos = video_rows(data)
        logits = probe.video_logits(videos)
        return [torch.from_numpy(row[None]) for row in logits], videos.labels.tolist()
    by_video: dict[str, list[int]] = {}
    for row, video in enumerate(data.video_ids):
        by_video.setdefault(video, []).append(row)
    logits = probe.logits(data.features)
    return ([torch.from_numpy(logits[rows]) for rows in by_video.values()],
            [int(data.labels[rows[0]]) for rows in by_video.values()])


def _score(probe: LinearProbe | AttentiveProbe, data: Features) -> dict[str, Any]:
    return aggregate(*_video_scores(probe, data), data.classes)


def _held_out(train: Features, other: Features | str | os.PathLike | None, split: float | None, seed: int,
              role: str) -> tuple[Features, Features | None, str | None]:
    """(what stays for training, the held-out part, where it came from)."""
    if other is not None:
        held = onto_classes(labeled_features(other, role), train, role)
        return train, held, f"{role} features {held.source or ''}".strip()
    if split is None:
        return train, None, None
    if not 0 < split < 1:
        raise ValueError(f"the {role} split must be a fraction between 0 and 1, got {split:g}")
    kept, held = split_videos(train, split, seed, role)
    return kept, held, f"a stratified {split:g} of the videos (seed {seed})"


def probe_sweep(
    features: Features | str | os.PathLike,
    *,
    val: Features | str | os.PathLike | None = None,
    val_split: float | None = 0.2,
    test: Features | str | os.PathLike | None = None,
    test_split: float | None = None,
    classifiers: Sequence[str] = ("logreg",),
    cs: Sequence[float] = (1.0,),
    lrs: Sequence[float] = (1e-3,),
    weight_decays: Sequence[float] = (0.01,),
    balance: Balance = "none",
    max_iter: int = 1000,
    epochs: int = 50,
    batch_size: int = 32,
    dim: int = 128,
    heads: int = 4,
    seed: int = 0,
) -> SweepResult:
    """Train a probe for every cell of the grid on `features` and pick the best by validation
    video accuracy.

    Args:
        features: a `Features` or a features file (``vidzoo extract``; ``per="clip"`` gives the
            attentive probe a sequence per video).
        val, val_split: validation features, or else this stratified fraction of the videos held
            out of `features` (required: one of the two).
        test, test_split: test features, or this fraction of the videos held out first (seed
            ``seed + 1``); the chosen probe's test accuracy is reported. Neither: no test.
        classifiers: any of ``logreg``, ``linear_svm`` (one fit per C in `cs`) and
            ``attentive`` (one probe per lr in `lrs` x weight decay in `weight_decays`, trained
            together for `epochs` in batches of `batch_size` videos; `dim`, `heads`: its width).
        balance: ``"none"``, ``"loss"`` or ``"sampling"`` (see `vidzoo.data.balance`).
    """
    started = time.perf_counter()
    check_balance(balance)
    unknown = [c for c in classifiers if c not in PROBE_KINDS]
    if unknown or not classifiers:
        raise ValueError(f"unknown classifier {unknown[0] if unknown else '(none given)'!r}; choose from "
                         f"{', '.join(PROBE_KINDS)}")
    for name, values in (("C", cs), ("lr", lrs), ("weight decay", weight_decays)):
        if not values:
            raise ValueError(f"no {name} values to sweep")
    if test is not None and test_split is not None:
        raise ValueError("give either test features (--test) or a --test-split fraction, not both")
    if val is None and not val_split:
        raise ValueError("a sweep picks its probe by validation accuracy: give validation features (--val) or "
                         "a --val-split fraction above 0")
    train = labeled_features(features, "training")
    train, held_test, test_from = _held_out(train, test, test_split, seed + 1, "test")
    train, held_val, val_from = _held_out(train, val, val_split, seed, "validation")

    cells: list[SweepCell] = []
    probes: list[LinearProbe | AttentiveProbe] = []
    for kind in dict.fromkeys(classifiers):  # each kind once, in the order given
        if kind == "attentive":
            settings = list(itertools.product(lrs, weight_decays))
            begun = time.perf_counter()
            fitted = fit_attentive_probes(video_rows(train), train.classes, settings, dim=dim, heads=heads,
                                          epochs=epochs, batch_size=batch_size, seed=seed, balance=balance)
            share = (time.perf_counter() - begun) / len(fitted)
            for probe, (lr, wd) in zip(fitted, settings):
                probe.info.update(layer=train.layer, model=train.model, per=train.per)
                cells.append(SweepCell(kind, {"lr": lr, "weight_decay": wd}, _score(probe, held_val)["video_accuracy"],
                                       _score(probe, train)["video_accuracy"], True, share))
                probes.append(probe)
            continue
        for c in cs:
            begun = time.perf_counter()
            probe = fit_linear_probe(train.features, train.labels, kind, classes=train.classes, c=c,
                                     max_iter=max_iter, seed=seed, balance=balance)
            probe.info.update(layer=train.layer, model=train.model, per=train.per,
                              clips_per_video=train.clips_per_video)
            cells.append(SweepCell(kind, {"C": c}, _score(probe, held_val)["video_accuracy"],
                                   _score(probe, train)["video_accuracy"], probe.info["converged"],
                                   time.perf_counter() - begun))
            probes.append(probe)

    best = max(range(len(cells)), key=lambda i: (cells[i].val_accuracy, -i))
    probe, cell = probes[best], cells[best]
    metrics = _score(probe, held_val)
    row_accuracy = metrics["video_accuracy"]
    if isinstance(probe, LinearProbe):
        row_accuracy = float((probe.predict(held_val.features) == held_val.labels).mean())
    test_figures = None
    if held_test is not None:
        scored = _score(probe, held_test)
        test_figures = {"video_accuracy": scored["video_accuracy"], "mean_class_accuracy": scored["mean_class_accuracy"],
                        "num_videos": scored["num_videos"], "test_from": test_from}
    report = ProbeReport(
        classifier=cell.classifier, accuracy=row_accuracy, video_accuracy=metrics["video_accuracy"],
        mean_class_accuracy=metrics["mean_class_accuracy"], train_accuracy=cell.train_accuracy,
        per_class=metrics["per_class"], confusion_matrix=metrics["confusion_matrix"], classes=list(train.classes),
        num_train=len(train.features), num_val=len(held_val.features), num_val_videos=metrics["num_videos"],
        val_from=val_from, layer=train.layer, model=train.model, converged=cell.converged,
        seconds=time.perf_counter() - started, settings=cell.settings, balance=balance, test=test_figures,
    )
    info = {"balance": balance, "val_from": val_from, "num_train_videos": len(set(train.video_ids)),
            "num_val_videos": metrics["num_videos"], "per": train.per, "layer": train.layer,
            "attentive": {"epochs": epochs, "batch_size": batch_size, "dim": dim, "heads": heads},
            "seed": seed, "seconds": time.perf_counter() - started}
    return SweepResult(cells, best, probe, report, info)


def write_sweep(result: SweepResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``grid.json`` and ``grid.png`` (every cell) and, as `write_probe_report` does, the
    chosen probe's ``report.json`` (with its settings and test figures), ``confusion.csv``,
    ``confusion.png`` and ``probe.safetensors`` into `out_dir`."""
    from vidzoo.plots import plot_probe_grid  # matplotlib is slow to import; only load it here

    paths = write_probe_report(result.probe, result.report, out_dir)
    paths["grid"], paths["grid_png"] = Path(out_dir) / "grid.json", Path(out_dir) / "grid.png"
    grid = result.to_dict()
    paths["grid"].write_text(json.dumps(grid, indent=2) + "\n", encoding="utf-8")
    plot_probe_grid(grid["cells"], paths["grid_png"], best=result.best)
    return paths

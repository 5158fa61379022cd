"""Linear probes: a scikit-learn linear classifier on frozen features, scored on held-out videos.

::

    Features (train) --standardise (mean/std of the training rows)--> LogisticRegression | LinearSVC
    Features (val: --val file, or a stratified --val-split of the videos) --> accuracy, confusion

The held-out part is split by *video*, so the clips of one video never sit on both sides. A
fitted probe is plain numbers — scaler mean and scale, coefficients, intercepts, class names —
saved as a safetensors file with JSON metadata (never pickle/joblib) and rebuilt by
`load_linear_probe`, with no scikit-learn needed to apply it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vidzoo.attentive_probe import AttentiveProbe
from vidzoo.data.balance import Balance, balanced_draw, check_balance
from vidzoo.data.sources import VideoSample, VideoSource, stratified_split
from vidzoo.evaluate import aggregate, write_confusion_csv
from vidzoo.features import Features, load_features
from vidzoo.fileio import read_safetensors_with_metadata

__all__ = [
    "CLASSIFIERS",
    "LinearProbe",
    "ProbeReport",
    "fit_linear_probe",
    "labeled_features",
    "linear_probe",
    "load_linear_probe",
    "onto_classes",
    "split_videos",
    "write_probe_report",
]

CLASSIFIERS = ("logreg", "linear_svm")
_METADATA_KEY = "vidzoo_probe"
_ARG = {"validation": "val", "test": "test"}  # the argument that gives a held-out part as its own file
_FORMAT_VERSION = 1


@dataclass
class LinearProbe:
    """A fitted linear classifier on standardised features.

    ``scores = ((x - mean) / scale) @ coef.T + intercept``, one column per entry of
    `class_indices` (the classes seen in training, as indices into `classes`); with two such
    classes scikit-learn keeps a single column, the score of the second.
    """

    classifier: str
    classes: list[str]
    class_indices: np.ndarray  # (K,) int64
    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    coef: np.ndarray  # (K, D), or (1, D) when K == 2
    intercept: np.ndarray  # (K,) or (1,)
    info: dict[str, Any] = field(default_factory=dict)  # C, layer, model, ...

    def __post_init__(self) -> None:
        dim, k = len(self.mean), len(self.class_indices)
        rows = 1 if k == 2 else k
        expected = {"scale": (dim,), "coef": (rows, dim), "intercept": (rows,)}
        wrong = [f"{name} {getattr(self, name).shape} (expected {shape})" for name, shape in expected.items()
                 if getattr(self, name).shape != shape]
        if wrong:
            raise ValueError(f"inconsistent probe for {k} classes and {dim} features: {', '.join(wrong)}")

    @property
    def num_features(self) -> int:
        return len(self.mean)

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """scikit-learn's ``decision_function`` of the fitted pipeline: ``(N, K)``, or ``(N,)``
        with two classes."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"the probe takes (rows, {self.num_features}) features, got shape {x.shape}")
        scores = ((x - self.mean) / self.scale) @ self.coef.T + self.intercept
        return scores[:, 0] if len(self.class_indices) == 2 else scores

    def logits(self, features: np.ndarray) -> np.ndarray:
        """``(N, len(classes))`` scores; -inf for classes absent from training. With two
        classes the first gets 0 and the second the score, so logistic regression's softmax
        is its probability."""
        scores = self.decision_function(features)
        if len(self.class_indices) == 2:
            scores = np.stack([np.zeros_like(scores), scores], axis=1)
        out = np.full((len(scores), len(self.classes)), -np.inf)
        out[:, self.class_indices] = scores
        return out

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class indices into `classes`, one per row."""
        scores = self.decision_function(features)
        if len(self.class_indices) == 2:
            return self.class_indices[(scores > 0).astype(np.int64)]
        return self.class_indices[scores.argmax(axis=1)]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the probe to a ``.safetensors`` file (arrays + JSON metadata, no pickle)."""
        from safetensors.numpy import save_file

        from vidzoo.fileio import write_atomically

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {name: np.ascontiguousarray(getattr(self, name))
                  for name in ("class_indices", "mean", "scale", "coef", "intercept")}
        meta = {"format_version": _FORMAT_VERSION, "classifier": self.classifier, "classes": self.classes,
                "info": self.info}
        write_atomically(path, lambda p: save_file(arrays, str(p), metadata={_METADATA_KEY: json.dumps(meta)}))
        return path


def load_linear_probe(path: str | os.PathLike) -> LinearProbe:
    """The probe saved by `LinearProbe.save`."""
    arrays, meta = read_safetensors_with_metadata(path, key=_METADATA_KEY, what="linear probe",
                                                  format_version=_FORMAT_VERSION)
    missing = sorted({"class_indices", "mean", "scale", "coef", "intercept"} - set(arrays))
    if missing:
        raise ValueError(f"{path} lacks the array(s) {', '.join(missing)}")
    try:
        return LinearProbe(meta["classifier"], list(meta["classes"]), info=meta.get("info", {}), **arrays)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def fit_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    classifier: Literal["logreg", "linear_svm"] = "logreg",
    *,
    classes: list[str] | None = None,
    c: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
    balance: Balance = "none",
) -> LinearProbe:
    """Standardise `features` ``(N, D)`` and fit a `classifier` on the class indices `labels`
    ``(N,)``: ``"logreg"`` (multinomial `LogisticRegression`) or ``"linear_svm"`` (one-vs-rest
    `LinearSVC`), with inverse regularisation strength `c`. `classes` names the indices
    (default ``class_0``, ...). ``info["converged"]`` is False when the solver hit `max_iter`.
    `balance` ``"loss"`` is scikit-learn's ``class_weight="balanced"``; ``"sampling"`` fits on
    as many rows drawn with replacement, every class equally often (seeded by `seed`)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {classifier!r}; choose one of {', '.join(CLASSIFIERS)}")
    check_balance(balance)
    if not c > 0:
        raise ValueError(f"c (inverse regularisation strength) must be > 0, got {c!r}")
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or y.shape != (len(x),):
        raise ValueError(f"expected features (N, D) and labels (N,), got shapes {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    present = np.unique(y)
    if len(present) < 2:
        raise ValueError(f"a probe needs training rows of at least 2 classes, got only {present.tolist()}")
    if classes is None:
        classes = [f"class_{i}" for i in range(int(y.max()) + 1)]
    if y.min() < 0 or y.max() >= len(classes):
        raise ValueError(f"labels must be indices into the {len(classes)} classes, got {y.min()}..{y.max()}")

    num_train = len(x)
    if balance == "sampling":
        rows = balanced_draw(y, np.random.default_rng(seed))
        x, y = x[rows], y[rows]
    scaler = StandardScaler().fit(x)
    weight = "balanced" if balance == "loss" else None
    if classifier == "logreg":
        model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed, class_weight=weight)
    else:
        model = LinearSVC(C=c, max_iter=max_iter, random_state=seed, class_weight=weight)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(scaler.transform(x), y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return LinearProbe(
        classifier=classifier, classes=list(classes), class_indices=model.classes_.astype(np.int64),
        mean=scaler.mean_, scale=scaler.scale_, coef=model.coef_, intercept=np.atleast_1d(model.intercept_),
        info={"C": c, "max_iter": max_iter, "seed": seed, "converged": converged, "num_train": num_train,
              "balance": balance},
    )


# --------------------------------------------------------------------------- train + validate


@dataclass
class ProbeReport:
    """How a probe did on held-out rows. `accuracy` scores every row alone (a clip, or a
    video for per-video features); `video_accuracy` averages the softmax of a video's rows.
    `confusion_matrix` counts videos, [true][predicted]. `test` holds a probe sweep's test
    figures of its chosen probe (`vidzoo.probe_sweep`)."""

    classifier: str
    accuracy: float
    video_accuracy: float
    mean_class_accuracy: float
    train_accuracy: float
    per_class: dict[str, dict[str, Any]]
    confusion_matrix: list[list[int]]
    classes: list[str]
    num_train: int  # rows
    num_val: int  # rows
    num_val_videos: int
    val_from: str  # "--val FILE" or "a stratified 0.2 of the videos"
    layer: str | None
    model: dict[str, Any]
    converged: bool
    seconds: float
    settings: dict[str, float] = field(default_factory=dict)  # {"C": ...}, or an attentive probe's lr, weight_decay
    balance: str = "none"
    test: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def labeled_features(features: Features | str | os.PathLike, role: str) -> Features:
    """`features` (or the features file), refused without labels; `role` names them in the message."""
    features = features if isinstance(features, Features) else load_features(features)
    if features.labels is None:
        where = features.source or "these features"
        raise ValueError(f"the {role} features ({where}) have no labels, so a probe cannot be trained or "
                         "scored on them; extract them from a labeled source (class folders or a path,label CSV)")
    return features


def _rows(features: Features, videos: set[str]) -> Features:
    keep = np.array([v in videos for v in features.video_ids], dtype=bool)
    return dataclasses.replace(
        features, features=features.features[keep], labels=features.labels[keep],
        video_ids=[v for v, k in zip(features.video_ids, keep) if k],
        clip_index=None if features.clip_index is None else features.clip_index[keep],
        token_index=None if features.token_index is None else features.token_index[keep],
    )


def split_videos(features: Features, fraction: float, seed: int,
                 role: str = "validation") -> tuple[Features, Features]:
    """(kept, held out): a `fraction` of the videos, stratified by class, exactly as ``vidzoo
    train --val-split`` splits videos; `role` names the held-out part in messages."""
    label_of: dict[str, int] = {}
    for video, label in zip(features.video_ids, features.labels.tolist()):
        if label_of.setdefault(video, label) != label:
            raise ValueError(f"video {video!r} has rows with different labels")
    # The split works on a VideoSource; only labels and ids matter here, nothing is decoded.
    videos = VideoSource(features.classes, [VideoSample(v, label, v) for v, label in label_of.items()],
                         "", features.source or "features")
    kept, held = stratified_split(videos, fraction, seed)
    if not len(held):
        raise ValueError(f"a {fraction:g} {role} split holds out no video: every class has a single video; "
                         f"give a separate {role} set ({_ARG[role]}=... / --{_ARG[role]})")
    return _rows(features, {s.video_id for s in kept.samples}), _rows(features, {s.video_id for s in held.samples})


def onto_classes(val: Features, train: Features, role: str = "validation") -> Features:
    """`val` with its labels re-indexed onto `train`'s classes, by name, after checking that both
    were extracted the same way; `role` names `val` in messages."""
    if val.dim != train.dim:
        raise ValueError(f"train features have {train.dim} dimensions but {role} features {val.dim}")
    for key, a, b in (("layer", train.layer, val.layer),
                      ("model weights", train.model.get("tensors_sha256"), val.model.get("tensors_sha256"))):
        if a is not None and b is not None and a != b:
            raise ValueError(f"train and {role} features differ in {key} ({a} vs {b}); extract both the same way")
    index = {name: i for i, name in enumerate(train.classes)}
    unknown = sorted({val.classes[i] for i in val.labels} - set(index))
    if unknown:
        raise ValueError(f"{role} classes {unknown} are not among the training classes {train.classes}")
    labels = np.array([index[val.classes[i]] for i in val.labels], dtype=np.int64)
    return dataclasses.replace(val, labels=labels, classes=list(train.classes))


def linear_probe(
    features: Features | str | os.PathLike,
    *,
    val: Features | str | os.PathLike | None = None,
    val_split: float = 0.2,
    classifier: Literal["logreg", "linear_svm"] = "logreg",
    c: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
    balance: Balance = "none",
) -> tuple[LinearProbe, ProbeReport]:
    """Fit a probe on `features` (a `Features` or a features file) and score it on `val`, or,
    without `val`, on a stratified `val_split` of the videos held out from `features`
    (`balance`: see `fit_linear_probe`)."""
    started = time.perf_counter()
    train = labeled_features(features, "training")
    if val is not None:
        held = onto_classes(labeled_features(val, "validation"), train)
        val_from = f"validation features {held.source or ''}".strip()
    else:
        train, held = split_videos(train, val_split, seed)
        val_from = f"a stratified {val_split:g} of the videos (seed {seed})"
    probe = fit_linear_probe(train.features, train.labels, classifier, classes=train.classes, c=c,
                             max_iter=max_iter, seed=seed, balance=balance)
    probe.info.update(layer=train.layer, model=train.model, per=train.per, clips_per_video=train.clips_per_video)

    logits = probe.logits(held.features)
    by_video: dict[str, list[int]] = {}
    for row, video in enumerate(held.video_ids):
        by_video.setdefault(video, []).append(row)
    metrics = aggregate([torch.from_numpy(logits[rows]) for rows in by_video.values()],
                        [int(held.labels[rows[0]]) for rows in by_video.values()], train.classes)
    report = ProbeReport(
        classifier=classifier,
        accuracy=float((probe.predict(held.features) == held.labels).mean()),
        video_accuracy=metrics["video_accuracy"],
        mean_class_accuracy=metrics["mean_class_accuracy"],
        train_accuracy=float((probe.predict(train.features) == train.labels).mean()),
        per_class=metrics["per_class"],
        confusion_matrix=metrics["confusion_matrix"],
        classes=list(train.classes),
        num_train=len(train.features),
        num_val=len(held.features),
        num_val_videos=len(by_video),
        val_from=val_from,
        layer=train.layer,
        model=train.model,
        converged=probe.info["converged"],
        seconds=time.perf_counter() - started,
        settings={"C": c},
        balance=balance,
    )
    return probe, report


def write_probe_report(probe: LinearProbe | AttentiveProbe, report: ProbeReport,
                       out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.json``, ``confusion.csv`` (header ``true\\predicted`` then the class
    names), ``confusion.png`` and the probe, ``probe.safetensors``, into `out_dir`."""
    from vidzoo.plots import (
        plot_confusion,  # matplotlib is slow to import; only load it here
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "csv": out / "confusion.csv", "png": out / "confusion.png",
             "probe": out / "probe.safetensors"}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    write_confusion_csv(paths["csv"], report.classes, report.confusion_matrix)
    plot_confusion(np.array(report.confusion_matrix), report.classes, paths["png"],
                   title=f"{report.classifier} probe: video accuracy {report.video_accuracy:.1%} "
                         f"on {report.num_val_videos} videos")
    probe.save(paths["probe"])
    return paths

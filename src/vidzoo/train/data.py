"""A run's data, settled before the first step: the splits (read or held out, written to the run
directory, counted per class), what looks like a mistake in the labels, and a preflight over the
videos that finds broken files and counts those shorter than a clip.

Everything it finds is said once, before training, through the ``vidzoo.train`` logger (the
command line prints it) and kept in ``summary.json``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidzoo.check import check_dataset
from vidzoo.data.clip import ClipSpec
from vidzoo.data.dataset import BadVideo
from vidzoo.data.sources import (
    AnnotationError,
    VideoSource,
    data_warnings,
    load_source,
    split_counts,
    stratified_split,
    validate_sources,
    write_split,
)
from vidzoo.train.callbacks import TrainingError
from vidzoo.train.config import TrainConfig

__all__ = ["RunData", "preflight", "prepare_data", "say"]

log = logging.getLogger("vidzoo.train")
_SHORT_POLICY_SAYS = {
    "loop": "each is played again from its start to fill the clip",
    "repeat_last": "each is padded with its last frame",
    "error": "they are skipped and listed in bad_videos.csv",
}


def say(message: str) -> None:
    """One line of the run's report (INFO on the ``vidzoo.train`` logger; the CLI prints it)."""
    log.info("%s", message)


@dataclass
class RunData:
    """The splits of a run and what the checks found."""

    train: VideoSource
    val: VideoSource
    test: VideoSource | None
    warnings: list[str] = field(default_factory=list)
    counts: list[dict[str, Any]] = field(default_factory=list)  # videos per class and split
    bad: list[BadVideo] = field(default_factory=list)  # left out before training
    preflight: dict[str, Any] = field(default_factory=dict)

    def splits(self) -> dict[str, VideoSource]:
        return {"train": self.train, "val": self.val, **({"test": self.test} if self.test is not None else {})}

    def write_splits(self, run_dir: Path) -> None:
        """``train_split.csv``, ``val_split.csv`` (and ``test_split.csv``): the exact videos of each."""
        for name, source in self.splits().items():
            write_split(source, run_dir / f"{name}_split.csv")


def prepare_data(config: TrainConfig) -> RunData:
    """Read and split the sources, report the splits, and warn about labels that look like
    mistakes; `preflight` then checks the videos against the clip description."""
    data = _splits(config)
    data.counts = split_counts(data.splits())
    _report_splits(data, config)
    data.warnings = data_warnings(data.train, *[s for s in (data.val, data.test) if s is not None])
    for warning in data.warnings:
        log.warning("%s", warning)
    return data


def _splits(config: TrainConfig) -> RunData:
    train = load_source(config.data, config.classes, root=config.data_root)
    test = load_source(config.test, root=config.data_root) if config.test is not None else None
    if config.test_split is not None:
        train, test = stratified_split(train, config.test_split, seed=config.seed + 1)
    if config.val is not None:
        val = load_source(config.val, root=config.data_root)
    else:
        train, val = stratified_split(train, config.val_split or 0.2, seed=config.seed)
    if len(val) == 0:
        raise AnnotationError(config.data, [
            f"the validation split is empty: no class has enough videos to give one at val_split="
            f"{config.val_split or 0.2:g} (a class gives round(fraction x its videos)); give --val DATA or a "
            "larger --val-split"])
    # Every cross-split problem (unseen classes, empty classes, leaked videos) at once.
    validate_sources(train, val, test)
    classes = train.classes
    return RunData(train, val.with_classes(classes), test.with_classes(classes) if test is not None else None)


def _report_splits(data: RunData, config: TrainConfig) -> None:
    splits = [name for name in ("train", "val", "test") if getattr(data, name) is not None]
    totals = {name: len(getattr(data, name)) for name in splits}
    how = "" if config.val is not None else f" (val: {config.val_split or 0.2:g} of every class held out)"
    say(f"{len(data.train.classes)} classes; videos per split: "
        + ", ".join(f"{name} {n}" for name, n in totals.items()) + how)
    width = max(len(row["class"]) for row in data.counts)
    for row in data.counts[:30]:
        say(f"  {row['class']:<{width}}  " + "  ".join(f"{name} {row[name]:>4}" for name in splits))
    if len(data.counts) > 30:
        say(f"  ... and {len(data.counts) - 30} more classes (train_split.csv and val_split.csv list every video)")
    if config.val is None:
        unvalidated = [row["class"] for row in data.counts if row["val"] == 0]
        if unvalidated:
            say(f"  {len(unvalidated)} class(es) too small to give a validation video (validation accuracy "
                f"leaves them out): {', '.join(unvalidated[:8])}{' ...' if len(unvalidated) > 8 else ''}")


def preflight(data: RunData, spec: ClipSpec, config: TrainConfig) -> None:
    """Open the videos (up to ``config.preflight``, a seeded sample of larger sets): broken ones
    leave the run now, listed; those shorter than a clip are counted and the short-video policy
    said. Nothing with ``config.preflight == 0``."""
    if not config.preflight:
        return
    splits = data.splits()
    paths = sorted({s.path for source in splits.values() for s in source.samples})
    sample = paths if len(paths) <= config.preflight else sorted(random.Random(config.seed).sample(paths, config.preflight))
    report = check_dataset(sample, frames=spec.frames, workers=min(config.workers, 4), random_frames=0,
                           timeout=config.sample_timeout, progress=False)
    broken = {r.path: r for r in report.results if not r.usable}
    short = [r for r in report.results if r.status == "too_short"]
    scope = f"{len(sample)} videos" if len(sample) == len(paths) else f"a sample of {len(sample)} of {len(paths)} videos"
    data.preflight = {"checked": len(sample), "videos": len(paths), "unreadable": len(broken),
                      "shorter_than_a_clip": len(short), "short_policy": spec.short_policy}
    if short:
        say(f"{len(short)} of {scope} have fewer frames than a clip ({spec.frames} at stride {spec.frame_stride}; "
            f"the shortest has {min(r.num_frames for r in short)}): short_policy {spec.short_policy!r}, "
            f"{_SHORT_POLICY_SAYS[spec.short_policy]} (--short-policy loop|repeat_last|error)")
    if spec.short_policy == "error":
        broken.update({r.path: r for r in short})
    if not broken:
        say(f"preflight: {scope} open and decode")
        return
    data.bad = [BadVideo(path, r.reason, r.error or "ClipTooShortError") for path, r in broken.items()]
    total = sum(len(source) for source in splits.values())
    if len(broken) > config.max_bad_fraction * total:
        listed = "; ".join(f"{b.path}: {b.reason}" for b in data.bad[:5])
        raise TrainingError(f"{len(broken)} of {total} videos cannot be used (more than max_bad_fraction="
                            f"{config.max_bad_fraction:g}): {listed}{' ...' if len(broken) > 5 else ''}; run "
                            "`vidzoo check` on the dataset, or raise --max-bad-fraction to train without them")
    for bad in data.bad:
        log.warning("skipping %s: %s", bad.path, bad.reason)
    for name, source in splits.items():
        setattr(data, name, source.subset([i for i, s in enumerate(source.samples) if s.path not in broken]))
    # The split counts said before the preflight included these videos.
    say(f"left out {len(data.bad)} unusable video(s); videos per split now: "
        + ", ".join(f"{name} {len(getattr(data, name))}" for name in splits))

"""Video-level evaluation: every test video cut into views (clips x crops), scored by a model.

::

    VideoSource --with_classes(model.classes)--> eval VideoDataset  (one video's views at a time)
        --chunks of `chunk_size` videos (vidzoo.distributed: shared out among processes, saved
          in PARTS/ when given, so a rerun resumes)
        --DataLoader(workers)--> ViewBatcher  (views of consecutive videos packed into batches
                                                of `batch_size` views, so memory stays bounded)
        --view logits per video--> averaged softmax, clip hits  --chunks in order--> _Tally --> EvalReport

Labels are matched by class *name* onto the model's outputs. A video's prediction is the argmax
of its softmax averaged over all its views; clip accuracy scores each view on its own. Batches
never span two chunks, so the report is the same whatever the number of processes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from vidzoo.data.clip import ClipSpec
from vidzoo.data.dataset import VideoDataset
from vidzoo.data.sources import VideoSource
from vidzoo.data.video import VideoDecodeError, decoder_threads, loader_workers
from vidzoo.distributed import (
    Chunk,
    ChunkStore,
    check_launch,
    chunk_ranges,
    launch,
    run_chunks,
    videos_fingerprint,
)
from vidzoo.engine import inference_engine
from vidzoo.model_file import tensors_sha256
from vidzoo.models._base import VideoClassifier

__all__ = ["EvalReport", "aggregate", "clip_spec_for", "evaluate", "write_report", "inference_mode"]

_TOP_K = 5


@dataclass
class EvalReport:
    """What `evaluate` measured. Accuracies are fractions in [0, 1], at video level except
    `clip_accuracy` (every view scored alone). `top5_accuracy` uses k = `top_k` =
    min(5, number of classes). A class with no test video has accuracy None in `per_class` and
    is left out of `mean_class_accuracy`. `excluded` lists the videos skipped as undecodable
    (``skip_bad=True``); they are not in `num_videos` nor in any metric."""

    clip_accuracy: float
    video_accuracy: float
    top5_accuracy: float
    top_k: int
    mean_class_accuracy: float
    per_class: dict[str, dict[str, Any]]  # class -> {"accuracy": float | None, "videos": int}
    confusion_matrix: list[list[int]]  # [true][predicted], videos
    classes: list[str]
    num_videos: int
    clips_per_video: int
    crops: int
    excluded: list[dict[str, str]]  # {video_id, path, reason}
    seconds: float
    engine: str = ""  # how the model ran: `Engine.summary`
    clips_per_s: float | None = None  # views scored per second of the scoring loop (decode included)
    data_wait_share: float | None = None  # share of the scoring loop spent waiting for decoded videos

    # How the run went rather than what it measured: they vary from run to run.
    RUN_FIELDS = ("seconds", "engine", "clips_per_s", "data_wait_share")

    def figures(self) -> dict[str, Any]:
        """`to_dict` without `RUN_FIELDS`: what two runs of the same evaluation must agree on."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RUN_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict with the field names as keys."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- metrics


def video_scores(view_logits: torch.Tensor, label: int, num_classes: int) -> tuple[torch.Tensor, int, int]:
    """One video's softmax averaged over its views, how many views score `label` top, and views."""
    if view_logits.ndim != 2 or view_logits.shape[1] != num_classes or len(view_logits) == 0:
        raise ValueError(f"expected view logits of shape (views >= 1, {num_classes}), got {tuple(view_logits.shape)}")
    if not 0 <= label < num_classes:
        raise ValueError(f"label {label} is outside 0..{num_classes - 1}")
    view_logits = view_logits.detach().float().cpu()
    hits = int((view_logits.argmax(dim=1) == label).sum())
    return view_logits.softmax(dim=1).mean(dim=0), hits, len(view_logits)


class _Tally:
    """Running counts for the metrics; keeps one averaged probability vector per video, never
    the views' logits, so a long test set costs C floats per video."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.clip_hits = 0
        self.clips = 0
        self.video_probs: list[torch.Tensor] = []
        self.labels: list[int] = []

    def add(self, view_logits: torch.Tensor, label: int) -> None:
        self.add_video(*video_scores(view_logits, label, self.num_classes), label)

    def add_video(self, probs: torch.Tensor, hits: int, views: int, label: int) -> None:
        """A video scored by `video_scores`: its averaged softmax, clip hits and views."""
        self.clip_hits += int(hits)
        self.clips += int(views)
        self.video_probs.append(probs)
        self.labels.append(int(label))

    def metrics(self, classes: Sequence[str]) -> dict[str, Any]:
        if not self.labels:
            raise ValueError("no videos to score")
        c = self.num_classes
        probs = torch.stack(self.video_probs)
        labels = torch.tensor(self.labels)
        predicted = probs.argmax(dim=1)
        k = min(_TOP_K, c)
        in_top_k = (probs.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
        confusion = torch.bincount(labels * c + predicted, minlength=c * c).reshape(c, c)
        videos = confusion.sum(dim=1)
        correct = confusion.diagonal()
        per_class = {
            name: {"accuracy": float(correct[i] / videos[i]) if videos[i] else None, "videos": int(videos[i])}
            for i, name in enumerate(classes)
        }
        present = videos > 0
        return dict(
            clip_accuracy=self.clip_hits / self.clips,
            video_accuracy=float((predicted == labels).float().mean()),
            top5_accuracy=float(in_top_k.float().mean()),
            top_k=k,
            mean_class_accuracy=float((correct[present] / videos[present]).mean()),
            per_class=per_class,
            confusion_matrix=confusion.tolist(),
            classes=list(classes),
            num_videos=len(self.labels),
        )


def aggregate(
    view_logits: Sequence[torch.Tensor], labels: Sequence[int], classes: Sequence[str]
) -> dict[str, Any]:
    """The metric fields of `EvalReport` (clip_accuracy ... num_videos) from views' logits:
    ``view_logits[i]`` is ``(views, num_classes)`` for video i, ``labels[i]`` its true class
    index into `classes`. The pure core of `evaluate`, usable on logits computed elsewhere."""
    if len(view_logits) != len(labels):
        raise ValueError(f"got logits for {len(view_logits)} videos but {len(labels)} labels")
    tally = _Tally(len(classes))
    for logits, label in zip(view_logits, labels):
        tally.add(logits, label)
    return tally.metrics(classes)


# --------------------------------------------------------------------------- running the model


@contextlib.contextmanager
def inference_mode(model: nn.Module, device: str | torch.device) -> Iterator[nn.Module]:
    """The model on `device`, in eval mode, without autograd; its train/eval mode is restored
    on exit (it stays on `device`)."""
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


class ViewBatcher:
    """Runs the model on views in batches of exactly `batch_size` (the last one smaller),
    packing the views of consecutive videos together and splitting a video with more views
    across batches; hands back each video's ``(views, num_classes)`` logits, in order."""

    def __init__(self, model: nn.Module, batch_size: int, device: torch.device):
        self.model = model
        self.batch_size = batch_size
        self.device = device
        self.views: list[torch.Tensor] = []  # waiting for a forward pass
        self.num_views = 0
        self.logits: list[torch.Tensor] = []  # computed, not yet handed back
        self.num_logits = 0
        self.owners: deque[tuple[Any, int]] = deque()  # (video key, views), in arrival order

    def push(self, views: torch.Tensor, key: Any) -> list[tuple[Any, torch.Tensor]]:
        self.views.append(views)
        self.num_views += len(views)
        self.owners.append((key, len(views)))
        while self.num_views >= self.batch_size:
            self._run(self.batch_size)
        return self._finished()

    def flush(self) -> list[tuple[Any, torch.Tensor]]:
        if self.num_views:
            self._run(self.num_views)
        return self._finished()

    def _run(self, n: int) -> None:
        waiting = torch.cat(self.views) if len(self.views) > 1 else self.views[0]
        batch, rest = waiting[:n], waiting[n:]
        self.views = [rest] if len(rest) else []
        self.num_views -= n
        self.logits.append(self.model(batch.to(self.device, non_blocking=True)).float().cpu())
        self.num_logits += n

    def _finished(self) -> list[tuple[Any, torch.Tensor]]:
        done = []
        while self.owners and self.owners[0][1] <= self.num_logits:
            key, n = self.owners.popleft()
            ready = torch.cat(self.logits) if len(self.logits) > 1 else self.logits[0]
            done.append((key, ready[:n]))
            self.logits = [ready[n:]] if n < len(ready) else []
            self.num_logits -= n
        return done


class _Item(NamedTuple):
    views: torch.Tensor | None  # None when the video failed
    label: int
    video_id: str
    path: str
    error: str | None  # the VideoDecodeError's reason


class CatchingDataset(Dataset):
    """The eval dataset, with decode failures returned as data instead of raised: an exception
    in a DataLoader worker would end the whole loop, and would reach the main process as a
    RuntimeError that no longer says which exception it was."""

    def __init__(self, dataset: VideoDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> _Item:
        sample = self.dataset.source.samples[index]
        try:
            views, label, video_id = self.dataset[index]
        except VideoDecodeError as e:
            return _Item(None, sample.label, sample.video_id, e.path, e.reason)
        return _Item(views, label, video_id, sample.path, None)


class WaitClock:
    """Times a loop over a DataLoader: `items(loader)` yields its items while adding up the time
    spent waiting for each (decoding not yet done), for the data-wait share eval and extract report."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.waited = 0.0

    def items(self, loader: Iterable[_Item]) -> Iterator[_Item]:
        it = iter(loader)
        while True:
            asked = time.perf_counter()
            item = next(it, None)
            self.waited += time.perf_counter() - asked
            if item is None:
                return
            yield item

    def meta(self) -> dict[str, float]:
        """``seconds`` and ``data_wait_seconds`` so far, as chunks carry them."""
        return {"seconds": time.perf_counter() - self.started, "data_wait_seconds": self.waited}


def throughput(chunks: Sequence[Chunk], views: int) -> dict[str, float | None]:
    """``clips_per_s`` (views per second of the loops) and ``data_wait_share`` of chunks timed by `WaitClock`."""
    seconds = sum(chunk.meta.get("seconds", 0.0) for chunk in chunks)
    waited = sum(chunk.meta.get("data_wait_seconds", 0.0) for chunk in chunks)
    return {"clips_per_s": views / seconds if seconds > 0 else None,
            "data_wait_share": waited / seconds if seconds > 0 else None}


def single_video(batch: list[_Item]) -> _Item:
    # batch_size=1 video: keep its views tensor as it is (the batcher packs views itself).
    return batch[0]


def first_views(dataset: CatchingDataset, tries: int = 3) -> torch.Tensor | None:
    """The views of the first of `dataset`'s first `tries` videos that decodes (None if none
    does): clips to calibrate an engine on before the job starts."""
    for index in range(min(tries, len(dataset))):
        item = dataset[index]
        if item.views is not None:
            return item.views
    return None


def clip_spec_for(model: VideoClassifier, clips_per_video: int | None = None, crops: int | None = None) -> ClipSpec:
    """The model's clip description with the views of one command changed (None: the model's)."""
    return model.clip_spec.replace(clips_per_video=clips_per_video, crops=crops)


def evaluate(
    model: VideoClassifier,
    source: VideoSource,
    *,
    clips_per_video: int | None = None,
    crops: int | None = None,
    batch_size: int | None = None,
    workers: int = 0,
    skip_bad: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    chunk_size: int = 256,
    parts: str | os.PathLike | None = None,
    devices: int = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    engine: str = "eager",
    precision: str = "fp32",
    decoder: str = "auto",
) -> EvalReport | None:
    """Score `model` on every video of `source` at video level.

    Each video gives ``clips_per_video * crops`` views (clips spread over the video, 1 centre
    crop or 3 crops), cut as the model's clip description says (``model.clip_spec``, which a
    model file carries); `clips_per_video` and `crops` change only the views. The model sees at
    most `batch_size` views per forward pass (None: the engine's choice). Labels are matched to
    the model's outputs by class name.

    `engine` and `precision` choose how the model runs (`vidzoo.engine.build_engine`; the
    default is the reference, eager fp32; ``"auto"`` calibrates on the first video's views).
    With several processes ``auto`` means eager fp32, so that every process computes alike.
    Videos are decoded by `workers` processes ahead of the model; the report says the share of
    the time spent waiting for them (`data_wait_share`).

    The videos are scored in chunks of `chunk_size`; with `parts` (a folder) each finished
    chunk is saved there, a rerun after an interruption scores only the others, and the folder
    is removed at the end (chunks of another evaluation in it are discarded). `devices`,
    `strategy` and `num_nodes` run it as several processes, as `vidzoo train` takes them (see
    `vidzoo.distributed.launch`; `parts` required): each scores its share of the chunks on its
    own `device`-type device and process 0 returns the report, the others None.

    Raises AnnotationError when `source` has classes the model does not know, ValueError when
    the model has no class names, and VideoDecodeError (naming the file) for a video that
    cannot be decoded, unless `skip_bad`: then it is listed in `EvalReport.excluded` instead.
    """
    started = time.perf_counter()
    if model.classes is None:
        raise ValueError(
            "the model has no class names (model.classes is None), so test labels cannot be "
            "matched to its outputs; load it from a model file saved with classes, or set "
            "model.classes"
        )
    for name, value, minimum in (("batch_size", batch_size, 1), ("workers", workers, 0), ("chunk_size", chunk_size, 1)):
        if name == "batch_size" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    check_launch(devices, strategy, num_nodes, parts)
    classes = list(model.classes)
    source = source.with_classes(classes)
    spec = clip_spec_for(model, clips_per_video, crops)
    chunks = chunk_ranges(len(source), chunk_size)
    processes = launch(device, devices, strategy, num_nodes)
    if processes.world_size > 1 and "auto" in (engine, precision):
        engine, precision = "eager", "fp32"  # each process would calibrate, and might choose, on its own
    store = None if parts is None else ChunkStore(
        parts, _fingerprint(model, source, spec, chunk_size, f"{engine} {precision}", decoder), "evaluation")
    workers = loader_workers(decoder, workers)  # 0 for a GPU decoder
    threads = decoder_threads(workers, processes=processes.local_processes)  # this machine's processes share its cores
    dataset = CatchingDataset(VideoDataset.from_spec(source, spec, train=False, decoder=decoder, threads=threads))
    # Decoded only if the engine must measure (not when its choice is cached).
    calibration = (lambda: first_views(dataset)) if "auto" in (engine, precision) else None

    with inference_engine(model, engine=engine, precision=precision, device=processes.device, batch_size=batch_size,
                          calibration=calibration, job_clips=len(source) * spec.clips_per_video * spec.crops) as run:

        def compute(index: int, advance: Callable[[], None]) -> Chunk:
            return _evaluate_chunk(run, dataset, chunks[index], len(classes), run.batch_size, workers,
                                   processes.device, skip_bad, advance)

        results = run_chunks(processes, [len(c) for c in chunks], compute, store=store, overwrite=True,
                             progress=progress, label="evaluating")
    if results is None:  # another process than 0: its chunks are on disk
        return None
    tally = _Tally(len(classes))
    for chunk in results:
        for probs, hits, views, label in zip(chunk.arrays["probs"], chunk.arrays["hits"], chunk.arrays["views"],
                                             chunk.arrays["labels"]):
            tally.add_video(torch.from_numpy(probs), hits, views, label)
    excluded = [e for chunk in results for e in chunk.meta["excluded"]]
    if not tally.labels:
        first = excluded[0]
        raise RuntimeError(
            f"all {len(excluded)} videos failed to decode, so there is nothing to score; "
            f"the first, {first['path']}: {first['reason']}"
        )
    if store is not None:
        store.remove()
    views = sum(int(chunk.arrays["views"].sum()) for chunk in results)
    return EvalReport(
        **tally.metrics(classes),
        clips_per_video=spec.clips_per_video,
        crops=spec.crops,
        excluded=excluded,
        seconds=time.perf_counter() - started,
        engine=run.summary,
        **throughput(results, views),
    )


def _evaluate_chunk(model: nn.Module, dataset: CatchingDataset, videos: range, num_classes: int, batch_size: int,
                    workers: int, device: torch.device, skip_bad: bool, advance: Callable[[], None]) -> Chunk:
    """The videos `videos` of `dataset` scored: per video its averaged softmax, clip hits, views
    and label; and the videos that failed to decode."""
    loader = DataLoader(Subset(dataset, videos), batch_size=1, shuffle=False, num_workers=workers,
                        collate_fn=single_video, pin_memory=device.type == "cuda")
    batcher = ViewBatcher(model, batch_size, device)
    scored: list[tuple[tuple[str, int], tuple[torch.Tensor, int, int]]] = []
    excluded: list[dict[str, str]] = []

    def take(done: list[tuple[Any, torch.Tensor]]) -> None:
        scored.extend((key, video_scores(logits, key[1], num_classes)) for key, logits in done)

    clock = WaitClock()
    for item in clock.items(loader):
        if item.views is None:
            if not skip_bad:
                raise VideoDecodeError(item.path, item.error)
            excluded.append({"video_id": item.video_id, "path": item.path, "reason": item.error})
        else:
            take(batcher.push(item.views, (item.video_id, item.label)))
        advance()
    take(batcher.flush())
    arrays = {
        "probs": torch.stack([probs for _, (probs, _, _) in scored]).numpy() if scored
        else np.zeros((0, num_classes), np.float32),
        "hits": np.array([hits for _, (_, hits, _) in scored], dtype=np.int64),
        "views": np.array([views for _, (_, _, views) in scored], dtype=np.int64),
        "labels": np.array([label for (_, label), _ in scored], dtype=np.int64),
    }
    return Chunk(arrays, {"video_ids": [video_id for (video_id, _), _ in scored], "excluded": excluded,
                          **clock.meta()})


def _fingerprint(model: VideoClassifier, source: VideoSource, spec: ClipSpec, chunk_size: int,
                 engine: str, decoder: str) -> dict[str, Any]:
    """What must match for saved chunks to be reused: the same model, views, videos, engine and
    decoder (two FFmpeg builds may decode damaged data differently)."""
    return {"format": "vidzoo-eval-parts", "format_version": 1, "tensors_sha256": tensors_sha256(model.state_dict()),
            "classes": list(source.classes), "clip_spec": spec.model_dump(mode="json"), "chunk_size": chunk_size,
            "engine": engine, "decoder": decoder, **videos_fingerprint(source)}


# --------------------------------------------------------------------------- writing


def write_confusion_csv(path: str | os.PathLike, classes: Sequence[str], matrix: Sequence[Sequence[int]]) -> None:
    """A confusion matrix as CSV: a header row of predicted classes, then one row per true class."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["true\\predicted", *classes])
        for name, row in zip(classes, matrix):
            writer.writerow([name, *row])


def write_report(report: EvalReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.json``, ``confusion.csv`` (header row: ``true\\predicted`` then the class
    names; one row per true class) and ``confusion.png`` into `out_dir`. Returns the paths by
    kind: ``{"json": ..., "csv": ..., "png": ...}``."""
    from vidzoo.plots import (
        plot_confusion,  # matplotlib is slow to import; only load it here
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "csv": out / "confusion.csv", "png": out / "confusion.png"}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    write_confusion_csv(paths["csv"], report.classes, report.confusion_matrix)
    plot_confusion(
        np.array(report.confusion_matrix),
        report.classes,
        paths["png"],
        title=f"Video accuracy {report.video_accuracy:.1%} on {report.num_videos} videos",
    )
    return paths

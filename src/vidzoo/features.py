"""Feature extraction: a model's activations for every video of a dataset, saved for linear probes.

::

    VideoSource --eval VideoDataset (K clips per video, as `vidzoo eval` cuts them)
        --model up to a layer--> (views, D) per video  --per="video": mean over the K clips
        --chunks of `chunk_size` videos--> OUT.parts/chunk-*.safetensors  (resumable; shared out
                                           among the processes of a distributed run)
        --all chunks done--> OUT (.npy + .json sidecar, or .parquet), written by process 0

The default layer is the model's pre-logits vector (``forward_head(forward_features(x),
pre_logits=True)``); any `feature_info` layer can be tapped instead (the model contract's
``forward_intermediates``), its output averaged over time and space to one vector per clip. With
``per="token"`` nothing is averaged: each position of the layer's output (``forward_features``'
by default) is a row, the sequence an attentive probe attends over. Labels come from the data source (its class names and
order), not from the model, so any model — a registered architecture or a model file —
extracts features for any labeled videos.

An extraction is cut into chunks of videos (`vidzoo.distributed`); written to a file, each chunk
is saved as soon as it is done. Run the same extraction again after an interruption and it
computes only the unfinished chunks; the chunks are checked against the settings (model weights,
layer, clips per video, clip spec, videos) and an extraction with other settings is refused rather
than mixed in. With ``devices=N`` (``--devices N --strategy ddp``) N processes share the chunks
out; a chunk's batches do not depend on the number of processes, so the file is the same as one
process writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from vidzoo import __version__
from vidzoo.data.dataset import VideoDataset
from vidzoo.data.sources import VideoSource, load_source
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
from vidzoo.engine import build_feature_engine
from vidzoo.evaluate import (
    CatchingDataset,
    ViewBatcher,
    WaitClock,
    clip_spec_for,
    first_views,
    inference_mode,
    single_video,
    throughput,
)
from vidzoo.fileio import write_atomically
from vidzoo.model_file import tensors_sha256
from vidzoo.models._base import VideoClassifier, pool_features
from vidzoo.models.factory import create_model, load_model
from vidzoo.weights import HF_HUB_PREFIX

__all__ = [
    "PRE_LOGITS",
    "FEATURE_SUFFIXES",
    "Features",
    "extract_features",
    "load_features",
    "save_features",
    "resolve_model",
    "layer_names",
]

PRE_LOGITS = "pre_logits"  # the default layer: what the classifier head reads
FORWARD_FEATURES = "forward_features"  # per token, the default: what the head pools
FEATURE_SUFFIXES = (".npy", ".parquet")
FORMAT = "vidzoo-features"
FORMAT_VERSION = 1
_PARQUET_KEY = b"vidzoo"  # Parquet schema metadata entry holding the JSON description


@dataclass
class Features:
    """One feature vector per row with what it describes.

    Rows are videos (``per="video"``), clips (``per="clip"``, ``clip_index`` says which of
    the video's clips, 0-based) or tokens (``per="token"``: a clip's positions of the layer's
    output, ``token_index`` says which, with its ``clip_index``). `labels` index into
    `classes`; None for unlabeled features.
    `excluded` lists the videos that failed to decode and were left out (``skip_bad``).
    """

    features: np.ndarray  # (rows, dim) float32
    video_ids: list[str]
    labels: np.ndarray | None  # (rows,) int64
    classes: list[str] | None
    clip_index: np.ndarray | None = None  # (rows,) int64, per-clip and per-token rows only
    per: Literal["clip", "video", "token"] = "video"
    clips_per_video: int = 1
    layer: str | None = None
    model: dict[str, Any] = field(default_factory=dict)  # name, source, kwargs, tensors_sha256
    clip_spec: dict[str, Any] | None = None
    source: str | None = None
    excluded: list[dict[str, str]] = field(default_factory=list)  # {video_id, path, reason}
    token_index: np.ndarray | None = None  # (rows,) int64, per-token rows only
    # How fast the extraction that made these features ran: clips_per_s and data_wait_share (the
    # share of the loop spent waiting for decoded videos). Not saved: it is not part of the data.
    throughput: dict[str, float | None] | None = None

    def __post_init__(self) -> None:
        rows = len(self.features)
        if self.features.ndim != 2:
            raise ValueError(f"features must be a (rows, dim) array, got shape {self.features.shape}")
        lengths = {"video_ids": len(self.video_ids)}
        if self.labels is not None:
            lengths["labels"] = len(self.labels)
        if self.clip_index is not None:
            lengths["clip_index"] = len(self.clip_index)
        if self.token_index is not None:
            lengths["token_index"] = len(self.token_index)
        wrong = {name: n for name, n in lengths.items() if n != rows}
        if wrong:
            raise ValueError(f"{rows} feature rows but {', '.join(f'{n} {k}' for k, n in wrong.items())}")
        if self.labels is not None:
            if self.classes is None:
                raise ValueError("labels need the class names they index (classes=...)")
            if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(self.classes):
                raise ValueError(f"labels must be class indices in 0..{len(self.classes) - 1}")

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def description(self) -> dict[str, Any]:
        """Everything but the arrays, JSON-ready: what the Parquet metadata and sidecar hold."""
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "classes": self.classes, "per": self.per,
            "clips_per_video": self.clips_per_video, "layer": self.layer, "model": self.model, "clip_spec": self.clip_spec,
            "source": self.source, "excluded": self.excluded, "vidzoo_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


# --------------------------------------------------------------------------- models and layers


def resolve_model(
    model: VideoClassifier | str | os.PathLike, pretrained: str | None = None, **kwargs: Any
) -> VideoClassifier:
    """`model` itself, the model in a vidzoo model file (``hf-hub:ORG/NAME`` for one on the Hugging
    Face hub), or ``create_model(name, pretrained=pretrained, **kwargs)`` for a registered name."""
    if isinstance(model, VideoClassifier):
        if pretrained is not None or kwargs:
            raise ValueError("pretrained and model kwargs apply to a registered model name, not to a built model")
        return model
    is_hub_file = isinstance(model, str) and model.startswith(HF_HUB_PREFIX)
    path = Path(model)
    if path.is_file() or is_hub_file:
        if pretrained is not None or kwargs:
            raise ValueError(f"{path} is a model file: it has its weights and arguments, so pretrained/kwargs do not apply")
        return load_model(model if is_hub_file else path)
    if path.suffix.lower() == ".safetensors" or os.sep in str(model):
        raise FileNotFoundError(f"model file {path} not found")
    return create_model(str(model), pretrained=pretrained, **kwargs)


def layer_names(model: VideoClassifier) -> list[str]:
    """The layers `extract_features` can tap: ``"pre_logits"`` and the model's layers."""
    return [PRE_LOGITS, *model.layer_names()]


def _tokens(out: torch.Tensor) -> torch.Tensor:
    """A layer's output as ``(B, N, D)`` tokens: a map ``(B, C, T, H, W)`` gives its T x H x W
    positions (time first), a sequence stays, a vector is one token."""
    if out.ndim == 5:
        return out.flatten(2).transpose(1, 2)
    if out.ndim == 2:
        return out[:, None]
    return out


def _feature_fn(model: VideoClassifier, layer: str | None,
                per: str = "video") -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """Clips ``(B, C, T, H, W)`` to ``(B, D)`` features of `layer` (None: pre-logits), or with
    ``per="token"`` to ``(B, N, D)`` tokens (None: ``forward_features``' output), and the layer's
    full name."""
    if per == "token" and layer in (None, FORWARD_FEATURES):
        return (lambda x: _tokens(model.forward_features(x))), FORWARD_FEATURES
    if layer is None or layer == PRE_LOGITS:
        return (lambda x: model.forward_head(model.forward_features(x), pre_logits=True)), PRE_LOGITS
    try:
        name = model.resolve_layer(layer).module
    except ValueError as err:
        raise ValueError(f"{err}; or {PRE_LOGITS!r}, the default: what the classifier reads") from None
    pool = _tokens if per == "token" else pool_features
    return (lambda x: pool(model.forward_intermediates(x, [name])[name])), name


def _model_description(model: VideoClassifier) -> dict[str, Any]:
    return {
        "name": model.default_cfg.arch,
        "file": getattr(model, "source_file", None),
        "model_args": model.model_args,
        "tensors_sha256": tensors_sha256(model.state_dict()),
    }


# --------------------------------------------------------------------------- extraction


def extract_features(
    model: VideoClassifier | str | os.PathLike,
    source: VideoSource | str | os.PathLike,
    *,
    layer: str | None = None,
    per: Literal["clip", "video", "token"] = "video",
    clips_per_video: int | None = None,
    out: str | os.PathLike | None = None,
    pretrained: str | None = None,
    batch_size: int = 8,
    workers: int = 0,
    device: str | torch.device = "cpu",
    skip_bad: bool = False,
    chunk_size: int = 256,
    overwrite: bool = False,
    progress: bool = True,
    on_chunk: Callable[[int, int], None] | None = None,
    devices: int = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    engine: str = "eager",
    precision: str = "fp32",
    decoder: str = "auto",
) -> Features | None:
    """Features of every video of `source` at `layer`, one row per video or per clip.

    Args:
        model: a `VideoClassifier`, a vidzoo model file, or a registered name (with `pretrained`,
            a weights tag or file, see `create_model`).
        source: a `VideoSource`, or anything `load_source` reads (class folders, a CSV).
        layer: None or ``"pre_logits"`` for the vector the classifier reads, else a
            `feature_info` name (`layer_names`), averaged over time, height and width.
        per: ``"video"``: the mean over the video's clips; ``"clip"``: a row per clip;
            ``"token"``: a row per position of the layer's output in each clip (T x H x W of a
            map, or a sequence's steps; default layer: ``forward_features``, what the head
            pools), for attentive probes. Tokens multiply the rows: pick a late layer.
        out: a ``.npy`` (with a ``.json`` sidecar beside it) or ``.parquet`` file to write, in
            chunks of `chunk_size` videos kept in ``OUT.parts/`` until all are done, so a second
            call after an interruption resumes; None keeps everything in memory.
        clips_per_video: clips per video, spread evenly over it as `vidzoo eval` spreads them (None:
            the model's clip description's).
        skip_bad: leave out videos that fail to decode and list them in `Features.excluded`;
            otherwise such a video raises `VideoDecodeError` (finished chunks are kept).
        chunk_size: videos per chunk; the model's batches never span two chunks, so runs with
            the same chunk size give the same numbers whatever the number of processes.
        overwrite: replace an existing `out`, and discard unfinished chunks of an extraction
            with other settings instead of refusing.
        on_chunk: called as ``on_chunk(chunk, num_chunks)`` after each chunk is computed.
        devices, strategy, num_nodes: processes per machine, ``"auto"`` or ``"ddp"``, and
            machines, as `vidzoo train` takes them (see `vidzoo.distributed.launch`): each process
            extracts its share of the chunks on its own `device`-type device, process 0 writes
            `out` (required with several processes). Returns None on the other processes.
        engine, precision: how the model runs (`vidzoo.engine.build_feature_engine`; the default
            is the reference, eager fp32; ``"auto"`` keeps bf16 where it is faster and its
            features stay within `vidzoo.engine.FEATURE_COSINE` of fp32's). With several
            processes ``auto`` means fp32, so that every process computes alike.
        decoder: the video decoder, ``"auto"``, ``"pyav"``, ``"torchcodec"`` or ``"torchcodec-cuda"`` (see
            `VideoReader`; on the GPU, the main process decodes: `workers` is not used).
    """
    out = _check_extract_args(per, batch_size, workers, chunk_size, out, overwrite)
    check_launch(devices, strategy, num_nodes, out)
    model = resolve_model(model, pretrained)
    if not isinstance(source, VideoSource):
        source = load_source(source)
    spec = clip_spec_for(model, clips_per_video, crops=1)
    clips_per_video = spec.clips_per_video
    feature_fn, layer = _feature_fn(model, layer, per)

    template = Features(
        np.zeros((0, 0), np.float32), [], None, None, per=per, clips_per_video=clips_per_video, layer=layer,
        model=_model_description(model), clip_spec=spec.model_dump(mode="json"), source=source.origin,
    )
    chunks = chunk_ranges(len(source), chunk_size)
    processes = launch(device, devices, strategy, num_nodes)
    if processes.world_size > 1 and "auto" in (engine, precision):
        engine, precision = "eager", "fp32"  # each process would calibrate, and might choose, on its own
    store = None
    if out is not None:
        store = ChunkStore(out.with_name(out.name + ".parts"),
                           _fingerprint(template, source, chunk_size, f"{engine} {precision}", decoder), "extraction")
    workers = loader_workers(decoder, workers)  # 0 for a GPU decoder
    threads = decoder_threads(workers, processes=processes.local_processes)  # this machine's processes share its cores
    dataset = CatchingDataset(VideoDataset.from_spec(source, spec, train=False, decoder=decoder, threads=threads))
    # Decoded only if the engine must measure (not when its choice is cached).
    calibration = (lambda: first_views(dataset)) if "auto" in (engine, precision) else None

    with inference_mode(model, processes.device), contextlib.closing(build_feature_engine(
            model, feature_fn, engine=engine, precision=precision, device=processes.device, batch_size=batch_size,
            calibration=calibration, job_clips=len(source) * clips_per_video)) as run:

        def compute(index: int, advance: Callable[[], None]) -> Chunk:
            return _extract_chunk(run, dataset, chunks[index], per, batch_size, workers, processes.device,
                                  skip_bad, advance)

        results = run_chunks(processes, [len(c) for c in chunks], compute, store=store, overwrite=overwrite,
                             progress=progress, label="extracting", on_chunk=on_chunk)

    if results is None:  # another process than 0: its chunks are on disk
        return None
    features = _merge_chunks(template, results, source)
    features.throughput = throughput(results, sum(chunk.meta.get("views", 0) for chunk in results))
    features.model["engine"] = run.summary  # how these numbers were computed, in the sidecar too
    if out is not None:
        save_features(features, out, overwrite=overwrite)
        store.remove()
    return features


def _check_extract_args(per: str, batch_size: int, workers: int, chunk_size: int,
                        out: str | os.PathLike | None, overwrite: bool) -> Path | None:
    """`extract_features`' arguments, checked before any work; returns `out` as a Path."""
    if per not in ("clip", "video", "token"):
        raise ValueError(f"per must be 'clip', 'video' or 'token', got {per!r}")
    for name, value, minimum in (("batch_size", batch_size, 1), ("workers", workers, 0), ("chunk_size", chunk_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if out is None:
        return None
    out = Path(out)
    _check_suffix(out)
    if out.suffix.lower() == ".parquet":
        _pyarrow()  # fail now, not after hours of extraction
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    return out


def _merge_chunks(template: Features, results: list[Chunk], source: VideoSource) -> Features:
    """The chunks' rows, in order, as one `Features` (raises when every video failed)."""
    kept = [r for r in results if len(r.meta["video_ids"])]
    if not kept:
        first = results[0].meta["excluded"][0]
        raise RuntimeError(f"all {len(source)} videos failed to decode, so there are no features; "
                           f"the first, {first['path']}: {first['reason']}")
    return dataclasses.replace(
        template,
        features=np.concatenate([r.arrays["features"] for r in kept]),
        video_ids=[v for r in kept for v in r.meta["video_ids"]],
        labels=np.concatenate([r.arrays["labels"] for r in kept]),
        classes=list(source.classes),
        clip_index=np.concatenate([r.arrays["clip_index"] for r in kept]) if template.per != "video" else None,
        token_index=np.concatenate([r.arrays["token_index"] for r in kept]) if template.per == "token" else None,
        excluded=[e for r in results for e in r.meta["excluded"]],
    )


def _extract_chunk(
    feature_fn: Callable[[torch.Tensor], torch.Tensor],
    dataset: CatchingDataset,
    videos: range,
    per: str,
    batch_size: int,
    workers: int,
    device: torch.device,
    skip_bad: bool,
    advance: Callable[[], None],
) -> Chunk:
    """Features, ids, labels and clip indices of the videos `videos` of `dataset`."""
    loader = DataLoader(Subset(dataset, videos), batch_size=1, shuffle=False, num_workers=workers,
                        collate_fn=single_video, pin_memory=device.type == "cuda")
    batcher = ViewBatcher(feature_fn, batch_size, device)
    rows: list[tuple[str, int, torch.Tensor]] = []
    excluded: list[dict[str, str]] = []

    def take(done: list[tuple[Any, torch.Tensor]]) -> None:
        rows.extend((video_id, label, feats) for (video_id, label), feats in done)

    clock = WaitClock()
    views = 0
    for item in clock.items(loader):
        if item.views is None:
            if not skip_bad:
                raise VideoDecodeError(item.path, f"{item.error} (skip_bad / --skip-bad leaves such videos out "
                                                  "and lists them)")
            excluded.append({"video_id": item.video_id, "path": item.path, "reason": item.error})
        else:
            views += len(item.views)
            take(batcher.push(item.views, (item.video_id, item.label)))
        advance()
    take(batcher.flush())

    if per == "video":
        feats = [f.mean(dim=0, keepdim=True) for _, _, f in rows]
    elif per == "token":  # (clips, tokens, D) per video: clip by clip, each clip's tokens in order
        feats = [f.flatten(0, 1) for _, _, f in rows]
    else:
        feats = [f for _, _, f in rows]
    counts = [len(f) for f in feats]
    tokens = rows[0][2].shape[1] if per == "token" and rows else 1
    arrays = {
        "features": torch.cat(feats).numpy().astype(np.float32) if feats else np.zeros((0, 0), np.float32),
        "labels": np.repeat(np.array([label for _, label, _ in rows], dtype=np.int64), counts),
        "clip_index": np.concatenate([np.arange(n, dtype=np.int64) // tokens for n in counts]) if counts
        else np.zeros(0, np.int64),
    }
    if per == "token":
        arrays["token_index"] = (np.concatenate([np.arange(n, dtype=np.int64) % tokens for n in counts]) if counts
                                 else np.zeros(0, np.int64))
    video_ids = [video_id for (video_id, _, _), n in zip(rows, counts) for _ in range(n)]
    return Chunk(arrays, {"video_ids": video_ids, "excluded": excluded, "views": views, **clock.meta()})


# --------------------------------------------------------------------------- resuming


def _fingerprint(template: Features, source: VideoSource, chunk_size: int, engine: str, decoder: str) -> dict[str, Any]:
    """What must match for finished chunks to be reused: the same computation on the same videos,
    decoded by the same decoder (two FFmpeg builds may decode damaged data differently)."""
    return {
        # The model is its weights and arguments, wherever its file now lies.
        "format": FORMAT, "format_version": FORMAT_VERSION, "layer": template.layer,
        "model": {k: v for k, v in template.model.items() if k != "file"},
        "per": template.per, "clips_per_video": template.clips_per_video, "clip_spec": template.clip_spec, "chunk_size": chunk_size,
        "engine": engine, "decoder": decoder, **videos_fingerprint(source),
    }


# --------------------------------------------------------------------------- files


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in FEATURE_SUFFIXES:
        raise ValueError(f"features file {path}: expected a {' or '.join(FEATURE_SUFFIXES)} file, got {path.suffix!r}")


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImportError(
            "Parquet features need pyarrow: pip install 'vidzoo[parquet]' (or pyarrow), or write a .npy file"
        ) from None
    return pyarrow


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a ``.npy`` features file: same name, ``.json`` suffix."""
    return Path(path).with_suffix(".json")


def save_features(features: Features, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write `features` to a ``.npy`` file plus its ``.json`` sidecar (ids, labels, classes,
    model, layer, clip spec), or to a ``.parquet`` file (columns ``video_id``, ``label`` (the
    class name), ``clip`` for per-clip and per-token rows, ``token`` for per-token rows, ``features``; the description in the schema
    metadata under ``vidzoo``). Each file is written atomically."""
    path = Path(path)
    _check_suffix(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    description = features.description()
    array = np.ascontiguousarray(features.features, dtype=np.float32)
    if path.suffix.lower() == ".npy":
        description.update(
            shape=list(array.shape), video_ids=features.video_ids,
            labels=None if features.labels is None else features.labels.tolist(),
            clip_index=None if features.clip_index is None else features.clip_index.tolist(),
            token_index=None if features.token_index is None else features.token_index.tolist(),
        )
        text = json.dumps(description, indent=1) + "\n"
        # The array goes last: a .npy whose sidecar is missing or stale is never taken as valid.
        write_atomically(sidecar_path(path), lambda p: p.write_text(text, encoding="utf-8"))
        write_atomically(path, lambda p: _save_npy(p, array))
        return path
    pa = _pyarrow()
    columns = {"video_id": pa.array(features.video_ids, pa.string())}
    if features.labels is not None:
        columns["label"] = pa.array([features.classes[i] for i in features.labels], pa.string())
    if features.clip_index is not None:
        columns["clip"] = pa.array(features.clip_index, pa.int64())
    if features.token_index is not None:
        columns["token"] = pa.array(features.token_index, pa.int64())
    columns["features"] = pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1), pa.float32()), array.shape[1])
    table = pa.table(columns).replace_schema_metadata({_PARQUET_KEY: json.dumps(description)})
    write_atomically(path, lambda p: pa.parquet.write_table(table, p))
    return path


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append .npy to a temp name
        np.save(f, array, allow_pickle=False)


def load_features(path: str | os.PathLike) -> Features:
    """Read features written by `save_features` / `extract_features`. A Parquet file written
    elsewhere works too when it has a ``features`` column (a list of floats per row) and a
    ``video_id`` column; its ``label`` column (class names), if any, gives the labels."""
    path = Path(path)
    _check_suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file {path} not found")
    if path.suffix.lower() == ".npy":
        return _load_npy(path)
    return _load_parquet(path)


def _load_npy(path: Path) -> Features:
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise FileNotFoundError(
            f"{path} has no sidecar {sidecar.name} (video ids, labels, class names); "
            "features files come as FILE.npy + FILE.json"
        )
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{sidecar} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or "video_ids" not in meta:
        raise ValueError(f"{sidecar} is not a vidzoo features sidecar (it needs at least 'video_ids')")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{path} is not a readable .npy array: {e}") from None
    if meta.get("shape") is not None and list(array.shape) != meta["shape"]:
        raise ValueError(f"{path} holds an array of shape {list(array.shape)} but {sidecar.name} "
                         f"describes {meta['shape']}; the two files do not belong together")
    labels = meta.get("labels")
    clip_index, token_index = (None if meta.get(key) is None else np.asarray(meta[key], dtype=np.int64)
                               for key in ("clip_index", "token_index"))
    return _features(path, array, meta["video_ids"],
                     None if labels is None else np.asarray(labels, dtype=np.int64), meta.get("classes"),
                     clip_index, token_index, meta)


def _load_parquet(path: Path) -> Features:
    pa = _pyarrow()
    try:
        table = pa.parquet.read_table(path)
    except pa.ArrowException as e:
        raise ValueError(f"{path} is not a readable Parquet file: {e}") from None
    missing = [c for c in ("video_id", "features") if c not in table.column_names]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)} (has {', '.join(table.column_names)})")
    raw = (table.schema.metadata or {}).get(_PARQUET_KEY)
    meta = json.loads(raw) if raw else {}
    column = table.column("features").combine_chunks()
    array = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    if len(table):
        dims = set(pa.compute.list_value_length(column).to_pylist())
        if len(dims) != 1:
            raise ValueError(f"{path}: rows of the features column have different lengths {sorted(dims)}")
        array = array.reshape(len(table), dims.pop())
    else:
        array = array.reshape(0, 0)
    labels = classes = None
    if "label" in table.column_names:
        names = [str(n) for n in table.column("label").to_pylist()]
        classes = meta.get("classes") or sorted(set(names))
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted(set(names) - set(index))
        if unknown:
            raise ValueError(f"{path}: labels {unknown} are not among its classes {classes}")
        labels = np.array([index[n] for n in names], dtype=np.int64)
    clip_index, token_index = (np.asarray(table.column(name).to_pylist(), dtype=np.int64)
                               if name in table.column_names else None for name in ("clip", "token"))
    return _features(path, array, table.column("video_id").to_pylist(), labels, classes, clip_index, token_index,
                     meta)


def _features(path: Path, array: np.ndarray, video_ids: Sequence[str], labels: np.ndarray | None,
              classes: Sequence[str] | None, clip_index: np.ndarray | None, token_index: np.ndarray | None,
              meta: dict[str, Any]) -> Features:
    try:
        return Features(
            np.asarray(array, dtype=np.float32), [str(v) for v in video_ids], labels,
            None if classes is None else list(classes), clip_index,
            per=meta.get("per", "clip" if clip_index is not None else "video"), clips_per_video=meta.get("clips_per_video", meta.get("clips", 1)),
            layer=meta.get("layer"), model=meta.get("model") or {}, clip_spec=meta.get("clip_spec"),
            source=meta.get("source"), excluded=meta.get("excluded") or [], token_index=token_index,
        )
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None

"""Decoding: bytes to frames.

`VideoReader(path, decoder=...)` is the one entry point. It delegates to a *decoder backend*
through the small `Decoder` protocol: "pyav" (PyAV, whose wheels bundle FFmpeg; the default),
"torchcodec" (the system's FFmpeg through torchcodec, in `video_torchcodec`: an optional extra),
"torchcodec-cuda" (the same, decoding with NVDEC on the GPU; never chosen by "auto"),
or "auto" (per file type, the one measured faster; see `resolve_decoder`). Another backend can
be added with `register_decoder` without touching samplers or datasets.

Frame *i* always means the i-th frame in presentation order, as a full sequential decode
would produce it. Random access maps indices to presentation timestamps (gathered by
demuxing packets, which is cheap: nothing is decoded), seeks to the nearest keyframe before
the first wanted frame and decodes forward; it never decodes the whole file to take a clip
from the middle. Files whose timestamps cannot be trusted fall back to decoding from the start.
"""

from __future__ import annotations

import bisect
import importlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import torch

__all__ = [
    "VideoDecodeError",
    "VideoNotFoundError",
    "NotAVideoError",
    "NoVideoStreamError",
    "CorruptVideoError",
    "FrameTooLargeError",
    "DEFAULT_MAX_PIXELS",
    "VideoInfo",
    "Decoder",
    "VideoReader",
    "DecoderUnavailableError",
    "register_decoder",
    "available_decoders",
    "resolve_decoder",
    "check_decoder",
    "decoder_threads",
    "loader_workers",
]


# --------------------------------------------------------------------------- errors


class VideoDecodeError(Exception):
    """A video could not be read. The message names the file and the cause."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class VideoNotFoundError(VideoDecodeError, FileNotFoundError):
    """The path does not exist or is not a regular file."""


class NotAVideoError(VideoDecodeError):
    """The file is not a media container FFmpeg can open (empty, random bytes, wrong type)."""


class NoVideoStreamError(VideoDecodeError):
    """The container opened but holds no decodable video stream (audio-only, subtitles...)."""


class CorruptVideoError(VideoDecodeError):
    """The video stream is truncated, corrupt, encrypted or otherwise undecodable."""


class FrameTooLargeError(VideoDecodeError):
    """The frames asked for have more pixels than the reader's `max_pixels` cap."""


# 4096x2304 (a little over DCI 4K): decoded RGB frames above this are refused, not allocated.
DEFAULT_MAX_PIXELS = 4096 * 2304


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class VideoInfo:
    """What a decoder knows about a video stream.

    `num_frames` is exact (counted by demuxing); `header_num_frames` is what the container
    header claims (0 when it says nothing) and is kept only for reporting. `height`/`width`
    are as displayed, i.e. after rotation; `coded_height`/`coded_width` as stored.
    `rotation` is the clockwise rotation, in degrees, applied to stored frames for display.
    """

    path: str
    num_frames: int
    header_num_frames: int
    fps: float
    duration: float
    height: int
    width: int
    coded_height: int
    coded_width: int
    rotation: int
    codec: str
    pix_fmt: str
    sample_aspect_ratio: float = 1.0
    variable_frame_rate: bool = False
    start_time: float = 0.0


class Decoder(Protocol):
    """A decoder backend: opens one file, describes it, and returns frames by index."""

    info: VideoInfo

    def get_frames(self, indices: Sequence[int], size: tuple[int, int] | None) -> np.ndarray:
        """Frames at `indices` (presentation order) as uint8 (T, H, W, 3) RGB, rotation applied.

        `size` is the displayed (height, width) to resize to, or None for the native size.
        Backends may also take ``out``, an array of the result's shape to write into
        (`VideoReader.get_frames` passes it only when the caller gives one).
        """

    def close(self) -> None: ...

    # Optional: ``iter_frames(size)``, every frame in order in one pass, for reading whole videos
    # (`VideoReader.iter_frames` reads chunks through `get_frames` where a backend has none).


class DecoderUnavailableError(ImportError):
    """An optional decoder backend cannot load (a package or system library is missing). Not a
    `VideoDecodeError`: nothing is wrong with any file. The message says what to install."""


log = logging.getLogger(__name__)

_DECODERS: dict[str, Callable[[str, int], Decoder]] = {}
# Optional backends live in their own modules, imported on first use: `import vidzoo` never loads
# torchcodec, and those modules import this one. name -> (module, factory, status function).
_OPTIONAL_DECODERS: dict[str, tuple[str, str, str]] = {
    "torchcodec": ("vidzoo.data.video_torchcodec", "TorchCodecDecoder", "torchcodec_status"),
    "torchcodec-cuda": ("vidzoo.data.video_torchcodec", "TorchCodecCudaDecoder", "torchcodec_cuda_status"),
}
# Backends that decode on a GPU: CUDA cannot be initialised in forked DataLoader workers, so the
# main process decodes (`loader_workers`).
_GPU_DECODERS = frozenset({"torchcodec-cuda"})

# What `decoder="auto"` picks, by the file's extension: the backend that read clips faster there.
# Measured with benchmarks/decoders.py (open, read 16 frames at stride 2 from a random start at
# short side 128, close; one thread; 13 shared fixtures; 9 reads each; 2 December 2026 on 2 shared
# cores at load 7-8, so noisy): PyAV had the lower median on every extension (.mp4 .mkv .mov .webm
# .ts .avi), e.g. 336 vs 445 ms on 720p H.264 MP4, 252 vs 446 ms on 1080p H.264, 27 vs 43 ms on a
# UCF101 AVI, 622 vs 754 ms on HEVC in MPEG-TS; the one torchcodec win, 1080p HEVC MP4 (1.81 vs
# 1.69 s), is within the noise. Both run the same FFmpeg decoders and the same conversion; the
# torchcodec backend opens more (its scan, a demuxer per rewind, PyAV's first frame for the
# colour siting) and decodes TS from the start. So no extension is listed: auto means PyAV on the
# CPU. An extension measured faster with torchcodec goes here as {".ext": "torchcodec"}; a
# backend that cannot load (torchcodec or FFmpeg's libraries missing) is never picked: PyAV is.
_AUTO_BY_EXTENSION: dict[str, str] = {}


def register_decoder(name: str, factory: Callable[[str, int], Decoder]) -> None:
    """Make a decoder backend available as `VideoReader(path, decoder=name)`."""
    if name in _DECODERS or name in _OPTIONAL_DECODERS or name == "auto":
        raise ValueError(f"decoder backend {name!r} is already registered")
    _DECODERS[name] = factory


def available_decoders() -> list[str]:
    """Every name `VideoReader(decoder=...)` takes, "auto" included (listed even when an optional
    backend's packages are missing: `check_decoder` says whether it can load)."""
    return sorted({"auto", *_DECODERS, *_OPTIONAL_DECODERS})


def _decoder_status(name: str) -> tuple[bool, str]:
    if name not in _OPTIONAL_DECODERS:
        return True, ""
    module, _, status = _OPTIONAL_DECODERS[name]
    return getattr(importlib.import_module(module), status)()


def check_decoder(name: str) -> str:
    """`name` if it is a decoder that can run here ("auto" always can): a `ValueError` for an
    unknown name, a one-line `DecoderUnavailableError` saying what to install for a backend whose
    packages or libraries are missing. Call it before starting workers."""
    if name != "auto" and name not in _DECODERS and name not in _OPTIONAL_DECODERS:
        raise ValueError(f"unknown decoder {name!r}; available: {', '.join(available_decoders())}")
    ok, reason = _decoder_status(name) if name != "auto" else (True, "")
    if not ok:
        raise DecoderUnavailableError(reason)
    return name


def resolve_decoder(name: str, path: str | os.PathLike | None = None) -> str:
    """The backend `name` stands for on `path`: itself, or for "auto" the one listed for the
    file's extension in `_AUTO_BY_EXTENSION` when it can load, else "pyav"."""
    if name != "auto":
        return check_decoder(name)
    choice = _AUTO_BY_EXTENSION.get(Path(path).suffix.lower(), "pyav") if path is not None else "pyav"
    if choice != "pyav" and not _decoder_status(choice)[0]:
        choice = "pyav"
    return choice


def _decoder_factory(name: str) -> Callable[[str, int], Decoder]:
    if name not in _DECODERS:
        module, factory, _ = _OPTIONAL_DECODERS[name]
        _DECODERS[name] = getattr(importlib.import_module(module), factory)
    return _DECODERS[name]


def decoder_threads(workers: int, cores: int | None = None, processes: int = 1) -> int:
    """Decoding threads per video for `workers` DataLoader worker processes (0: the main process
    decodes) in each of `processes` processes on this machine (``--devices``: each has its own
    workers): the cores shared out, so one thread per worker once the workers fill the cores
    (more would only make the workers compete for the same cores)."""
    if cores is None:
        cores = _usable_cores()
    return max(1, cores // (max(1, processes) * max(1, workers)))


def loader_workers(decoder: str, workers: int) -> int:
    """The DataLoader workers to start for `decoder`: `workers`, or 0 (the main process decodes,
    with a warning) for a backend that decodes on a GPU, as CUDA cannot be initialised in forked
    workers. Its decoding runs on the GPU; only demuxing and the clip's transforms stay on the CPU."""
    if decoder in _GPU_DECODERS and workers > 0:
        log.warning(
            "--decoder %s decodes in the main process (CUDA cannot start in forked DataLoader workers): "
            "--workers %d is not used", decoder, workers)
        return 0
    return workers


def _usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's or taskset's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# --------------------------------------------------------------------------- PyAV backend


@dataclass
class _StreamIndex:
    """Presentation timestamps of every frame and the keyframes, from one demux pass."""

    pts: list[int] = field(default_factory=list)  # sorted, one per frame
    keyframe_pts: list[int] = field(default_factory=list)  # sorted
    timestamps_usable: bool = True
    pts_to_index: dict[int, int] = field(default_factory=dict)


class _TimestampsOutOfOrder(Exception):
    """Decoded frames came out with decreasing timestamps: they cannot place frames."""

# Frames decoded past the last wanted one while a wanted frame is still missing: enough to
# see a decoder's reordering (B-frame depth) show up as out-of-order timestamps.
_REORDER_MARGIN = 8


class _IndexedReader:
    """How frames are found, shared by the decoder backends: frame *i* is placed by its
    timestamp from the demux index (`_index`), reached by seeking to the keyframe before the
    first wanted frame and decoding forward; files whose timestamps cannot place frames are read
    by counting. Backends set `path`, `info` and `_index` and provide the primitives:

    * ``_seek_keyframe(pts)``: position on the keyframe with that pts, codec flushed (or, if the
      container refuses, at the start);
    * ``_seek_to_start()``: position at the start of the stream, codec flushed;
    * ``_frames()``: decoded frames from the current position, each with a ``pts`` in the
      stream's time base (or None), errors as `CorruptVideoError`;
    * ``_convert_into(frame, out, out_h, out_w)``: RGB at the output size, rotated for display.
    """

    path: str
    info: VideoInfo
    _index: _StreamIndex

    def _decode_from_start(self) -> Iterator:
        self._seek_to_start()
        return self._frames()

    def get_frames(
        self, indices: Sequence[int], size: tuple[int, int] | None, out: np.ndarray | None = None
    ) -> np.ndarray:
        info = self.info
        wanted = sorted(set(indices))
        if not wanted:
            raise ValueError(f"{self.path}: no frame indices given")
        bad = [i for i in wanted if not 0 <= i < info.num_frames]
        if bad:
            raise IndexError(
                f"{self.path}: frame indices {bad[:5]} out of range; the video has {info.num_frames} frames"
            )
        out_h, out_w = size if size is not None else (info.height, info.width)
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"{self.path}: output size must be positive, got {size}")
        # Frames arrive in presentation order; fill each distinct index once, then gather
        # (so repeated and unordered indices cost nothing extra). Distinct ascending indices are
        # written straight into the caller's `out`, if given.
        in_order = list(indices) == wanted
        buffer = out if out is not None and in_order else np.empty((len(wanted), out_h, out_w, 3), dtype=np.uint8)
        slot = {frame_index: k for k, frame_index in enumerate(wanted)}
        filled: set[int] = set()
        if self._index.timestamps_usable:
            try:
                filled = self._read_by_timestamp(wanted, slot, buffer, out_h, out_w, filled, seek=True)
                if len(filled) < len(wanted):
                    # The seek may have landed after a wanted frame (imprecise indexes in some
                    # Matroska/TS files): decode the rest from the very start.
                    filled = self._read_by_timestamp(wanted, slot, buffer, out_h, out_w, filled, seek=False)
            except _TimestampsOutOfOrder:
                # E.g. AVI with packed B-frames: the decoder emits frames in display order but
                # labels them wrongly. Count frames instead, from now on, as FFmpeg does.
                self._index.timestamps_usable = False
        if not self._index.timestamps_usable:
            filled = self._read_sequentially(wanted, slot, buffer, out_h, out_w)
        if len(filled) < len(wanted):
            missing = sorted(set(wanted) - filled)
            raise CorruptVideoError(
                self.path,
                f"frames {missing[:5]}{'...' if len(missing) > 5 else ''} of {info.num_frames} could not "
                "be decoded (truncated or corrupt data, or frames whose reference frames are missing)",
            )
        if in_order:
            return buffer  # already in order and distinct: no second copy of the clip
        order = [slot[i] for i in indices]
        if out is not None:
            np.take(buffer, order, axis=0, out=out)
            return out
        return buffer[order]

    def _read_by_timestamp(self, wanted, slot, buffer, out_h, out_w, filled: set[int], seek: bool) -> set[int]:
        """Decode forward from the keyframe before the first missing frame (or from the start),
        placing frames by their timestamp. Returns the indices filled so far."""
        pts = self._index.pts
        pts_to_index = self._index.pts_to_index
        todo = [i for i in wanted if i not in filled]
        keyframes = self._index.keyframe_pts
        k = bisect.bisect_right(keyframes, pts[todo[0]]) - 1
        if seek and k >= 0 and keyframes[k] > pts[0]:
            self._seek_keyframe(keyframes[k])
        else:
            self._seek_to_start()
        filled = set(filled)
        previous_pts = None
        past_last = 0
        for frame in self._frames():
            if frame.pts is not None:
                if previous_pts is not None and frame.pts <= previous_pts:
                    raise _TimestampsOutOfOrder
                previous_pts = frame.pts
            i = pts_to_index.get(frame.pts)
            if i is None:
                continue  # a frame the demuxer did not count (e.g. a discarded leading picture)
            if i in slot and i not in filled:
                self._convert_into(frame, buffer[slot[i]], out_h, out_w)
                filled.add(i)
            if i >= todo[-1]:
                if len(filled) == len(wanted):
                    break
                past_last += 1
                if past_last > _REORDER_MARGIN:
                    break
        return filled

    def _read_sequentially(self, wanted, slot, buffer, out_h, out_w) -> set[int]:
        last_index = wanted[-1]
        filled: set[int] = set()
        for i, frame in enumerate(self._decode_from_start()):
            if i in slot:
                self._convert_into(frame, buffer[slot[i]], out_h, out_w)
                filled.add(i)
            if i >= last_index:
                break
        return filled

    def iter_frames(self, size: tuple[int, int] | None) -> Iterator[np.ndarray]:
        """Every frame in presentation order, one decode from the start (see `VideoReader.iter_frames`)."""
        out_h, out_w = size if size is not None else (self.info.height, self.info.width)
        for i, frame in enumerate(self._decode_from_start()):
            if i >= self.info.num_frames:
                break
            yield self._convert(frame, out_h, out_w)

    def _convert(self, frame, out_h: int, out_w: int) -> np.ndarray:
        """One frame as a new RGB array; backends whose converter already returns a fresh
        picture hand it over instead of copying it (`PyAVDecoder._convert`)."""
        out = np.empty((out_h, out_w, 3), dtype=np.uint8)
        self._convert_into(frame, out, out_h, out_w)
        return out


class PyAVDecoder(_IndexedReader):
    """The default backend, on PyAV (whose wheels bundle FFmpeg).

    One `VideoReformatter` per stream does YUV->RGB and resizing in one swscale call; reusing
    it keeps conversion near FFmpeg's own speed, where a new converter per frame halves it.
    """

    def __init__(self, path: str, threads: int = 1):
        import av  # imported here so `import vidzoo` stays light

        self._av = av
        self.path = path
        self.threads = threads
        try:
            self._container = av.open(path, metadata_errors="ignore")
        except FileNotFoundError as e:
            raise VideoNotFoundError(path, "no such file") from e
        except av.error.FFmpegError as e:
            raise NotAVideoError(path, f"not a readable media file ({_ffmpeg_reason(e)})") from e
        try:
            self._stream = self._pick_stream()
            self._reformatter = av.video.reformatter.VideoReformatter()
            self._index = self._build_index()
            self.info = self._describe()
        except BaseException:
            self._container.close()
            raise

    # -- opening

    def _pick_stream(self):
        streams = [s for s in self._container.streams.video if s.codec_context is not None]
        if not streams:
            kinds = sorted({s.type for s in self._container.streams}) or ["none"]
            raise NoVideoStreamError(self.path, f"no video stream (streams: {', '.join(kinds)})")
        # Prefer the container's own choice (FFmpeg's av_find_best_stream), which skips
        # cover-art pictures and picks the main track of multi-track files.
        try:
            best = self._container.streams.best("video")
        except Exception:  # noqa: BLE001 - any failure just means "no preference"
            best = None
        stream = best if best is not None else streams[0]
        stream.thread_type = "AUTO" if self.threads != 1 else "SLICE"
        stream.codec_context.thread_count = self.threads
        return stream

    def _build_index(self) -> _StreamIndex:
        """Demux (no decoding) to count frames and find keyframes."""
        index = _StreamIndex()
        av = self._av
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:  # flush packet at the end of the stream
                    continue
                if packet.is_discard:  # dropped by an edit list: never displayed
                    continue
                if packet.pts is None:
                    index.timestamps_usable = False
                    index.pts.append(len(index.pts))
                    continue
                index.pts.append(packet.pts)
                if packet.is_keyframe:
                    index.keyframe_pts.append(packet.pts)
        except av.error.FFmpegError as e:
            if not index.pts:
                raise CorruptVideoError(self.path, f"cannot read video packets ({_ffmpeg_reason(e)})") from e
            # A damaged tail: keep what was demuxed; decoding will tell how much is usable.
        if not index.pts:
            raise CorruptVideoError(self.path, "the video stream has no frames")
        index.pts.sort()
        index.keyframe_pts.sort()
        index.pts_to_index = {p: i for i, p in enumerate(index.pts)}
        if len(index.pts_to_index) != len(index.pts):
            index.timestamps_usable = False
        self._seek_to_start()
        return index

    def _describe(self) -> VideoInfo:
        stream = self._stream
        ctx = stream.codec_context
        time_base = float(stream.time_base) if stream.time_base else 0.0
        pts = self._index.pts
        n = len(pts)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        span = (pts[-1] - pts[0]) * time_base if self._index.timestamps_usable and n > 1 else 0.0
        if span > 0:
            # Timestamps are the truth for variable-frame-rate files and absurd headers.
            measured = (n - 1) / span
            if not (0 < fps < 1000) or abs(measured - fps) / measured > 0.01:
                fps = measured
        if not (0 < fps < 1000):
            fps = 25.0  # nothing in the file says; FFmpeg assumes the same
        duration = n / fps
        rotation = self._probe_rotation()
        coded_h, coded_w = ctx.height, ctx.width
        if coded_h <= 0 or coded_w <= 0:
            raise CorruptVideoError(self.path, f"invalid frame size {coded_w}x{coded_h}")
        h, w = (coded_w, coded_h) if rotation in (90, 270) else (coded_h, coded_w)
        sar = float(stream.sample_aspect_ratio) if stream.sample_aspect_ratio else 1.0
        start = float(pts[0] * time_base) if self._index.timestamps_usable else 0.0
        return VideoInfo(
            path=self.path,
            num_frames=n,
            header_num_frames=int(stream.frames or 0),
            fps=fps,
            duration=duration,
            height=h,
            width=w,
            coded_height=coded_h,
            coded_width=coded_w,
            rotation=rotation,
            codec=ctx.name,
            pix_fmt=ctx.pix_fmt or "unknown",
            sample_aspect_ratio=sar,
            variable_frame_rate=_is_variable_rate(pts) if self._index.timestamps_usable else False,
            start_time=start,
        )

    def _probe_rotation(self) -> int:
        """Rotation comes with decoded frames (display-matrix side data): decode the first one."""
        try:
            frame = next(self._decode_from_start(), None)
        finally:
            self._seek_to_start()
        if frame is None:
            raise CorruptVideoError(self.path, "no frame could be decoded")
        return _clockwise_rotation(frame)

    # -- decoding

    def _seek_to_start(self) -> None:
        try:
            self._container.seek(0)
        except self._av.error.FFmpegError:
            # Raw elementary streams (.h264, no timestamps) cannot seek: reopen to rewind. The
            # old container is not closed here: a suspended frame generator may still read it
            # (closing it under one crashes); it closes when the last reference goes.
            self._container = self._av.open(self.path, metadata_errors="ignore")
            self._stream = self._pick_stream()
        self._stream.codec_context.flush_buffers()

    def _seek_keyframe(self, pts: int) -> None:
        try:
            self._container.seek(pts, stream=self._stream, backward=True, any_frame=False)
        except self._av.error.FFmpegError:
            self._seek_to_start()
        self._stream.codec_context.flush_buffers()

    def _frames(self) -> Iterator:
        """Decoded frames from the current position, with decoder errors made typed."""
        av = self._av
        try:
            for packet in self._container.demux(self._stream):
                if packet.is_discard:
                    # Still decoded (later frames may reference it) but never displayed.
                    for _ in packet.decode():
                        pass
                    continue
                yield from packet.decode()
        except av.error.FFmpegError as e:
            raise CorruptVideoError(self.path, f"decoding failed ({_ffmpeg_reason(e)})") from e

    def _convert_into(self, frame, out: np.ndarray, out_h: int, out_w: int) -> None:
        out[...] = _rgb(self._reformatter, frame, _clockwise_rotation(frame), out_h, out_w)

    def _convert(self, frame, out_h: int, out_w: int) -> np.ndarray:
        return _rgb(self._reformatter, frame, _clockwise_rotation(frame), out_h, out_w)

    def close(self) -> None:
        self._container.close()


def _rgb(reformatter, frame, rotation: int, out_h: int, out_w: int) -> np.ndarray:
    """A PyAV frame, YUV (any format) -> RGB24 at the output size in one swscale call, turned
    `rotation` degrees clockwise for display.

    The result is a view of the new picture swscale wrote (rows padded to FFmpeg's alignment,
    rotated by striding), not a copy: whole-video reads hand it over as it is, and a copy into
    a fresh array per frame would cost as much as the conversion (page faults on new memory).
    """
    coded_h, coded_w = (out_w, out_h) if rotation in (90, 270) else (out_h, out_w)
    rgb = reformatter.reformat(frame, width=coded_w, height=coded_h, format="rgb24", interpolation="BILINEAR", threads=1)
    array = rgb.to_ndarray()
    return np.rot90(array, k=-rotation // 90) if rotation else array


def _clockwise_rotation(frame) -> int:
    # PyAV reports the display matrix angle counter-clockwise; round to the nearest
    # quarter turn (FFmpeg's autorotate does the same for the common cases).
    angle = getattr(frame, "rotation", 0) or 0
    return int(round(-angle / 90.0)) % 4 * 90


def _is_variable_rate(pts: list[int]) -> bool:
    if len(pts) < 3:
        return False
    steps = np.diff(np.asarray(pts, dtype=np.int64))
    median = float(np.median(steps))
    return median > 0 and float(np.max(np.abs(steps - median))) > 0.1 * median


def _ffmpeg_reason(error: Exception) -> str:
    message = getattr(error, "strerror", None) or str(error)
    return str(message).strip() or type(error).__name__


register_decoder("pyav", PyAVDecoder)


# --------------------------------------------------------------------------- public reader

_ITER_CHUNK = 32  # frames per get_frames call where a backend has no iter_frames

# glibc's malloc, pinned where its own dynamic rule heads for large frames: blocks under 32 MiB
# come from the heap, and up to 128 MiB of freed heap stays mapped. By default the thresholds
# move with the allocation history, and after a process has allocated and freed a few whole-video
# arrays, every multi-megabyte frame FFmpeg converts is mapped and faulted in afresh (measured:
# ~1000 page faults per 1080p frame, 0.67 of FFmpeg's decode rate instead of 1.0). Set once,
# when the first video is opened; VIDZOO_MALLOC_TUNING=0, or malloc settings in GLIBC_TUNABLES,
# leave malloc alone.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
_MALLOC_SETTINGS = {_M_MMAP_THRESHOLD: 32 * 2**20, _M_TRIM_THRESHOLD: 128 * 2**20}
_malloc_tuned: bool | None = None  # None: not tried yet


def keep_freed_frame_memory() -> bool:
    """Pin glibc's malloc thresholds for decoding (see `_MALLOC_SETTINGS`); True if they are set.
    Done once per process (`VideoReader` calls it); a no-op off glibc or when turned off."""
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    _malloc_tuned = False
    if os.environ.get("VIDZOO_MALLOC_TUNING", "1") == "0" or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        import ctypes
        import platform

        if platform.libc_ver()[0] != "glibc":
            return False
        libc = ctypes.CDLL(None)
        _malloc_tuned = all(libc.mallopt(key, value) == 1 for key, value in _MALLOC_SETTINGS.items())
    except (OSError, AttributeError):  # no libc symbols to call: leave malloc as it is
        pass
    return _malloc_tuned


class VideoReader:
    """Random access to the frames of one video file.

    >>> with VideoReader("clip.mp4") as video:
    ...     clip = video.get_frames([0, 2, 4, 6], size=112)   # uint8 (4, H, W, 3), short side 112

    `decoder` is the backend: "pyav", "torchcodec" (`pip install 'vidzoo[torchcodec]'` and FFmpeg's
    shared libraries) or "auto" (per file type, the one measured faster: see `resolve_decoder`);
    `backend` is its old name. `threads` is the number of decoding threads; 1 suits DataLoader
    workers, which already decode in parallel (`decoder_threads`). `max_pixels` caps the pixels of each returned frame, bounding
    memory: a larger frame raises `FrameTooLargeError` instead of being allocated; passing a
    `size` to `get_frames` resizes while decoding, so huge videos stay readable. None: no cap.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        decoder: str = "auto",
        threads: int = 1,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        backend: str | None = None,
    ):
        path = Path(path)
        self.decoder = resolve_decoder(backend if backend is not None else decoder, path)
        if not path.is_file():
            reason = "is a directory, not a video file" if path.is_dir() else "no such file"
            raise VideoNotFoundError(path, reason)
        if path.stat().st_size == 0:
            raise NotAVideoError(path, "the file is empty (0 bytes)")
        self.path = str(path)
        self.max_pixels = max_pixels
        keep_freed_frame_memory()
        self._decoder = _decoder_factory(self.decoder)(self.path, threads)

    @property
    def info(self) -> VideoInfo:
        return self._decoder.info

    @property
    def num_frames(self) -> int:
        return self.info.num_frames

    @property
    def header_num_frames(self) -> int:
        return self.info.header_num_frames

    @property
    def fps(self) -> float:
        return self.info.fps

    @property
    def duration(self) -> float:
        return self.info.duration

    @property
    def height(self) -> int:
        return self.info.height

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def rotation(self) -> int:
        return self.info.rotation

    def output_size(self, size: int | tuple[int, int] | None) -> tuple[int, int] | None:
        """Resolve `size` (None, short side, or (height, width)) to a displayed (height, width)."""
        if size is None:
            return None
        if isinstance(size, int):
            if size <= 0:
                raise ValueError(f"{self.path}: size must be positive, got {size}")
            h, w = self.height, self.width
            # Half-up rounding, as `transforms.ResizeShortSide`, so decoding at the short side
            # makes that transform a no-op instead of a second resize.
            long = max(1, math.floor(max(h, w) * size / min(h, w) + 0.5))
            return (size, long) if h <= w else (long, size)
        h, w = size
        return int(h), int(w)

    def _capped_size(self, size: int | tuple[int, int] | None) -> tuple[int, int] | None:
        """`output_size(size)`, refused when its frames exceed `max_pixels`."""
        out_size = self.output_size(size)
        h, w = out_size if out_size is not None else (self.height, self.width)
        if self.max_pixels is not None and h * w > self.max_pixels:
            raise FrameTooLargeError(
                self.path,
                f"frames of {w}x{h} ({h * w} pixels) exceed max_pixels={self.max_pixels}; pass a size "
                "to resize while decoding, or raise max_pixels",
            )
        return out_size

    def get_frames(
        self,
        indices: Sequence[int],
        size: int | tuple[int, int] | None = None,
        *,
        out: torch.Tensor | np.ndarray | None = None,
    ) -> torch.Tensor:
        """Frames at `indices` as a uint8 tensor (T, H, W, 3), RGB, in the order asked.

        Indices may repeat and come in any order. `size` is None (native), an int (the short
        side, aspect kept) or (height, width), all as displayed. Grey, 10-bit and alpha
        sources all come out as 3-channel 8-bit RGB.

        `out`: a contiguous uint8 tensor or array of exactly that shape to write the frames into
        (the result shares its memory). Reusing one buffer across calls is how to read long runs
        of frames at the decoder's own speed: every new multi-megabyte array is memory the
        process must fault in, which costs about as much as decoding into it.
        """
        indices = [int(i) for i in indices]
        out_size = self._capped_size(size)
        if out is None:
            return torch.from_numpy(self._decoder.get_frames(indices, out_size))
        shape = (len(indices), *(out_size or (self.height, self.width)), 3)
        return torch.from_numpy(self._decoder.get_frames(indices, out_size, _out_array(self.path, out, shape)))

    def iter_frames(self, size: int | tuple[int, int] | None = None) -> Iterator[np.ndarray]:
        """Every frame, in presentation order, as uint8 (H, W, 3) RGB arrays (`size` as in
        `get_frames`): one pass from the start with one frame in memory at a time, for reading
        a whole video of any length (re-encoding it, say), at the decoder's own speed. Each array
        is the converted picture itself, not a copy: it may be a strided view (rows padded to
        FFmpeg's alignment, or rotated); `np.ascontiguousarray` it where that matters. Undecodable
        data raises `CorruptVideoError`; a stream that just ends early yields fewer than `num_frames`."""
        out_size = self._capped_size(size)
        iterate = getattr(self._decoder, "iter_frames", None)
        if iterate is not None:
            yield from iterate(out_size)
            return
        # A backend without a sequential pass: chunks of consecutive frames.
        for start in range(0, self.num_frames, _ITER_CHUNK):
            yield from self._decoder.get_frames(range(start, min(start + _ITER_CHUNK, self.num_frames)), out_size)

    def close(self) -> None:
        self._decoder.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        i = self.info
        return (
            f"VideoReader({self.path!r}, frames={i.num_frames}, fps={i.fps:.3f}, "
            f"size={i.width}x{i.height}, rotation={i.rotation}, codec={i.codec})"
        )


def _out_array(path: str, out: torch.Tensor | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The numpy view of a `get_frames(out=...)` buffer: a CPU tensor or array, uint8, writable,
    C-contiguous and of exactly the result's `shape`; anything else is a ValueError naming the file."""
    if isinstance(out, torch.Tensor):
        if out.device.type != "cpu":
            raise ValueError(f"{path}: out must be a CPU tensor, got one on {out.device}")
        out = out.numpy()
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{path}: out must be a tensor or numpy array, got {type(out).__name__}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{path}: out must be C-contiguous")
    if out.dtype != np.uint8 or out.shape != shape or not out.flags.writeable:
        raise ValueError(f"{path}: out must be a writable uint8 array of shape {shape}, got {out.dtype} {out.shape}"
                         + ("" if out.flags.writeable else " (read-only)"))
    return out


def read_video_info(path: str | os.PathLike, *, decoder: str = "auto") -> VideoInfo:
    """Open, describe and close a video (what datasets cache per file)."""
    with VideoReader(path, decoder=decoder) as reader:
        return reader.info


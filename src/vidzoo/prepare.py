"""Prepare a dataset for training: re-encode every video once, small and easy to seek.

A random training clip costs the decode from the keyframe before it: in a video with one
keyframe every few hundred frames (common in downloaded datasets) that is most of the time a
loader spends. `prepare_dataset(src, dst)` writes each video of `src` again as H.264 in MP4
(libx264 through PyAV), with

- the short side scaled down to `short_side` (never up; both sides even, as 4:2:0 needs),
- a keyframe every `keyframe_interval` frames, exactly (no scene-cut keyframes in between),
- at most `max_fps` frames per second (frames dropped evenly), when given,
- the rotation applied to the pixels (no display matrix left), audio and other streams dropped,

in worker processes, one file at a time, read with the chosen decoder (`decoder`: "auto",
"pyav" or "torchcodec", as `VideoReader` takes it). Each output is written to a temporary file, verified
(decoded to the end: frame count, size and keyframe spacing) and renamed into place, so a file
under its final name is always a finished one. Running again resumes: an output already there
that passes the same verification is skipped, anything else is redone. A video that cannot be
read is reported, never fatal. `dst` gets the videos at their relative paths (``x.avi`` as
``x.avi.mp4``), a manifest (``path,label``, paths relative to `dst`: what `vidzoo train --data`
reads), the class list and a report of every video, the last two named after the manifest.
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from pathlib import Path, PurePosixPath

from vidzoo.data.sources import VideoSource, load_source
from vidzoo.data.video import VideoDecodeError, VideoReader, check_decoder
from vidzoo.fileio import write_atomically
from vidzoo.pool import run_per_file
from vidzoo.progress import progress_bar

__all__ = ["PrepareSettings", "PreparedVideo", "PrepareReport", "prepare_video", "verify_prepared",
           "prepare_dataset"]

STATUSES = ("prepared", "skipped", "failed")  # skipped: already prepared by an earlier run
_POOL_START_METHOD = "spawn"


@dataclass(frozen=True)
class PrepareSettings:
    """How videos are re-encoded (the same for every video of a run)."""

    short_side: int = 256
    keyframe_interval: int = 16
    max_fps: float | None = None
    crf: int = 23  # x264 constant quality: 0 lossless, 23 its default, 51 worst
    preset: str = "veryfast"  # x264 speed/size trade-off: ultrafast ... veryslow

    def __post_init__(self) -> None:
        if self.short_side < 2:
            raise ValueError(f"short_side must be at least 2 pixels, got {self.short_side}")
        if self.keyframe_interval < 1:
            raise ValueError(f"keyframe_interval must be at least 1, got {self.keyframe_interval}")
        if self.max_fps is not None and not self.max_fps > 0:
            raise ValueError(f"max_fps must be positive, got {self.max_fps}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {self.crf}")
        presets = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
        if self.preset not in presets:
            raise ValueError(f"preset must be one of {', '.join(presets)}; got {self.preset!r}")


@dataclass(frozen=True)
class PreparedVideo:
    """What happened to one video (a row of the report)."""

    source: str
    output: str  # relative to the destination folder, '/'-separated
    label: str
    status: str
    error: str = ""  # exception class name when failed
    reason: str = ""
    source_frames: int = 0
    frames: int = 0
    width: int = 0
    height: int = 0
    fps: float = 0.0
    seconds: float = 0.0


@dataclass
class PrepareReport:
    """Every video's `PreparedVideo` in source order, and where the files were written."""

    videos: list[PreparedVideo]
    out: str
    manifest: str  # path,label of the videos prepared
    classes: str  # every class of the source, in order
    report: str  # this report as CSV
    settings: PrepareSettings

    @property
    def failed(self) -> list[PreparedVideo]:
        return [v for v in self.videos if v.status == "failed"]

    def summary(self) -> dict[str, int]:
        counts = {"videos": len(self.videos)}
        counts.update({s: sum(v.status == s for v in self.videos) for s in STATUSES})
        return counts

    def write_csv(self, path: str | os.PathLike) -> Path:
        def write(temp: Path) -> None:
            with open(temp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(PreparedVideo)])
                writer.writeheader()
                writer.writerows(asdict(v) for v in self.videos)

        return write_atomically(path, write, fsync=False)

    def to_dict(self) -> dict:
        return {"out": self.out, "manifest": self.manifest, "classes": self.classes, "report": self.report,
                "settings": asdict(self.settings),
                "summary": self.summary(), "videos": [asdict(v) for v in self.videos]}


# --------------------------------------------------------------------------- one video


@dataclass(frozen=True)
class _Plan:
    """What the output of one source will be: which source frames, at what size and rate."""

    size: tuple[int, int]  # (height, width)
    rate: Fraction
    keep: range | list[int]  # source frame indices, increasing
    source_frames: int


def _even(x: float) -> int:
    return max(2, 2 * math.floor(x / 2 + 0.5))


def _plan(video: VideoReader, settings: PrepareSettings) -> _Plan:
    h, w = video.height, video.width
    scale = min(1.0, settings.short_side / min(h, w))
    size = (_even(h * scale), _even(w * scale))
    n, fps = video.num_frames, video.fps
    if settings.max_fps is not None and fps > settings.max_fps:
        # Output frame k shows the source frame nearest to its time k / max_fps.
        count = math.floor((n - 1) * settings.max_fps / fps) + 1
        keep = sorted({min(n - 1, math.floor(k * fps / settings.max_fps + 0.5)) for k in range(count)})
        return _Plan(size, _rate(settings.max_fps), keep, n)
    return _Plan(size, _rate(fps), range(n), n)


def _rate(fps: float) -> Fraction:
    # 29.97... -> 30000/1001; a frame rate that needs a larger denominator is not worth it.
    return Fraction(fps).limit_denominator(1001)


def prepare_video(source: str | os.PathLike, output: str | os.PathLike,
                  settings: PrepareSettings = PrepareSettings(), *, decoder: str = "auto") -> int:
    """Re-encode `source` to `output` (MP4, H.264; see the module doc), verified, atomically;
    return the frames written. `decoder` reads the source and the output. Raises
    `VideoDecodeError` for a source that cannot be read."""
    with VideoReader(source, decoder=decoder) as video:
        return _encode(video, Path(output), _plan(video, settings), settings, decoder)


def _encode(video: VideoReader, output: Path, plan: _Plan, settings: PrepareSettings, decoder: str) -> int:
    import av  # imported here so `import vidzoo` stays light

    keep = set(plan.keep)
    written = 0

    def encode(temp: Path) -> None:
        nonlocal written
        with av.open(str(temp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=plan.rate)
            stream.width, stream.height, stream.pix_fmt = plan.size[1], plan.size[0], "yuv420p"
            n = settings.keyframe_interval
            stream.codec_context.gop_size = n
            # One thread: the worker processes already fill the cores.
            stream.options = {"crf": str(settings.crf), "preset": settings.preset, "threads": "1",
                              "x264-params": f"keyint={n}:min-keyint={n}:scenecut=0"}
            for i, rgb in enumerate(video.iter_frames(plan.size)):
                if i not in keep:
                    continue
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts, frame.time_base = written, 1 / plan.rate
                container.mux(stream.encode(frame))
                written += 1
            container.mux(stream.encode(None))
        if written == 0:
            raise VideoDecodeError(video.path, "no frame could be decoded")
        frames = verify_prepared(temp, plan.size, settings.keyframe_interval, decoder=decoder)
        if frames != written:
            raise VideoDecodeError(output, f"the new file decodes to {frames} frames, {written} were written")

    write_atomically(output, encode)
    return written


def verify_prepared(path: str | os.PathLike, size: tuple[int, int], keyframe_interval: int, *,
                    decoder: str = "auto") -> int:
    """Decode a prepared video to the end with `decoder` and check its (height, width) and that
    its keyframes are exactly every `keyframe_interval` frames (the packets' flags, read with
    PyAV's demuxer: nothing is decoded for that); return its frame count. Raises
    `VideoDecodeError` naming what is wrong."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            pts, keyframes = [], []
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keyframes.append(packet.pts)
    except (av.error.FFmpegError, IndexError) as e:
        raise VideoDecodeError(path, f"not a readable prepared video ({e})") from e
    order = {p: i for i, p in enumerate(sorted(pts))}
    at = [order[p] for p in sorted(keyframes)]
    if at != list(range(0, len(pts), keyframe_interval)):
        raise VideoDecodeError(path, f"keyframes at frames {at[:8]}..., not every {keyframe_interval}")
    with VideoReader(path, decoder=decoder) as video:
        if (video.height, video.width) != tuple(size) or video.rotation != 0:
            raise VideoDecodeError(path, f"size {video.width}x{video.height} rotation {video.rotation}, "
                                         f"expected {size[1]}x{size[0]} rotation 0")
        decoded = sum(1 for _ in video.iter_frames(None))
        if decoded != video.num_frames or decoded != len(pts):
            raise VideoDecodeError(path, f"{decoded} of {len(pts)} frames decode")
    return decoded


def _finished_frames(output: Path, plan: _Plan, settings: PrepareSettings, decoder: str) -> int | None:
    """The frame count of an output an earlier run finished, if it passes verification against
    what this run would write; else None (it is written again). The quality settings (crf,
    preset) cannot be checked: change them in a new destination."""
    if not output.is_file():
        return None
    try:
        frames = verify_prepared(output, plan.size, settings.keyframe_interval, decoder=decoder)
    except VideoDecodeError:
        return None
    # Fewer frames than planned: some of the source did not decode (the first run said so).
    return frames if 0 < frames <= len(plan.keep) else None


def _prepare_one(task: tuple[str, str, str, str, PrepareSettings, str]) -> PreparedVideo:
    source, out, relative, label, settings, decoder = task
    output = Path(out) / relative
    started = time.perf_counter()
    # Temporary files of an interrupted run: never a finished output, only litter.
    for stale in output.parent.glob(f".{output.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    try:
        with VideoReader(source, decoder=decoder) as video:
            plan = _plan(video, settings)
            frames = _finished_frames(output, plan, settings, decoder)
            status = "skipped" if frames is not None else "prepared"
            if frames is None:
                frames = _encode(video, output, plan, settings, decoder)
    except VideoDecodeError as e:
        return PreparedVideo(source, relative, label, "failed", type(e).__name__, e.reason,
                             seconds=round(time.perf_counter() - started, 3))
    planned = len(plan.keep)
    reason = f"{planned - frames} of {planned} frames could not be decoded" if frames < planned else ""
    return PreparedVideo(source, relative, label, status, "", reason, plan.source_frames, frames, plan.size[1],
                         plan.size[0], round(float(plan.rate), 3), round(time.perf_counter() - started, 3))


# --------------------------------------------------------------------------- a dataset


def _output_name(video_id: str) -> str:
    """``a/b.mp4`` stays, ``a/b.avi`` becomes ``a/b.avi.mp4``: distinct sources keep distinct
    outputs (``b.avi`` next to ``b.mp4``) whatever their order."""
    posix = PurePosixPath(video_id)
    if posix.is_absolute():  # a video outside the annotation's folder: keep its whole path
        posix = posix.relative_to(posix.anchor)
    return posix.as_posix() if posix.suffix.lower() == ".mp4" else f"{posix.as_posix()}.mp4"


def prepare_dataset(
    src: str | os.PathLike | VideoSource,
    dst: str | os.PathLike,
    settings: PrepareSettings = PrepareSettings(),
    *,
    classes: str | os.PathLike | list[str] | None = None,
    data_root: str | os.PathLike | None = None,
    manifest: str | None = None,
    workers: int = 2,
    timeout: float = 3600.0,
    progress: bool = True,
    decoder: str = "auto",
) -> PrepareReport:
    """Re-encode every video of `src` (a folder of class folders, a CSV/TSV annotation, as
    `vidzoo train --data` reads, or a `VideoSource`) into `dst`; see the module doc.

    Writes ``dst/<manifest>`` (default: the annotation's file name, or ``labels.csv`` for a
    folder) with the videos that were prepared, ``<manifest stem>.classes.txt`` (every class of
    `src`, in order, also those whose videos all failed) and ``<manifest stem>.report.csv``: the
    splits of one dataset can share `dst`. `workers` processes (0: this one, no timeout); a
    video taking over `timeout` seconds is failed. `decoder` reads the sources and verifies the
    outputs: "auto", "pyav" or "torchcodec" (one that cannot load here is refused before any
    work: `DecoderUnavailableError` saying what to install).
    """
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")
    check_decoder(decoder)
    source = src if isinstance(src, VideoSource) else load_source(src, classes, root=data_root)
    out = Path(dst).resolve()
    if manifest is None:
        origin = Path(source.origin)
        manifest = origin.stem + (".tsv" if origin.suffix.lower() == ".tsv" else ".csv") if origin.is_file() \
            else "labels.csv"
    if Path(manifest).name != manifest or Path(manifest).suffix.lower() not in (".csv", ".tsv"):
        raise ValueError(f"manifest must be a .csv or .tsv file name (written in {out}), got {manifest!r}")
    root = Path(source.root).resolve()
    if Path(source.origin).is_dir() and (out == root or root in out.parents):
        raise ValueError(f"the destination {out} is inside the dataset folder {root}: its outputs would be read as "
                         "videos of a class next time; choose a folder outside it")
    tasks, clashes = [], []
    taken: dict[str, str] = {}
    for sample in source.samples:
        relative = _output_name(sample.video_id)
        label = source.classes[sample.label]
        if relative in taken:
            clashes.append(PreparedVideo(sample.path, relative, label, "failed", "NameClash",
                                         f"would overwrite the output of {taken[relative]}"))
            continue
        taken[relative] = sample.path
        tasks.append((sample.path, str(out), relative, label, settings, decoder))
    sources = {Path(s.path).resolve() for s in source.samples}
    overwritten = [t[0] for t in tasks if (out / t[2]).resolve() in sources]
    if overwritten:
        raise ValueError(f"the destination {out} would overwrite {len(overwritten)} source video(s), e.g. "
                         f"{overwritten[0]}; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    with progress_bar(progress, len(tasks), "preparing", stderr=True) as advance:
        done = run_per_file(_prepare_one, tasks, workers=workers, timeout=timeout, failed=_failed, advance=advance,
                            start_method=_POOL_START_METHOD)
    by_source = {v.source: v for v in done + clashes}
    videos = [by_source[s.path] for s in source.samples]
    stem = Path(manifest).stem
    report = PrepareReport(videos, str(out), str(out / manifest), str(out / f"{stem}.classes.txt"),
                           str(out / f"{stem}.report.csv"), settings)
    _write_manifest(Path(report.manifest), [v for v in videos if v.status != "failed"])
    write_atomically(report.classes, lambda temp: temp.write_text("".join(f"{c}\n" for c in source.classes)),
                     fsync=False)
    report.write_csv(report.report)
    return report


def _failed(task: tuple[str, str, str, str, PrepareSettings, str], error: str, reason: str) -> PreparedVideo:
    source, _, relative, label, _, _ = task
    return PreparedVideo(source, relative, label, "failed", error, reason)


def _write_manifest(path: Path, videos: list[PreparedVideo]) -> None:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","

    def write(temp: Path) -> None:
        with open(temp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter=delimiter)
            writer.writerow(["path", "label"])
            writer.writerows([v.output, v.label] for v in videos)

    write_atomically(path, write, fsync=False)

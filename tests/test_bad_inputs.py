"""Bad inputs, one table: every case has one expected outcome, frames of an exact shape or a
specific error class whose message names the file.

Each case runs in a forked child process with a time limit, so a crash (a signal, or an
exception that is not the typed error) and a hang are told apart from a wrong answer.
Set VIDZOO_BAD_INPUTS_REPORT=FILE.md (and run without xdist: ``-p no:xdist``) to write the
counts table: cases tried, decoded correctly, rejected with the right error, crashes, hangs.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np
import pytest
from conftest import require_videos

from vidzoo.data.sampling import ClipTooShortError, SamplingConfig
from vidzoo.data.sources import AnnotationError, from_csv
from vidzoo.data.video import (
    CorruptVideoError,
    FrameTooLargeError,
    NotAVideoError,
    NoVideoStreamError,
    VideoDecodeError,
    VideoReader,
)

CLIP = 16  # clip length of the short-video cases
TIME_LIMIT = 20.0  # seconds per case before it counts as a hang


# --------------------------------------------------------------------------- writing videos


def _picture(i: int, height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 255 // max(1, width - 1)), (y * 255 // max(1, height - 1)), np.full_like(x, i * 15)], -1)
    # Noise makes every frame cost bytes, so the sample table is a small part of the file.
    noise = np.random.default_rng(i).integers(0, 40, (height, width, 1))
    return (rgb * 0.8 + noise).astype(np.uint8)


def write_video(
    path: Path,
    frames: int = 12,
    size: tuple[int, int] = (48, 64),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    pts: list[int] | None = None,
    time_base: Fraction = Fraction(1, 8),
    options: dict | None = None,
    streams: int = 1,
) -> Path:
    """A tiny video (`size` is height, width); `pts` in `time_base` units, by default 0, 1, ..."""
    pts = list(range(frames)) if pts is None else pts
    with av.open(str(path), "w", options=options or {}) as out:
        outs = []
        for k in range(streams):
            stream = out.add_stream(codec, rate=int(1 / time_base) if time_base.numerator == 1 else 8)
            stream.height, stream.width = size[0] // (k + 1), size[1] // (k + 1)
            stream.pix_fmt = pix_fmt
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
            stream.thread_count = 1
            if codec == "libx264":
                stream.options = {"bframes": "2", "g": "6"}
            outs.append(stream)
        for i in range(frames):
            for stream in outs:
                frame = av.VideoFrame.from_ndarray(_picture(i, stream.height, stream.width), format="rgb24")
                frame.pts = pts[i]
                frame.time_base = time_base
                out.mux(stream.encode(frame.reformat(format=pix_fmt)))
        for stream in outs:
            out.mux(stream.encode(None))
    return path


def write_audio(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=8000)
        samples = (np.sin(np.arange(8000) / 5) * 3000).astype(np.int16)[None]
        for start in range(0, 8000, 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, start:start + 1024].copy(), format="s16", layout="mono")
            frame.sample_rate = 8000
            frame.pts = start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_subtitles(path: Path) -> Path:
    """A Matroska file whose only stream is subtitles (remuxed from an SRT file)."""
    srt = path.with_suffix(".srt")
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n\n2\n00:00:01,500 --> 00:00:02,000\nbye\n")
    with av.open(str(srt)) as src, av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream_from_template(src.streams.subtitles[0])
        for packet in src.demux(src.streams.subtitles[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return path


def _mp4(tmp: Path, name: str = "clip.mp4", **kwargs) -> Path:
    return write_video(tmp / name, **kwargs)


def _faststart(tmp: Path) -> Path:
    return _mp4(tmp, "fast.mp4", frames=24, options={"movflags": "+faststart"})


def _truncated(fraction: float, moov_first: bool) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = _faststart(tmp) if moov_first else _mp4(tmp, frames=24)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])
        return path

    return build


def _corrupted(tmp: Path) -> Path:
    path = _mp4(tmp, frames=24)
    data = bytearray(path.read_bytes())
    start = data.find(b"mdat") + 4
    middle = start + (len(data) - start) // 2  # moov is at the end: the middle is in mdat
    data[middle : middle + 200] = bytes(range(200))
    path.write_bytes(bytes(data))
    return path


def _patch_atom(path: Path, atom: bytes, offset: int, value: bytes) -> Path:
    """Overwrite bytes at `offset` after the first `atom` box type (version 0 boxes)."""
    data = bytearray(path.read_bytes())
    at = data.find(atom) + len(atom) + offset
    data[at : at + len(value)] = value
    path.write_bytes(bytes(data))
    return path


def _duration(value: int) -> Callable[[Path], Path]:
    # mvhd/tkhd/mdhd v0: version+flags, creation, modification, then timescale (mvhd, mdhd) or
    # track id + reserved (tkhd), then duration.
    def build(tmp: Path) -> Path:
        path = _mp4(tmp)
        for atom, offset in ((b"mvhd", 16), (b"tkhd", 20), (b"mdhd", 16)):
            _patch_atom(path, atom, offset, struct.pack(">I", value))
        return path

    return build


def _rotated(matrix: tuple[int, int, int, int]) -> Callable[[Path], Path]:
    # tkhd v0: 4 version/flags, 20 times/ids/duration, 8 reserved, 8 layer..volume, then the
    # 3x3 matrix a b u c d v x y w (a..d in 16.16 fixed point).
    def build(tmp: Path) -> Path:
        path = _mp4(tmp)
        a, b, c, d = (struct.pack(">i", v << 16) for v in matrix)
        _patch_atom(path, b"tkhd", 40, a + b)
        return _patch_atom(path, b"tkhd", 52, c + d)

    return build


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(data)
        return path

    return build


def _fixture(name: str) -> Callable[[Path], Path]:
    return lambda tmp: require_videos() / name


def _raw(tmp: Path) -> Path:
    path = tmp / "raw.h264"
    with av.open(str(path), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.height, stream.width, stream.pix_fmt = 48, 64, "yuv420p"
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(_picture(i, 48, 64), format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _annotation(text: str, encoding: str = "utf-8", videos: tuple[str, ...] = ("a.mp4", "b.mp4")):
    def build(tmp: Path) -> Path:
        for name in videos:
            (tmp / name).write_bytes(b"not decoded")
        path = tmp / "labels.csv"
        path.write_bytes(text.replace("{abs}", str(tmp / "a.mp4")).encode(encoding))
        return path

    return build


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Frames:
    """Decodes: the frames asked for have exactly `shape`; `info` fields have these values."""

    shape: tuple[int, ...]
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Raises:
    """Fails with exactly this error class, and the message names the file (and `match`)."""

    error: type
    match: str = ""
    names_file: bool = True  # ClipTooShortError is raised by the sampler, which sees no path


@dataclass(frozen=True)
class Labels:
    """An annotation that loads, with these (video_id, class) pairs."""

    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], Path]
    expected: Frames | Raises | Labels
    action: str = "decode"  # decode | short:<policy> | csv[:<label_format>]


RGB = (12, 48, 64, 3)
CASES = [
    Case("zero_byte", _bytes("empty.mp4", b""), Raises(NotAVideoError)),
    Case("random_bytes", _bytes("noise.mp4", np.random.default_rng(0).bytes(5000)), Raises(NotAVideoError)),
    Case("truncated_10_moov_last", _truncated(0.1, False), Raises(NotAVideoError)),
    Case("truncated_50_moov_last", _truncated(0.5, False), Raises(NotAVideoError)),
    Case("truncated_90_moov_last", _truncated(0.9, False), Raises(NotAVideoError)),
    Case("truncated_10_moov_first", _truncated(0.1, True), Raises(CorruptVideoError)),
    Case("truncated_50_moov_first", _truncated(0.5, True), Raises(CorruptVideoError)),
    Case("truncated_90_moov_first", _truncated(0.9, True), Raises(CorruptVideoError)),
    Case("corrupted_mid_stream", _corrupted, Frames((24, 48, 64, 3))),
    Case("header_frames_exceed_decodable", _fixture("mediabunny-testdata/test/public/annex-b.mp4"), Frames((6, 1080, 1920, 3), {"num_frames": 6, "header_num_frames": 745})),
    Case("missing_duration", _duration(0), Frames(RGB)),
    Case("absurd_duration", _duration(0x7FFFFFFF), Frames(RGB)),
    *[
        Case(f"{n}_frames_{policy}", lambda tmp, n=n: _mp4(tmp, frames=n), expected, f"short:{policy}")
        for n in (1, CLIP - 1)
        for policy, expected in (
            ("loop", Frames((CLIP, 48, 64, 3))),
            ("repeat_last", Frames((CLIP, 48, 64, 3))),
            ("error", Raises(ClipTooShortError, f"needs {CLIP}", names_file=False)),
        )
    ],
    Case("variable_frame_rate", lambda tmp: _mp4(tmp, pts=[0, 1, 2, 5, 6, 7, 12, 13, 14, 20, 21, 22]), Frames(RGB, {"variable_frame_rate": True})),
    Case("missing_timestamps", _raw, Frames(RGB, {"header_num_frames": 0})),
    Case("out_of_order_timestamps", _fixture("moviepy-media/media/fire2.mp4"), Frames((25, 720, 1280, 3))),
    Case("out_of_order_timestamps_ts", _fixture("mediabunny-testdata/test/public/no-aud.ts"), Frames((9, 1440, 2560, 3))),
    Case("non_zero_start", lambda tmp: _mp4(tmp, pts=list(range(40, 52))), Frames(RGB, {"start_time": 5.0})),
    Case("audio_only", lambda tmp: write_audio(tmp / "audio.m4a"), Raises(NoVideoStreamError)),
    Case("subtitle_only", lambda tmp: write_subtitles(tmp / "subs.mkv"), Raises(NoVideoStreamError)),
    Case("two_video_streams", lambda tmp: write_video(tmp / "two.mkv", streams=2), Frames(RGB)),
    Case("gray", lambda tmp: write_video(tmp / "gray.mkv", codec="ffv1", pix_fmt="gray"), Frames(RGB)),
    Case("ten_bit", lambda tmp: _mp4(tmp, pix_fmt="yuv420p10le"), Frames(RGB)),
    Case("alpha", lambda tmp: write_video(tmp / "alpha.mkv", codec="ffv1", pix_fmt="yuva420p"), Frames(RGB)),
    Case("size_16x16", lambda tmp: _mp4(tmp, size=(16, 16)), Frames((12, 16, 16, 3))),
    Case("size_321x241", lambda tmp: write_video(tmp / "odd.mkv", codec="ffv1", size=(241, 321)), Frames((12, 241, 321, 3))),
    Case("rotation_90", _rotated((0, 1, -1, 0)), Frames((12, 64, 48, 3), {"rotation": 90})),
    Case("rotation_180", _rotated((-1, 0, 0, -1)), Frames((12, 48, 64, 3), {"rotation": 180})),
    Case("rotation_270", _rotated((0, -1, 1, 0)), Frames((12, 64, 48, 3), {"rotation": 270})),
    Case("name_non_ascii", lambda tmp: _mp4(tmp, "vidéo_日本語.mp4"), Frames(RGB)),
    Case("name_spaces", lambda tmp: _mp4(tmp, "my holiday clip.mp4"), Frames(RGB)),
    Case("name_leading_dash", lambda tmp: _mp4(tmp, "-clip.mp4"), Frames(RGB)),
    Case("frame_over_max_pixels", _mp4, Raises(FrameTooLargeError, "max_pixels=1000"), "decode:max_pixels"),
    Case("frame_over_max_pixels_resized", _mp4, Frames((12, 16, 21, 3)), "decode:max_pixels:resize"),
    Case("csv_bom_crlf", _annotation("\ufeffpath,label\r\na.mp4,run\r\nb.mp4,walk\r\n"), Labels((("a.mp4", "run"), ("b.mp4", "walk"))), "csv"),
    Case("csv_duplicates", _annotation("a.mp4,run\nb.mp4,walk\na.mp4,walk\n"), Raises(AnnotationError, "duplicate entry a.mp4"), "csv"),
    Case("csv_unknown_label", _annotation("a.mp4,run\nb.mp4,swim\n"), Raises(AnnotationError, "unknown label 'swim'"), "csv:classes"),
    Case("csv_one_based_indices", _annotation("a.mp4,1\nb.mp4,2\n"), Labels((("a.mp4", "run"), ("b.mp4", "walk"))), "csv:index1"),
    Case("csv_index_out_of_range", _annotation("a.mp4,1\nb.mp4,3\n"), Raises(AnnotationError, "class index 3 out of range 1..2"), "csv:index1"),
    Case("csv_parent_path", _annotation("a.mp4,run\n../b.mp4,walk\n"), Raises(AnnotationError, "'../b.mp4' escapes the dataset root"), "csv:confine"),
    Case("csv_absolute_path", _annotation("{abs},run\nb.mp4,walk\n"), Raises(AnnotationError, "absolute path"), "csv:confine"),
    Case("csv_absolute_path_local", _annotation("{abs},run\nb.mp4,walk\n"), Labels((("a.mp4", "run"), ("b.mp4", "walk"))), "csv"),
]


# --------------------------------------------------------------------------- running a case

INFO_FIELDS = ("num_frames", "header_num_frames", "height", "width", "rotation", "variable_frame_rate", "start_time")
TYPED_ERRORS = (VideoDecodeError, AnnotationError, ClipTooShortError)


def run_case(case: Case, tmp: Path) -> tuple:
    """("frames", shape, info) / ("labels", pairs) / ("error", class, message), and the path."""
    path = case.build(tmp)
    kind, _, arg = case.action.partition(":")
    try:
        if kind == "csv":
            classes = ["run", "walk"] if arg in ("classes", "index0", "index1") else None
            source = from_csv(path, classes=classes, label_format=arg if arg.startswith("index") else "name",
                              confine=arg == "confine")
            pairs = tuple(sorted((s.video_id, source.classes[s.label]) for s in source.samples))
            return ("labels", pairs), str(path)
        max_pixels = 1000 if arg.startswith("max_pixels") else 4096 * 2304
        with VideoReader(path, max_pixels=max_pixels) as video:
            info = video.info
            if kind == "short":
                sampling = SamplingConfig(frames=CLIP, short_policy=arg)
                indices = sampling.train_indices(info.num_frames, info.fps, np.random.default_rng(0)).tolist()
            else:
                indices = range(info.num_frames)
            frames = video.get_frames(indices, size=16 if arg.endswith("resize") else None)
            return ("frames", tuple(frames.shape), {k: getattr(info, k) for k in INFO_FIELDS}), str(path)
    except Exception as e:  # noqa: BLE001 - the parent judges which errors are right
        return ("error", type(e), str(e)), str(path)


def _child(index: int, tmp: str, conn) -> None:
    conn.send(run_case(CASES[index], Path(tmp)))
    conn.close()


def outcome(case: Case, tmp: Path) -> tuple[str, object]:
    """(verdict, what happened): verdict is decoded / rejected / wrong / crash / hang."""
    receive, send = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_child, args=(CASES.index(case), str(tmp), send))
    child.start()
    send.close()
    try:
        got = receive.recv() if receive.poll(TIME_LIMIT) else None
    except EOFError:  # the child died before answering
        got = None
    child.join(5)
    if got is None:
        if child.is_alive():
            child.kill()
            child.join()
            return "hang", f"no answer in {TIME_LIMIT:g} s"
        return "crash", f"child exited with {child.exitcode}"
    result, path = got
    if result[0] == "error" and not issubclass(result[1], TYPED_ERRORS):
        return "crash", f"untyped {result[1].__name__}: {result[2]}"
    expected = case.expected
    if isinstance(expected, Raises) and result[0] == "error":
        _, error, message = result
        right = error is expected.error and expected.match in message
        if expected.names_file:
            right = right and path in message
        return ("rejected" if right else "wrong"), result
    if isinstance(expected, Frames) and result[0] == "frames":
        _, shape, info = result
        right = shape == expected.shape and all(info[k] == v for k, v in expected.info.items())
        return ("decoded" if right else "wrong"), result
    if isinstance(expected, Labels) and result[0] == "labels":
        return ("decoded" if result[1] == expected.pairs else "wrong"), result
    return "wrong", result


_VERDICTS: dict[str, str] = {}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_expected_outcome(case, tmp_path):
    verdict, detail = outcome(case, tmp_path)
    _VERDICTS[case.id] = verdict
    assert verdict in ("decoded", "rejected"), f"{case.id}: {verdict}: {detail} (expected {case.expected})"


def test_cases_cover_every_outcome_kind():
    kinds = {type(c.expected) for c in CASES}
    assert kinds == {Frames, Raises, Labels}


@pytest.fixture(scope="module", autouse=True)
def _counts_table():
    yield
    target = os.environ.get("VIDZOO_BAD_INPUTS_REPORT")
    if not target or not _VERDICTS:
        return
    counts = {v: sum(x == v for x in _VERDICTS.values()) for v in ("decoded", "rejected", "wrong", "crash", "hang")}
    unnamed = sum(
        v == "rejected" and not c.expected.names_file for c in CASES for k, v in _VERDICTS.items() if k == c.id
    )
    rows = [
        ("cases tried", len(_VERDICTS)),
        ("decoded correctly (frames of the exact shape, or the annotation loaded right)", counts["decoded"]),
        ("rejected with the right error naming the file", counts["rejected"] - unnamed),
        ("rejected with the right error, message without the path (ClipTooShortError)", unnamed),
        ("wrong outcome", counts["wrong"]),
        ("crashes", counts["crash"]),
        ("hangs", counts["hang"]),
    ]
    lines = ["| bad inputs | count |", "|---|---:|", *[f"| {name} | {n} |" for name, n in rows]]
    Path(target).write_text("\n".join(lines) + "\n")

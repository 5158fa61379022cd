"""The torchcodec decoder backend: `VideoReader(path, decoder="torchcodec")`.

torchcodec (``pip install 'vidzoo[torchcodec]'``, 0.17 or later: its public "blocks" API) decodes
with the system's FFmpeg shared libraries (Debian 12: ``apt-get install --no-install-recommends
libavdevice59``, which pulls FFmpeg 5.1's libavcodec59, libavformat59, libavutil57, libavfilter8,
libswscale6 and libswresample4: all seven are linked by torchcodec's FFmpeg-5 build).

Frames are found exactly as the PyAV backend finds them (the shared `_IndexedReader`: the demux
index, a seek to the keyframe before the first wanted frame, frames placed by pts), so the same
request returns the same frames:

* opening: `Demuxer` picks FFmpeg's best video stream (PyAV's ``streams.best("video")`` choice);
  ``VideoStream.scan()`` demuxes it once, without decoding, for the frame count, every pts and the
  keyframes; the first frame is decoded, as the PyAV backend does, for the rotation and so that a
  file with no decodable frame fails at open;
* reading: a fresh `VideoPacketDecoder` after every seek (a flushed one keeps state that changes
  the pixels of damaged streams); the decoded samples are then converted to RGB at the output
  size by the PyAV backend's own swscale call (`_pyav_frame`), so both backends return identical
  pixels, resized or not, 10-bit included. Conversion is not where the backends should differ:
  torchcodec's `ColorConverter` converts at full size and needs a separate resize, which gives
  pixels a level or so apart from PyAV's one-pass scaling; it remains the fallback for pixel
  layouts PyAV frames do not share;
* torchcodec 0.17 seeks with ``avformat_seek_file``, which in MPEG-TS lands *after* the keyframe
  (TS is bisected on dts), and HEVC then conceals the missing references with plausible garbage
  carrying the right timestamps: a seek whose first frame is later than its keyframe is
  abandoned and the frames are decoded from the start;
* FFmpeg 5.1's AVI demuxer leaves pts unset with packed B-frames and decoded frames then carry
  later packets' dts: an AVI whose first decoded frame is not labelled with the scan's first pts
  is read by counting frames; a file FFmpeg refuses to seek in (some damaged WebMs) is counted by
  decoding it once at open.

Errors are the PyAV backend's `VideoDecodeError` classes for the same files. A missing torchcodec
or FFmpeg is `TorchCodecUnavailableError`: one line saying what to install.

``decoder="torchcodec-cuda"`` (`TorchCodecCudaDecoder`) finds frames the same way but decodes on
the GPU: torchcodec's NVDEC decoder (``make_decoder(device="cuda:N")``; codecs NVDEC lacks are
decoded on the CPU and uploaded by torchcodec), `ColorConverter` on the same device for RGB (its
own CUDA conversion, not swscale: pixels may differ from PyAV's by a level or so), a bilinear
resize there, and one copy of each frame back to host memory, so it returns what every backend
returns. It needs a CUDA GPU and torchcodec's and torch's CUDA builds (refused in one line
otherwise) and runs in the process that opens it: DataLoaders decode in the main process with it
(`vidzoo.data.video.loader_workers`), as CUDA cannot start in forked workers. N is the process's
current CUDA device (under Lightning, each process's own GPU).

Private torchcodec names used (checked with 0.17; revisit on upgrade): ``FrameIndex._pts`` and
``._time_base_num/_den`` (exact integer pts: the public ones are floats) and
``torchcodec._core.get_ffmpeg_library_versions`` (forces the FFmpeg load in `torchcodec_status`).
torchcodec's objects cannot cross processes: open decoders inside DataLoader workers (vidzoo
opens one per sample).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from vidzoo.data.video import (
    CorruptVideoError,
    DecoderUnavailableError,
    NotAVideoError,
    NoVideoStreamError,
    VideoInfo,
    VideoNotFoundError,
    _clockwise_rotation,
    _IndexedReader,
    _is_variable_rate,
    _rgb,
    _StreamIndex,
)

__all__ = ["TorchCodecDecoder", "TorchCodecCudaDecoder", "TorchCodecUnavailableError", "torchcodec_status",
           "torchcodec_cuda_status", "APT_PACKAGES", "PIP_HINT"]

# Debian 12's packages for torchcodec's FFmpeg-5 build: libavdevice59 depends on libavfilter8,
# which depends on the other five libraries libtorchcodec_core5.so links.
APT_PACKAGES = "libavdevice59"
PIP_HINT = "pip install 'vidzoo[torchcodec]'"
_APT_HINT = f"apt-get install --no-install-recommends {APT_PACKAGES}, which pulls FFmpeg 5.1's shared libraries"
_MIN_VERSION = (0, 17)
_DECODE_SCAN_TIME_BASE = (1, 1_000_000)  # microseconds, for pts read off decoded frames
_NO_PTS = -(2**63)  # AV_NOPTS_VALUE


class TorchCodecUnavailableError(DecoderUnavailableError):
    """torchcodec is missing or too old, or cannot load FFmpeg's shared libraries. `str(error)`
    is one line saying what to install."""


_STATUS: tuple[bool, str] | None = None


def torchcodec_status() -> tuple[bool, str]:
    """(usable, one-line reason). Loads torchcodec's FFmpeg libraries once; cheap afterwards."""
    global _STATUS
    if _STATUS is None:
        _STATUS = _load_torchcodec()
    return _STATUS


def _load_torchcodec() -> tuple[bool, str]:
    try:
        import torchcodec
    except ImportError as e:
        return False, (f"the torchcodec decoder needs torchcodec, which is not installed ({e}): {PIP_HINT}; "
                       f"and FFmpeg's shared libraries: on Debian 12, {_APT_HINT}")
    version = tuple(int(x) for x in re.findall(r"\d+", torchcodec.__version__)[:2])
    if version < _MIN_VERSION:
        return False, f"torchcodec {torchcodec.__version__} is too old for vidzoo (0.17 or later): {PIP_HINT}"
    try:
        from torchcodec._core import get_ffmpeg_library_versions  # loads libtorchcodec_coreN.so

        versions = get_ffmpeg_library_versions()
    except Exception as e:  # noqa: BLE001 - RuntimeError("Could not load libtorchcodec ...") and kin
        return False, f"torchcodec {torchcodec.__version__} {load_error_hint(str(e))}"
    return True, f"torchcodec {torchcodec.__version__} with FFmpeg {versions.get('ffmpeg_version', '?')}"


_CUDA_NEEDS = "the torchcodec-cuda decoder needs a CUDA GPU and torchcodec's CUDA build"
_CUDA_PIP_HINT = ("pip install torchcodec --index-url https://download.pytorch.org/whl/cuXXX, the CUDA version of "
                  "your torch")


def torchcodec_cuda_status() -> tuple[bool, str]:
    """(usable, one-line reason) for decoding on the GPU: torchcodec loads (`torchcodec_status`),
    torch and torchcodec are CUDA builds and torch sees a GPU. Not cached: cheap after the first call."""
    ok, reason = torchcodec_status()
    if not ok:
        return False, reason
    import torch
    import torchcodec

    if torch.version.cuda is None or "+cpu" in torchcodec.__version__:
        return False, (f"{_CUDA_NEEDS}; installed: torch {torch.__version__}, torchcodec {torchcodec.__version__} "
                       f"(a CPU build): {_CUDA_PIP_HINT}")
    if not torch.cuda.is_available():
        return False, f"{_CUDA_NEEDS}; torch.cuda.is_available() is False"
    # No CUDA context is made here (is_available only counts devices); DataLoaders never fork
    # workers for this decoder anyway (`loader_workers`).
    return True, f"{reason}, decoding on CUDA"


def load_error_hint(message: str) -> str:
    """One line from torchcodec's multi-page "Could not load libtorchcodec" error.

    torchcodec tries its builds for FFmpeg 9 down to 4 and reports, for each, the first shared
    library the loader could not find. A major whose libavutil loaded but another library did
    not is a partial install: name what is missing there. Otherwise no FFmpeg was found.
    """
    sections = re.split(r"FFmpeg version (\d+):", message)
    missing = {lib for body in sections[2::2] for lib in re.findall(r"(lib\w+\.so\.\d+): cannot open", body)}
    partial = sorted(lib for lib in missing if not lib.startswith("libavutil."))
    if partial:
        packages = " ".join(lib.replace(".so.", "") for lib in partial)  # Debian's naming
        return (f"cannot load FFmpeg: {', '.join(partial)} missing; on Debian: apt-get install "
                f"--no-install-recommends {packages}")
    if missing:
        return f"cannot load FFmpeg (no FFmpeg 4-9 shared libraries found): on Debian 12, {_APT_HINT}"
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    return f"cannot load its native library ({first}); check that torch and torchcodec versions match"


def _reason(error: Exception) -> str:
    """torchcodec's C++ errors start with 'function, /path/file.cpp:123, ': keep the message."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"^[\w:]+, /\S+:\d+, ", "", message)


@dataclass
class _Frame:
    """A decoded frame as `_IndexedReader` sees it: its pts in the stream's time base."""

    pts: int | None
    raw: Any  # torchcodec RawFrame


class TorchCodecDecoder(_IndexedReader):
    """Decoder backend on torchcodec's blocks API, on the CPU (see the module docstring).

    `threads` is torchcodec's `num_ffmpeg_threads`.
    """

    device = "cpu"  # where torchcodec decodes and converts

    def __init__(self, path: str, threads: int = 1):
        ok, reason = torchcodec_status()
        if not ok:
            raise TorchCodecUnavailableError(reason)
        self.path = str(path)
        self.threads = int(threads)
        if os.path.isdir(self.path):
            raise VideoNotFoundError(self.path, "is a directory, not a video file")
        if not os.path.exists(self.path):
            raise VideoNotFoundError(self.path, "no such file")
        self._stream_index: int | str = "video"
        self._demuxer, stream = self._open_demuxer()
        self._stream_index = stream.index
        self._decoder = None
        self._converter = None
        self._template = None  # see _pyav_frame
        self._sought: int | None = None  # the keyframe pts the last seek asked for
        self._at_start = False  # whether the demuxer is at the start with nothing read yet
        meta = stream.metadata
        self._index, rotation, first_pts = self._scan(stream)
        if _is_avi(self.path) and self._index.timestamps_usable and first_pts is not None:
            if first_pts != self._index.pts[0]:
                self._index.timestamps_usable = False  # packed B-frames: count frames, as FFmpeg does
                self._index.pts_to_index = {}
        self.info = self._describe(meta, rotation)

    # -- opening

    def _open_demuxer(self):
        from torchcodec.decoders import Demuxer

        try:
            demuxer = Demuxer(self.path, streams=self._stream_index)
        except ValueError as e:  # torchcodec turns "no such stream" into ValueError
            raise NoVideoStreamError(self.path, f"no video stream (streams: {self._stream_kinds()})") from e
        except RuntimeError as e:
            if "Failed to find stream info" in str(e):
                raise CorruptVideoError(self.path, f"cannot read stream information ({_reason(e)})") from e
            raise NotAVideoError(self.path, f"not a readable media file ({_reason(e)})") from e
        return demuxer, demuxer.streams[0]

    def _stream_kinds(self) -> str:
        try:
            from torchcodec.decoders import get_container_metadata

            kinds = sorted({s.media_type for s in get_container_metadata(self.path).streams})
        except Exception:  # noqa: BLE001 - only for the message
            kinds = []
        return ", ".join(kinds) or "none"

    def _scan(self, stream) -> tuple[_StreamIndex, int, int | None]:
        """The demux index (or, where FFmpeg refuses to seek, a count by decoding), the first
        decoded frame's clockwise rotation and its pts."""
        self._seekable = True
        try:
            frame_index = stream.scan()
        except RuntimeError as e:
            # The scan starts with a seek to 0, which FFmpeg refuses on some damaged files (a
            # Matroska with a zeroed block, in the fuzz run) that PyAV reads from the start.
            self._seekable = False
            self._time_base = _DECODE_SCAN_TIME_BASE
            return self._scan_by_decoding(e)
        if len(frame_index) == 0:
            raise CorruptVideoError(self.path, "the video stream has no frames")
        self._time_base = (int(frame_index._time_base_num), int(frame_index._time_base_den))  # noqa: SLF001
        pts = sorted(frame_index._pts.tolist())  # noqa: SLF001
        keyframes = sorted(int(frame_index._pts[i]) for i in frame_index.key_frame_indices.tolist())  # noqa: SLF001
        self._seek_to_start()
        first = next(self._frames(), None)
        self._seek_to_start()
        if first is None:
            raise CorruptVideoError(self.path, "no frame could be decoded")
        return _index_of(pts, keyframes), _clockwise_rotation(first.raw), first.pts

    def _scan_by_decoding(self, scan_error: Exception) -> tuple[_StreamIndex, int, int | None]:
        """Frame pts by decoding from the start without seeking; keeps what decoded before an
        error, as PyAV's demux keeps a damaged tail."""
        pts: list[int] = []
        rotation = 0
        self._seek_to_start()
        try:
            for frame in self._frames():
                if not pts:
                    rotation = _clockwise_rotation(frame.raw)
                if frame.pts is not None:
                    pts.append(frame.pts)
        except CorruptVideoError:
            pass  # a damaged tail: keep what decoded
        if not pts:
            raise CorruptVideoError(self.path, f"cannot read video packets ({_reason(scan_error)})") from scan_error
        self._seek_to_start()
        return _index_of(sorted(pts), []), rotation, pts[0]

    def _describe(self, meta, rotation: int) -> VideoInfo:
        if not meta.width or not meta.height or meta.width <= 0 or meta.height <= 0:
            raise CorruptVideoError(self.path, f"invalid frame size {meta.width}x{meta.height}")
        # torchcodec reports the size after the stream's rotation; the coded size is the
        # frame's own, and the rotation applied is the first frame's, as in the PyAV backend.
        stream_rotation = int(round(-(meta.rotation or 0.0) / 90.0)) % 4 * 90
        h, w = int(meta.height), int(meta.width)
        coded_h, coded_w = (w, h) if stream_rotation in (90, 270) else (h, w)
        h, w = (coded_w, coded_h) if rotation in (90, 270) else (coded_h, coded_w)
        pts = self._index.pts
        usable = self._index.timestamps_usable
        num, den = self._time_base
        fps = _frame_rate(float(meta.average_fps_from_header or 0.0), pts, num / den, usable)
        par = meta.pixel_aspect_ratio
        return VideoInfo(
            path=self.path,
            num_frames=len(pts),
            header_num_frames=int(meta.num_frames_from_header or 0),
            fps=fps,
            duration=len(pts) / fps,
            height=h,
            width=w,
            coded_height=coded_h,
            coded_width=coded_w,
            rotation=rotation,
            codec=meta.codec or "unknown",
            pix_fmt=meta.pixel_format or "unknown",
            sample_aspect_ratio=float(par) if par else 1.0,
            variable_frame_rate=_is_variable_rate(pts) if usable else False,
            start_time=pts[0] * num / den if usable else 0.0,
        )

    # -- the primitives `_IndexedReader` reads with

    def _new_decoder(self) -> None:
        stream = self._demuxer.streams[0]
        self._decoder = stream.make_decoder(device=self.device, num_ffmpeg_threads=self.threads)

    def _seek_to_start(self) -> None:
        self._sought = None
        if not self._at_start:
            # A new demuxer rather than a seek to 0: FFmpeg's "start" is not exact in every
            # container, and some damaged files refuse the seek altogether.
            self._demuxer, _ = self._open_demuxer()
            self._at_start = True
        self._new_decoder()

    def _seek_keyframe(self, pts: int) -> None:
        if not self._seekable:
            self._seek_to_start()
            return
        num, den = self._time_base
        try:
            self._demuxer.seek(pts * num / den, stream=self._demuxer.streams[0])
        except RuntimeError:
            self._at_start = False
            self._seek_to_start()
            return
        self._at_start = False
        self._sought = pts
        self._new_decoder()

    def _frames(self) -> Iterator[_Frame]:
        self._at_start = False
        sought, self._sought = self._sought, None
        num, den = self._time_base
        demuxer, decoder = self._demuxer, self._decoder
        try:
            first = True
            for raw in _decode(demuxer, decoder):
                seconds = raw.pts_seconds
                pts = round(seconds * den / num) if seconds is not None and math.isfinite(seconds) else None
                if first and sought is not None and pts is not None and pts > sought:
                    return  # the seek landed after its keyframe: the reader decodes from the start
                first = False
                yield _Frame(pts, raw)
        except RuntimeError as e:
            raise CorruptVideoError(self.path, f"decoding failed ({_reason(e)})") from e

    def _convert_into(self, frame: _Frame, out: np.ndarray, out_h: int, out_w: int) -> None:
        raw = frame.raw
        rotation = _clockwise_rotation(raw)
        target = self._pyav_frame(raw)
        if target is not None:
            out[...] = _rgb(self._reformatter, target, rotation, out_h, out_w)
            return
        # A layout PyAV frames do not share (semi-planar, packed): torchcodec's own conversion,
        # then torch's resize. Same frames, pixels a level or so apart when resized.
        self._convert_with_torchcodec(frame, out, out_h, out_w)

    def _convert_with_torchcodec(self, frame: _Frame, out: np.ndarray, out_h: int, out_w: int) -> None:
        """torchcodec's `ColorConverter` on this decoder's device, then `rgb_frame_into`."""
        if self._converter is None:
            from torchcodec.decoders import ColorConverter

            self._converter = ColorConverter(device=self.device)
        try:
            rgb = self._converter.convert(frame.raw).data  # (3, H, W) uint8 on self.device, rotation applied
        except RuntimeError as e:
            raise CorruptVideoError(self.path, f"colour conversion failed ({_reason(e)})") from e
        rgb_frame_into(rgb, out, out_h, out_w)

    def _convert(self, frame: _Frame, out_h: int, out_w: int) -> np.ndarray:
        target = self._pyav_frame(frame.raw)
        if target is None:
            return super()._convert(frame, out_h, out_w)
        return _rgb(self._reformatter, target, _clockwise_rotation(frame.raw), out_h, out_w)

    def _pyav_frame(self, raw):
        """The decoded samples of `raw` in a PyAV frame that carries this stream's colour
        description, or None where the layouts differ.

        The conversion to RGB is then the PyAV backend's own swscale call, so both backends give
        identical pixels for the same decoded picture, resized or not. The PyAV frame is one
        PyAV decoded from this file (the template): swscale reads the chroma siting from the
        frame, and PyAV cannot set it on a frame of its own (a fresh frame resizes a level or so
        differently). Files PyAV cannot decode get a fresh frame with the colour space and range.
        """
        import av

        if self._template is None:
            self._reformatter = av.video.reformatter.VideoReformatter()
            self._template = _first_pyav_frame(self.path) or False
        try:
            planes = [plane.numpy() for plane in raw.planes]
        except RuntimeError:
            return None  # a format torchcodec cannot show as planes (packed, palettised)
        template = self._template
        if template is False or (template.width, template.height, template.format.name) != (
                raw.width, raw.height, raw.pixel_format):
            template = av.VideoFrame(raw.width, raw.height, raw.pixel_format)
            template.colorspace = _AV_COLORSPACE.get(raw.color_space, 2)
            template.color_range = {"tv": 1, "pc": 2}.get(raw.color_range, 0)
        else:
            template.make_writable()
        # torchcodec gives one tensor per component, in the format's component order; PyAV's
        # planes are in memory order (GBR formats store G, B, R; NV12 shares a plane for U, V).
        where = [component.plane for component in template.format.components]
        if len(where) != len(planes) or len(set(where)) != len(where):
            return None
        for index, samples in zip(where, planes):
            plane = template.planes[index]
            itemsize = samples.dtype.itemsize
            if plane.height != samples.shape[0] or plane.line_size < samples.shape[1] * itemsize:
                return None
            rows = np.frombuffer(plane, dtype=samples.dtype).reshape(plane.height, plane.line_size // itemsize)
            rows[:, : samples.shape[1]] = samples
        return template

    def close(self) -> None:
        self._decoder = None
        self._demuxer = None


class TorchCodecCudaDecoder(TorchCodecDecoder):
    """`TorchCodecDecoder` decoding with NVDEC and converting and resizing on the GPU (see the
    module docstring); `threads` only matters for codecs torchcodec decodes on the CPU."""

    def __init__(self, path: str, threads: int = 1):
        ok, reason = torchcodec_cuda_status()
        if not ok:
            raise TorchCodecUnavailableError(reason)
        self.device = _cuda_device()
        super().__init__(path, threads)

    def _new_decoder(self) -> None:
        try:
            super()._new_decoder()
        except RuntimeError as e:  # the device, not the file: torchcodec has not read a packet yet
            raise TorchCodecUnavailableError(f"{_CUDA_NEEDS}; torchcodec cannot decode on {self.device} "
                                             f"({_reason(e)}): {_CUDA_PIP_HINT}") from e

    def _pyav_frame(self, raw):
        # The samples are on the GPU: every frame takes torchcodec's CUDA conversion, never the
        # CPU's swscale (whichever path converts it: clips or whole-video reads).
        return None


def _cuda_device() -> str:
    """This process's current CUDA device (Lightning sets each process's own)."""
    import torch

    return f"cuda:{torch.cuda.current_device()}"


def rgb_frame_into(rgb, out: np.ndarray, out_h: int, out_w: int) -> None:
    """Write a (3, H, W) uint8 RGB tensor, on any device, into `out`, uint8 (out_h, out_w, 3) in
    host memory: resized bilinearly (antialiased when shrinking) where it is, then copied once."""
    if tuple(rgb.shape[1:]) != (out_h, out_w):
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        rgb = F.resize(rgb, [out_h, out_w], interpolation=InterpolationMode.BILINEAR, antialias=True)
    out[...] = rgb.permute(1, 2, 0).cpu().numpy()


# FFmpeg's AVColorSpace numbers by name (libavutil/pixfmt.h), for frames PyAV makes itself.
_AV_COLORSPACE = {"rgb": 0, "bt709": 1, "unknown": 2, "unspecified": 2, "fcc": 4, "bt470bg": 5, "smpte170m": 6,
                  "smpte240m": 7, "ycgco": 8, "bt2020nc": 9, "bt2020c": 10}


def _first_pyav_frame(path: str):
    """The first frame PyAV decodes from `path`'s best video stream, or None."""
    import av

    try:
        with av.open(path, metadata_errors="ignore") as container:
            stream = container.streams.best("video")
            if stream is None:
                return None
            for frame in container.decode(stream):
                return frame
    except (av.error.FFmpegError, OSError, ValueError):
        return None
    return None


def _decode(demuxer, decoder) -> Iterator:
    """Every frame from the demuxer's position: packets in, frames out, then the codec drained."""
    for packet in demuxer:
        yield from decoder.decode(packet)
    yield from decoder.drain()


def _index_of(pts: list[int], keyframe_pts: list[int]) -> _StreamIndex:
    # As in the PyAV backend: frames are placed by unique timestamps. torchcodec's scan uses pts,
    # else dts, so packets with neither come out as AV_NOPTS_VALUE.
    usable = len(set(pts)) == len(pts) and _NO_PTS not in pts
    return _StreamIndex(pts=pts, keyframe_pts=keyframe_pts, timestamps_usable=usable,
                        pts_to_index={p: i for i, p in enumerate(pts)} if usable else {})


def _frame_rate(header_fps: float, pts: list[int], time_base: float, usable: bool) -> float:
    """PyAV backend's rule: the header's rate unless the timestamps say otherwise by more than
    1% (variable-rate files, absurd headers); 25 when nothing says (as FFmpeg assumes)."""
    fps = header_fps
    span = (pts[-1] - pts[0]) * time_base if usable and len(pts) > 1 else 0.0
    if span > 0:
        measured = (len(pts) - 1) / span
        if not (0 < fps < 1000) or abs(measured - fps) / measured > 0.01:
            fps = measured
    return fps if 0 < fps < 1000 else 25.0


def _is_avi(path: str) -> bool:
    """Whether the file is AVI, from its first bytes (torchcodec does not say which demuxer
    FFmpeg picked)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX")

"""The built-in synthetic motion dataset: eight classes that differ only in how a shape moves.

Every clip shows one textured shape over a textured background. The class decides which of
four parameter tracks (x, y, angle, scale) plays over time and in which direction; the other
three are frozen at a uniformly random frame of their own track. So the parameters of a single
frame have exactly the same distribution in every class, and the two classes of a pair
(left/right, up/down, cw/ccw, grow/shrink) are exact time reversals of each other: only a model
that looks at the order of frames can tell the classes apart.

Coordinates are in units of half the shorter frame side, origin at the frame centre, y pointing
down (so an increasing angle turns clockwise on screen).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = [
    "CLASSES",
    "MotionScene",
    "SyntheticSummary",
    "make_synthetic_dataset",
    "render_clip",
    "render_video",
    "sample_clip",
    "shape_alpha",
    "write_sample_video",
]

CLASSES: tuple[str, ...] = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "rotate_cw",
    "rotate_ccw",
    "grow",
    "shrink",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross")
PATTERNS: tuple[str, ...] = ("stripes", "checker")

# class -> (animated track, direction); the other tracks stay frozen.
_MOTION: dict[str, tuple[str, int]] = {
    "move_left": ("x", -1),
    "move_right": ("x", 1),
    "move_up": ("y", -1),
    "move_down": ("y", 1),
    "rotate_cw": ("angle", 1),
    "rotate_ccw": ("angle", -1),
    "grow": ("scale", 1),
    "shrink": ("scale", -1),
}

# Codecs in order of preference; only the first is expected, the others keep the generator
# usable on an FFmpeg build without libx264 (the one used is recorded in dataset.json).
_CODECS: tuple[str, ...] = ("libx264", "h264", "mpeg4")
_CRF = 18
_GENERATOR = "vidzoo.data.synthetic"
_FORMAT_VERSION = 1
_OWN_ENTRIES = ("videos", "labels.csv", "classes.txt", "dataset.json") + tuple(
    f"{split}.csv" for split in SPLITS
)


@dataclass(frozen=True, eq=False)
class MotionScene:
    """Everything needed to render one synthetic clip (not the clip description, `vidzoo.data.clip.ClipSpec`);
    tracks are per frame, shape (T,)."""

    class_name: str
    shape: str
    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray  # radians, increasing = clockwise on screen
    scale: np.ndarray  # shape radius, same units as x and y
    colour_a: np.ndarray  # (3,) in [0, 1]; the texture blends colour_a and colour_b
    colour_b: np.ndarray
    pattern: str
    pattern_freq: float
    pattern_angle: float
    background: np.ndarray  # (3,) base colour
    ramp: np.ndarray  # (2,) direction * strength of the background gradient
    ramp_colour: np.ndarray  # (3,)
    wave_freq: np.ndarray  # (K, 2) low-frequency background waves, cycles per unit
    wave_phase: np.ndarray  # (K,)
    wave_amp: np.ndarray  # (K, 3)
    noise_sigma: float
    noise_seed: int

    @property
    def frames(self) -> int:
        return len(self.x)


def _check_class(class_name: str) -> None:
    if class_name not in _MOTION:
        raise ValueError(f"unknown class {class_name!r}; expected one of {list(CLASSES)}")


def _sample_colours(rng: np.random.Generator, background: np.ndarray) -> tuple[np.ndarray, ...]:
    # Rejection keeps the shape visible against the background and its texture visible on
    # the shape; the number of draws depends only on the rng, never on the class.
    for _ in range(100):
        a, b = rng.uniform(0.0, 1.0, size=(2, 3))
        if np.linalg.norm((a + b) / 2 - background) > 0.45 and np.linalg.norm(a - b) > 0.5:
            return a, b
    return 1.0 - background, np.clip(1.0 - background + 0.3, 0.0, 1.0)


def sample_clip(class_name: str, rng: np.random.Generator, frames: int) -> MotionScene:
    """Draw the appearance and per-frame motion of one clip of `class_name`.

    The same draws are made in the same order for every class, so one rng state gives the
    same scene for every class; e.g. a move_left clip reversed in time is the move_right clip.
    """
    _check_class(class_name)
    if frames < 2:
        raise ValueError(f"frames must be >= 2 to show motion, got {frames}")
    shape = SHAPES[rng.integers(len(SHAPES))]
    pattern = PATTERNS[rng.integers(len(PATTERNS))]
    pattern_freq = float(rng.uniform(0.6, 1.2))  # cycles per shape radius
    pattern_angle = float(rng.uniform(0.0, np.pi))
    background = rng.uniform(0.1, 0.9, size=3)
    colour_a, colour_b = _sample_colours(rng, background)
    ramp_dir = rng.uniform(0.0, 2 * np.pi)
    ramp = np.array([np.cos(ramp_dir), np.sin(ramp_dir)]) * rng.uniform(0.0, 0.12)
    ramp_colour = rng.uniform(-1.0, 1.0, size=3)
    wave_dir = rng.uniform(0.0, 2 * np.pi, size=3)
    wave_freq = np.stack([np.cos(wave_dir), np.sin(wave_dir)], axis=1)
    wave_freq *= rng.uniform(0.2, 0.8, size=(3, 1))
    wave_phase = rng.uniform(0.0, 2 * np.pi, size=3)
    wave_amp = rng.uniform(-0.06, 0.06, size=(3, 3))

    # Every track is centre + span * u with u running from -1/2 to +1/2 over the clip.
    centre_x, centre_y = rng.uniform(-0.15, 0.15, size=2)
    span_x, span_y = rng.uniform(0.8, 1.2, size=2)
    angle0 = rng.uniform(0.0, 2 * np.pi)
    # Squares, crosses and checker textures look the same every 90 degrees: keep each step
    # (also at a frame stride of 2) well under 45 degrees, or clockwise aliases to anticlockwise.
    spin = rng.uniform(np.deg2rad(140), np.deg2rad(180))
    # Sizes stay large enough (radius >= ~0.3 half-sides) for rotation to be visible once the
    # frames are downscaled to a 32-pixel crop, also when the scale is frozen at its smallest.
    log_radius = np.log(rng.uniform(0.45, 0.55))
    log_zoom = rng.uniform(np.log(1.6), np.log(2.2))
    frozen = rng.integers(frames, size=4)  # the frame each non-animated track is frozen at
    noise_sigma = float(rng.uniform(0.01, 0.03))
    noise_seed = int(rng.integers(2**63))

    u = np.linspace(-0.5, 0.5, frames)
    animated, direction = _MOTION[class_name]
    tracks = {}
    for i, (name, centre, span) in enumerate(
        [
            ("x", centre_x, span_x),
            ("y", centre_y, span_y),
            ("angle", angle0, spin),
            ("scale", log_radius, log_zoom),
        ]
    ):
        if name == animated:
            tracks[name] = centre + direction * span * u
        else:
            tracks[name] = np.full(frames, centre + span * u[frozen[i]])
    return MotionScene(
        class_name=class_name,
        shape=shape,
        x=tracks["x"],
        y=tracks["y"],
        angle=tracks["angle"],
        scale=np.exp(tracks["scale"]),
        colour_a=colour_a,
        colour_b=colour_b,
        pattern=pattern,
        pattern_freq=pattern_freq,
        pattern_angle=pattern_angle,
        background=background,
        ramp=ramp,
        ramp_colour=ramp_colour,
        wave_freq=wave_freq,
        wave_phase=wave_phase,
        wave_amp=wave_amp,
        noise_sigma=noise_sigma,
        noise_seed=noise_seed,
    )


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(pair) != 2 or any(
        isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 16 or side % 2
        for side in pair
    ):
        raise ValueError(
            f"size must be an even int >= 16 or a (height, width) pair of them, got {size!r}"
        )
    return int(pair[0]), int(pair[1])


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    unit = min(height, width) / 2
    gx = ((np.arange(width) + 0.5 - width / 2) / unit).astype(np.float32)
    gy = ((np.arange(height) + 0.5 - height / 2) / unit).astype(np.float32)
    return gx[None, :], gy[:, None]


def _box_sdf(px: np.ndarray, py: np.ndarray, bx: float, by: float) -> np.ndarray:
    qx, qy = np.abs(px) - bx, np.abs(py) - by
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _triangle_sdf(px: np.ndarray, py: np.ndarray, r: float) -> np.ndarray:
    # Equilateral triangle pointing up (negative y), after Inigo Quilez's exact 2D SDF.
    k = np.sqrt(3.0)
    px = np.abs(px) - r
    py = -py + r / k
    flip = px + k * py > 0
    px, py = np.where(flip, (px - k * py) / 2, px), np.where(flip, (-k * px - py) / 2, py)
    px = px - np.clip(px, -2 * r, 0)
    return -np.hypot(px, py) * np.sign(py)


def _local_coords(spec: MotionScene, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in the shape's frame (radius 1), shape (T, H, W) each."""
    gx, gy = _grid(height, width)
    dx = gx[None] - spec.x[:, None, None].astype(np.float32)
    dy = gy[None] - spec.y[:, None, None].astype(np.float32)
    cos = np.cos(spec.angle).astype(np.float32)[:, None, None]
    sin = np.sin(spec.angle).astype(np.float32)[:, None, None]
    inv_r = (1.0 / spec.scale).astype(np.float32)[:, None, None]
    return (cos * dx + sin * dy) * inv_r, (-sin * dx + cos * dy) * inv_r


def _alpha_from_local(
    spec: MotionScene, lx: np.ndarray, ly: np.ndarray, height: int, width: int
) -> np.ndarray:
    if spec.shape == "square":
        sdf = _box_sdf(lx, ly, 0.8, 0.8)
    elif spec.shape == "circle":
        sdf = np.hypot(lx, ly) - 1.0
    elif spec.shape == "triangle":
        sdf = _triangle_sdf(lx, ly, 0.95)
    else:
        sdf = np.minimum(_box_sdf(lx, ly, 1.0, 0.35), _box_sdf(lx, ly, 0.35, 1.0))
    # Distance in pixels gives a one-pixel antialiased edge, so sub-pixel motion is visible.
    pixels_per_local = spec.scale.astype(np.float32)[:, None, None] * (min(height, width) / 2)
    return np.clip(0.5 - sdf * pixels_per_local, 0.0, 1.0)


def shape_alpha(spec: MotionScene, size: int | tuple[int, int]) -> np.ndarray:
    """The shape's coverage in [0, 1] per pixel, shape (T, H, W) float32."""
    height, width = _size_hw(size)
    lx, ly = _local_coords(spec, height, width)
    return _alpha_from_local(spec, lx, ly, height, width)


def render_clip(spec: MotionScene, size: int | tuple[int, int]) -> np.ndarray:
    """Render `spec` to frames, shape (T, H, W, 3) uint8 RGB."""
    height, width = _size_hw(size)
    gx, gy = _grid(height, width)
    fx, fy = spec.wave_freq[:, 0], spec.wave_freq[:, 1]
    phase = 2 * np.pi * (gx[..., None] * fx + gy[..., None] * fy)
    waves = np.cos(phase + spec.wave_phase) @ spec.wave_amp  # (H, W, 3)
    ramp = (gx * spec.ramp[0] + gy * spec.ramp[1])[..., None] * spec.ramp_colour
    background = (spec.background + ramp + waves).astype(np.float32)

    lx, ly = _local_coords(spec, height, width)
    alpha = _alpha_from_local(spec, lx, ly, height, width)[..., None]
    ca, sa = np.cos(spec.pattern_angle), np.sin(spec.pattern_angle)
    w = np.float32(2 * np.pi * spec.pattern_freq)
    if spec.pattern == "stripes":
        pattern = np.sin(w * (ca * lx + sa * ly))
    else:
        pattern = np.sin(w * (ca * lx + sa * ly)) * np.sin(w * (-sa * lx + ca * ly))
    # The shading ramp along the local x axis breaks every rotational symmetry of shape and
    # pattern, so rotation is visible even on a circle and at low resolution (it dominates the
    # fine pattern, which a 32-pixel crop blurs away).
    mix = np.clip(0.5 + 0.15 * pattern + 0.35 * lx, 0.0, 1.0)[..., None]
    colour = spec.colour_a * (1 - mix) + spec.colour_b * mix
    # A high-contrast dot near the rim turns rotation into a crisp local motion along an arc,
    # which a small 3D CNN picks up as easily as a translation.
    dot = np.clip(0.5 - (np.hypot(lx - 0.55, ly) - 0.25) * 4.0, 0.0, 1.0)[..., None]
    dot_colour = np.where(colour.mean(-1, keepdims=True) > 0.5, 0.0, 1.0).astype(np.float32)
    colour = colour * (1 - dot) + dot_colour * dot

    frames = background * (1 - alpha) + colour * alpha
    noise_rng = np.random.default_rng(spec.noise_seed)
    frames += np.float32(spec.noise_sigma) * noise_rng.standard_normal(
        frames.shape, dtype=np.float32
    )
    return (np.clip(frames, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def render_video(
    class_name: str, rng: np.random.Generator, frames: int, size: int | tuple[int, int]
) -> np.ndarray:
    """Sample and render one clip of `class_name`: (T, H, W, 3) uint8 RGB."""
    return render_clip(sample_clip(class_name, rng, frames), size)


def write_sample_video(
    path: str | os.PathLike, class_name: str = "rotate_cw", *, frames: int = 32, size: int | tuple[int, int] = 64,
    fps: int = 8, seed: int = 0,
) -> Path:
    """Encode one synthetic clip of `class_name` to `path` (MP4): a real video file for checks
    that must decode something (export verification, engine calibration) on any machine."""
    path = Path(path)
    _write_mp4(path, render_video(class_name, np.random.default_rng(seed), frames, size), fps, _pick_codec())
    return path


@dataclass
class SyntheticSummary:
    """What `make_synthetic_dataset` wrote."""

    out_dir: Path
    classes: tuple[str, ...]
    counts: dict[str, int]  # videos per split
    per_class: dict[str, int]  # videos per class in each split
    total: int
    codec: str
    seconds: float

    def summary_table(self) -> str:
        lines = [
            f"synthetic motion dataset: {self.out_dir}",
            f"{len(self.classes)} classes, {self.total} videos, codec {self.codec}, "
            f"{self.seconds:.1f} s",
            f"{'split':<6} {'videos':>7} {'per class':>10}",
        ]
        for split, n in self.counts.items():
            lines.append(f"{split:<6} {n:>7} {self.per_class[split]:>10}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary_table()


def _split_counts(splits: Sequence[float | int], n: int) -> dict[str, int]:
    """Videos per class in each split, from fractions or from counts."""
    if len(splits) != len(SPLITS) or any(
        isinstance(s, bool) or not isinstance(s, (int, float)) or s < 0 for s in splits
    ):
        raise ValueError(
            f"splits must be {len(SPLITS)} non-negative numbers for {SPLITS}, got {splits!r}"
        )
    if all(isinstance(s, int) for s in splits):
        if sum(splits) != n:
            raise ValueError(
                f"split counts {tuple(splits)} sum to {sum(splits)}, "
                f"but videos_per_class is {n}"
            )
        return dict(zip(SPLITS, splits))
    if abs(sum(splits) - 1.0) > 1e-6:
        raise ValueError(f"split fractions {tuple(splits)} must sum to 1, got {sum(splits)}")
    used = sum(s > 0 for s in splits)
    if n < used:
        raise ValueError(
            f"videos_per_class={n} is too small for splits {tuple(splits)}: every non-empty "
            f"split needs at least one video of each class, so use at least {used}"
        )
    targets = [s * n for s in splits]
    # At least one per non-empty split, then move single videos to where the target is
    # furthest from the count.
    counts = [max(int(t), 1) if s > 0 else 0 for s, t in zip(splits, targets)]
    while sum(counts) > n:
        shrinkable = [i for i in range(len(counts)) if counts[i] > 1]
        i = max(shrinkable, key=lambda i: counts[i] - targets[i])
        counts[i] -= 1
    while sum(counts) < n:
        i = max(range(len(counts)), key=lambda i: targets[i] - counts[i])
        counts[i] += 1
    return dict(zip(SPLITS, counts))


def _pick_codec() -> str:
    for name in _CODECS:
        try:
            av.codec.Codec(name, "w")
        except av.codec.codec.UnknownCodecError:
            continue
        if name != _CODECS[0]:
            warnings.warn(
                f"libx264 is not available in this FFmpeg build; encoding with {name!r}",
                stacklevel=3,
            )
        return name
    raise RuntimeError(f"none of the video encoders {list(_CODECS)} is available to PyAV")


def _write_mp4(path: Path, frames: np.ndarray, fps: int, codec: str) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        # One thread makes x264 output independent of the machine's core count; the clips are
        # too small to gain from threads.
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            # With B-frames this x264 build gave different bytes for identical input on
            # repeated runs (even single-threaded); without them output is reproducible, and
            # decode order equals display order.
            stream.options = {"crf": str(_CRF), "preset": "medium", "bf": "0"}
        else:
            stream.codec_context.bit_rate = 4_000_000
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        out_dir.mkdir(parents=True)
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    entries = {p.name for p in out_dir.iterdir()}
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(
            f"{out_dir} is not empty; pass overwrite=True to replace a synthetic dataset there"
        )
    ours = False
    if (out_dir / "dataset.json").is_file():
        try:
            ours = json.loads((out_dir / "dataset.json").read_text())["generator"] == _GENERATOR
        except (json.JSONDecodeError, KeyError, TypeError):
            ours = False
    # Only delete what the generator itself writes, and only where the directory is (or was
    # partly written as) a synthetic dataset, so overwrite=True cannot wipe unrelated files.
    if not ours and not entries <= set(_OWN_ENTRIES):
        raise FileExistsError(
            f"{out_dir} is not empty and does not look like a synthetic dataset "
            f"(no dataset.json from {_GENERATOR}); refusing to overwrite it"
        )
    for name in _OWN_ENTRIES:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("path", "label"))
        writer.writerows(rows)


def make_synthetic_dataset(
    out_dir: str | Path,
    *,
    videos_per_class: int = 40,
    frames: int = 16,
    size: int | tuple[int, int] = 48,
    fps: int = 8,
    seed: int = 0,
    splits: Sequence[float | int] = (0.6, 0.2, 0.2),
    overwrite: bool = False,
) -> SyntheticSummary:
    """Write the synthetic motion dataset to `out_dir` and return what was written.

    Layout: `videos/<class>/<class>_<NNNN>.mp4`, `labels.csv` (all videos), `train.csv`,
    `val.csv`, `test.csv` (stratified; `path,label` with paths relative to `out_dir`),
    `classes.txt` (index order) and `dataset.json` (parameters, codec, counts).
    `splits` are train/val/test fractions of each class, or per-class counts.
    Video `i` of class `c` depends only on (seed, c, i), so a larger dataset extends a
    smaller one with the same seed.
    """
    start = time.perf_counter()
    for name, value, minimum in [
        ("videos_per_class", videos_per_class, 1),
        ("frames", frames, 2),
        ("fps", fps, 1),
        ("seed", seed, 0),
    ]:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    height, width = _size_hw(size)
    per_split = _split_counts(splits, videos_per_class)
    codec = _pick_codec()
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)

    all_rows: list[tuple[str, str]] = []
    rows: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}
    # Videos are i.i.d., so consecutive index blocks are already a random split.
    split_of = [split for split in SPLITS for _ in range(per_split[split])]
    for class_index, class_name in enumerate(CLASSES):
        (out_dir / "videos" / class_name).mkdir(parents=True)
        for video_index in range(videos_per_class):
            rng = np.random.default_rng([seed, class_index, video_index])
            clip = render_video(class_name, rng, frames, (height, width))
            rel = f"videos/{class_name}/{class_name}_{video_index:04d}.mp4"
            _write_mp4(out_dir / rel, clip, fps, codec)
            all_rows.append((rel, class_name))
            rows[split_of[video_index]].append((rel, class_name))

    _write_csv(out_dir / "labels.csv", all_rows)
    for split in SPLITS:
        _write_csv(out_dir / f"{split}.csv", rows[split])
    (out_dir / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    counts = {split: len(rows[split]) for split in SPLITS}
    total = sum(counts.values())
    metadata = {
        "generator": _GENERATOR,
        "format_version": _FORMAT_VERSION,
        "seed": seed,
        "classes": list(CLASSES),
        "videos_per_class": videos_per_class,
        "frames": frames,
        "height": height,
        "width": width,
        "fps": fps,
        "codec": codec,
        "crf": _CRF if codec == "libx264" else None,
        "pix_fmt": "yuv420p",
        "splits": {"requested": list(splits), "per_class": per_split, "videos": counts},
        "total": total,
    }
    (out_dir / "dataset.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return SyntheticSummary(
        out_dir=out_dir,
        classes=CLASSES,
        counts=counts,
        per_class=per_split,
        total=total,
        codec=codec,
        seconds=time.perf_counter() - start,
    )

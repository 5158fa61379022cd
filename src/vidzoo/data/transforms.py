"""Transforms: pixels to tensors.

A clip enters as uint8 ``(T, H, W, 3)`` (what `VideoReader.get_frames` gives, as a torch tensor)
and leaves the full pipeline as float32 ``(3, T, H, W)``. Spatial transforms work on the channels-
last layout, on any leading dims ``(..., T, H, W, C)``, and choose their random parameters once per
clip, so every frame gets the same crop and flip. `Normalize` comes last: it converts to float and
moves channels first, the one layout change in the pipeline.

Every transform is called as ``transform(video, generator=None)``. Randomness comes only from that
``torch.Generator`` (``None`` means torch's global generator), so a seeded generator gives the same
output every time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from vidzoo.data.clip import norm_mean_std

__all__ = [
    "Transform",
    "Compose",
    "ResizeShortSide",
    "RandomCrop",
    "CenterCrop",
    "ThreeCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Normalize",
    "KINETICS400_NORM",
    "train_transform",
    "eval_transform",
]

# The Kinetics-400 statistics that torchvision's video weights (R3D, R(2+1)D, S3D) were trained
# with, in [0, 1] pixel units.
KINETICS400_NORM: dict[str, list[float]] = {
    "mean": [0.43216, 0.394666, 0.37645],
    "std": [0.22803, 0.22145, 0.216989],
}


# --------------------------------------------------------------------------- helpers


def _pair(name: str, size: int | Sequence[int]) -> tuple[int, int]:
    """``size`` as (height, width); an int means a square."""
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in pair):
        raise ValueError(f"{name} must be an int or (height, width) ints, got {size!r}")
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return pair


def _check_video(video: torch.Tensor) -> tuple[int, int]:
    """Height and width of a channels-last clip ``(..., T, H, W, C)``."""
    if not isinstance(video, torch.Tensor) or video.ndim < 4:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"expected a (T, H, W, C) video tensor, got {shape}")
    return video.shape[-3], video.shape[-2]


def _check_fits(crop: tuple[int, int], height: int, width: int) -> None:
    if crop[0] > height or crop[1] > width:
        raise ValueError(
            f"crop size {crop[0]}x{crop[1]} (HxW) is larger than the input {height}x{width}; "
            "resize first (ResizeShortSide) or crop smaller"
        )


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[low, high]``."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator))


def _crop(video: torch.Tensor, top: int, left: int, size: tuple[int, int]) -> torch.Tensor:
    return video[..., top : top + size[0], left : left + size[1], :]


def _resize(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(video.shape[-3:-1]) == size:
        return video
    # A (T, H, W, C) tensor seen as (T, C, H, W) is channels-last memory: the layout torch's
    # uint8 antialiased resize is fastest on, and no copy is needed.
    frames = video.movedim(-1, -3)
    out = F.resize(frames, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
    return out.movedim(-3, -1)


# --------------------------------------------------------------------------- transforms


class Transform:
    """Base class: ``transform(video, generator=None) -> video``, with a readable repr."""

    def __call__(
        self, video: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply ``transforms`` in order, passing the same generator to each."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(
        self, video: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        for transform in self.transforms:
            video = transform(video, generator)
        return video

    def __repr__(self) -> str:
        body = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{body}\n])"


class ResizeShortSide(Transform):
    """Resize so the shorter side is ``size``, keeping the aspect ratio (long side rounded)."""

    def __init__(self, size: int):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"size must be a positive int (the short side), got {size!r}")
        self.size = size

    def __call__(
        self, video: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        height, width = _check_video(video)
        short, long = min(height, width), max(height, width)
        new_long = max(1, math.floor(long * self.size / short + 0.5))
        size = (self.size, new_long) if height <= width else (new_long, self.size)
        return _resize(video, size)


class RandomCrop(Transform):
    """A ``size`` crop at a uniformly random position, the same for all frames."""

    def __init__(self, size: int | Sequence[int]):
        self.size = _pair("size", size)

    def __call__(
        self, video: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        height, width = _check_video(video)
        _check_fits(self.size, height, width)
        top = _randint(0, height - self.size[0], generator)
        left = _randint(0, width - self.size[1], generator)
        return _crop(video, top, left, self.size)


class CenterCrop(Transform):
    """The central ``size`` crop; with an odd margin the extra pixel is left at the bottom/right."""

    def __init__(self, size: int | Sequence[int]):
        self.size = _pair("size", size)

    def __call__(
        self, video: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        height, width = _check_video(video)
        _check_fits(self.size, height, width)
        top, left = (height - self.size[0]) // 2, (width - self.size[1]) // 2
        return _crop(video, top, left, self.size)


class ThreeCrop(Transform):
    """Three ``size`` crops along the long side, stacked: ``(3, ..., T, h, w, C)``.

    Landscape (W >= H): left, centre, right, vertically centred. Portrait: top, centre, bottom,
    horizontally centred. The new leading dim survives `Normalize`, giving ``(3, C, T, h, w)``
    (SlowFast's 3-crop test). With a square input the three crops coincide.
    """

    def __init__(self, size: int | Sequence[int]):
        self.size = _pair("size", size)

    def __call__(
        self, video: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        height, width = _check_video(video)
        _check_fits(self.size, height, width)
        top_margin, left_margin = height - self.size[0], width - self.size[1]
        if width >= height:
            boxes = [(top_margin // 2, left) for left in (0, left_margin // 2, left_margin)]
        else:
            boxes = [(top, left_margin // 2) for top in (0, top_margin // 2, top_margin)]
        return torch.stack([_crop(video, top, left, self.size) for top, left in boxes])


class RandomHorizontalFlip(Transform):
    """Mirror the whole clip left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p}")
        self.p = p

    def __call__(
        self, video: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        _check_video(video)
        # Draw even when p is 0 or 1, so changing p does not shift later random draws.
        flip = float(torch.rand(1, generator=generator)) < self.p
        return video.flip(-2) if flip else video


class RandomResizedCrop(Transform):
    """One random box per clip (area fraction ``scale``, aspect ``ratio``), resized to ``size``.

    The box is chosen as torchvision's ``RandomResizedCrop`` does (10 tries, then the central
    crop with the aspect ratio clamped into ``ratio``), but from the given generator.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ):
        self.size = _pair("size", size)
        for name, (low, high) in (("scale", scale), ("ratio", ratio)):
            if not 0 < low <= high:
                raise ValueError(
                    f"{name} must be (low, high) with 0 < low <= high, got {(low, high)}"
                )
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)

    def _box(
        self, height: int, width: int, generator: torch.Generator | None
    ) -> tuple[int, int, int, int]:
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * _uniform(*self.scale, generator)
            aspect = math.exp(_uniform(*log_ratio, generator))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                return _randint(0, height - h, generator), _randint(0, width - w, generator), h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(
        self, video: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        top, left, h, w = self._box(*_check_video(video), generator)
        return _resize(_crop(video, top, left, (h, w)), self.size)


class Normalize(Transform):
    """uint8 ``(..., T, H, W, C)`` to float32 ``(..., C, T, H, W)``: ``(x / 255 - mean) / std``.

    ``mean`` and ``std`` are per channel in [0, 1] pixel units (ImageNet: 0.485, ...); divide
    statistics given in 0-255 units by 255. `from_spec` also takes a target range instead.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        if len(mean) != len(std) or len(mean) == 0:
            raise ValueError(
                f"mean and std need one value per channel, got mean={list(mean)}, std={list(std)}"
            )
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    @classmethod
    def from_spec(cls, spec: Mapping[str, Sequence[float]], channels: int = 3) -> Normalize:
        """From ``{"mean": [...], "std": [...]}`` or ``{"scale": [low, high]}``.

        A scale maps pixel 0 to ``low`` and 255 to ``high``: ``[0, 1]`` or ``[-1, 1]`` (Inception
        style, as I3D uses), on `channels` channels.
        """
        return cls(*norm_mean_std(spec, channels))

    def __call__(
        self, video: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        _check_video(video)
        if video.dtype != torch.uint8:
            raise ValueError(f"Normalize expects uint8 pixels, got {video.dtype}")
        channels = len(self.mean)
        if video.shape[-1] != channels:
            raise ValueError(
                f"video has {video.shape[-1]} channels (last dim), mean/std have {channels}"
            )
        out = video.movedim(-1, -4).to(torch.float32, memory_format=torch.contiguous_format)
        mean = torch.tensor(self.mean).view(channels, 1, 1, 1)
        std = torch.tensor(self.std).view(channels, 1, 1, 1)
        return out.div_(255.0).sub_(mean).div_(std)


# --------------------------------------------------------------------------- builders


def _normalize(norm: Normalize | Mapping[str, Sequence[float]]) -> Normalize:
    return norm if isinstance(norm, Normalize) else Normalize.from_spec(norm)


def _default_resize_short(size: int | Sequence[int]) -> int:
    # C3D's ratio: frames resized to 128 on the short side for 112 crops (256 for 224). The
    # larger crop side decides, so a non-square crop fits in either orientation of the video.
    return math.floor(max(_pair("size", size)) * 128 / 112 + 0.5)


def train_transform(
    size: int | Sequence[int],
    resize_short: int | None = None,
    norm: Normalize | Mapping[str, Sequence[float]] = KINETICS400_NORM,
    flip: bool = True,
    random_resized_crop: bool = False,
) -> Compose:
    """Training pipeline: uint8 ``(T, H, W, 3)`` to float32 ``(3, T, height, width)``.

    ``size`` is an int (square) or (height, width). Resize the short side to ``resize_short``
    (default ``round(max(size) * 128 / 112)``), random
    ``size`` crop, random flip, normalize. With ``random_resized_crop`` a `RandomResizedCrop`
    on the original frames replaces resize + crop, so ``resize_short`` must stay unset.
    """
    if random_resized_crop:
        if resize_short is not None:
            raise ValueError(
                f"resize_short={resize_short} has no effect with random_resized_crop=True, "
                "which crops the original frames; leave resize_short unset"
            )
        steps: list[Transform] = [RandomResizedCrop(size)]
    else:
        short = _default_resize_short(size) if resize_short is None else resize_short
        steps = [ResizeShortSide(short), RandomCrop(size)]
    if flip:
        steps.append(RandomHorizontalFlip())
    steps.append(_normalize(norm))
    return Compose(steps)


def eval_transform(
    size: int | Sequence[int],
    resize_short: int | None = None,
    norm: Normalize | Mapping[str, Sequence[float]] = KINETICS400_NORM,
    crops: int = 1,
) -> Compose:
    """Evaluation pipeline: deterministic, no generator needed.

    Resize the short side to ``resize_short`` (default ``round(max(size) * 128 / 112)``), take
    the centre ``size`` crop (``crops=1``, output ``(3, T, height, width)``) or three crops along
    the long side (``crops=3``, output ``(3 crops, 3, T, height, width)``), normalize.
    """
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 or 3, got {crops!r}")
    short = _default_resize_short(size) if resize_short is None else resize_short
    crop = CenterCrop(size) if crops == 1 else ThreeCrop(size)
    return Compose([ResizeShortSide(short), crop, _normalize(norm)])

"""X3D: Feichtenhofer, "X3D: Expanding Architectures for Efficient Video Recognition", CVPR 2020.

A small 2D network expanded along time, frame rate, resolution, width and depth: residual
bottlenecks whose 3x3x3 convolution is channel-wise, with squeeze-excitation on every other block
and Swish inside. The layers are those of PyTorchVideo's ``create_x3d`` (so its Kinetics-400
checkpoints load, see ``convert_pytorchvideo_x3d_state_dict``). Sizes for X3D-M, 16x224x224::

    clip 3x16x224x224, [0, 1] pixels normalised by mean 0.45 / std 0.225
     -> conv1: 1x3x3 conv 24, stride 1,2,2 -> 5x1x1 channel-wise conv -> BN -> ReLU   16x112x112
     -> res2: 3 blocks, 24 channels (the first block of a stage strides 2 in space)  16x56x56
     -> res3: 5 blocks, 48                                                           16x28x28
     -> res4: 11 blocks, 96                                                          16x14x14
     -> res5: 7 blocks, 192                                                          16x7x7
     -> conv5: 1x1x1 conv 432 -> BN -> ReLU                                 = forward_features
     -> global average pool -> lin5 432 -> 2048 (no bias) -> ReLU -> dropout   = pre_logits
     -> fc                                                                  = forward_head

    a block:  x -> 1x1x1 -> BN -> ReLU -> 3x3x3 channel-wise -> BN [-> SE] -> Swish -> 1x1x1 -> BN -> + -> ReLU
              x -> shortcut (first block of a stage: strided 1x1x1 conv, BN where the width changes) -/

XS, S and M are one network (3, 5, 11, 7 blocks; 3,794,274 parameters) fed different clips; L has
5, 10, 25, 15 blocks (6,153,384). Time is never strided.

Pooling: PyTorchVideo's head average-pools with a fixed kernel sized to the training clip
(``frames`` x ``ceil(size / 32)``, stride 1), applies lin5 and fc at every position and averages.
At the training clip size the map is the kernel and the global pool here is the same function;
``fixed_head_pool=True`` reproduces the sliding window at other sizes. The published accuracy was
measured on larger crops than the training ones (3 crops of 182 px for XS, whose kernel is sized
for 160): there the two poolings differ.

Weights (``kinetics400``): PyTorchVideo's model zoo files, which its torch hub entries load. No
checksum is published for them (the zoo, the hub code and the hub page give none, and the file
names carry no hash prefix), so none is checked; ``model.load_report.file_sha256`` records the
hash of the file that was read. The torch hub models end in a softmax (``create_x3d``'s default
``head_activation``): they return probabilities, ``model(x)`` here returns logits.

FLOPs: ``vidzoo models`` counts a multiply-add as 2 FLOPs at the default (training) clip:
X3D-XS is 1.21 GFLOPs at 4x160x160, the paper's "0.60 GFLOPs", which counts multiply-adds.
PyTorchVideo's table (0.91 / 2.96 / 6.72 for XS / S / M) is fvcore's count at the 3-crop test
size (182 px for XS): the multiply-adds of the network with its sliding-window head, plus 5
operations per BatchNorm output element (fvcore's figure for BatchNorm in training mode).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vidzoo.data.clip import ClipSpec
from vidzoo.models._base import (
    FeatureInfo,
    ModelCfg,
    VideoClassifier,
    check_clip_model_args,
    check_num_classes,
    describe_keys,
    frame_size,
    scaled_channels,
)
from vidzoo.models._registry import register_model
from vidzoo.weights import Weights

PAPER_TITLE = "X3D: Expanding Architectures for Efficient Video Recognition"
PAPER_URL = "https://arxiv.org/abs/2004.04730"

# What every PyTorchVideo X3D checkpoint was trained with, on [0, 1] RGB pixels.
KINETICS_NORM = {"mean": [0.45, 0.45, 0.45], "std": [0.225, 0.225, 0.225]}

# The published architecture (SlowFast's X3D configs: DIM_C1, WIDTH_FACTOR, BOTTLENECK_FACTOR,
# DIM_C5; PyTorchVideo's create_x3d defaults). Widths double per stage from the stem's 12 and are
# then expanded by the width factor, each step rounded as PyTorchVideo rounds.
_STEM_WIDTH = 12
_WIDTH_FACTOR = 2.0
_BOTTLENECK_FACTOR = 2.25  # a block's inner width over its output width; conv5's width too
_BASE_DEPTHS = (1, 2, 5, 3)  # blocks per stage before the depth factor
_HEAD_WIDTH = 2048  # lin5
_SE_RATIO = 0.0625
_STEM_TEMPORAL_KERNEL = 5
_STAGES = ("res2", "res3", "res4", "res5")


def round_width(width: float, multiplier: float, divisor: int = 8, min_width: int = 8) -> int:
    """``width * multiplier`` rounded to a multiple of `divisor`, one `divisor` more where plain
    rounding would lose over 10%: PyTorchVideo's rule, which the published widths follow."""
    scaled = width * multiplier
    out = max(min_width, int(scaled + divisor / 2) // divisor * divisor)
    if out < 0.9 * scaled:
        out += divisor
    return int(out)


# --- building blocks -----------------------------------------------------------------------------


class SqueezeExcite3d(nn.Module):
    """Channel gates from the clip-wide mean (Hu et al.), the two FCs as 1x1x1 convs."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv3d(channels, hidden, kernel_size=1)
        self.fc2 = nn.Conv3d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3, 4), keepdim=True))))
        return x * torch.sigmoid(gate)


class X3DStem(nn.Module):
    """conv1: a 1x3x3 conv (stride 2 in space), a channel-wise 5x1x1 conv in time, BN, ReLU.

    Space first, as the published models run it (the order changes the function).
    """

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        k = _STEM_TEMPORAL_KERNEL
        self.conv_xy = nn.Conv3d(in_chans, out_chans, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
        self.conv_t = nn.Conv3d(out_chans, out_chans, (k, 1, 1), padding=(k // 2, 0, 0), groups=out_chans, bias=False)
        self.bn = nn.BatchNorm3d(out_chans)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv_t(self.conv_xy(x))))


class X3DBlock(nn.Module):
    """The residual bottleneck (see the module docstring); ``se_hidden=0``: no squeeze-excitation.

    The shortcut convolves when the shape changes and has a BN only where the width changes, as
    PyTorchVideo builds it (res2's first block keeps 24 channels: a conv alone).
    """

    def __init__(self, in_chans: int, mid_chans: int, out_chans: int, spatial_stride: int = 1,
                 se_hidden: int = 0) -> None:
        super().__init__()
        stride = (1, spatial_stride, spatial_stride)
        self.conv1 = nn.Conv3d(in_chans, mid_chans, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid_chans)
        self.conv2 = nn.Conv3d(mid_chans, mid_chans, kernel_size=3, stride=stride, padding=1, groups=mid_chans,
                               bias=False)
        self.bn2 = nn.BatchNorm3d(mid_chans)
        self.se = SqueezeExcite3d(mid_chans, se_hidden) if se_hidden else None
        self.conv3 = nn.Conv3d(mid_chans, out_chans, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_chans)
        reshapes = in_chans != out_chans or spatial_stride != 1
        self.shortcut_conv = nn.Conv3d(in_chans, out_chans, 1, stride=stride, bias=False) if reshapes else None
        self.shortcut_bn = nn.BatchNorm3d(out_chans) if in_chans != out_chans else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_conv(x)
        if self.shortcut_bn is not None:
            shortcut = self.shortcut_bn(shortcut)
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.se is not None:
            y = self.se(y)
        y = self.bn3(self.conv3(F.silu(y)))  # silu is Swish
        return F.relu(y + shortcut)


# --- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Variant:
    """A published X3D size: its clips (SlowFast's configs/Kinetics/pytorchvideo/X3D_*.yaml, by
    which PyTorchVideo's zoo was trained and tested), depth and published accuracy."""

    frames: int
    frame_stride: int  # sampling rate at 30 fps (SlowFast's TARGET_FPS)
    size: int  # the training crop (TRAIN_CROP_SIZE): the default clip, and the fixed pool's kernel
    test_size: int  # short side and crop size of the published 3-crop test (TEST_CROP_SIZE)
    depth_factor: float
    top1: float
    top5: float | None
    file: str  # in PyTorchVideo's model zoo


# Accuracy: PyTorchVideo's model zoo table (docs/source/model_zoo.md) for XS, S and M. X3D-L is
# not in that table; its file and top-1 are in the torch hub entry (pytorchvideo/models/hub/x3d.py).
_VARIANTS: dict[str, _Variant] = {
    "x3d_xs": _Variant(4, 12, 160, 182, 2.2, 69.12, 88.63, "X3D_XS.pyth"),
    "x3d_s": _Variant(13, 6, 160, 182, 2.2, 73.33, 91.27, "X3D_S.pyth"),
    "x3d_m": _Variant(16, 5, 224, 256, 2.2, 75.94, 92.72, "X3D_M.pyth"),
    "x3d_l": _Variant(16, 5, 312, 356, 5.0, 77.44, None, "X3D_L.pyth"),
}


class X3D(VideoClassifier):
    """X3D-XS, -S, -M or -L; see the module docstring.

    ``forward_features`` is the conv5 map ``(B, 432, T, ceil(H/32), ceil(W/32))``; the head pools
    it, applies lin5 and ReLU (the pre-logits vector, ``num_features`` = 2048), dropout and
    ``fc``. Any clip size works.

    Args:
        variant: ``x3d_xs``, ``x3d_s``, ``x3d_m`` or ``x3d_l`` (the registered names pass it).
        num_classes: outputs of ``fc`` (400 = Kinetics-400).
        in_chans: channels per frame.
        frames, size: the default clip (``size`` an int or (height, width)); None keeps the
            variant's training clip (4x160x160, 13x160x160, 16x224x224, 16x312x312).
        width: multiplies X3D's width expansion (2.0) and lin5's 2048 channels; 1.0 is the
            published network, 0.25 a light one for tests.
        depth: multiplies the blocks per stage (the variant's depth factor, 2.2 or 5.0); 1.0 is
            the published network.
        dropout: dropout probability before ``fc`` (0.5 in the published training).
        fixed_head_pool: pool as PyTorchVideo's checkpoints do: average windows of ``frames`` x
            ``ceil(size / 32)`` at stride 1 (clamped to the map), lin5 on each, then the mean.
            At ``frames`` x ``size`` this is the global pool; on larger clips it is the function
            PyTorchVideo's published accuracy was measured with (which then averaged each
            window's softmax, where this averages its logits).

    The layers (``feature_info``) are ``features.conv1``, ``features.res2`` ... ``features.res5``
    and ``features.conv5``.
    """

    def __init__(
        self,
        variant: str,
        num_classes: int = 400,
        in_chans: int = 3,
        frames: int | None = None,
        size: int | Sequence[int] | None = None,
        width: float = 1.0,
        depth: float = 1.0,
        dropout: float = 0.5,
        fixed_head_pool: bool = False,
    ) -> None:
        super().__init__()
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {sorted(_VARIANTS)}, got {variant!r}")
        spec = _VARIANTS[variant]
        check_num_classes(num_classes)
        frames = spec.frames if frames is None else frames
        height, width_px = (spec.size, spec.size) if size is None else frame_size(size)
        check_clip_model_args(in_chans, frames, width, dropout, paper="the published X3D")
        if not depth > 0:
            raise ValueError(f"depth must be > 0 (1.0 is the published X3D), got {depth!r}")

        width_factor, depth_factor = _WIDTH_FACTOR * width, spec.depth_factor * depth
        stem_chans = round_width(_STEM_WIDTH, width_factor)
        layers: OrderedDict[str, nn.Module] = OrderedDict(conv1=X3DStem(in_chans, stem_chans))
        self.feature_info = [FeatureInfo("features.conv1", stem_chans, (1, 2, 2))]
        chans, stride, base = stem_chans, 2, _STEM_WIDTH
        for i, (name, base_depth) in enumerate(zip(_STAGES, _BASE_DEPTHS)):
            base = base if i == 0 else round_width(base, 2.0)
            out_chans = round_width(base, width_factor)
            mid_chans = int(_BOTTLENECK_FACTOR * out_chans)
            se_hidden = round_width(mid_chans, _SE_RATIO)
            layers[name] = nn.Sequential(*(
                X3DBlock(chans if b == 0 else out_chans, mid_chans, out_chans, spatial_stride=2 if b == 0 else 1,
                         # Squeeze-excitation on the 1st, 3rd, ... block of a stage.
                         se_hidden=se_hidden if b % 2 == 0 else 0)
                for b in range(math.ceil(depth_factor * base_depth))
            ))
            chans, stride = out_chans, stride * 2
            self.feature_info.append(FeatureInfo(f"features.{name}", chans, (1, stride, stride)))
        # conv5 runs on the whole map before any pooling: it belongs to the features.
        layers["conv5"] = nn.Sequential(OrderedDict(
            conv=nn.Conv3d(chans, mid_chans, kernel_size=1, bias=False),
            bn=nn.BatchNorm3d(mid_chans),
            act=nn.ReLU(inplace=True),
        ))
        self.feature_info.append(FeatureInfo("features.conv5", mid_chans, (1, stride, stride)))
        self.features = nn.Sequential(layers)

        head_width = scaled_channels(_HEAD_WIDTH, width)
        # lin5 is a 1x1x1 conv in the original, on a pooled map: a Linear on the pooled vector.
        self.lin5 = nn.Linear(mid_chans, head_width, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(head_width, num_classes)

        self.fixed_head_pool = fixed_head_pool
        self.head_pool_kernel = (frames, math.ceil(height / stride), math.ceil(width_px / stride))
        self.num_classes = num_classes
        self.num_features = head_width
        self.default_cfg = ModelCfg(
            arch=variant,
            clip=ClipSpec(
                frames=frames, frame_stride=spec.frame_stride, size=(height, width_px),
                # Decoded at the short side of the published test (182 for 160-pixel crops); another
                # crop size takes the default ratio, which is about the same.
                resize_short=spec.test_size if (height, width_px) == (spec.size, spec.size) else None,
                crops=3, clips_per_video=10,
                norm=KINETICS_NORM if in_chans == 3 else {"scale": [0.0, 1.0]},
            ),
            in_chans=in_chans,
            paper_title=PAPER_TITLE,
            paper_url=PAPER_URL,
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.kaiming_normal_(self.lin5.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)
        # Every block starts as the identity (SlowFast's X3D configs: ZERO_INIT_FINAL_BN).
        for module in self.modules():
            if isinstance(module, X3DBlock):
                nn.init.zeros_(module.bn3.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, C, T, H, W)`` of any size to the conv5 map ``(B, C', T, h, w)``."""
        self.check_input(x)
        return self.features(x)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The conv5 map to logits; ``pre_logits=True`` stops before ``fc``."""
        if self.fixed_head_pool:
            kernel = tuple(min(k, s) for k, s in zip(self.head_pool_kernel, feats.shape[2:]))
            windows = F.avg_pool3d(feats, kernel, stride=1).flatten(2).transpose(1, 2)  # (B, positions, C)
            # fc is affine: averaging lin5's outputs equals averaging the logits of each position.
            x = F.relu(self.lin5(windows)).mean(dim=1)
        else:
            x = F.relu(self.lin5(feats.mean(dim=(2, 3, 4))))
        x = self.dropout(x)
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def _replace_classifier(self, num_classes: int) -> None:
        old = self.fc.weight
        self.fc = nn.Linear(self.num_features, num_classes, device=old.device, dtype=old.dtype)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)


# --- PyTorchVideo and SlowFast checkpoints -------------------------------------------------------

# PyTorchVideo's module paths -> ours. Its stem names the spatial 1x3x3 conv "conv_t" and the
# temporal 5x1x1 one "conv_xy" (its Conv2plus1d is filled with the two swapped), hence the crossing.
_PTV_MODULES = {
    "blocks.0.conv.conv_t": "features.conv1.conv_xy",
    "blocks.0.conv.conv_xy": "features.conv1.conv_t",
    "blocks.0.norm": "features.conv1.bn",
    "blocks.5.pool.pre_conv": "features.conv5.conv",
    "blocks.5.pool.pre_norm": "features.conv5.bn",
    "blocks.5.pool.post_conv": "lin5",
    "blocks.5.proj": "fc",
}
# Inside a residual block. norm_b is Sequential(BatchNorm3d, SqueezeExcitation or Identity).
_PTV_BLOCK_MODULES = {
    "branch1_conv": "shortcut_conv",
    "branch1_norm": "shortcut_bn",
    "branch2.conv_a": "conv1",
    "branch2.norm_a": "bn1",
    "branch2.conv_b": "conv2",
    "branch2.norm_b.0": "bn2",
    "branch2.norm_b.1.block.0": "se.fc1",
    "branch2.norm_b.1.block.2": "se.fc2",
    "branch2.conv_c": "conv3",
    "branch2.norm_c": "bn3",
}
_PTV_BLOCK_RE = re.compile(r"blocks\.([1-4])\.res_blocks\.(\d+)\.(.+)")
# SlowFast's PTVX3D wrapper holds create_x3d's network as "model".
_SLOWFAST_PREFIX = "model."


def _our_module(theirs: str) -> str | None:
    if theirs in _PTV_MODULES:
        return _PTV_MODULES[theirs]
    match = _PTV_BLOCK_RE.fullmatch(theirs)
    if match is None or match[3] not in _PTV_BLOCK_MODULES:
        return None
    return f"features.{_STAGES[int(match[1]) - 1]}.{match[2]}.{_PTV_BLOCK_MODULES[match[3]]}"


def convert_pytorchvideo_x3d_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a PyTorchVideo ``create_x3d`` state dict (``blocks.0.conv.conv_t.weight``, ...; also
    with SlowFast's ``model.`` prefix) to ``x3d``'s keys; lin5's 1x1x1 conv kernel becomes a matrix.

    Raises ValueError naming every key that has no place here, e.g. ``blocks.5.pool.post_norm.*``
    of ``create_x3d(head_bn_lin5_on=True)``. Missing keys and shapes are checked when the result
    is loaded (``load_pretrained``, which also lets the classifier differ in its class count).
    """
    if state_dict and all(key.startswith(_SLOWFAST_PREFIX) for key in state_dict):
        state_dict = {key.removeprefix(_SLOWFAST_PREFIX): value for key, value in state_dict.items()}
    converted, unknown = {}, []
    for key, tensor in state_dict.items():
        module, _, tensor_name = key.rpartition(".")
        ours = _our_module(module)
        if ours is None:
            unknown.append(key)
            continue
        converted[f"{ours}.{tensor_name}"] = tensor.flatten(1) if ours == "lin5" else tensor
    if unknown:
        raise ValueError(f"keys that vidzoo's X3D (PyTorchVideo's create_x3d with its default head) does not "
                         f"have: {describe_keys(unknown)}")
    return converted


def x3d_checkpoint_filter(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The keys of a file given to ``create_model("x3d_*", pretrained=FILE)``: PyTorchVideo and
    SlowFast files (``.pyth``, keys ``blocks.*`` or ``model.blocks.*``) are converted; anything else
    passes unchanged."""
    if any(key.startswith(("blocks.", f"{_SLOWFAST_PREFIX}blocks.")) for key in state_dict):
        return convert_pytorchvideo_x3d_state_dict(state_dict)
    return dict(state_dict)


# --- weights -------------------------------------------------------------------------------------

_PTV_ZOO = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"
_SLOWFAST_CONFIGS = "https://github.com/facebookresearch/SlowFast/blob/main/configs/Kinetics/pytorchvideo"


def _kinetics400_classes() -> tuple[str, ...]:
    # PyTorchVideo's zoo was trained with PySlowFast's Kinetics-400 label ids, which number the
    # classes alphabetically (its kinetics_classnames.json), as torchvision's list does.
    from torchvision.models.video import R3D_18_Weights

    return tuple(R3D_18_Weights.KINETICS400_V1.meta["categories"])


def _kinetics400_weights(spec: _Variant) -> Weights:
    """PyTorchVideo's published facts for a variant's weights (nothing downloaded)."""
    metrics = {"acc@1": spec.top1} if spec.top5 is None else {"acc@1": spec.top1, "acc@5": spec.top5}
    published = ("the torch hub entry pytorchvideo/models/hub/x3d.py (X3D-L is not in the model zoo table; "
                 "no top-5 is published for it)" if spec.top5 is None else "PyTorchVideo's model zoo table")
    return Weights(
        url=f"{_PTV_ZOO}/{spec.file}",
        sha256=None,  # none is published: see the module docstring
        classes=_kinetics400_classes(),
        dataset="kinetics400",
        metrics={"kinetics400": metrics},
        # The published test: 10 clips x 3 crops of the short side, which is rescaled to test_size.
        clip=ClipSpec(frames=spec.frames, frame_stride=spec.frame_stride, size=spec.test_size,
                      resize_short=spec.test_size, crops=3, clips_per_video=10, norm=KINETICS_NORM),
        licence="Apache-2.0 (PyTorchVideo's licence; its model zoo states no separate terms for the weights)",
        recipe=f"{_SLOWFAST_CONFIGS}/{spec.file.removesuffix('.pyth')}.yaml",
        notes=(f"Accuracy: 30 views (10 clips x 3 crops of {spec.test_size} px), from {published}. Clips of "
               f"{spec.frames} frames every {spec.frame_stride}th of a 30 fps video (the clip description "
               f"has no frame rate). PyTorchVideo pooled with a {spec.frames}x{math.ceil(spec.size / 32)}x"
               f"{math.ceil(spec.size / 32)} window there (fixed_head_pool=True); the default global pool "
               "is another function at that size. No checksum is published."),
    )


# --- registered variants -------------------------------------------------------------------------

# 4 frames of 32x32, a quarter of the channels and a fifth of the blocks: 7 blocks for XS/S/M,
# 11 for L, every kind of block (with and without SE, each kind of shortcut) still used.
_TEST_ARGS = {"frames": 4, "size": 32, "width": 0.25, "depth": 0.2}

for _name, _spec in _VARIANTS.items():
    register_model(
        _name, X3D, fixed={"variant": _name}, test_args=_TEST_ARGS,
        weights={"kinetics400": _kinetics400_weights(_spec)}, checkpoint_filter=x3d_checkpoint_filter,
        description=f"X3D-{_name[4:].upper()}: {_spec.frames}x{_spec.size}x{_spec.size} clips, every "
                    f"{_spec.frame_stride}th frame; Kinetics-400 weights from PyTorchVideo",
    )

"""C3D: Tran et al., "Learning Spatiotemporal Features with 3D Convolutional Networks", ICCV 2015.

Eight 3x3x3 convolutions and five max pools, then two fully connected layers::

    clip 3x16x112x112
     -> conv1 64   -> pool1 1x2x2
     -> conv2 128  -> pool2 2x2x2
     -> conv3a 256 -> conv3b 256 -> pool3 2x2x2
     -> conv4a 512 -> conv4b 512 -> pool4 2x2x2
     -> conv5a 512 -> conv5b 512 -> pool5 2x2x2 (ceil)  -> 512x1x4x4 = 8192
     -> fc6 4096 -> dropout -> fc7 4096                    = forward_features
     -> dropout -> fc8 classes                             = forward_head
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidzoo.models._base import (
    ModelCfg,
    VideoClassifier,
    build_variant,
    check_clip_model_args,
    check_num_classes,
    frame_size,
    pool_output_size,
    scaled_channels,
)
from vidzoo.models._registry import register_model

PAPER_TITLE = "Learning Spatiotemporal Features with 3D Convolutional Networks"
PAPER_URL = "https://arxiv.org/abs/1412.0767"

# The original subtracts a Sports-1M mean clip that is not published as per-channel numbers;
# these are the Kinetics-400 statistics torchvision's video models use, on [0, 1] RGB pixels.
KINETICS_NORM = {"mean": [0.43216, 0.394666, 0.37645], "std": [0.22803, 0.22145, 0.216989]}

# (conv layer names, output channels, pool kernel = stride) per stage; pool i follows stage i.
_STAGES: tuple[tuple[tuple[str, ...], int, tuple[int, int, int]], ...] = (
    (("conv1",), 64, (1, 2, 2)),
    (("conv2",), 128, (2, 2, 2)),
    (("conv3a", "conv3b"), 256, (2, 2, 2)),
    (("conv4a", "conv4b"), 512, (2, 2, 2)),
    (("conv5a", "conv5b"), 512, (2, 2, 2)),
)
_FC_WIDTH = 4096


class ConvBlock(nn.Sequential):
    """3x3x3 convolution (stride 1, padding 1), optional BatchNorm3d, ReLU."""

    def __init__(self, in_chans: int, out_chans: int, batch_norm: bool = False) -> None:
        # BatchNorm subtracts the mean right after, which would cancel a conv bias.
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv3d(in_chans, out_chans, kernel_size=3, padding=1, bias=not batch_norm)
        )
        if batch_norm:
            layers["bn"] = nn.BatchNorm3d(out_chans)
        layers["act"] = nn.ReLU(inplace=True)
        super().__init__(layers)


class C3D(VideoClassifier):
    """C3D with the paper's layer sizes, optionally narrower or with BatchNorm.

    Features are the fc7 activations (``num_features`` = 4096 at ``width=1``): the paper's
    "C3D features" are taken from fc6/fc7, so both belong to ``forward_features`` and the head
    is only dropout and fc8.

    fc6 is sized to the pool5 output, so unlike the other families C3D cannot pool adaptively:
    it accepts exactly the clip size it was built for (``num_frames`` x ``img_size``) and
    raises ValueError for any other. At 16x112x112 it is the paper's network, including the
    Caffe ceil rounding of pool5.

    Args:
        num_classes: outputs of fc8 (487 = Sports-1M).
        in_chans: channels per frame.
        num_frames: clip length T (at least 8).
        img_size: frame size, an int for square frames or (height, width); at least 16.
        width: multiplies the channels of every conv and fc layer. 1.0 is the paper
            (about 80M parameters); 0.25 or less gives a light model for CPU quick starts.
        batch_norm: put a BatchNorm3d after every convolution, before its ReLU (``c3d_bn``).
        dropout: dropout probability after fc6 and after fc7 (0.5 in the paper).

    ``default_cfg.norm`` is the Kinetics mean/std for 3 channels and ``{"scale": [0, 1]}``
    otherwise, since no per-channel statistics exist for other inputs.
    """

    def __init__(
        self,
        num_classes: int = 487,
        in_chans: int = 3,
        num_frames: int = 16,
        img_size: int | Sequence[int] = 112,
        width: float = 1.0,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        height, width_px = frame_size(img_size)
        check_clip_model_args(in_chans, num_frames, width, dropout, paper="the paper's C3D")

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        self.feature_info = []
        chans, size, reduction = in_chans, (num_frames, height, width_px), (1, 1, 1)
        for stage, (conv_names, stage_chans, kernel) in enumerate(_STAGES, start=1):
            out_chans = scaled_channels(stage_chans, width)
            for name in conv_names:
                layers[name] = ConvBlock(chans, out_chans, batch_norm)
                chans = out_chans
            self.feature_info.append(
                {"name": f"features.{conv_names[-1]}", "channels": chans, "reduction": reduction}
            )
            # Caffe rounds every pool up. At 16x112x112 only pool5 sees an odd size (2x7x7), so
            # ceil there alone reproduces the original; floor elsewhere matches common ports.
            ceil_mode = stage == len(_STAGES)
            pool = f"pool{stage}"
            layers[pool] = nn.MaxPool3d(kernel, stride=kernel, ceil_mode=ceil_mode)
            size = tuple(pool_output_size(s, k, k, ceil_mode) for s, k in zip(size, kernel))
            reduction = tuple(r * k for r, k in zip(reduction, kernel))
            if min(size) < 1:
                raise ValueError(
                    f"C3D input {num_frames}x{height}x{width_px} (frames x height x width) is too "
                    f"small: nothing is left to pool at {pool}; C3D needs at least 8 frames "
                    "and 16x16 pixels"
                )
        # pool5's output is the fc6 input, the classic place to cut C3D (vidzoo.transfer.truncate).
        self.feature_info.append({"name": "features.pool5", "channels": chans, "reduction": reduction})
        self.features = nn.Sequential(layers)

        fc_width = scaled_channels(_FC_WIDTH, width)
        self.fc6 = nn.Linear(chans * math.prod(size), fc_width)
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = nn.Linear(fc_width, fc_width)
        self.drop7 = nn.Dropout(dropout)
        self.fc8 = nn.Linear(fc_width, num_classes)

        self.num_classes = num_classes
        self.num_features = fc_width
        self.clip_shape = (in_chans, num_frames, height, width_px)
        self.default_cfg = ModelCfg(
            arch="c3d",
            input_size=(num_frames, height, width_px),
            in_chans=in_chans,
            norm=KINETICS_NORM if in_chans == 3 else {"scale": [0.0, 1.0]},
            sampling="dense",
            frame_stride=1,
            paper_title=PAPER_TITLE,
            paper_url=PAPER_URL,
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # He init keeps activations from shrinking through eight ReLU convs without BatchNorm;
        # PyTorch's default conv init is tuned for shallower nets.
        for module in self.features.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, C, T, H, W)`` of exactly ``clip_shape`` to fc7 features."""
        if x.ndim != 5 or tuple(x.shape[1:]) != self.clip_shape:
            expected = "x".join(map(str, self.clip_shape))
            got = "x".join(map(str, x.shape[1:])) if x.ndim == 5 else f"a {x.ndim}-d tensor"
            raise ValueError(
                f"C3D was built for clips of C x T x H x W = {expected} (fc6 is sized to it), "
                f"got {got}; build it with matching in_chans/num_frames/img_size "
                "or resize the clips"
            )
        x = self.features(x).flatten(1)
        x = self.drop6(F.relu(self.fc6(x)))
        return F.relu(self.fc7(x))

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """fc7 features to logits; ``pre_logits=True`` stops before fc8."""
        x = self.drop7(feats)
        return x if pre_logits else self.fc8(x)

    def get_classifier(self) -> nn.Module:
        return self.fc8

    def _replace_classifier(self, num_classes: int) -> None:
        old = self.fc8.weight
        self.fc8 = nn.Linear(self.num_features, num_classes, device=old.device, dtype=old.dtype)


def _create_c3d(variant: str, fixed: Mapping[str, Any], **kwargs: Any) -> C3D:
    return build_variant(C3D, variant, fixed, "pick the variant that has the value you want instead", **kwargs)


# Pretrained weights by variant, then tag: source, sha256, classes, preprocessing, metrics and
# licence per entry. None are published in vidzoo's format yet.
_WEIGHTS: dict[str, dict[str, dict[str, Any]]] = {"c3d": {}, "c3d_bn": {}}

# 8 frames of 32x32 through an eighth of the channels: fast on a CPU, every layer still used.
_TEST_KWARGS = {"num_frames": 8, "img_size": 32, "width": 0.125}


@register_model(test_kwargs=_TEST_KWARGS, weights=_WEIGHTS["c3d"])
def c3d(**kwargs: Any) -> C3D:
    """C3D as published: 16x112x112 clips, 487 classes (Sports-1M) unless overridden."""
    return _create_c3d("c3d", {}, **kwargs)


@register_model(test_kwargs=_TEST_KWARGS, weights=_WEIGHTS["c3d_bn"])
def c3d_bn(**kwargs: Any) -> C3D:
    """C3D with a BatchNorm3d after every convolution (convs lose their bias); dropout stays 0.5."""
    return _create_c3d("c3d_bn", {"batch_norm": True}, **kwargs)

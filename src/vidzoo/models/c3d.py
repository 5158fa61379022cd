"""C3D: Tran et al., "Learning Spatiotemporal Features with 3D Convolutional Networks", ICCV 2015.

Eight 3x3x3 convolutions and five max pools, then two fully connected layers::

    clip 3x16x112x112
     -> conv1 64   -> pool1 1x2x2
     -> conv2 128  -> pool2 2x2x2
     -> conv3a 256 -> conv3b 256 -> pool3 2x2x2
     -> conv4a 512 -> conv4b 512 -> pool4 2x2x2
     -> conv5a 512 -> conv5b 512 -> pool5 2x2x2 (ceil)  -> 512x1x4x4     = forward_features
     -> flatten (8192) -> fc6 4096 -> dropout -> fc7 4096 -> dropout      = pre_logits
     -> fc8 classes                                                       = forward_head
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

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

    ``forward_features`` is the pool5 map; the head is fc6, fc7 and fc8, and its pre-logits
    vector is the fc7 activation (``num_features`` = 4096 at ``width=1``): the paper's "C3D
    features" (``vidzoo extract``'s default).

    fc6 is sized to the pool5 output, so unlike the other families C3D cannot pool adaptively:
    it accepts exactly the clip size it was built for (``frames`` x ``size``; its config says
    ``fixed_input_size``) and raises ValueError for any other. At 16x112x112 it is the paper's
    network, including the Caffe ceil rounding of pool5.

    Args:
        num_classes: outputs of fc8 (487 = Sports-1M).
        in_chans: channels per frame.
        frames: clip length T (at least 8).
        size: frame size, an int for square frames or (height, width); at least 16.
        width: multiplies the channels of every conv and fc layer. 1.0 is the paper
            (about 80M parameters); 0.25 or less gives a light model for CPU quick starts.
        batch_norm: put a BatchNorm3d after every convolution, before its ReLU (``c3d_bn``).
        dropout: dropout probability after fc6 and after fc7 (0.5 in the paper).

    The clip's norm is the Kinetics mean/std for 3 channels and ``{"scale": [0, 1]}``
    otherwise, since no per-channel statistics exist for other inputs.
    """

    def __init__(
        self,
        num_classes: int = 487,
        in_chans: int = 3,
        frames: int = 16,
        size: int | Sequence[int] = 112,
        width: float = 1.0,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        height, width_px = frame_size(size)
        check_clip_model_args(in_chans, frames, width, dropout, paper="the paper's C3D")

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        self.feature_info = []
        chans, shape, reduction = in_chans, (frames, height, width_px), (1, 1, 1)
        for stage, (conv_names, stage_chans, kernel) in enumerate(_STAGES, start=1):
            out_chans = scaled_channels(stage_chans, width)
            for name in conv_names:
                layers[name] = ConvBlock(chans, out_chans, batch_norm)
                chans = out_chans
            self.feature_info.append(FeatureInfo(f"features.{conv_names[-1]}", chans, reduction))
            # Caffe rounds every pool up. At 16x112x112 only pool5 sees an odd size (2x7x7), so
            # ceil there alone reproduces the original; floor elsewhere matches common ports.
            ceil_mode = stage == len(_STAGES)
            pool = f"pool{stage}"
            layers[pool] = nn.MaxPool3d(kernel, stride=kernel, ceil_mode=ceil_mode)
            shape = tuple(pool_output_size(s, k, k, ceil_mode) for s, k in zip(shape, kernel))
            reduction = tuple(r * k for r, k in zip(reduction, kernel))
            if min(shape) < 1:
                raise ValueError(
                    f"C3D input {frames}x{height}x{width_px} (frames x height x width) is too "
                    f"small: nothing is left to pool at {pool}; C3D needs at least 8 frames "
                    "and 16x16 pixels"
                )
        # pool5's output is the fc6 input, the classic place to cut C3D (vidzoo.transfer.truncate).
        self.feature_info.append(FeatureInfo("features.pool5", chans, reduction))
        self.features = nn.Sequential(layers)

        fc_width = scaled_channels(_FC_WIDTH, width)
        self.fc6 = nn.Linear(chans * math.prod(shape), fc_width)
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = nn.Linear(fc_width, fc_width)
        self.drop7 = nn.Dropout(dropout)
        self.fc8 = nn.Linear(fc_width, num_classes)

        self.num_classes = num_classes
        self.num_features = fc_width
        self.default_cfg = ModelCfg(
            arch="c3d",
            clip=ClipSpec(frames=frames, size=(height, width_px),
                          norm=KINETICS_NORM if in_chans == 3 else {"scale": [0.0, 1.0]}),
            in_chans=in_chans,
            fixed_input_size=True,
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
        """Clips ``(B, C, T, H, W)`` of exactly the built clip size to the pool5 map."""
        self.check_input(x)
        return self.features(x)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The pool5 map through fc6 and fc7 to logits; ``pre_logits=True`` stops before fc8."""
        x = self.drop6(F.relu(self.fc6(feats.flatten(1))))
        x = self.drop7(F.relu(self.fc7(x)))
        return x if pre_logits else self.fc8(x)

    def get_classifier(self) -> nn.Module:
        return self.fc8

    def _replace_classifier(self, num_classes: int) -> None:
        old = self.fc8.weight
        self.fc8 = nn.Linear(self.num_features, num_classes, device=old.device, dtype=old.dtype)


# 8 frames of 32x32 through an eighth of the channels: fast on a CPU, every layer still used.
_TEST_ARGS = {"frames": 8, "size": 32, "width": 0.125}

# No pretrained weights are published in vidzoo's format yet.
register_model("c3d", C3D, test_args=_TEST_ARGS,
               description="C3D as published: 16x112x112 clips, 487 classes (Sports-1M) unless overridden")
register_model("c3d_bn", C3D, fixed={"batch_norm": True}, test_args=_TEST_ARGS,
               description="C3D with a BatchNorm3d after every convolution (convs lose their bias)")

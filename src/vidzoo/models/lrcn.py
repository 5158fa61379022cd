"""LRCN: Donahue et al., "Long-term Recurrent Convolutional Networks for Visual Recognition and
Description", CVPR 2015.

A 2D CNN on every frame feeds an LSTM; a classifier at every time step, predictions averaged::

    clip B x C x T x H x W
     -> CNN on every frame (FrameEncoder)          -> B x T x F
     -> LSTM (hidden_size, num_layers, [bidir.])   -> B x T x D          = forward_features
     -> readout="average": dropout -> fc at every step -> mean over T
        readout="last":    last step -> dropout -> fc                    = forward_head

The paper's CNN is CaffeNet up to fc6; here it is any C2D backbone (a timm model) or ``"small"``,
the short conv stack of the common Keras reproductions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from vidzoo.data.clip import ClipSpec
from vidzoo.models._base import (
    ModelCfg,
    VideoClassifier,
    check_dropout,
    check_num_classes,
    frame_size,
)
from vidzoo.models._layers import BACKBONES, FrameEncoder, efficientnet_lite0_package_weights, timm_imagenet_weights
from vidzoo.models._registry import register_model

PAPER_TITLE = "Long-term Recurrent Convolutional Networks for Visual Recognition and Description"
PAPER_URL = "https://arxiv.org/abs/1411.4389"

READOUTS = ("average", "last")
SMALL = "small"
_SMALL_WIDTHS = (16, 32, 64, 128)
_SMALL_IMG_SIZE = 112


class SmallConvNet(nn.Sequential):
    """The small per-frame CNN of the Keras LRCN reproductions, with BatchNorm.

    Four blocks of 3x3 conv (padding 1, no bias) -> BatchNorm2d -> ReLU -> 2x2 max pool with
    16, 32, 64 and 128 channels, then a global average pool: ``(N, C, H, W)`` -> ``(N, 128)``.
    Frames need at least 16x16 pixels (four halvings).
    """

    def __init__(self, in_chans: int = 3, widths: Sequence[int] = _SMALL_WIDTHS) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        chans = in_chans
        for i, width in enumerate(widths, start=1):
            layers[f"block{i}"] = nn.Sequential(
                OrderedDict(
                    # BatchNorm subtracts the mean right after, which would cancel a conv bias.
                    conv=nn.Conv2d(chans, width, kernel_size=3, padding=1, bias=False),
                    bn=nn.BatchNorm2d(width),
                    act=nn.ReLU(inplace=True),
                    pool=nn.MaxPool2d(2),
                )
            )
            chans = width
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten(1)
        super().__init__(layers)
        self.num_features = chans
        self.min_size = 2 ** len(widths)
        # (module, channels, spatial reduction) of each block: the per-frame layers features,
        # freezing and truncation can name, as backbone.net.block1 ... block4.
        self.frame_layers = [(f"block{i}", width, 2**i) for i, width in enumerate(widths, start=1)]


class LRCN(VideoClassifier):
    """Per-frame CNN features through an LSTM, read out at every step or at the last one.

    ``readout="average"`` is the paper's: a classifier at every time step and the video
    prediction averaged over time (logits are averaged; with a linear classifier that equals
    classifying the mean LSTM output, which ``forward_head(pre_logits=True)`` returns).
    ``readout="last"`` classifies the last step only, as most Keras reproductions do
    (``return_sequences=False``); bidirectional, that is the forward direction's last step and
    the backward direction's first, each the end of its pass.

    ``feature_info`` lists the CNN's per-frame stages as ``backbone.net.<module>``, layout
    ``"frames"``.

    Args:
        num_classes: outputs of the classifier (101 = UCF-101, the paper's benchmark).
        in_chans: channels per frame.
        frames: the default clip length T; any T works.
        size: default frame size, an int or (height, width); None gives 112 for the
            small CNN and the timm ImageNet size otherwise.
        backbone: ``"small"`` (``SmallConvNet``), a vidzoo C2D backbone name or a timm model name.
        hidden_size: LSTM units per direction (256 in the paper).
        num_layers: stacked LSTM layers.
        dropout: on the LSTM outputs before the classifier (0.5 in the paper) and between
            stacked LSTM layers.
        bidirectional: run a second LSTM backwards in time; doubles ``num_features``.
        readout: ``"average"`` or ``"last"``, see above.
        freeze_backbone: train only the LSTM and the classifier on fixed CNN features (the Keras
            projects used frozen VGG16: ``backbone="vgg16", pretrained_backbone=True``); the CNN
            stays in eval mode.
        pretrained_backbone: start a timm backbone from its ImageNet weights (downloads them).

    The clip's norm is ``{"scale": [0, 1]}`` for the small CNN (it has no pretrained
    statistics) and timm's mean/std for a timm backbone.
    """

    def __init__(
        self,
        num_classes: int = 101,
        in_chans: int = 3,
        frames: int = 16,
        size: int | Sequence[int] | None = None,
        backbone: str = SMALL,
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.5,
        bidirectional: bool = False,
        readout: str = "average",
        freeze_backbone: bool = False,
        pretrained_backbone: bool = False,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        if in_chans < 1 or frames < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(
                "in_chans, frames, hidden_size and num_layers must be >= 1, got "
                f"in_chans={in_chans}, frames={frames}, hidden_size={hidden_size}, "
                f"num_layers={num_layers}"
            )
        check_dropout(dropout)
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        size = None if size is None else frame_size(size)

        if backbone == SMALL:
            if pretrained_backbone:
                raise ValueError(
                    "the small CNN has no pretrained weights; pretrained_backbone=True needs a "
                    "timm backbone, e.g. backbone='vgg16'"
                )
            net = SmallConvNet(in_chans)
            self.backbone = FrameEncoder(
                net,
                net.num_features,
                name=SMALL,
                in_chans=in_chans,
                default_size=(_SMALL_IMG_SIZE, _SMALL_IMG_SIZE),
                norm={"scale": [0.0, 1.0]},
                frame_layers=net.frame_layers,
                min_size=net.min_size,
                frozen=freeze_backbone,
            )
        else:
            self.backbone = FrameEncoder.from_timm(
                backbone,
                in_chans=in_chans,
                size=size,
                pretrained=pretrained_backbone,
                frozen=freeze_backbone,
            )
        height, width = self.backbone.clip_frame_size(size)

        self.lstm = nn.LSTM(
            self.backbone.num_features,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self.readout = readout
        self.head_drop = nn.Dropout(dropout)
        self.num_features = hidden_size * (2 if bidirectional else 1)
        self.fc = nn.Linear(self.num_features, num_classes)

        self.num_classes = num_classes
        self.feature_info = self.backbone.feature_info("backbone.")
        self.default_cfg = ModelCfg(
            arch="lrcn",
            clip=ClipSpec(frames=frames, size=(height, width), norm=self.backbone.norm),
            in_chans=in_chans,
            feature_layout="sequence",
            paper_title=PAPER_TITLE,
            paper_url=PAPER_URL,
        )
        self._init_lstm()

    def _init_lstm(self) -> None:
        # A forget-gate bias of 1 (Keras' unit_forget_bias, Jozefowicz et al. 2015) lets the
        # cell state carry over from the start of training. PyTorch adds bias_ih and bias_hh, and
        # orders the gates i, f, g, o.
        hidden = self.lstm.hidden_size
        with torch.no_grad():
            for name, param in self.lstm.named_parameters():
                if name.startswith("bias"):
                    param.zero_()
                    if name.startswith("bias_ih"):
                        param[hidden : 2 * hidden] = 1.0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, C, T, H, W)`` to LSTM outputs at every step, ``(B, T, num_features)``."""
        self.check_input(x)
        out, _ = self.lstm(self.backbone(x))
        return out

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """LSTM outputs to clip logits; ``pre_logits=True`` gives the vector the classifier
        sees (the mean over time for ``"average"``, the last step for ``"last"``)."""
        if feats.ndim != 3 or feats.shape[-1] != self.num_features:
            raise ValueError(
                f"LRCN takes LSTM outputs (B, T, {self.num_features}) from forward_features, "
                f"got shape {tuple(feats.shape)}"
            )
        if self.readout == "last":
            x = self.head_drop(self._last_step(feats))
            return x if pre_logits else self.fc(x)
        x = self.head_drop(feats)
        return x.mean(1) if pre_logits else self.fc(x).mean(1)

    def _last_step(self, feats: torch.Tensor) -> torch.Tensor:
        if not self.lstm.bidirectional:
            return feats[:, -1]
        # The backward direction ends at t = 0: that step is the one that has seen the clip.
        hidden = self.lstm.hidden_size
        return torch.cat([feats[:, -1, :hidden], feats[:, 0, hidden:]], dim=-1)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def _replace_classifier(self, num_classes: int) -> None:
        old = self.fc.weight
        self.fc = nn.Linear(self.num_features, num_classes, device=old.device, dtype=old.dtype)


register_model(
    "lrcn", LRCN, test_args={"frames": 4, "size": 32}, weights={"imagenet": timm_imagenet_weights(None)},
    description="LRCN: per-frame CNN (small conv stack, or a timm backbone) into an LSTM",
)
register_model(
    "lrcn_efficientnet_lite0", LRCN, fixed={"backbone": "efficientnet_lite0"}, test_args={"frames": 2, "size": 32},
    weights={
        "imagenet": timm_imagenet_weights(BACKBONES["efficientnet_lite0"].timm_name),
        "imagenet_package": efficientnet_lite0_package_weights(
            with_head=False, clip=ClipSpec(frames=16, size=224, resize_short=256,
                                           norm={"mean": [0.5] * 3, "std": [0.5] * 3})),
    },
    description="LRCN on EfficientNet-Lite0 frames, whose ImageNet weights ship in a pip package",
)

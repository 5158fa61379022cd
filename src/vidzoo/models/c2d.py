"""C2D: a 2D ImageNet CNN applied to every frame, its outputs averaged over time.

This is the "TimeDistributed(CNN) + GlobalAveragePooling1D" construction of the Moments in Time
Keras model zoo (arXiv 2008.09037), with the 2D backbones taken from timm::

    clip B x C x T x H x W
     -> fold time into the batch: (B*T) x C x H x W
     -> 2D backbone, globally pooled              -> B x T x F   (FrameEncoder) = forward_features
     -> dropout -> fc per frame, then the mean over T of
          "logits":   the logits
          "features": the features (before fc)
          "probs":    the softmax outputs (returned as their log)                = forward_head

``FrameEncoder`` (a 2D network run frame by frame, optionally frozen) is shared with LRCN.
"""

from __future__ import annotations

import math
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
from vidzoo.models._layers import (
    BACKBONES,
    FrameEncoder,
    efficientnet_lite0_package_weights,
    resolve_backbone,
    timm_imagenet_weights,
)
from vidzoo.models._registry import register_model

AVERAGE_MODES = ("logits", "features", "probs")


class C2D(VideoClassifier):
    """A 2D backbone on every frame, averaged over time (see the module docstring).

    With a linear classifier, averaging logits and averaging features give the same output
    (mean_t(W f_t + b) = W mean_t(f_t) + b); they differ in where dropout draws its masks. The
    Moments in Time zoo averaged per-frame *softmax outputs*: ``average="probs"`` reproduces
    that, returning the log of the averaged probabilities so that ``softmax(output)`` is exactly
    their mean and cross-entropy stays well defined. ``"logits"`` is the default because its
    training loss is the usual cross-entropy on logits.

    ``feature_info`` lists the backbone's per-frame stages (timm's ``feature_info``) as
    ``backbone.net.<module>``, layout ``"frames"``.

    Args:
        backbone: a vidzoo backbone name (``BACKBONES``) or any timm model name.
        num_classes: outputs of the classifier (339 = Moments in Time v1, as in the zoo).
        in_chans: channels per frame.
        frames: the default clip length T; any T works.
        size: default frame size, an int or (height, width); None takes the backbone's
            ImageNet size from timm (224, or 299 for Inception and Xception, as the zoo used).
        average: ``"logits"``, ``"features"`` or ``"probs"``, see above.
        dropout: dropout before the classifier.
        freeze_backbone: train only the classifier; the backbone stays in eval mode.
        pretrained_backbone: start from timm's ImageNet weights (fetches them; a model file
            saved later records the flag as False, since it holds the weights).

    ``num_features`` is the backbone's pooled width: 2048 for ResNet50, InceptionV3 and
    Xception, 1664/1920 for DenseNet169/201, 1536 for InceptionResNetV2, 1024/1280 for
    MobileNet v1/v2 and 4096 for VGG16/19, whose timm models keep fc6 and fc7 (as 7x7 and
    1x1 convolutions, like Keras VGG's fc1/fc2) in front of the classifier, and 1280 for
    EfficientNet-Lite0. The clip's norm is timm's mean/std for the backbone; the zoo's Keras
    models instead took [0, 1] pixels.
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int = 339,
        in_chans: int = 3,
        frames: int = 16,
        size: int | Sequence[int] | None = None,
        average: str = "logits",
        dropout: float = 0.0,
        freeze_backbone: bool = False,
        pretrained_backbone: bool = False,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        if in_chans < 1 or frames < 1:
            raise ValueError(f"in_chans and frames must be >= 1, got in_chans={in_chans}, frames={frames}")
        if average not in AVERAGE_MODES:
            raise ValueError(f"average must be one of {AVERAGE_MODES}, got {average!r}")
        check_dropout(dropout)
        size = None if size is None else frame_size(size)

        self.backbone = FrameEncoder.from_timm(
            backbone, in_chans=in_chans, size=size, pretrained=pretrained_backbone, frozen=freeze_backbone
        )
        height, width = self.backbone.clip_frame_size(size)
        self.average = average
        self.head_drop = nn.Dropout(dropout)
        self.fc = nn.Linear(self.backbone.num_features, num_classes)

        spec = resolve_backbone(backbone)
        self.num_classes = num_classes
        self.num_features = self.backbone.num_features
        self.feature_info = self.backbone.feature_info("backbone.")
        self.default_cfg = ModelCfg(
            arch="c2d_timm",
            clip=ClipSpec(frames=frames, size=(height, width), norm=self.backbone.norm, sampling="segment"),
            in_chans=in_chans,
            feature_layout="sequence",
            paper_title=spec.paper_title,
            paper_url=spec.paper_url,
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, C, T, H, W)`` to per-frame features ``(B, T, F)``."""
        self.check_input(x)
        return self.backbone(x)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Per-frame features to clip logits; ``pre_logits=True`` gives the time-averaged features."""
        if feats.ndim != 3:
            raise ValueError(f"C2D's head takes per-frame features (B, T, F), got shape {tuple(feats.shape)}")
        if self.average == "features":
            x = self.head_drop(feats.mean(1))
            return x if pre_logits else self.fc(x)
        x = self.head_drop(feats)
        if pre_logits:
            return x.mean(1)
        logits = self.fc(x)
        if self.average == "logits":
            return logits.mean(1)
        return torch.logsumexp(logits.log_softmax(-1), dim=1) - math.log(logits.shape[1])

    def get_classifier(self) -> nn.Module:
        return self.fc

    def _replace_classifier(self, num_classes: int) -> None:
        old = self.fc.weight
        self.fc = nn.Linear(self.num_features, num_classes, device=old.device, dtype=old.dtype)


# Two frames of the smallest size each backbone accepts (32 px at least, so BatchNorm still sees
# more than one value per channel at the last stage): full-size networks, tiny clips.
_TEST_FRAMES = 2

# The Moments in Time zoo codes of each backbone, for the variants' descriptions.
_ZOO_CODES = {
    "resnet50": "R50", "densenet169": "D169", "densenet201": "D201", "inception_v3": "Iv3",
    "inception_resnet_v2": "IRv2", "xception": "X", "mobilenet_v1": "M", "mobilenet_v2": "Mv2",
    "vgg16": "VGG16", "vgg19": "VGG19",
}

# Weights beyond timm's ImageNet ones: EfficientNet-Lite0's from a pip package, its ImageNet
# classifier included (a 1000-class C2D is an ImageNet classifier of the clip's frames).
_MORE_WEIGHTS = {
    "efficientnet_lite0": {"imagenet_package": efficientnet_lite0_package_weights(
        with_head=True, clip=ClipSpec(frames=16, sampling="segment", size=224, resize_short=256,
                                      norm={"mean": [0.5] * 3, "std": [0.5] * 3}))},
}

for _name, _backbone in BACKBONES.items():
    _code = f" (MiT zoo code {_ZOO_CODES[_name]})" if _name in _ZOO_CODES else ""
    register_model(
        f"c2d_{_name}", C2D, fixed={"backbone": _name},
        test_args={"frames": _TEST_FRAMES, "size": max(32, _backbone.min_size)},
        weights={"imagenet": timm_imagenet_weights(_backbone.timm_name), **_MORE_WEIGHTS.get(_name, {})},
        description=f"{_name} (timm {_backbone.timm_name}) on every frame, averaged over time{_code}",
    )

register_model(
    "c2d_timm", C2D,
    test_args={"backbone": "mobilenetv3_small_050", "frames": _TEST_FRAMES, "size": 32},
    weights={"imagenet": timm_imagenet_weights(None)},
    description="any timm model on every frame: --model-arg backbone=efficientnet_b0",
)

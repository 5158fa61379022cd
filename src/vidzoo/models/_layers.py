"""Blocks shared by several families: the per-frame encoder (a 2D network run on every frame of a
clip, used by C2D and LRCN), the 2D backbones vidzoo names, and their ImageNet weights.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vidzoo.models._base import FeatureInfo, VideoClassifier
from vidzoo.weights import (
    HF_WEIGHT_FILES,
    Fetched,
    Weights,
    WeightsNotFoundError,
    hf_cached_file,
    hf_hub_host,
    hf_offline,
    network_unreachable,
)

__all__ = ["BACKBONES", "Backbone", "FrameEncoder", "resolve_backbone", "timm_imagenet_weights"]


@dataclass(frozen=True)
class Backbone:
    """A 2D backbone vidzoo names: its timm model and the paper that defines it.

    ``min_size`` is the smallest square frame (pixels) the network accepts: below it a
    convolution or pool has nothing left to slide over.
    """

    timm_name: str
    paper_title: str
    paper_url: str
    min_size: int = 1


# The Keras Applications backbones of the Moments in Time zoo. Keras Xception is Chollet's
# original network, which timm keeps as `legacy_xception` (`xception41` is the aligned DeepLab
# variant); with 1000 classes the timm models below have exactly the Keras trainable parameter
# counts, except ResNet50 (Keras convs carry biases) and the two Inceptions (Keras BN has no gamma).
BACKBONES: dict[str, Backbone] = {
    "resnet50": Backbone(
        "resnet50", "Deep Residual Learning for Image Recognition",
        "https://arxiv.org/abs/1512.03385",
    ),
    "densenet169": Backbone(
        "densenet169", "Densely Connected Convolutional Networks",
        "https://arxiv.org/abs/1608.06993", min_size=29,
    ),
    "densenet201": Backbone(
        "densenet201", "Densely Connected Convolutional Networks",
        "https://arxiv.org/abs/1608.06993", min_size=29,
    ),
    "inception_v3": Backbone(
        "inception_v3", "Rethinking the Inception Architecture for Computer Vision",
        "https://arxiv.org/abs/1512.00567", min_size=75,
    ),
    "inception_resnet_v2": Backbone(
        "inception_resnet_v2",
        "Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning",
        "https://arxiv.org/abs/1602.07261", min_size=75,
    ),
    "xception": Backbone(
        "legacy_xception", "Xception: Deep Learning with Depthwise Separable Convolutions",
        "https://arxiv.org/abs/1610.02357", min_size=7,
    ),
    "mobilenet_v1": Backbone(
        "mobilenetv1_100",
        "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications",
        "https://arxiv.org/abs/1704.04861",
    ),
    "mobilenet_v2": Backbone(
        "mobilenetv2_100", "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
        "https://arxiv.org/abs/1801.04381",
    ),
    "vgg16": Backbone(
        "vgg16", "Very Deep Convolutional Networks for Large-Scale Image Recognition",
        "https://arxiv.org/abs/1409.1556", min_size=32,
    ),
    "vgg19": Backbone(
        "vgg19", "Very Deep Convolutional Networks for Large-Scale Image Recognition",
        "https://arxiv.org/abs/1409.1556", min_size=32,
    ),
}
_BY_TIMM_NAME = {b.timm_name: b for b in BACKBONES.values()}


def _timm() -> Any:
    # Imported on first use: timm takes about two seconds to import, which every CLI call and
    # every model family other than the per-frame ones would otherwise pay.
    import timm

    return timm


def resolve_backbone(name: str) -> Backbone:
    """A vidzoo backbone name (``"xception"``) or any timm model name, as a ``Backbone``.

    Raises ValueError with a did-you-mean for a name neither knows.
    """
    if name in BACKBONES:
        return BACKBONES[name]
    if name in _BY_TIMM_NAME:
        return _BY_TIMM_NAME[name]
    timm = _timm()
    if timm.is_model(name):
        return Backbone(name, "", "")
    candidates = [*BACKBONES, *timm.list_models()]
    close = difflib.get_close_matches(name, candidates, n=3)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"unknown backbone {name!r}: neither a vidzoo backbone ({', '.join(BACKBONES)}) "
        f"nor a timm model name (see timm.list_models()).{hint}"
    )


class FrameEncoder(nn.Module):
    """A 2D network run on every frame of a clip: ``(B, C, T, H, W)`` -> ``(B, T, num_features)``.

    The network must map ``(N, C, H, W)`` frames to pooled ``(N, num_features)`` vectors. A
    frozen encoder has no trainable parameters, runs without autograd and stays in eval mode
    through ``model.train()``, so its BatchNorm statistics and dropout do not change either.

    Attributes:
        net: the 2D network (for timm backbones, the timm model).
        name: the backbone's name, for error messages.
        default_size: the frame size (height, width) the network was designed for.
        norm: the mean/std (or scale) its pretrained weights expect.
        frame_layers: its per-frame stages ``(module path in net, channels, spatial reduction)``.
    """

    def __init__(
        self,
        net: nn.Module,
        num_features: int,
        *,
        name: str,
        in_chans: int,
        default_size: tuple[int, int],
        norm: Mapping[str, Sequence[float]],
        frame_layers: Sequence[tuple[str, int, int]] = (),
        min_size: int = 1,
        frozen: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.num_features = num_features
        self.name = name
        self.in_chans = in_chans
        self.default_size = default_size
        self.norm = dict(norm)
        self.frame_layers = list(frame_layers)
        self.min_size = min_size
        self.frozen = frozen
        self.net.requires_grad_(not frozen)
        self.train()

    def clip_frame_size(self, size: tuple[int, int] | None) -> tuple[int, int]:
        """The frame size a model on this encoder is built for: `size`, or the network's own
        default; refused when smaller than the network accepts."""
        height, width = size or self.default_size
        if min(height, width) < self.min_size:
            raise ValueError(
                f"size {height}x{width} is too small for backbone {self.name!r}, which needs "
                f"at least {self.min_size}x{self.min_size}"
            )
        return height, width

    def feature_info(self, prefix: str) -> list[FeatureInfo]:
        """The per-frame stages as model layers, under the encoder's path `prefix` (``"backbone."``)."""
        return [FeatureInfo(f"{prefix}net.{module}", chans, (1, r, r), layout="frames")
                for module, chans, r in self.frame_layers]

    @classmethod
    def from_timm(
        cls,
        backbone: str,
        *,
        in_chans: int = 3,
        size: tuple[int, int] | None = None,
        pretrained: bool = False,
        frozen: bool = False,
    ) -> FrameEncoder:
        """A timm model without its classifier (``num_classes=0``, globally pooled).

        ``backbone`` is a name ``resolve_backbone`` accepts. ``pretrained=True`` has timm fetch
        its default ImageNet weights (network access needed). Models whose size is fixed at
        construction (timm's ``fixed_input_size``, e.g. ViTs) are built for ``size``.
        """
        timm = _timm()
        spec = resolve_backbone(backbone)
        cfg = timm.models.get_pretrained_cfg(spec.timm_name)
        fixed_size = cfg is not None and cfg.fixed_input_size and size is not None
        extra = {"img_size": size} if fixed_size else {}
        net = timm.create_model(spec.timm_name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **extra)
        cfg = net.pretrained_cfg
        norm: Mapping[str, Sequence[float]] = (
            {"mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]]}
            if in_chans == 3
            else {"scale": [0.0, 1.0]}
        )
        # The pooled output is the "pre-logits" vector, head_hidden_size wide: for VGG that is
        # fc7 (4096, timm's fc6/fc7 ConvMlp), for MobileNetV3 the conv head after pooling.
        width = getattr(net, "head_hidden_size", None) or net.num_features
        layers = [(info["module"], info["num_chs"], info["reduction"]) for info in getattr(net, "feature_info", [])]
        return cls(
            net, width, name=backbone, in_chans=in_chans, default_size=tuple(cfg["input_size"][1:]), norm=norm,
            frame_layers=layers, min_size=spec.min_size, frozen=frozen,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        if min(h, w) < self.min_size:
            raise ValueError(
                f"backbone {self.name!r} needs frames of at least {self.min_size}x{self.min_size} "
                f"pixels, got {h}x{w}"
            )
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.net(frames)
        return out.reshape(b, t, -1)

    def train(self, mode: bool = True) -> FrameEncoder:
        return super().train(mode and not self.frozen)


# --------------------------------------------------------------------------- ImageNet weights


def _fetch_timm_imagenet(model: VideoClassifier, offline: bool) -> Fetched:
    """ImageNet weights of the model's timm backbone (``model.backbone``), fetched by timm from
    the Hugging Face hub cache, as a state dict under the model's ``backbone.`` prefix."""
    encoder = getattr(model, "backbone", None)
    if not isinstance(encoder, FrameEncoder) or not hasattr(encoder.net, "pretrained_cfg"):
        raise WeightsNotFoundError(
            f"{model.default_cfg.arch} has no timm backbone here (backbone "
            f"{getattr(encoder, 'name', None)!r}); ImageNet weights need one, e.g. backbone='vgg16'"
        )
    timm_name = resolve_backbone(encoder.name).timm_name
    cfg = encoder.net.pretrained_cfg
    hf_hub_id = cfg.get("hf_hub_id")
    where = f"hf-hub:{hf_hub_id}" if hf_hub_id else str(cfg.get("url"))
    # Without a network the hub's client retries for about a minute: look in its cache at once.
    if not offline:
        offline = network_unreachable(f"https://{hf_hub_host()}" if hf_hub_id else str(cfg.get("url"))) is not None
    if offline:
        if not hf_hub_id:
            raise WeightsNotFoundError(
                f"offline mode: timm publishes {timm_name} at {cfg.get('url')} only (no Hugging Face "
                "hub id), which offline mode cannot look up"
            )
        names = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else HF_WEIGHT_FILES
        where = hf_cached_file(hf_hub_id, names, f"timm's ImageNet weights for {timm_name}")
    size = model.clip_spec.size if encoder.default_size != model.clip_spec.size else None
    with hf_offline(offline):
        try:
            fresh = FrameEncoder.from_timm(encoder.name, in_chans=encoder.in_chans, size=size, pretrained=True)
        except Exception as err:  # timm and huggingface_hub raise many kinds
            raise WeightsNotFoundError(
                f"timm could not load ImageNet weights for {timm_name} from {where}: {err}"
            ) from err
    return Fetched({f"backbone.{key}": value for key, value in fresh.state_dict().items()}, where)


def timm_imagenet_weights(timm_name: str | None) -> Weights:
    """The ``imagenet`` weights of a per-frame model: its timm backbone's default ImageNet weights
    (``timm_name``; None: whatever ``backbone=`` names). They cover the backbone only, so the
    classifier (and an LSTM on top) is always new."""
    # timm's default pretrained tag of the model, from the Hugging Face hub (timm is not imported
    # here: listing the zoo should not cost its two-second import).
    source = f"timm:{timm_name or '<backbone>'} (its default ImageNet tag, Hugging Face hub)"
    return Weights(
        fetch=_fetch_timm_imagenet, covers="backbone.", dataset="imagenet-1k", num_classes=1000,
        source=source, licence="per timm model card",
        notes="the backbone's ImageNet weights; vidzoo keys add the prefix 'backbone.net.'",
    )

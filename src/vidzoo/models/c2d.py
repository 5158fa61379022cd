"""C2D: a 2D ImageNet CNN applied to every frame, its outputs averaged over time.

This is the "TimeDistributed(CNN) + GlobalAveragePooling1D" construction of the Moments in Time
Keras model zoo (arXiv 2008.09037), with the 2D backbones taken from timm::

    clip B x C x T x H x W
     -> fold time into the batch: (B*T) x C x H x W
     -> 2D backbone, globally pooled              -> B x T x F   (FrameEncoder)
     -> average="features": mean over T           -> B x F       = forward_features
     -> dropout -> fc per frame, then the mean over T of
          "logits": the logits
          "probs":  the softmax outputs (returned as their log)   = forward_head

``FrameEncoder`` (a 2D network run frame by frame, optionally frozen) is shared with LRCN.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vidzoo.models._base import ModelCfg, VideoClassifier, build_variant, check_num_classes, frame_size
from vidzoo.models._registry import register_model

AVERAGE_MODES = ("logits", "features", "probs")


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
        net: the 2D network (for timm backbones, the timm model; its ``feature_info`` lists the
            per-frame layers worth tapping).
        name: the backbone's name, for error messages.
        default_size: the frame size (height, width) the network was designed for.
        norm: the mean/std (or scale) its pretrained weights expect.
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
        min_size: int = 1,
        frozen: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.num_features = num_features
        self.name = name
        self.in_chans = in_chans
        self.default_size = default_size
        self.norm = norm
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
                f"img_size {height}x{width} is too small for backbone {self.name!r}, which needs "
                f"at least {self.min_size}x{self.min_size}"
            )
        return height, width

    @classmethod
    def from_timm(
        cls,
        backbone: str,
        *,
        in_chans: int = 3,
        img_size: tuple[int, int] | None = None,
        pretrained: bool = False,
        frozen: bool = False,
    ) -> FrameEncoder:
        """A timm model without its classifier (``num_classes=0``, globally pooled).

        ``backbone`` is a name ``resolve_backbone`` accepts. ``pretrained=True`` downloads
        timm's default ImageNet weights (network access needed). Models whose size is fixed at
        construction (timm's ``fixed_input_size``, e.g. ViTs) are built for ``img_size``.
        """
        timm = _timm()
        spec = resolve_backbone(backbone)
        cfg = timm.models.get_pretrained_cfg(spec.timm_name)
        fixed_size = cfg is not None and cfg.fixed_input_size and img_size is not None
        extra = {"img_size": img_size} if fixed_size else {}
        net = timm.create_model(
            spec.timm_name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **extra
        )
        cfg = net.pretrained_cfg
        norm: Mapping[str, Sequence[float]] = (
            {"mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]]}
            if in_chans == 3
            else {"scale": [0.0, 1.0]}
        )
        # The pooled output is the "pre-logits" vector, head_hidden_size wide: for VGG that is
        # fc7 (4096, timm's fc6/fc7 ConvMlp), for MobileNetV3 the conv head after pooling.
        width = getattr(net, "head_hidden_size", None) or net.num_features
        return cls(
            net,
            width,
            name=backbone,
            in_chans=in_chans,
            default_size=tuple(cfg["input_size"][1:]),
            norm=norm,
            min_size=spec.min_size,
            frozen=frozen,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.in_chans:
            got = "x".join(map(str, x.shape)) if x.ndim == 5 else f"a {x.ndim}-d tensor"
            raise ValueError(
                f"expected clips B x C x T x H x W with C = {self.in_chans}, got {got}"
            )
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


class C2D(VideoClassifier):
    """A 2D backbone on every frame, averaged over time (see the module docstring).

    With a linear classifier, averaging logits and averaging features give the same output
    (mean_t(W f_t + b) = W mean_t(f_t) + b); they differ in what ``forward_features`` returns
    (per-frame ``(B, T, F)`` vs pooled ``(B, F)``) and in where dropout draws its masks. The
    Moments in Time zoo averaged per-frame *softmax outputs*: ``average="probs"`` reproduces that,
    returning the log of the averaged probabilities so that ``softmax(output)`` is exactly their
    mean and cross-entropy stays well defined. ``"logits"`` is the default because its training
    loss is the usual cross-entropy on logits.

    ``feature_info`` is empty: the backbone's layers see single frames, not clips; the
    per-frame taps are ``backbone.net.feature_info`` (timm's format), which freezing and
    truncation name as ``backbone.net.<module>`` (see ``vidzoo.transfer.layers``).

    Args:
        backbone: a vidzoo backbone name (``BACKBONES``) or any timm model name.
        num_classes: outputs of the classifier (339 = Moments in Time v1, as in the zoo).
        in_chans: channels per frame.
        num_frames: the default clip length T of ``default_cfg``; any T works.
        img_size: default frame size, an int or (height, width); None takes the backbone's
            ImageNet size from timm (224, or 299 for Inception and Xception, as the zoo used).
        average: ``"logits"``, ``"features"`` or ``"probs"``, see above.
        drop_rate: dropout before the classifier.
        freeze_backbone: train only the classifier; the backbone stays in eval mode.
        pretrained_backbone: start from timm's ImageNet weights (downloads them; a model file
            saved later records this flag, so loading it downloads them again before the saved
            weights replace them).

    ``num_features`` is the backbone's pooled width: 2048 for ResNet50, InceptionV3 and
    Xception, 1664/1920 for DenseNet169/201, 1536 for InceptionResNetV2, 1024/1280 for
    MobileNet v1/v2 and 4096 for VGG16/19, whose timm models keep fc6 and fc7 (as 7x7 and
    1x1 convolutions, like Keras VGG's fc1/fc2) in front of the classifier. ``default_cfg.norm``
    is timm's mean/std for the backbone; the zoo's Keras models instead took [0, 1] pixels.
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int = 339,
        in_chans: int = 3,
        num_frames: int = 16,
        img_size: int | Sequence[int] | None = None,
        average: str = "logits",
        drop_rate: float = 0.0,
        freeze_backbone: bool = False,
        pretrained_backbone: bool = False,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        if in_chans < 1 or num_frames < 1:
            raise ValueError(
                "in_chans and num_frames must be >= 1, "
                f"got in_chans={in_chans}, num_frames={num_frames}"
            )
        if average not in AVERAGE_MODES:
            raise ValueError(f"average must be one of {AVERAGE_MODES}, got {average!r}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        size = None if img_size is None else frame_size(img_size)

        self.backbone = FrameEncoder.from_timm(
            backbone,
            in_chans=in_chans,
            img_size=size,
            pretrained=pretrained_backbone,
            frozen=freeze_backbone,
        )
        height, width = self.backbone.clip_frame_size(size)
        self.average = average
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.backbone.num_features, num_classes)

        spec = resolve_backbone(backbone)
        self.num_classes = num_classes
        self.num_features = self.backbone.num_features
        self.feature_info = []
        self.default_cfg = ModelCfg(
            arch="c2d_timm",
            input_size=(num_frames, height, width),
            in_chans=in_chans,
            norm=self.backbone.norm,
            sampling="segment",
            paper_title=spec.paper_title,
            paper_url=spec.paper_url,
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, C, T, H, W)`` to per-frame features ``(B, T, F)``, or their mean over
        time ``(B, F)`` when ``average="features"``."""
        frames = self.backbone(x)
        return frames.mean(1) if self.average == "features" else frames

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features to clip logits; ``pre_logits=True`` gives the time-averaged features."""
        per_frame = self.average != "features"
        if feats.ndim != (3 if per_frame else 2):
            expected = "(B, T, F)" if per_frame else "(B, F)"
            raise ValueError(
                f"C2D with average={self.average!r} takes features {expected} from "
                f"forward_features, got shape {tuple(feats.shape)}"
            )
        x = self.head_drop(feats)
        if pre_logits:
            return x.mean(1) if per_frame else x
        logits = self.fc(x)
        if self.average == "features":
            return logits
        if self.average == "logits":
            return logits.mean(1)
        return torch.logsumexp(logits.log_softmax(-1), dim=1) - math.log(logits.shape[1])

    def get_classifier(self) -> nn.Module:
        return self.fc

    def _replace_classifier(self, num_classes: int) -> None:
        old = self.fc.weight
        self.fc = nn.Linear(self.num_features, num_classes, device=old.device, dtype=old.dtype)


def _create_c2d(variant: str, fixed: Mapping[str, Any], **kwargs: Any) -> C2D:
    return build_variant(C2D, variant, fixed, "use c2d_timm to choose the backbone", **kwargs)


# Pretrained weights by variant, then tag: source, sha256, classes, preprocessing, metrics and
# licence per entry. "imagenet" is the backbone's default timm weights, fetched by timm (Hugging
# Face hub cache; timm's pretrained_cfg names the repo, licence and preprocessing); they cover
# the backbone only, so the classifier is always new (see vidzoo.weights).
def _imagenet_entry(timm_name: str | None) -> dict[str, Any]:
    return {
        "loader": "timm",
        "timm_model": timm_name,  # None: the backbone= argument names it
        "source": "timm pretrained_cfg of the backbone (Hugging Face hub)",
        "format": "timm state dict of the backbone; vidzoo keys add the prefix 'backbone.net.'",
        "covers": "backbone.",
        "dataset": "imagenet-1k",
        "num_classes": 1000,
        "licence": "per timm model card",
    }


_WEIGHTS: dict[str, dict[str, dict[str, Any]]] = {
    **{f"c2d_{name}": {"imagenet": _imagenet_entry(b.timm_name)} for name, b in BACKBONES.items()},
    "c2d_timm": {"imagenet": _imagenet_entry(None)},
}

# Two frames of the smallest size each backbone accepts (32 px at least, so BatchNorm still sees
# more than one value per channel at the last stage): full-size networks, tiny clips.
_TEST_FRAMES = 2


def _test_kwargs(backbone: str) -> dict[str, Any]:
    return {"num_frames": _TEST_FRAMES, "img_size": max(32, BACKBONES[backbone].min_size)}


@register_model(test_kwargs=_test_kwargs("resnet50"), weights=_WEIGHTS["c2d_resnet50"])
def c2d_resnet50(**kwargs: Any) -> C2D:
    """ResNet50 on every frame (zoo code R50)."""
    return _create_c2d("c2d_resnet50", {"backbone": "resnet50"}, **kwargs)


@register_model(test_kwargs=_test_kwargs("densenet169"), weights=_WEIGHTS["c2d_densenet169"])
def c2d_densenet169(**kwargs: Any) -> C2D:
    """DenseNet169 on every frame (zoo code D169)."""
    return _create_c2d("c2d_densenet169", {"backbone": "densenet169"}, **kwargs)


@register_model(test_kwargs=_test_kwargs("densenet201"), weights=_WEIGHTS["c2d_densenet201"])
def c2d_densenet201(**kwargs: Any) -> C2D:
    """DenseNet201 on every frame (zoo code D201)."""
    return _create_c2d("c2d_densenet201", {"backbone": "densenet201"}, **kwargs)


@register_model(test_kwargs=_test_kwargs("inception_v3"), weights=_WEIGHTS["c2d_inception_v3"])
def c2d_inception_v3(**kwargs: Any) -> C2D:
    """InceptionV3 on every frame, 299x299 (zoo code Iv3)."""
    return _create_c2d("c2d_inception_v3", {"backbone": "inception_v3"}, **kwargs)


@register_model(
    test_kwargs=_test_kwargs("inception_resnet_v2"), weights=_WEIGHTS["c2d_inception_resnet_v2"]
)
def c2d_inception_resnet_v2(**kwargs: Any) -> C2D:
    """InceptionResNetV2 on every frame, 299x299 (zoo code IRv2)."""
    return _create_c2d("c2d_inception_resnet_v2", {"backbone": "inception_resnet_v2"}, **kwargs)


@register_model(test_kwargs=_test_kwargs("xception"), weights=_WEIGHTS["c2d_xception"])
def c2d_xception(**kwargs: Any) -> C2D:
    """Xception (Chollet's original, timm ``legacy_xception``) on every frame, 299x299 (zoo X)."""
    return _create_c2d("c2d_xception", {"backbone": "xception"}, **kwargs)


@register_model(test_kwargs=_test_kwargs("mobilenet_v1"), weights=_WEIGHTS["c2d_mobilenet_v1"])
def c2d_mobilenet_v1(**kwargs: Any) -> C2D:
    """MobileNet (v1, width 1.0) on every frame (zoo code M)."""
    return _create_c2d("c2d_mobilenet_v1", {"backbone": "mobilenet_v1"}, **kwargs)


@register_model(test_kwargs=_test_kwargs("mobilenet_v2"), weights=_WEIGHTS["c2d_mobilenet_v2"])
def c2d_mobilenet_v2(**kwargs: Any) -> C2D:
    """MobileNetV2 (width 1.0) on every frame (zoo code Mv2)."""
    return _create_c2d("c2d_mobilenet_v2", {"backbone": "mobilenet_v2"}, **kwargs)


@register_model(test_kwargs=_test_kwargs("vgg16"), weights=_WEIGHTS["c2d_vgg16"])
def c2d_vgg16(**kwargs: Any) -> C2D:
    """VGG16, up to fc7, on every frame."""
    return _create_c2d("c2d_vgg16", {"backbone": "vgg16"}, **kwargs)


@register_model(test_kwargs=_test_kwargs("vgg19"), weights=_WEIGHTS["c2d_vgg19"])
def c2d_vgg19(**kwargs: Any) -> C2D:
    """VGG19, up to fc7, on every frame (zoo code VGG19)."""
    return _create_c2d("c2d_vgg19", {"backbone": "vgg19"}, **kwargs)


@register_model(
    test_kwargs={"backbone": "mobilenetv3_small_050", "num_frames": _TEST_FRAMES, "img_size": 32},
    weights=_WEIGHTS["c2d_timm"],
)
def c2d_timm(**kwargs: Any) -> C2D:
    """Any timm model on every frame: ``create_model("c2d_timm", backbone="efficientnet_b0")``."""
    if "backbone" not in kwargs:
        raise ValueError(
            "c2d_timm needs backbone=<a timm model name>, e.g. "
            "create_model('c2d_timm', backbone='efficientnet_b0')"
        )
    return C2D(**kwargs)

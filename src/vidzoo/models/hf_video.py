"""Hugging Face ``transformers`` video classifiers under the vidzoo contract: VideoMAE, TimeSformer,
ViViT, V-JEPA 2 and VideoPrism, built from a transformers config or loaded from a checkpoint (a
hub id, offline from the Hugging Face cache, or a directory written by ``save_pretrained``).

The transformers model is kept whole as ``model.hf`` (its ``state_dict`` keys are transformers'
own, prefixed ``"hf."``) and run through its own modules; nothing is re-implemented::

    clip (B, C, T, H, W) --to (B, T, C, H, W)--> the backbone's tokens (B, N, hidden) = forward_features
         --the transformers head's pooling (below)--> (B, hidden) = pre_logits
         --dropout (none by default) --> hf.classifier --> logits       = forward_head

    VideoMAE     mean of the tokens -> fc_norm (use_mean_pooling), else token 0 (a patch token:
                 VideoMAE has no class token)
    TimeSformer  the class token          ViViT  the class token
    V-JEPA 2     the attentive pooler     VideoPrism  attention pooling -> head_layernorm

``create_model("hf_videomae", pretrained="MCG-NJU/videomae-base-finetuned-kinetics")`` reads the
checkpoint's ``config.json`` (the architecture, recorded as the model's ``config`` argument, so a
saved model rebuilds without the checkpoint) and its processor config (the clip description,
checked against the model config and against the normalisation documented for the family: a
disagreement is a warning in the load report, and the documented values are used). The weights
load strictly: a new class count replaces only the classifier, and the load report names it.

transformers is an optional dependency (``pip install 'vidzoo[hf]'``), imported only when one of
these models is built: listing the zoo does not import it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidzoo.data.clip import ClipSpec
from vidzoo.fileio import file_sha256
from vidzoo.models._base import (
    FeatureInfo,
    ModelCfg,
    VideoClassifier,
    check_dropout,
    check_num_classes,
    frame_size,
)
from vidzoo.models._registry import register_model
from vidzoo.weights import (
    Fetched,
    UnknownWeightsError,
    Weights,
    WeightsMismatchError,
    WeightsNotFoundError,
    hf_hub_cache,
    hf_hub_file,
    hf_hub_offline,
    hf_offline,
)

EXTRA = "pip install 'vidzoo[hf]'"
_IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def _transformers(what: str) -> Any:
    # Imported on first use: it takes seconds, which listing the zoo must not pay.
    try:
        import transformers
    except ImportError:
        raise ImportError(f"{what} needs the transformers package, an optional extra: {EXTRA}") from None
    return transformers


# --------------------------------------------------------------------------- the families


def _tokens(hf: nn.Module, backbone: str, input_name: str, x: torch.Tensor) -> torch.Tensor:
    return hf.get_submodule(backbone)(**{input_name: x}).last_hidden_state


def _videomae_pool(hf: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    return hf.fc_norm(feats.mean(1)) if hf.fc_norm is not None else feats[:, 0]


def _class_token(hf: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    return feats[:, 0]


def _vjepa2_pool(hf: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    return hf.pooler(feats)


def _videoprism_pool(hf: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    # One pooling query: (B, 1, hidden); transformers' own head keeps that axis in its logits.
    return hf.head_layernorm(hf.head(feats)[0]).squeeze(1)


def _cube(cfg: Any) -> tuple[int, int, int]:
    return int(cfg.tubelet_size), int(cfg.patch_size), int(cfg.patch_size)


def _frame_patches(cfg: Any) -> tuple[int, int, int]:
    return 1, int(cfg.patch_size), int(cfg.patch_size)


def _tubelet(cfg: Any) -> tuple[int, int, int]:
    t, h, w = cfg.tubelet_size
    return int(t), int(h), int(w)


@dataclass(frozen=True)
class _Family:
    """What differs between the transformers video classifiers (attribute paths are inside the
    transformers model)."""

    model_type: str
    backbone: str  # the module whose last_hidden_state forward_features returns
    input_name: str
    pool: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    blocks: tuple[str, ...]  # ModuleLists of transformer blocks, in forward order
    reduction: Callable[[Any], tuple[int, int, int]]  # config -> (t, h, w) of one token
    frames_key: str
    size_key: str
    norm: Mapping[str, list[float]]  # documented, on pixels in [0, 1]
    frame_stride: int  # the documented protocol's, for checkpoints that do not say
    resize_ratio: float  # short side / crop of the documented protocol (see `resize_short`)
    processor: str  # the transformers processor whose defaults fill a saved config's gaps
    paper: tuple[str, str]
    tiny: Mapping[str, Any]  # a tiny config for tests
    sampling: str = "dense"  # the documented protocol's
    any_frames: bool = False  # V-JEPA 2's rotary positions take any clip length
    # Blocks that fold an axis into the batch (VideoPrism's factorised encoder): list -> "time"
    # (B*T, H'W', C) or "space" (B*H'W', T, C).
    folds: Mapping[str, str] = field(default_factory=dict)

    def resize_short(self, crop: int) -> int:
        """The short side the documented protocol resizes to before cropping `crop` (rounded
        down, as transformers' processors do: V-JEPA 2's int(256 * 256 / 224) = 292)."""
        return int(crop * self.resize_ratio + 1e-6)


_TINY = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}

# Sources of the documented protocols: /work/scratch/hf/NOTES.md, "Canonical checkpoints".
FAMILIES: dict[str, _Family] = {
    "videomae": _Family(
        model_type="videomae", backbone="videomae", input_name="pixel_values", pool=_videomae_pool,
        blocks=("videomae.encoder.layer",), reduction=_cube, frames_key="num_frames", size_key="image_size",
        # ImageNet statistics (MCG-NJU/VideoMAE datasets.py); 16 frames every 4th, short side 224.
        norm=_IMAGENET, frame_stride=4, resize_ratio=1.0, processor="VideoMAEVideoProcessor",
        paper=("VideoMAE: Masked Autoencoders are Data-Efficient Learners for Self-Supervised Video Pre-Training",
               "https://arxiv.org/abs/2203.12602"),
        tiny={**_TINY, "patch_size": 16, "tubelet_size": 2, "num_hidden_layers": 2},
    ),
    "timesformer": _Family(
        model_type="timesformer", backbone="timesformer", input_name="pixel_values", pool=_class_token,
        blocks=("timesformer.encoder.layer",), reduction=_frame_patches, frames_key="num_frames",
        size_key="image_size",
        # PySlowFast's 0.45/0.225; 8 frames every 32nd, short side 224 (TimeSformer_divST_8x32_224).
        norm={"mean": [0.45] * 3, "std": [0.225] * 3}, frame_stride=32, resize_ratio=1.0,
        processor="TimesformerVideoProcessor",
        paper=("Is Space-Time Attention All You Need for Video Understanding?", "https://arxiv.org/abs/2102.05095"),
        tiny={**_TINY, "patch_size": 16, "num_hidden_layers": 2},
    ),
    "vivit": _Family(
        model_type="vivit", backbone="vivit", input_name="pixel_values", pool=_class_token,
        blocks=("vivit.layers",), reduction=_tubelet, frames_key="num_frames", size_key="image_size",
        # scenic's zero_centering, pixels to [-1, 1]; 32 frames every 2nd, short side 256, crop 224.
        norm={"mean": [0.5] * 3, "std": [0.5] * 3}, frame_stride=2, resize_ratio=256 / 224,
        processor="VivitVideoProcessor",
        paper=("ViViT: A Video Vision Transformer", "https://arxiv.org/abs/2103.15691"),
        tiny={**_TINY, "tubelet_size": [2, 16, 16], "num_hidden_layers": 2},
    ),
    "vjepa2": _Family(
        model_type="vjepa2", backbone="vjepa2.encoder", input_name="pixel_values_videos", pool=_vjepa2_pool,
        blocks=("vjepa2.encoder.layer",), reduction=_cube, frames_key="frames_per_clip", size_key="crop_size",
        # ImageNet statistics; 16 frames every 4th, crop 256 from short side 292 (VJEPA2VideoProcessor).
        norm=_IMAGENET, frame_stride=4, resize_ratio=256 / 224, processor="VJEPA2VideoProcessor",
        paper=("V-JEPA 2: Self-Supervised Video Models Enable Understanding, Prediction and Planning",
               "https://arxiv.org/abs/2506.09985"),
        tiny={"hidden_size": 32, "num_attention_heads": 2, "mlp_ratio": 2.0, "patch_size": 16, "tubelet_size": 2,
              "num_hidden_layers": 2, "pred_hidden_size": 16, "pred_num_attention_heads": 2,
              "pred_num_hidden_layers": 1, "num_pooler_layers": 1},
        any_frames=True,
    ),
    "videoprism_vision_model": _Family(
        model_type="videoprism_vision_model", backbone="vision_model", input_name="pixel_values_videos",
        pool=_videoprism_pool, blocks=("vision_model.spatial_layers", "vision_model.temporal_layers"),
        reduction=_tubelet, frames_key="num_frames", size_key="image_size",
        # VideoPrismProcessor: no normalisation (pixels in [0, 1]), frames resized straight to 288x288.
        norm={"mean": [0.0] * 3, "std": [1.0] * 3}, frame_stride=1, resize_ratio=1.0,
        processor="LlavaOnevisionVideoProcessor",
        paper=("VideoPrism: A Foundational Visual Encoder for Video Understanding", "https://arxiv.org/abs/2402.13217"),
        tiny={**_TINY, "tubelet_size": [1, 16, 16], "num_spatial_layers": 2, "num_temporal_layers": 2,
              "num_auxiliary_layers": 0},
        sampling="segment",  # the processor samples its frames over the whole video
        folds={"vision_model.spatial_layers": "time", "vision_model.temporal_layers": "space"},
    ),
}


def video_classification_model_types() -> dict[str, str]:
    """model_type -> class name of every ``*ForVideoClassification`` the installed transformers has."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES

    return dict(MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES)


# --------------------------------------------------------------------------- the model


class HFVideoClassifier(VideoClassifier):
    """A transformers ``*ForVideoClassification`` model (``hf``) with the vidzoo contract; see
    the module docstring.

    ``feature_info`` lists every transformer block (``hf.videomae.encoder.layer.3``, layout
    ``"tokens"``: ``(B, N, hidden)``; VideoPrism's factorised blocks are unfolded to that too),
    so freezing, truncation and feature extraction can name them.

    Args:
        model_type: transformers' name of the family (each registered variant fixes it).
        num_classes: outputs of the classifier (400 = Kinetics-400).
        frames, size: the clip the model is built for (its position tables are sized to it; V-JEPA
            2 takes any frame count); ``size`` is an int or a square (height, width). None keeps
            the config's.
        dropout: before the classifier (the transformers heads have none, hence 0).
        config: transformers config values over the family's defaults (a checkpoint's
            ``config.json``, which ``pretrained`` fills in); None: transformers' default
            configuration of the family (VideoMAE-B 16x224, TimeSformer-B 8x224, ViViT-B 32x224,
            V-JEPA 2 ViT-L 64x256, VideoPrism-B 16x288).

    V-JEPA 2's self-supervised predictor, which classification never runs, is dropped: its
    parameters would never get a gradient (a hazard for DDP and optimisers).
    """

    def __init__(
        self,
        model_type: str,
        num_classes: int = 400,
        frames: int | None = None,
        size: int | Sequence[int] | None = None,
        dropout: float = 0.0,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if model_type not in FAMILIES:
            raise ValueError(f"model_type must be one of {sorted(FAMILIES)}, got {model_type!r}")
        family = FAMILIES[model_type]
        check_num_classes(num_classes)
        check_dropout(dropout)
        transformers = _transformers(f"the {model_type} model")
        values = dict(config or {})
        if frames is not None:
            if frames < 1:
                raise ValueError(f"frames must be >= 1, got {frames}")
            values[family.frames_key] = frames
        if size is not None:
            height, width = frame_size(size)
            if height != width:
                raise ValueError(f"transformers' {model_type} takes square frames, got size {height}x{width}")
            values[family.size_key] = height
        hf_config = transformers.AutoConfig.for_model(model_type, **values)
        hf_config.num_labels = num_classes
        self.hf = transformers.AutoModelForVideoClassification.from_config(hf_config)
        if model_type == "vjepa2":
            self.hf.vjepa2.predictor = None
        self.family = family
        self.head_drop = nn.Dropout(dropout)

        self.num_classes = num_classes
        self.num_features = int(hf_config.hidden_size)
        reduction = family.reduction(hf_config)
        self.feature_info = [
            FeatureInfo(f"hf.{blocks}.{i}", self.num_features, reduction, layout="tokens")
            for blocks in family.blocks for i in range(len(self.hf.get_submodule(blocks)))
        ]
        height, width = frame_size(getattr(hf_config, family.size_key))
        self.default_cfg = ModelCfg(
            arch=f"hf_{model_type}",
            clip=ClipSpec(frames=int(getattr(hf_config, family.frames_key)), size=(height, width),
                          sampling=family.sampling, frame_stride=family.frame_stride, norm=dict(family.norm),
                          resize_short=family.resize_short(max(height, width))),
            in_chans=int(getattr(hf_config, "num_channels", None) or getattr(hf_config, "in_chans", 3)),
            feature_layout="sequence",
            fixed_input_size=not family.any_frames,
            paper_title=family.paper[0],
            paper_url=family.paper[1],
        )

    def check_input(self, x: torch.Tensor) -> None:
        """The base checks, and for V-JEPA 2 (any frame count) the frame size its rotary grid has."""
        super().check_input(x)
        if self.family.any_frames:
            size = (int(self.hf.config.crop_size),) * 2
            if tuple(x.shape[3:]) != size or x.shape[2] < self.hf.config.tubelet_size:
                raise ValueError(
                    f"{self.default_cfg.arch} takes clips of {size[0]}x{size[1]} frames (its rotary position grid "
                    f"is sized to them) and at least {self.hf.config.tubelet_size} frames, got "
                    f"{'x'.join(map(str, x.shape[2:]))} (T x H x W)"
                )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, C, T, H, W)`` to the backbone's tokens ``(B, N, hidden)``."""
        self.check_input(x)
        # transformers' video models take (B, T, C, H, W).
        return _tokens(self.hf, self.family.backbone, self.family.input_name, x.transpose(1, 2))

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens to logits, pooled as the transformers head pools them; ``pre_logits=True``
        stops before the classifier."""
        if feats.ndim != 3 or feats.shape[-1] != self.num_features:
            raise ValueError(f"{self.default_cfg.arch}'s head takes tokens (B, N, {self.num_features}), "
                             f"got shape {tuple(feats.shape)}")
        x = self.head_drop(self.family.pool(self.hf, feats))
        return x if pre_logits else self.hf.classifier(x)

    def forward_intermediates(
        self, x: torch.Tensor, layers: Sequence[str], *, stop_early: bool = True
    ) -> dict[str, torch.Tensor]:
        """As ``VideoClassifier.forward_intermediates``; blocks that fold an axis into the batch
        (VideoPrism's) come back unfolded, ``(B, T' * H'W', hidden)`` as every block."""
        outputs = super().forward_intermediates(x, layers, stop_early=stop_early)
        return {name: self._unfold(name, out, x.shape[0]) for name, out in outputs.items()}

    def _unfold(self, name: str, out: torch.Tensor, batch: int) -> torch.Tensor:
        fold = self.family.folds.get(name.removeprefix("hf.").rpartition(".")[0])
        if fold == "time":  # (B*T', H'W', C): frames consecutive
            return out.reshape(batch, -1, out.shape[-1])
        if fold == "space":  # (B*H'W', T', C): token order (t, h, w) as the time blocks give
            positions, steps, channels = out.shape
            return out.reshape(batch, positions // batch, steps, channels).transpose(1, 2).reshape(batch, -1, channels)
        return out

    def get_classifier(self) -> nn.Module:
        return self.hf.classifier

    def _replace_classifier(self, num_classes: int) -> None:
        old = self.hf.classifier.weight
        head = nn.Linear(self.num_features, num_classes, device=old.device, dtype=old.dtype)
        self.hf._init_weights(head)  # as transformers initialises the family's heads
        self.hf.classifier = head
        self.hf.config.num_labels = num_classes
        self.hf.num_labels = num_classes


# --------------------------------------------------------------------------- checkpoints

# The evaluation protocols of the canonical hub checkpoints: transformers' processor configs store
# neither the frame stride nor the sampling nor the views. Sources: VideoMAE's finetune scripts
# (MCG-NJU/VideoMAE), TimeSformer's TimeSformer_divST_8x32_224 configs, scenic's vivit_base_k400.py,
# vjepa2's configs/eval/vitl/ssv2; norm: the family's documented values (FAMILIES).
CANONICAL_CHECKPOINTS: dict[str, dict[str, Any]] = {
    "MCG-NJU/videomae-base-finetuned-kinetics": dict(
        frames=16, frame_stride=4, sampling="dense", size=(224, 224), resize_short=224, clips_per_video=5, crops=3),
    "MCG-NJU/videomae-base-finetuned-ssv2": dict(
        frames=16, frame_stride=1, sampling="segment", size=(224, 224), resize_short=224, clips_per_video=2, crops=3),
    # Stride 32 at scenic/PySlowFast's 30 fps target rate: one 256-frame window.
    "facebook/timesformer-base-finetuned-k400": dict(
        frames=8, frame_stride=32, sampling="dense", size=(224, 224), resize_short=224, clips_per_video=1, crops=3),
    # "16x2" is the tubelet (16x16 patches, 2 frames), not the clip: 32 frames every 2nd.
    "google/vivit-b-16x2-kinetics400": dict(
        frames=32, frame_stride=2, sampling="dense", size=(224, 224), resize_short=256, clips_per_video=4, crops=3),
    "facebook/vjepa2-vitl-fpc16-256-ssv2": dict(
        frames=16, frame_stride=4, sampling="dense", size=(256, 256), resize_short=292, clips_per_video=2, crops=3),
}
# The registered name of each family.
VARIANTS = {"hf_videomae": "videomae", "hf_timesformer": "timesformer", "hf_vivit": "vivit", "hf_vjepa2": "vjepa2",
            "hf_videoprism": "videoprism_vision_model"}
_VARIANT_OF = {model_type: name for name, model_type in VARIANTS.items()}
# Tags for the canonical hub checkpoints (``vidzoo models --pretrained`` lists them): a tag is read
# exactly as its hub id is (`checkpoint_weights`), through the Hugging Face cache.
HUB_TAGS: dict[str, dict[str, str]] = {
    "videomae": {"kinetics400": "MCG-NJU/videomae-base-finetuned-kinetics",
                 "ssv2": "MCG-NJU/videomae-base-finetuned-ssv2"},
    "timesformer": {"kinetics400": "facebook/timesformer-base-finetuned-k400"},
    "vivit": {"kinetics400": "google/vivit-b-16x2-kinetics400"},
    "vjepa2": {"ssv2": "facebook/vjepa2-vitl-fpc16-256-ssv2"},
}

PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")
_PROCESSOR_KEYS = ("do_resize", "size", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
                   "do_normalize", "image_mean", "image_std", "offset", "num_frames", "do_sample_frames")
# config.json keys that describe the labels or the file, not the architecture.
_NOT_ARCHITECTURE = ("model_type", "architectures", "id2label", "label2id", "num_labels", "transformers_version",
                     "_name_or_path", "torch_dtype", "dtype")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
_NORM_TOLERANCE = 2e-3
# Model keys of a transformers checkpoint that vidzoo leaves out (V-JEPA 2's predictor).
_DROPPED = ("vjepa2.predictor.",)
_HUB_ID_RE = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?")
_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".h5")


@dataclass(frozen=True)
class Checkpoint:
    """Where a transformers checkpoint is: a directory, or a hub repo (at a revision) read
    through the Hugging Face cache (only the cache when `offline`)."""

    location: str
    revision: str | None = None
    local: bool = False
    offline: bool = True

    @classmethod
    def parse(cls, text: str) -> Checkpoint | None:
        """An existing directory, or ``ORG/NAME[@REVISION]`` as a hub id; None for anything
        else (a weights file name, a tag)."""
        path = Path(text).expanduser()
        if path.is_dir():
            return cls(str(path), local=True)
        match = _HUB_ID_RE.fullmatch(text)
        if match is None or text.lower().endswith(_FILE_SUFFIXES):
            return None
        return cls(match["repo"], match["revision"], offline=hf_hub_offline())

    def file(self, name: str, required: bool = True) -> Path | None:
        """The checkpoint's file `name`; None when it has none and it is not `required`."""
        if not self.local:
            return hf_hub_file(self.location, name, revision=self.revision, offline=self.offline, required=required)
        path = Path(self.location) / name
        if path.is_file():
            return path
        if required:
            raise WeightsNotFoundError(f"{self.location} has no {name}, so it is no transformers checkpoint directory "
                                       "(save_pretrained writes config.json and the weights)")
        return None

    def __str__(self) -> str:
        return self.location + (f"@{self.revision}" if self.revision else "")


def checkpoint_weights(model_type: str, location: str) -> Weights | None:
    """A transformers checkpoint of family `model_type` (a directory, a hub id
    ``ORG/NAME[@REVISION]``, or a tag of `HUB_TAGS`) as a `Weights` entry: its architecture config (``model_args``),
    its labels, and the clip description of its processor config (`checkpoint_clip`); the
    weights are read when they are loaded. None when `location` names no checkpoint.

    Raises WeightsNotFoundError when it cannot be found (offline: not in the cache) and
    UnknownWeightsError for a checkpoint of another family.
    """
    checkpoint = Checkpoint.parse(HUB_TAGS.get(model_type, {}).get(location, location))
    if checkpoint is None:
        return None
    try:
        config = _read_json(checkpoint.file("config.json"))
    except WeightsNotFoundError as err:
        if checkpoint.local:
            raise
        raise WeightsNotFoundError(f"{location} is no directory, so it was taken for a hub id: {err}") from None
    found = config.get("model_type")
    if found != model_type:
        hint = f"; load it with model {_VARIANT_OF[found]}" if found in _VARIANT_OF else ""
        raise UnknownWeightsError(f"{checkpoint} is a transformers {found!r} checkpoint, not {model_type!r}{hint}")
    processor = None
    for name in PROCESSOR_FILES:
        path = checkpoint.file(name, required=False)
        if path is not None:
            processor = _read_json(path)
            break
    architecture = {key: value for key, value in config.items() if key not in _NOT_ARCHITECTURE}
    canonical = None if checkpoint.local else CANONICAL_CHECKPOINTS.get(checkpoint.location)
    clip, warnings, notes = checkpoint_clip(model_type, architecture, processor, canonical=canonical)
    labels = config.get("id2label") or {}
    classes = tuple(str(labels[str(i)]) for i in range(len(labels))) if labels else None
    if classes and all(re.fullmatch(rf"LABEL_{i}", name) for i, name in enumerate(classes)):
        classes = None  # transformers' placeholders
    return Weights(
        fetch=functools.partial(_fetch_checkpoint, checkpoint),
        classes=classes,
        num_classes=len(labels) or config.get("num_labels"),
        clip=clip,
        model_args={"config": architecture},
        warnings=tuple(warnings),
        source=f"{checkpoint} (transformers {model_type} checkpoint)",
        notes=" ".join(notes),
        licence="as the checkpoint's model card states",
    )


def _read_json(path: Path | None) -> dict[str, Any]:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsMismatchError(f"{path}: not a readable JSON config: {err}") from None
    if not isinstance(value, dict):
        raise WeightsMismatchError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _fetch_checkpoint(checkpoint: Checkpoint, model: VideoClassifier, offline: bool) -> Fetched:
    """The checkpoint's state dict as transformers loads it (its renames of legacy keys
    applied), under the model's ``hf.`` prefix; anything transformers would silently
    initialise is an error here."""
    transformers = _transformers(f"loading {checkpoint}")
    offline = offline or checkpoint.offline
    try:
        with hf_offline(offline):
            hf, info = transformers.AutoModelForVideoClassification.from_pretrained(
                checkpoint.location, revision=checkpoint.revision, local_files_only=offline,
                cache_dir=None if checkpoint.local else str(hf_hub_cache()),
                output_loading_info=True, dtype=torch.float32,
            )
    except OSError as err:
        raise WeightsNotFoundError(f"transformers could not load {checkpoint}: {err}") from err
    missing = [key for key in info.get("missing_keys", ()) if not key.startswith(_DROPPED)]
    problems = {"missing (transformers would initialise them)": missing,
                "unexpected": list(info.get("unexpected_keys", ())),
                "mis-shaped": [str(key) for key in info.get("mismatched_keys", ())],
                "errors": [str(message) for message in info.get("error_msgs", ())]}
    if any(problems.values()):
        listed = "; ".join(f"{what}: {', '.join(sorted(keys))}" for what, keys in problems.items() if keys)
        raise WeightsMismatchError(f"{checkpoint}: the weights do not fit its own config: {listed}")
    state = {f"hf.{key}": value for key, value in hf.state_dict().items() if not key.startswith(_DROPPED)}
    weights_file = next(filter(None, (checkpoint.file(name, required=False) for name in _WEIGHT_FILES)), None)
    return Fetched(state, str(weights_file or checkpoint), file_sha256(weights_file) if weights_file else None)


# --------------------------------------------------------------------------- clip descriptions


def checkpoint_clip(
    model_type: str, config: Mapping[str, Any], processor: Mapping[str, Any] | None,
    canonical: Mapping[str, Any] | None = None,
) -> tuple[ClipSpec, list[str], list[str]]:
    """The clip description of a checkpoint: ``(clip, warnings, notes)``.

    Frames and size are the model config's (its position tables are sized to them); the
    processor config (`processor`, its class defaults filling the keys it leaves out) gives the
    resize and the normalisation, folded into vidzoo's ``(x / 255 - mean) / std``. Warned about:
    a processor that samples another frame count or makes another frame size than the model
    config's, a normalisation other than the family's documented one (the documented values are
    used), a resize other than the documented protocol's (`canonical`: a known hub checkpoint's),
    and no processor config at all. Transformers checkpoints store no frame stride or sampling:
    `canonical` gives them, else the family's documented stride is assumed (a note says so).
    """
    family = FAMILIES[model_type]
    transformers = _transformers(f"reading a {model_type} checkpoint")
    hf_config = transformers.AutoConfig.for_model(model_type, **config)
    frames = int(getattr(hf_config, family.frames_key))
    size = frame_size(getattr(hf_config, family.size_key))
    warnings: list[str] = []
    notes: list[str] = []
    resize_short = family.resize_short(max(size))
    processor_short = None
    norm = dict(family.norm)
    if processor is None:
        warnings.append(f"the checkpoint has no processor config ({' or '.join(PROCESSOR_FILES)}): the clip is "
                        f"the documented {model_type} preprocessing at the model's size")
    else:
        settings = _processor_settings(family, processor)
        sampled = settings.get("num_frames") if settings.get("do_sample_frames") else None
        if sampled is not None and int(sampled) != frames:
            warnings.append(f"the processor samples {sampled} frames, the model config has {frames}: "
                            f"using {frames}")
        made, short = _processor_geometry(family, settings)
        if made is not None and made != size:
            warnings.append(f"the processor makes {made[0]}x{made[1]} frames, the model config's size is "
                            f"{size[0]}x{size[1]}: using {size[0]}x{size[1]}")
        elif short is not None:
            resize_short = processor_short = short
        found = _processor_norm(family, settings)
        if not (_close(found["mean"], norm["mean"]) and _close(found["std"], norm["std"])):
            warnings.append(
                f"the processor normalises to mean {found['mean']} std {found['std']} (pixels in [0, 1]), not "
                f"the documented {model_type} mean {norm['mean']} std {norm['std']}: using the documented "
                "values (set the clip's norm to use the processor's)")
    values = {"frames": frames, "size": size, "resize_short": resize_short, "norm": norm,
              "frame_stride": family.frame_stride if family.sampling == "dense" else 1, "sampling": family.sampling}
    if canonical is not None:
        if processor_short is not None and processor_short != canonical["resize_short"]:
            warnings.append(f"the processor resizes the short side to {processor_short}, the documented protocol "
                            f"to {canonical['resize_short']}: using {canonical['resize_short']}")
        values.update({key: canonical[key] for key in ("frame_stride", "sampling", "resize_short", "clips_per_video",
                                                       "crops")})
        notes.append("Frame stride, sampling and views: the documented evaluation protocol of this checkpoint.")
    else:
        notes.append(f"Transformers checkpoints store no frame stride or sampling: {family.sampling} sampling"
                     + (f" every {values['frame_stride']} frames" if family.sampling == "dense" else "")
                     + f", the documented {model_type} protocol, is assumed.")
    return ClipSpec(**values), warnings, notes


def _processor_settings(family: _Family, saved: Mapping[str, Any]) -> dict[str, Any]:
    """The processor's settings: the saved ones over the defaults of its class."""
    transformers = _transformers("reading a processor config")
    for name in (saved.get("video_processor_type"), saved.get("image_processor_type"), family.processor):
        cls = getattr(transformers, name, None) if name else None
        if cls is not None:
            break
    defaults = {key: getattr(cls, key) for key in _PROCESSOR_KEYS
                if getattr(cls, key, None) is not None and not callable(getattr(cls, key))}
    return {**defaults, **{key: saved[key] for key in _PROCESSOR_KEYS if key in saved}, "class": cls.__name__}


def _hw(value: Any) -> tuple[int, int] | None:
    if isinstance(value, Mapping):
        return (int(value["height"]), int(value["width"])) if "height" in value and "width" in value else None
    return None if value is None else frame_size(value if isinstance(value, int) else tuple(value))


def _processor_geometry(family: _Family, settings: Mapping[str, Any]) -> tuple[tuple[int, int] | None, int | None]:
    """(the frame size the processor makes, the short side it resizes to first)."""
    size = settings.get("size")
    if family.model_type == "vjepa2":  # VJEPA2VideoProcessor derives its resize from the crop
        crop = _hw(settings.get("crop_size")) or (256, 256)
        return crop, int(crop[0] * 256 / 224)
    short = int(size["shortest_edge"]) if isinstance(size, Mapping) and "shortest_edge" in size else None
    made = _hw(settings.get("crop_size")) if settings.get("do_center_crop") else _hw(size)
    if made is not None and short is None:  # resized straight to the size: no crop
        short = max(made)
    return made, short


def _processor_norm(family: _Family, settings: Mapping[str, Any]) -> dict[str, list[float]]:
    """The processor's uint8 -> model input map as vidzoo's ``(x / 255 - mean) / std``."""
    rescale = float(settings.get("rescale_factor", 1 / 255)) if settings.get("do_rescale", True) else 1.0
    scale = 255.0 * rescale
    # ViViT's processors subtract 1 after rescaling (the video processor always, the image
    # processor when `offset`, its default).
    subtracts = family.model_type == "vivit" and settings.get("do_rescale", True) and (
        settings["class"] == "VivitVideoProcessor" or settings.get("offset", True))
    offset = 1.0 if subtracts else 0.0
    if settings.get("do_normalize", True):
        mean = [float(m) for m in settings.get("image_mean", [0.0] * 3)]
        std = [float(s) for s in settings.get("image_std", [1.0] * 3)]
    else:
        mean, std = [0.0] * 3, [1.0] * 3
    return {"mean": [round((m + offset) / scale, 6) for m in mean], "std": [round(s / scale, 6) for s in std]}


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= _NORM_TOLERANCE for x, y in zip(a, b))


# --------------------------------------------------------------------------- registered variants

_DESCRIPTIONS = {
    "videomae": "VideoMAE (transformers): ViT on 2x16x16 tubelets; --pretrained a hub id "
                "(MCG-NJU/videomae-base-finetuned-kinetics) or a save_pretrained folder",
    "timesformer": "TimeSformer (transformers): divided space-time attention; --pretrained a hub id "
                   "(facebook/timesformer-base-finetuned-k400) or a folder",
    "vivit": "ViViT (transformers): joint space-time attention on tubelets; --pretrained a hub id "
             "(google/vivit-b-16x2-kinetics400) or a folder",
    "vjepa2": "V-JEPA 2 (transformers): encoder + attentive pooler, any frame count; --pretrained a hub id "
              "(facebook/vjepa2-vitl-fpc16-256-ssv2) or a folder",
    "videoprism_vision_model": "VideoPrism (transformers): factorised space-time encoder; --pretrained a "
                               "save_pretrained folder",
}



def _tag_entry(model_type: str, tag: str, hub_id: str) -> Weights:
    """What ``vidzoo models --pretrained`` shows of a tag; loading reads the checkpoint itself
    (`checkpoint_weights`: its config.json and processor config)."""
    protocol = CANONICAL_CHECKPOINTS[hub_id]
    clip = ClipSpec(norm=dict(FAMILIES[model_type].norm),
                    **{key: protocol[key] for key in ("frames", "frame_stride", "sampling", "size", "resize_short",
                                                      "crops", "clips_per_video")})
    return Weights(
        fetch=functools.partial(_fetch_checkpoint, Checkpoint(hub_id, offline=False)),
        clip=clip, dataset=tag, source=f"{hub_id} (Hugging Face hub, through its cache)",
        licence="as the checkpoint's model card states",
        notes="read as its hub id is: the checkpoint's config.json sets the architecture and classes, its "
              "processor config is checked; frame stride and views are the documented protocol's",
    )


for _name, _model_type in VARIANTS.items():
    register_model(
        _name, HFVideoClassifier, fixed={"model_type": _model_type},
        test_args={"frames": 4, "size": 32, "config": dict(FAMILIES[_model_type].tiny)},
        weights={tag: _tag_entry(_model_type, tag, hub_id) for tag, hub_id in HUB_TAGS.get(_model_type, {}).items()},
        weights_from=functools.partial(checkpoint_weights, _model_type),
        description=_DESCRIPTIONS[_model_type],
    )

"""Model file names and the Moments in Time (MiT) zoo's architecture codes.

Both vidzoo and the MiT Keras zoo name a model file ``(arch)-(shape)-(classes)-(history)``::

    I3DIv1-32x224x224x3-339-ikm.h5        MiT zoo: I3D, 32 frames, ImageNet+Kinetics+MiT
    D169-224x224x3-339-im.h5              MiT zoo, 2D: no frame count
    c3d_bn-8x32x32x3-8-synthetic.safetensors   vidzoo (see model_file.default_model_filename)

The shape is channels last, (frames x) height x width x channels.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from types import MappingProxyType

# MiT zoo code -> vidzoo architecture. Plain strings: the architectures are registered by their
# family modules, and this table must not import them.
ALIASES: Mapping[str, str] = MappingProxyType({
    "C3D": "c3d",
    "D169": "c2d_densenet169",
    "D201": "c2d_densenet201",
    "I3DIv1": "i3d",
    "IRv2": "c2d_inception_resnet_v2",
    "IRv2avg": "c2d_inception_resnet_v2",
    "Iv3": "c2d_inception_v3",
    "LRCN": "lrcn",
    "M": "c2d_mobilenet_v1",
    "Mv2": "c2d_mobilenet_v2",
    "R50": "c2d_resnet50",
    "VGG16": "c2d_vgg16",
    "VGG19": "c2d_vgg19",
    "X": "c2d_xception",
})
# Codes whose name implies a clip length that a 2D-form file name does not carry.
ALIAS_FRAMES: Mapping[str, int] = MappingProxyType({"IRv2avg": 64})
# MiT zoo code -> the network it was built from: the Keras Applications class for the 2D (C2D)
# codes, the public Keras model for the others (see the zoo's README).
ZOO_BACKBONES: Mapping[str, str] = MappingProxyType({
    "C3D": "C3D",
    "D169": "DenseNet169",
    "D201": "DenseNet201",
    "I3DIv1": "I3D Inception-v1",
    "IRv2": "InceptionResNetV2",
    "IRv2avg": "InceptionResNetV2",
    "Iv3": "InceptionV3",
    "LRCN": "LRCN",
    "M": "MobileNet",
    "Mv2": "MobileNetV2",
    "R50": "ResNet50",
    "VGG16": "VGG16",
    "VGG19": "VGG19",
    "X": "Xception",
})
# Codes whose network reads clips (3D convolutions, a recurrent net): their names need a frame count.
CLIP_CODES = frozenset({"C3D", "I3DIv1", "LRCN"})

# MiT zoo history letters, in the order the training stages ran.
HISTORY_SOURCES: Mapping[str, str] = MappingProxyType(
    {"i": "ImageNet", "k": "Kinetics", "m": "Moments in Time"}
)

# File extensions stripped before parsing; other dots belong to the history field.
EXTENSIONS = (".h5", ".hdf5", ".keras", ".safetensors")

_VIDZOO_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")  # as the registry requires
_SHAPE_RE = re.compile(r"[0-9]+(?:x[0-9]+){2,3}")
_HISTORY_CODE_RE = re.compile(r"([ikm]+)(?![A-Za-z])")
# The zoo's README lists "LRCN-16x224x224x3-339-m6h5": "m.h5" with the dot mistyped as "6".
_MISTYPED_H5_RE = re.compile(r"([ikm]+)6h5")


@dataclass(frozen=True)
class ModelName:
    """A parsed model file name.

    Attributes:
        arch: the vidzoo architecture (``create_model`` name).
        alias: the MiT zoo code the name used, or None for a vidzoo name.
        frames: clip length, or None for a 2D-form name without one.
        height, width, channels: frame size.
        num_classes: classifier outputs.
        history: the training-history field (e.g. ``"ikm"``, ``"ucf101"``); for a MiT zoo code
            the README's mistyped ``"m6h5"`` (for ``"m.h5"``) reads as ``"m"``.
        history_sources: the datasets its leading MiT letters name, in order (e.g. ImageNet,
            Kinetics, Moments in Time for ``"ikm"``); empty when it does not start with them.
        backbone: for a MiT zoo code, the network it was built from (``"DenseNet169"`` for
            ``D169``: the Keras Applications class of a 2D code); None for a vidzoo name.
    """

    arch: str
    alias: str | None
    frames: int | None
    height: int
    width: int
    channels: int
    num_classes: int
    history: str
    history_sources: tuple[str, ...]
    backbone: str | None = None


def resolve_alias(name: str) -> str:
    """The vidzoo architecture for a MiT zoo code (``"I3DIv1"`` -> ``"i3d"``).

    A vidzoo name (lowercase, like ``"c3d_bn"``) is returned unchanged; whether it is
    registered is ``create_model``'s to check. Anything else raises ValueError.
    """
    if name in ALIASES:
        return ALIASES[name]
    if _VIDZOO_NAME_RE.fullmatch(name):
        return name
    close = difflib.get_close_matches(name, ALIASES, n=3)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"unknown architecture code {name!r}.{hint} MiT zoo codes: {', '.join(ALIASES)}; "
        "vidzoo names are lowercase letters, digits and '_'"
    )


def model_aliases(arch: str) -> list[str]:
    """The MiT zoo codes that resolve to ``arch``, e.g. ``["IRv2", "IRv2avg"]``."""
    return [code for code, target in ALIASES.items() if target == arch]


def parse_model_name(name: str | os.PathLike[str]) -> ModelName:
    """Parse a model file name (a path is fine; ``.h5``/``.safetensors``-style extensions are
    dropped) into architecture, clip shape, classes and training history.

    >>> parse_model_name("I3DIv1-32x224x224x3-339-ikm").arch
    'i3d'

    Raises ValueError for a name that is not ``(arch)-(shape)-(classes)-(history)``.
    """
    stem = PurePath(name).name
    for ext in EXTENSIONS:
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    fields = stem.split("-")
    if len(fields) != 4 or not all(fields):
        raise ValueError(
            f"model name {stem!r} must have four '-'-separated fields, "
            "(arch)-(frames x height x width x channels)-(classes)-(history), "
            "e.g. 'I3DIv1-32x224x224x3-339-ikm' or 'D169-224x224x3-339-im'"
        )
    code, shape, classes, history = fields
    try:
        arch = resolve_alias(code)
    except ValueError as e:
        raise ValueError(f"model name {stem!r}: {e}") from None
    if not _SHAPE_RE.fullmatch(shape):
        raise ValueError(
            f"shape field {shape!r} of {stem!r} must be TxHxWxC or, for 2D models, HxWxC "
            "(positive integers), e.g. '16x112x112x3'"
        )
    sizes = [int(s) for s in shape.split("x")]
    if not classes.isascii() or not classes.isdigit():
        raise ValueError(f"classes field {classes!r} of {stem!r} must be a positive integer")
    if 0 in sizes or int(classes) == 0:
        raise ValueError(f"sizes and class count in {stem!r} must be positive")
    if code in CLIP_CODES and len(sizes) == 3:
        raise ValueError(
            f"shape field {shape!r} of {stem!r} has no frame count, but {code} reads clips: "
            f"write it as TxHxWxC, e.g. '16x{shape}'"
        )
    frames = sizes.pop(0) if len(sizes) == 4 else ALIAS_FRAMES.get(code)
    height, width, channels = sizes
    mistyped = _MISTYPED_H5_RE.fullmatch(history) if code in ALIASES else None
    if mistyped:
        history = mistyped.group(1)
    letters = _HISTORY_CODE_RE.match(history)
    sources = tuple(HISTORY_SOURCES[c] for c in letters.group(1)) if letters else ()
    return ModelName(
        arch=arch,
        alias=code if code in ALIASES else None,
        frames=frames,
        height=height,
        width=width,
        channels=channels,
        num_classes=int(classes),
        history=history,
        history_sources=sources,
        backbone=ZOO_BACKBONES.get(code),
    )

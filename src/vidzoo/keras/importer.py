"""Import a Keras ``.h5`` model: read it, rebuild it as ``keras_graph``, copy the weights in, name
its classes, and save it as a vidzoo model file whose metadata says where it came from."""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from vidzoo.keras.config import strip_training_config
from vidzoo.keras.h5file import KerasFile, KerasImportError, read_keras_file
from vidzoo.keras.model import ARCH, KerasModel
from vidzoo.keras.weights_only import load_weights_only, mappable_archs
from vidzoo.model_file import read_model_metadata
from vidzoo.models._base import VideoClassifier
from vidzoo.models.factory import create_model, save_model
from vidzoo.models.names import parse_model_name

# The 339 Moments in Time v1 categories in the dataset authors' order, shipped with vidzoo: a public
# list from metalbubble/moments_models (category_momentsv1.txt at the parent of commit 659099e). The Keras zoo's own order may differ (see `resolve_classes`).
MIT_V1 = "mit-v1"
_MIT_V1_FILE = "category_momentsv1.txt"
INPUT_SCALING = "RGB in [0, 1], channels last, no per-backbone preprocess_input (the MiT zoo's input)"


def load_h5(
    path: str | os.PathLike[str],
    classes: str | os.PathLike[str] | Sequence[str] | None = None,
    *,
    arch: str | None = None,
    frames: int | None = None,
    size: int | Sequence[int] | None = None,
) -> VideoClassifier:
    """A Keras ``.h5`` model file as a vidzoo model (``keras_graph``; for a weights-only file, ``arch``), in eval mode.

    Args:
        path: a file written by Keras' ``model.save("x.h5")`` (tf.keras 2.x or Keras 3).
        classes: class names in output order: a list, a text file with one name per line,
            ``"mit-v1"`` for the Moments in Time v1 list shipped with vidzoo, or None for
            ``class_000``, ``class_001``, ... (the zoo recorded its order nowhere).
        arch: for a weights-only file (no ``model_config``, from ``save_weights``), the vidzoo
            architecture to map the weights onto (``mappable_archs()``: ``c3d``); the result is
            that vidzoo model (a ``c3d`` taking RGB in [0, 1]), not a ``keras_graph``.
        frames: clip length a frame (2D) model averages over by default (16); with ``arch``,
            the clip length the Keras model was built for (default: the architecture's, 16).
        size: with ``arch``, the frame size the Keras model was built for (default 112).

    The model's ``keras_source`` holds what ``save_h5_as_model_file`` writes to the metadata.
    Nothing in the file is executed; unknown layers and Lambdas are refused with their names.
    """
    keras_file = read_keras_file(path)
    if keras_file.model_config is None:
        if arch is None:
            raise _weights_only_error(keras_file.path)
        return _load_weights_only(keras_file, arch, classes, frames, size)
    if arch is not None or size is not None:
        given = ", ".join(f"{k}={v!r}" for k, v in (("arch", arch), ("size", size)) if v is not None)
        raise KerasImportError(f"{keras_file.path} holds its own architecture (model_config); {given} (--arch/--size) "
                               "apply only to a weights-only file: leave them out")
    kwargs: dict[str, Any] = {"model_config": strip_training_config(keras_file.model_config),
                              "keras_version": keras_file.keras_version or "2"}
    if frames is not None:
        kwargs["frames"] = frames
    model = create_model(ARCH, **kwargs)
    assert isinstance(model, KerasModel)
    try:
        model.graph.load_layer_weights(keras_file.weights)
    except KerasImportError as err:
        raise type(err)(f"{keras_file.path}: {err}") from err
    names, source = resolve_classes(classes, model.num_classes)
    model.classes = names
    model.keras_source = {
        **_source(keras_file, source),
        "keras_model": model.keras_name,
        "output": ("mean over frames of per-frame softmax; logits = log of it" if model.frame_mode and model.head.softmax
                   else "softmax; logits = the pre-softmax activations" if model.head.softmax else "the Keras output"),
    }
    return model.eval()


def import_h5(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    classes: str | os.PathLike[str] | Sequence[str] | None = None,
    *,
    arch: str | None = None,
    frames: int | None = None,
    size: int | Sequence[int] | None = None,
) -> Path:
    """``load_h5`` then save as a vidzoo model file: ``out``, or the ``.h5`` path with the
    suffix ``.safetensors``. Returns the path written."""
    path = Path(path)
    model = load_h5(path, classes, arch=arch, frames=frames, size=size)
    target = Path(out) if out is not None else path.with_suffix(".safetensors")
    return save_model(model, target, classes=model.classes, history=_history(path, model.keras_source),
                      extra={"keras": model.keras_source})


def import_summary(path: str | os.PathLike[str]) -> dict[str, str]:
    """What an imported model file says about its origin, one line per item (for the CLI)."""
    meta = read_model_metadata(path)
    keras = meta.get("extra", {}).get("keras", {})
    clip = meta["clip"]
    return {
        "source": f"{keras.get('source_file')} (sha256 {keras.get('source_sha256')}, Keras {keras.get('keras_version')})",
        "input": f"{clip['frames']}x{clip['size'][0]}x{clip['size'][1]}x{meta['in_chans']}, {keras.get('input_scaling')}",
        "classes": f"{len(meta['classes'])}, {keras.get('classes_source')}",
        "output": str(keras.get("output")),
    }


def resolve_classes(classes: str | os.PathLike[str] | Sequence[str] | None, num_classes: int) -> tuple[list[str], str]:
    """Class names for ``num_classes`` outputs and a line saying where they came from."""
    if classes is None:
        digits = max(3, len(str(num_classes - 1)))
        return [f"class_{i:0{digits}d}" for i in range(num_classes)], "placeholders class_000... (no --classes given)"
    if isinstance(classes, str) and classes == MIT_V1:
        names = resources.files("vidzoo.keras").joinpath(_MIT_V1_FILE).read_text(encoding="utf-8").splitlines()
        source = ("mit-v1: the Moments in Time v1 category list in its authors' order "
                  "(metalbubble/moments_models); the Keras zoo's own order may differ")
    elif isinstance(classes, (str, os.PathLike)):
        file = Path(classes)
        if not file.is_file():
            hint = f" Did you mean {MIT_V1!r}?" if difflib.get_close_matches(str(classes), [MIT_V1], n=1) else ""
            raise FileNotFoundError(f"class list {file}: no such file (give a text file, one name per line, or {MIT_V1!r}).{hint}")
        names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        source = f"file {file.name}"
    else:
        names, source = [str(name) for name in classes], "list given to load_h5"
    if len(names) != num_classes:
        raise ValueError(f"the class list ({source}) has {len(names)} names but the model has {num_classes} outputs")
    return names, source


def _history(path: Path, source: dict[str, Any]) -> dict[str, Any]:
    """The file name's training history (``ikm``, ``m``...) when it follows the zoo's convention."""
    name = "keras"
    try:
        parsed = parse_model_name(path.name)
        name = parsed.history or name
    except (ValueError, ImportError, AttributeError):
        pass
    return {"name": name, "imported_from": source["source_file"]}


def _load_weights_only(keras_file: KerasFile, arch: str, classes: str | os.PathLike[str] | Sequence[str] | None,
                       frames: int | None, size: int | Sequence[int] | None) -> VideoClassifier:
    """``load_h5`` of a weights-only file: the vidzoo ``arch`` model, named and described the same way."""
    model = load_weights_only(keras_file, arch, frames=frames, size=size)
    names, source = resolve_classes(classes, model.num_classes)
    model.classes = names
    model.keras_source = {
        **_source(keras_file, source),
        "input_scaling": f"{INPUT_SCALING}; assumed: a weights-only file does not record its input",
        "keras_model": f"weights only (save_weights), mapped onto vidzoo's {arch}",
        "output": "logits = the pre-softmax activations of the Keras output layer; their softmax is its output",
    }
    return model.eval()


def _source(keras_file: KerasFile, classes_source: str) -> dict[str, Any]:
    """The metadata every import records: the source file, its hash, the Keras that wrote it, the input
    scaling and where the class names came from."""
    return {"source_file": keras_file.path.name, "source_sha256": keras_file.sha256,
            "keras_version": keras_file.keras_version, "backend": keras_file.backend,
            "input_scaling": INPUT_SCALING, "classes_source": classes_source}


def _weights_only_error(path: Path) -> KerasImportError:
    return KerasImportError(
        f"{path} holds weights only (no model_config attribute: it was written by save_weights), so it does "
        "not say how to build the network; pass --arch (arch=) to name the vidzoo architecture to map it onto "
        f"({', '.join(mappable_archs())})"
    )

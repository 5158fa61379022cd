"""The Moments in Time zoo's 2D (C2D) models imported from Keras equal Keras itself.

Every C2D backbone of the zoo is built with Keras 3 as the zoo built it (tests/keras_zoo_builders.py),
saved as ``.h5``, rewritten into tf.keras 2.x's layout (tests/keras_legacy.py, by writing the HDF5
groups and attributes with h5py: the ``tf_keras`` package needs TensorFlow, which is not installed),
and imported with ``vidzoo.keras.load_h5``. Keras' own ``predict`` on fixed random inputs in [0, 1]
is the reference: the import must agree within 1e-4 of the output range.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import input_size
from keras_legacy import to_tf_keras2
from keras_zoo_builders import (
    C2D_BACKBONES,
    build_avg,
    build_c2d,
    clip_inputs,
    head_features,
    keras_logits,
    save_h5,
)
from typer.testing import CliRunner

from vidzoo.cli import app
from vidzoo.data.sources import load_source
from vidzoo.keras import KerasModel, load_h5
from vidzoo.model_file import read_model_metadata
from vidzoo.models import create_model, load_model
from vidzoo.models.names import parse_model_name
from vidzoo.train import read_metrics

# Keras' torch backend converts tensors with np.array(x), which NumPy 2 warns about on every call.
# One xdist worker runs all the tests (make test: --dist loadgroup): the Keras models are costly
# module fixtures, built once instead of once per worker.
pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
              pytest.mark.xdist_group("keras_zoo")]

LAYOUTS = ("keras3", "tf.keras2")
# Frames fed to each C2D model: vidzoo takes them as one clip, Keras as a batch of images.
FRAMES = 3
# keras_applications' InceptionResNetV2: 10 block35 (scale 0.17), 20 block17 (0.1), 10 block8
# (0.2, the last one 1.0), each a residual-scaling Lambda in tf.keras 2.x.
IRV2_LAMBDA_SCALES = [0.17] * 10 + [0.1] * 20 + [0.2] * 9 + [1.0]


def assert_close_to_keras(got: np.ndarray, want: np.ndarray) -> None:
    """The issue's bar: max abs difference <= 1e-4 of the range of Keras' output."""
    assert got.shape == want.shape
    tolerance = 1e-4 * float(want.max() - want.min())
    diff = float(np.abs(got - want).max())
    assert diff <= tolerance, f"max abs difference {diff:.3g} > {tolerance:.3g} (1e-4 of Keras' output range)"


def as_clip(frames: np.ndarray) -> torch.Tensor:
    """Keras images (N, H, W, C) -> one vidzoo clip (1, C, N, H, W)."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).unsqueeze(0)


def as_single_frames(frames: np.ndarray) -> torch.Tensor:
    """Keras images (N, H, W, C) -> N one-frame vidzoo clips (N, C, 1, H, W)."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).unsqueeze(2)


def _text(value: bytes | str) -> str:
    """An HDF5 string attribute: h5py gives bytes or str depending on how it was written."""
    return value.decode() if isinstance(value, bytes) else value


# --------------------------------------------------------------------------- the C2D backbones


@dataclass(frozen=True)
class C2DCase:
    """One zoo C2D model saved in both layouts, with Keras' answers on fixed frames."""

    code: str
    files: dict[str, Path]
    frames: np.ndarray  # (FRAMES, S, S, 3) in [0, 1]
    probs: np.ndarray  # Keras predict: per-frame softmax
    logits: np.ndarray  # Keras' pre-softmax activations
    features: np.ndarray  # Keras' global-average-pooled backbone features


@pytest.fixture(scope="module", params=list(C2D_BACKBONES))
def c2d(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[C2DCase]:
    # Module scope with params: pytest runs every test of one backbone before building the next,
    # so one Keras model and its files (up to 200 MB for IRv2) exist at a time.
    code = request.param
    folder = tmp_path_factory.mktemp(code)
    model = build_c2d(code, num_classes=5)
    size = C2D_BACKBONES[code].size
    frames = clip_inputs((FRAMES, size, size, 3))
    keras3 = save_h5(model, folder / f"{code}-{size}x{size}x3-5-im.h5")
    case = C2DCase(
        code=code,
        files={"keras3": keras3, "tf.keras2": to_tf_keras2(keras3, folder / f"{code}-{size}x{size}x3-5-im-tf2.h5")},
        frames=frames,
        probs=model.predict(frames, verbose=0),
        logits=keras_logits(model, frames),
        features=head_features(model, frames),
    )
    del model
    yield case
    for path in case.files.values():
        path.unlink()


@pytest.fixture(scope="module", params=LAYOUTS)
def imported(request: pytest.FixtureRequest, c2d: C2DCase) -> KerasModel:
    return load_h5(c2d.files[request.param])


def test_c2d_import_gives_keras_probabilities(c2d: C2DCase, imported: KerasModel) -> None:
    with torch.no_grad():
        probs = imported.predict_proba(as_single_frames(c2d.frames))
    assert_close_to_keras(probs.numpy(), c2d.probs)


def test_c2d_import_logits_are_the_log_of_keras_probabilities(c2d: C2DCase, imported: KerasModel) -> None:
    # A frame model's logits are log(mean over frames of the softmax); for one frame that is the
    # log-softmax of Keras' pre-softmax activations, compared here in log space where small
    # probabilities are not lost.
    with torch.no_grad():
        logits = imported(as_single_frames(c2d.frames)).numpy()
    shifted = c2d.logits - c2d.logits.max(axis=1, keepdims=True)
    assert_close_to_keras(logits, shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))


def test_c2d_import_pre_logits_are_keras_pooled_features(c2d: C2DCase, imported: KerasModel) -> None:
    with torch.no_grad():
        feats = imported.forward_head(imported.forward_features(as_single_frames(c2d.frames)), pre_logits=True)
    assert feats.shape == (FRAMES, imported.num_features)
    assert_close_to_keras(feats.numpy(), c2d.features)


def test_c2d_import_averages_the_per_frame_softmax_over_a_clip(c2d: C2DCase, imported: KerasModel) -> None:
    with torch.no_grad():
        probs = imported.predict_proba(as_clip(c2d.frames))
    assert_close_to_keras(probs.numpy(), c2d.probs.mean(axis=0, keepdims=True))


def test_c2d_legacy_file_is_in_the_tf_keras2_layout(c2d: C2DCase) -> None:
    with h5py.File(c2d.files["tf.keras2"], "r") as f:
        config = json.loads(f.attrs["model_config"])
        weight_names = [
            _text(name) for layer in f["model_weights"].values() for name in layer.attrs["weight_names"]
        ]
        version = _text(f.attrs["keras_version"])
    assert version == "2.2.4-tf"
    assert config["class_name"] == "Model"
    assert weight_names and all(name.endswith(":0") for name in weight_names)
    layers = config["config"]["layers"]
    scales = [layer["config"]["arguments"]["scale"] for layer in layers if layer["class_name"] == "Lambda"]
    assert scales == (IRV2_LAMBDA_SCALES if c2d.code == "IRv2" else [])
    assert "CustomScaleLayer" not in {layer["class_name"] for layer in layers}


def test_a_changed_bn_statistic_moves_the_output_past_the_tolerance(tmp_path: Path) -> None:
    # The equality bar is not vacuous: one BatchNormalization moving mean off by 0.1 deep in the
    # network (MobileNet's last block) must fail assert_close_to_keras.
    model = build_c2d("M", num_classes=5)
    frames = clip_inputs((FRAMES, 32, 32, 3))
    want = model.predict(frames, verbose=0)
    path = save_h5(model, tmp_path / "M.h5")
    with h5py.File(path, "r+") as f:
        group = f["model_weights/conv_pw_13_bn"]
        name = next(n for n in map(_text, group.attrs["weight_names"]) if n.endswith("moving_mean"))
        group[name][...] = group[name][...] + 0.1
    with torch.no_grad():
        got = load_h5(path).predict_proba(as_single_frames(frames)).numpy()
    with pytest.raises(AssertionError, match="max abs difference"):
        assert_close_to_keras(got, want)


# --------------------------------------------------------------------------- the "avg" wrapper


@dataclass(frozen=True)
class AvgCase:
    files: dict[str, Path]
    clips: np.ndarray  # (2, T, S, S, 3)
    probs: np.ndarray  # Keras predict on the clips


@pytest.fixture(scope="module")
def irv2_avg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AvgCase]:
    """The zoo's IRv2avg construction at 75 px and 4 frames (64 in the zoo)."""
    folder = tmp_path_factory.mktemp("irv2avg")
    model = build_avg(build_c2d("IRv2", num_classes=5), frames=4)
    clips = clip_inputs((2, 4, 75, 75, 3), seed=3)
    keras3 = save_h5(model, folder / "IRv2avg-4x75x75x3-5-ikm.h5")
    case = AvgCase({"keras3": keras3, "tf.keras2": to_tf_keras2(keras3, folder / "IRv2avg-tf2.h5")},
                   clips, model.predict(clips, verbose=0))
    del model
    yield case
    for path in case.files.values():
        path.unlink()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_avg_wrapper_import_gives_keras_probabilities(irv2_avg: AvgCase, layout: str) -> None:
    model = load_h5(irv2_avg.files[layout])
    assert (model.frame_mode, input_size(model.default_cfg)) == (True, (4, 75, 75))
    with torch.no_grad():
        probs = model.predict_proba(torch.from_numpy(irv2_avg.clips).permute(0, 4, 1, 2, 3))
    assert_close_to_keras(probs.numpy(), irv2_avg.probs)


def test_avg_wrapper_legacy_file_nests_the_frame_model_under_the_wrapper(irv2_avg: AvgCase) -> None:
    # tf.keras 2.x: the wrapped model's weights live in the TimeDistributed layer's group, named
    # by the inner layers (time_distributed/conv2d_1/kernel:0 as weight name conv2d_1/kernel:0).
    with h5py.File(irv2_avg.files["tf.keras2"], "r") as f:
        group = f["model_weights/time_distributed"]
        names = [_text(name) for name in group.attrs["weight_names"]]
        config = json.loads(f.attrs["model_config"])
    assert len(names) > 100 and all(name.endswith(":0") and name.count("/") == 1 for name in names)
    inner = config["config"]["layers"][1]["config"]["layer"]
    scales = [layer["config"]["arguments"]["scale"] for layer in inner["config"]["layers"]
              if layer["class_name"] == "Lambda"]
    assert scales == IRV2_LAMBDA_SCALES


# --------------------------------------------------------------------------- import-keras and fine-tuning


@pytest.fixture(scope="module")
def zoo_named_import(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """A MobileNet zoo model saved under a zoo-style name and imported with `vidzoo import-keras`:
    (the .h5, the model file written, the class names given)."""
    folder = tmp_path_factory.mktemp("zoo_named")
    h5 = save_h5(build_c2d("M", num_classes=5), folder / "M-32x32x3-5-im.h5")
    classes = ["abseiling", "baking", "clapping", "diving", "eating"]
    (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    result = CliRunner().invoke(app, ["import-keras", str(h5), "--classes", str(folder / "classes.txt")])
    assert result.exit_code == 0, result.output
    return h5, folder / "M-32x32x3-5-im.safetensors", classes


def test_import_keras_metadata_agrees_with_the_zoo_file_name(zoo_named_import) -> None:
    h5, model_file, classes = zoo_named_import
    meta = read_model_metadata(model_file)
    name = parse_model_name(h5)
    assert (*meta["clip"]["size"], meta["in_chans"]) == (
        name.height, name.width, name.channels
    )
    assert len(meta["classes"]) == name.num_classes and meta["classes"] == classes
    assert meta["history"]["name"] == name.history == "im"
    keras = meta["extra"]["keras"]
    assert keras["source_file"] == h5.name
    assert keras["source_sha256"] == hashlib.sha256(h5.read_bytes()).hexdigest()
    assert "[0, 1]" in keras["input_scaling"] and keras["classes_source"] == "file classes.txt"


def test_imported_model_file_loads_back_to_the_imported_model(zoo_named_import) -> None:
    h5, model_file, _ = zoo_named_import
    frames = clip_inputs((2, 32, 32, 3), seed=5)
    with torch.no_grad():
        want = load_h5(h5).predict_proba(as_clip(frames))
        got = load_model(model_file).eval().predict_proba(as_clip(frames))
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def _head_keys(model: KerasModel) -> set[str]:
    """The state-dict keys of the classifier."""
    prefix = next(name for name, module in model.named_modules() if module is model.get_classifier())
    return {key for key in model.state_dict() if key.startswith(prefix + ".")}


def test_fine_tuning_from_an_imported_file_replaces_the_head(zoo_named_import) -> None:
    _, model_file, _ = zoo_named_import
    kwargs = {k: v for k, v in read_model_metadata(model_file)["model_args"].items() if k != "num_classes"}
    model = create_model("keras_graph", pretrained=str(model_file), num_classes=8, **kwargs)
    head = _head_keys(model)
    assert model.num_classes == 8 and model.get_classifier().weight.shape[0] == 8
    assert set(model.load_report.skipped_head) == head and len(head) == 2  # weight and bias
    assert len(model.load_report.loaded) == len(model.state_dict()) - len(head)


def test_vidzoo_train_fine_tunes_an_imported_file(zoo_named_import, dataset: Path, tmp_path: Path) -> None:
    _, model_file, _ = zoo_named_import
    result = CliRunner().invoke(app, [
        "train", "--model", "keras_graph", "--pretrained", str(model_file),
        "--data", str(dataset / "train.csv"), "--val", str(dataset / "val.csv"),
        "--frames", "4", "--size", "32", "--epochs", "1", "--batch-size", "4", "--lr", "1e-3",
        "--workers", "0", "--out", str(tmp_path / "run"),
    ])
    assert result.exit_code == 0, result.output
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert len(rows) == 1 and math.isfinite(rows[0]["train_loss"]) and math.isfinite(rows[0]["val_loss"])
    (trained_file,) = (tmp_path / "run").glob("keras_graph-*.safetensors")
    start = load_model(model_file).state_dict()
    trained = load_model(trained_file)
    assert trained.classes == load_source(dataset / "train.csv").classes
    assert trained.get_classifier().weight.shape[0] == 8
    after = trained.state_dict()
    head = _head_keys(trained)
    backbone = [k for k in start if k not in head]
    assert backbone == [k for k in after if k not in head]
    # The backbone started from the imported weights and was trained: every tensor is near its
    # imported value (a fresh initialisation would not be), and some moved.
    drift = {k: float((after[k] - start[k]).abs().max()) for k in backbone}
    assert all(drift[k] <= 0.1 * float(start[k].abs().max()) + 1e-3 for k in backbone), drift
    assert any(d > 0 for d in drift.values())

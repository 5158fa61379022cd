"""vidzoo.keras with --arch: a weights-only Keras C3D .h5 (``save_weights``, no model_config) mapped
onto vidzoo's ``c3d`` gives Keras' own predictions; the CLI writes a model file that loads back the
same; mismatched files and unmappable architectures are refused with the layers named.

The Keras C3D is tests/test_keras_import.py's (the widely used Sequential conv1...fc8 with
ZeroPadding3D before pool5) at 1/16 of the channels, which is vidzoo's ``width=0.0625``. Its
weights-only file is written from the tf.keras 2.x layout (tests/keras_legacy.py) the way tf.keras
2.x ``save_weights`` does: the layer groups at the root with ``layer_names``, no model_config.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import h5py
import keras
import numpy as np
import pytest
import torch
from conftest import input_size
from keras_legacy import to_tf_keras2
from test_keras_import import built, c3d, inputs, to_clip
from typer.testing import CliRunner

from vidzoo.cli import app
from vidzoo.keras import KerasImportError, KerasWeightError, load_h5
from vidzoo.model_file import read_model_metadata
from vidzoo.models import load_model
from vidzoo.models.c3d import C3D

runner = CliRunner()
AUTOMATIC_NAMES = {"conv1": "conv3d", "conv2": "conv3d_1", "conv3a": "conv3d_2", "conv3b": "conv3d_3",
                   "conv4a": "conv3d_4", "conv4b": "conv3d_5", "conv5a": "conv3d_6", "conv5b": "conv3d_7",
                   "fc6": "dense", "fc7": "dense_1", "fc8": "dense_2"}


def save_weights_tf_keras2(full_tf2: Path, dst: Path, rename: dict[str, str] | None = None) -> Path:
    """``dst``: what tf.keras 2.x ``model.save_weights("x.h5")`` writes for the model in the tf.keras 2.x
    full-model file ``full_tf2``: every layer group at the root, root ``layer_names`` / ``keras_version`` /
    ``backend`` attributes, no model_config. ``rename`` renames layers (groups and weight names)."""
    rename = rename or {}
    with h5py.File(full_tf2, "r") as src, h5py.File(dst, "w") as out:
        weights = src["model_weights"]
        names = [n.decode() for n in weights.attrs["layer_names"]]
        for name in names:
            new = rename.get(name, name)
            group = out.create_group(new)
            weight_names = []
            for weight in (w.decode() for w in weights[name].attrs["weight_names"]):
                renamed = weight.replace(f"{name}/", f"{new}/", 1)
                group.create_dataset(renamed, data=weights[name][weight][()])
                weight_names.append(renamed.encode())
            group.attrs["weight_names"] = np.array(weight_names, dtype="S") if weight_names else np.array([], dtype="S1")
        out.attrs["layer_names"] = np.array([rename.get(n, n).encode() for n in names], dtype="S")
        out.attrs["keras_version"] = weights.attrs["keras_version"]
        out.attrs["backend"] = weights.attrs["backend"]
    return dst


@pytest.fixture(scope="module")
def keras_c3d(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, Path, Path]:
    """The standard 16x112x112 Keras C3D at 1/16 width: (model, its tf.keras 2.x full file, weights-only file)."""
    folder = tmp_path_factory.mktemp("keras_c3d")
    model = built(lambda: c3d(num_classes=7, frames=16, size=112, width=16), seed=3)
    model.save(folder / "c3d.h5")
    full = to_tf_keras2(folder / "c3d.h5", folder / "c3d-tf2.h5")
    return model, full, save_weights_tf_keras2(full, folder / "c3d-weights.h5")


@pytest.fixture(scope="module")
def clips(keras_c3d) -> tuple[np.ndarray, np.ndarray]:
    """Fixed random clips in [0, 1] (Keras layout) and Keras' own predictions on them."""
    x = inputs((2, 16, 112, 112, 3), seed=5)
    return x, keras_c3d[0].predict(x, verbose=0)


def assert_close(probs: torch.Tensor, expected: np.ndarray) -> None:
    got = probs.detach().numpy()
    assert got.shape == expected.shape
    diff = np.abs(got - expected).max()
    assert diff <= 1e-4 * np.ptp(expected), f"max abs diff {diff} vs output range {np.ptp(expected)}"


def probabilities(model: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(to_clip(x)), dim=-1)


# --------------------------------------------------------------------------- equality


def test_weights_only_c3d_is_vidzoo_c3d_with_keras_predictions(keras_c3d, clips) -> None:
    _, _, weights = keras_c3d
    model = load_h5(weights, arch="c3d")
    assert isinstance(model, C3D) and model.default_cfg.arch == "c3d" and not model.training
    assert input_size(model.default_cfg) == (16, 112, 112) and model.num_classes == 7
    assert model.default_cfg.clip.norm == {"scale": [0.0, 1.0]}
    assert model.model_args["width"] == 4 / 64
    assert_close(probabilities(model, clips[0]), clips[1])


def test_keras3_file_without_model_config_maps_the_same(keras_c3d, clips, tmp_path: Path) -> None:
    path = tmp_path / "keras3-weights.h5"
    path.write_bytes((keras_c3d[1].parent / "c3d.h5").read_bytes())
    with h5py.File(path, "a") as f:
        del f.attrs["model_config"]
    assert_close(probabilities(load_h5(path, arch="c3d"), clips[0]), clips[1])


def test_keras_automatic_layer_names_are_mapped_by_order(keras_c3d, clips, tmp_path: Path) -> None:
    path = save_weights_tf_keras2(keras_c3d[1], tmp_path / "auto.h5", rename=AUTOMATIC_NAMES)
    with h5py.File(path, "r") as f:
        assert "conv1" not in f and "conv3d_7" in f and "dense_2/dense_2/kernel:0" in f
    assert_close(probabilities(load_h5(path, arch="c3d"), clips[0]), clips[1])


def test_a_smaller_clip_is_refused_until_its_size_is_given(tmp_path: Path) -> None:
    model = built(lambda: c3d(num_classes=3, frames=16, size=32, width=16), seed=4)
    model.save(tmp_path / "small.h5")
    weights = save_weights_tf_keras2(to_tf_keras2(tmp_path / "small.h5", tmp_path / "small-tf2.h5"), tmp_path / "w.h5")
    with pytest.raises(KerasWeightError, match=r"fc6 kernel \(32, 256\): vidzoo's c3d needs \(512, 256\) .*"
                                               r"32 channels x 1x4x4 for a 16x112x112 clip; the file's fc6 fits 16x16x16"):
        load_h5(weights, arch="c3d")
    x = inputs((2, 16, 32, 32, 3), seed=6)
    imported = load_h5(weights, arch="c3d", frames=16, size=32)
    assert input_size(imported.default_cfg) == (16, 32, 32)
    assert_close(probabilities(imported, x), model.predict(x, verbose=0))


# --------------------------------------------------------------------------- CLI and model file


def test_cli_import_keras_arch_c3d_writes_a_model_file_with_the_same_outputs(keras_c3d, clips, tmp_path: Path) -> None:
    _, _, weights = keras_c3d
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(f"action_{i}" for i in range(7)))
    out = tmp_path / "c3d.safetensors"
    result = runner.invoke(app, ["import-keras", str(weights), "--arch", "c3d", "--classes", str(names), "--out", str(out)])
    assert result.exit_code == 0, result.output
    meta = read_model_metadata(out)
    assert meta["arch"] == "c3d" and meta["classes"][:2] == ["action_0", "action_1"]
    assert meta["clip"]["norm"] == {"scale": [0.0, 1.0]} and meta["clip"]["frames"] == 16
    source = meta["extra"]["keras"]
    assert source["source_file"] == weights.name
    assert source["source_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert source["classes_source"] == "file classes.txt"
    assert "[0, 1]" in source["input_scaling"] and "assumed" in source["input_scaling"]
    assert "mapped onto vidzoo's c3d" in source["keras_model"]
    loaded = load_model(out)
    assert isinstance(loaded, C3D) and loaded.default_cfg.clip.norm == {"scale": [0.0, 1.0]}
    assert_close(probabilities(loaded, clips[0]), clips[1])
    assert torch.equal(probabilities(loaded, clips[0]), probabilities(load_h5(weights, arch="c3d"), clips[0]))


# --------------------------------------------------------------------------- refusals


def test_weights_only_without_arch_is_refused_naming_the_mappable_archs(keras_c3d) -> None:
    with pytest.raises(KerasImportError, match=r"holds weights only .* pass --arch .* \(c3d\)"):
        load_h5(keras_c3d[2])


@pytest.mark.parametrize("arch", ["i3d", "c3d_bn", "keras_graph"])
def test_an_arch_that_cannot_be_mapped_lists_those_that_can(keras_c3d, arch: str) -> None:
    with pytest.raises(KerasImportError, match=f"onto the vidzoo architecture '{arch}' is not available "
                                               r"\(it can be mapped onto: c3d\)"):
        load_h5(keras_c3d[2], arch=arch)


def test_an_unknown_arch_gets_a_did_you_mean(keras_c3d) -> None:
    with pytest.raises(ValueError, match="unknown model 'c3dd'. Did you mean 'c3d'"):
        load_h5(keras_c3d[2], arch="c3dd")


def test_cli_refusal_is_a_plain_error(keras_c3d) -> None:
    result = runner.invoke(app, ["import-keras", str(keras_c3d[2]), "--arch", "i3d"])
    assert result.exit_code == 2 and "it can be mapped onto: c3d" in result.output


def test_arch_for_a_full_model_file_is_refused(keras_c3d) -> None:
    with pytest.raises(KerasImportError, match=r"c3d-tf2\.h5 holds its own architecture \(model_config\); arch='c3d'"):
        load_h5(keras_c3d[1], arch="c3d")


def test_a_renamed_conv_layer_is_named(keras_c3d, tmp_path: Path) -> None:
    path = save_weights_tf_keras2(keras_c3d[1], tmp_path / "renamed.h5", rename={"conv3b": "conv3b_new"})
    with pytest.raises(KerasWeightError, match=r"renamed\.h5: the layers with weights do not match vidzoo's c3d .*"
                                               r"missing conv3b; unexpected conv3b_new \(is 'conv3b_new' 'conv3b'\?\)"):
        load_h5(path, arch="c3d")


def test_a_missing_conv_layer_is_named(keras_c3d, tmp_path: Path) -> None:
    path = save_weights_tf_keras2(keras_c3d[1], tmp_path / "missing.h5")
    with h5py.File(path, "a") as f:
        del f["conv4a"]
        f.attrs["layer_names"] = np.array([n for n in f.attrs["layer_names"] if n != b"conv4a"], dtype="S")
    with pytest.raises(KerasWeightError, match="missing conv4a; unexpected none"):
        load_h5(path, arch="c3d")


def test_automatic_names_with_a_layer_too_few_are_refused(keras_c3d, tmp_path: Path) -> None:
    path = save_weights_tf_keras2(keras_c3d[1], tmp_path / "auto.h5", rename=AUTOMATIC_NAMES)
    with h5py.File(path, "a") as f:
        del f["conv3d_3"]
        f.attrs["layer_names"] = np.array([n for n in f.attrs["layer_names"] if n != b"conv3d_3"], dtype="S")
    with pytest.raises(KerasWeightError, match=r"it has 10 layers with weights where c3d has 11, .* conv3d_2 \[kernel \(3, 3, 3, 8, 16\)"):
        load_h5(path, arch="c3d")


def test_wrong_fc6_and_conv_shapes_are_all_named(keras_c3d, tmp_path: Path) -> None:
    path = save_weights_tf_keras2(keras_c3d[1], tmp_path / "misshaped.h5")
    with h5py.File(path, "a") as f:
        del f["fc6/fc6/kernel:0"]
        f["fc6/fc6"].create_dataset("kernel:0", data=np.zeros((500, 256), "float32"))
        del f["conv2/conv2/bias:0"]
        f["conv2/conv2"].create_dataset("bias:0", data=np.zeros(9, "float32"))
    with pytest.raises(KerasWeightError) as info:
        load_h5(path, arch="c3d")
    message = str(info.value)
    assert "2 weight(s) do not fit vidzoo's c3d (width 0.0625" in message
    assert "conv2 bias (9,): vidzoo's c3d needs (8,)" in message
    assert "fc6 kernel (500, 256): vidzoo's c3d needs (512, 256)" in message
    assert "32 channels x 1x4x4 for a 16x112x112 clip; the file's fc6 fits no square frame size" in message


def test_a_layer_with_the_wrong_weights_is_named(keras_c3d, tmp_path: Path) -> None:
    path = save_weights_tf_keras2(keras_c3d[1], tmp_path / "nobias.h5")
    with h5py.File(path, "a") as f:
        del f["fc7/fc7/bias:0"]
        f["fc7"].attrs["weight_names"] = np.array([b"fc7/kernel:0"], dtype="S")
    with pytest.raises(KerasWeightError, match=r"fc7 has \[kernel \(256, 256\)\]; it needs a 2-d kernel and a bias"):
        load_h5(path, arch="c3d")

"""vidzoo.keras: Keras .h5 models rebuilt in PyTorch equal Keras' own predictions, in both the
Keras 3 and the tf.keras 2.x file layouts; refusals; the import-keras CLI; model-file round trip.

Reference outputs come from Keras 3 itself (torch backend, no TensorFlow) on fixed random inputs;
the tf.keras 2.x files are the same models rewritten by tests/keras_legacy.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import h5py
import keras
import numpy as np
import pytest
import torch
from conftest import input_size
from keras import layers, ops
from keras_legacy import to_tf_keras2
from typer.testing import CliRunner

from vidzoo.cli import app
from vidzoo.keras import KerasImportError, KerasWeightError, load_h5
from vidzoo.model_file import read_model_metadata
from vidzoo.models import load_model, save_model

LAYOUTS = ("keras3", "tf_keras2")
MIT_V1 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mit" / "category_momentsv1.txt"
runner = CliRunner()


# --------------------------------------------------------------------------- helpers


def k2_hard_sigmoid(x):
    """Keras 2's hard_sigmoid, for building in Keras 3 the reference of a tf.keras 2.x LRCN."""
    return ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def randomize(model: keras.Model, seed: int) -> keras.Model:
    """Non-trivial biases and BatchNorm parameters/statistics (kernels keep Keras' seeded init)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        kind = w.path.rsplit("/", 1)[-1]
        if kind in ("moving_variance", "gamma"):
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        elif kind in ("bias", "beta", "moving_mean"):
            w.assign(rng.normal(0.0, 0.2, w.shape).astype("float32"))
    return model


def to_clip(x: np.ndarray) -> torch.Tensor:
    """Keras' (B, T, H, W, C) or a frame batch (B, H, W, C) as vidzoo's (B, C, T, H, W)."""
    t = torch.from_numpy(x)
    return t.permute(0, 4, 1, 2, 3) if t.ndim == 5 else t.permute(0, 3, 1, 2).unsqueeze(2)


def saved(model: keras.Model, folder: Path, layout: str, name: str = "model", **legacy) -> Path:
    path = folder / f"{name}.h5"
    model.save(path)
    if layout == "keras3":
        return path
    return to_tf_keras2(path, folder / f"{name}-tf2.h5", **legacy)


def assert_matches_keras(model: keras.Model, x: np.ndarray, path: Path, expected: np.ndarray | None = None) -> None:
    expected = model.predict(x, verbose=0) if expected is None else expected
    imported = load_h5(path)
    with torch.no_grad():
        got = imported.predict_proba(to_clip(x)).numpy()
    assert got.shape == expected.shape
    diff = np.abs(got - expected).max()
    assert diff <= 1e-4 * (expected.max() - expected.min()), f"max abs diff {diff} vs output range {np.ptp(expected)}"


def inputs(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


# --------------------------------------------------------------------------- models


def conv2d_zoo() -> keras.Model:
    """A frame model with every 2D layer type, an SE block and two global pools."""
    inp = keras.Input((11, 11, 3))
    x = layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="conv")(inp)
    x = layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2, padding="same", name="dw")(x)
    x = layers.BatchNormalization(center=False, epsilon=1e-5, name="bn")(x)
    x = layers.ReLU(max_value=6.0, name="relu6")(x)
    x = layers.SeparableConv2D(8, 3, padding="same", name="sep")(x)
    x = layers.ZeroPadding2D(((1, 0), (0, 1)), name="pad")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="maxpool")(x)
    x = layers.AveragePooling2D(2, strides=1, padding="same", name="avgpool")(x)
    squeeze = layers.GlobalAveragePooling2D(name="squeeze")(x)
    excite = layers.Dense(8, activation="sigmoid", name="excite")(squeeze)
    x = layers.Multiply(name="scale")([x, layers.Reshape((1, 1, 8), name="reshape")(excite)])
    x = layers.Add(name="add")([x, layers.Activation("tanh", name="tanh")(x)])
    x = layers.Concatenate(name="concat")([layers.GlobalMaxPooling2D(name="gmp")(x), layers.GlobalAveragePooling2D(name="gap")(x)])
    x = layers.Dropout(0.5, name="drop")(x)
    out = layers.Dense(5, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="conv2d_zoo")


def conv3d_zoo() -> keras.Model:
    """A clip model: 3D convs/pools with same and valid padding, zero padding, a residual Add,
    channels-last Flatten into Dense, a separate softmax Activation."""
    inp = keras.Input((5, 9, 9, 3))
    x = layers.Conv3D(4, 3, strides=2, padding="same", use_bias=False, name="conv1")(inp)
    x = layers.BatchNormalization(scale=False, name="bn1")(x)
    x = layers.Activation("elu", name="elu")(x)
    x = layers.MaxPooling3D((1, 3, 3), strides=(1, 2, 2), padding="same", name="pool1")(x)
    y = layers.Conv3D(4, (2, 1, 1), padding="same", name="conv2")(x)
    x = layers.Add(name="residual")([x, y])
    x = layers.ZeroPadding3D(((0, 0), (0, 1), (0, 1)), name="pad")(x)
    x = layers.AveragePooling3D(2, strides=1, name="avg")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(7, name="logits")(x)
    out = layers.Activation("softmax", name="softmax")(x)
    return keras.Model(inp, out, name="conv3d_zoo")


def recurrent_zoo() -> keras.Model:
    """A TimeDistributed whole model into LSTM (backwards) and GRUs, pooled over time."""
    frame = keras.Sequential([keras.Input((6, 6, 3)), layers.Conv2D(4, 3, name="fconv"),
                              layers.BatchNormalization(name="fbn"), layers.GlobalAveragePooling2D(name="fpool")],
                             name="frame")
    inp = keras.Input((5, 6, 6, 3))
    x = layers.TimeDistributed(frame, name="per_frame")(inp)
    x = layers.LSTM(8, return_sequences=True, go_backwards=True, name="lstm")(x)
    x = layers.GRU(6, return_sequences=True, name="gru_after")(x)
    x = layers.GRU(6, return_sequences=True, reset_after=False, activation="softsign", name="gru_before")(x)
    x = layers.GlobalAveragePooling1D(name="time_pool")(x)
    out = layers.Dense(4, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="recurrent_zoo")


def scale_sum_model() -> keras.Model:
    """Keras 3's InceptionResNetV2 residual scaling (CustomScaleLayer); as tf.keras 2.x wrote it,
    keras_applications' Lambda with arguments {'scale': s}."""
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    inp = keras.Input((8, 8, 3))
    a = layers.Conv2D(4, 1, name="branch_a")(inp)
    b = layers.Conv2D(4, 3, padding="same", name="branch_b")(inp)
    x = CustomScaleLayer(0.17, name="block35_1")([a, b])
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="predictions")(x), name="irv2_block")


def c3d(num_classes: int = 6, frames: int = 16, size: int = 32, width: int = 16) -> keras.Model:
    """The widely used Keras C3D (Sequential conv1...fc8, ZeroPadding3D before pool5) at 1/width."""
    conv = lambda n, name: layers.Conv3D(64 * n // width, 3, padding="same", activation="relu", name=name)  # noqa: E731
    return keras.Sequential([
        keras.Input((frames, size, size, 3)),
        conv(1, "conv1"), layers.MaxPooling3D((1, 2, 2), strides=(1, 2, 2), name="pool1"),
        conv(2, "conv2"), layers.MaxPooling3D(2, strides=2, name="pool2"),
        conv(4, "conv3a"), conv(4, "conv3b"), layers.MaxPooling3D(2, strides=2, name="pool3"),
        conv(8, "conv4a"), conv(8, "conv4b"), layers.MaxPooling3D(2, strides=2, name="pool4"),
        conv(8, "conv5a"), conv(8, "conv5b"),
        layers.ZeroPadding3D(((0, 0), (0, 1), (0, 1)), name="zeropad5"),
        layers.MaxPooling3D(2, strides=2, name="pool5"),
        layers.Flatten(name="flatten"),
        layers.Dense(4096 // width, activation="relu", name="fc6"), layers.Dropout(0.5),
        layers.Dense(4096 // width, activation="relu", name="fc7"), layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax", name="fc8"),
    ], name="c3d")


def i3d(mean: str, num_classes: int = 6) -> keras.Model:
    """The Keras Inception-v1 I3D layout at small width: Conv3D without bias + BN(scale=False),
    same padding, Concatenate branches, AveragePooling3D + 1x1 Conv3D logits, mean over time
    (``mean="lambda"``: a Lambda calling the mean; ``"pool"``: GlobalAveragePooling1D)."""
    def unit(x, filters, kernel, name, strides=1):
        x = layers.Conv3D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(scale=False, name=f"{name}_bn")(x)
        return layers.Activation("relu", name=name)(x)

    def mixed(x, widths, name):
        b0 = unit(x, widths[0], 1, f"{name}_0a")
        b1 = unit(unit(x, widths[1], 1, f"{name}_1a"), widths[2], 3, f"{name}_1b")
        b2 = unit(unit(x, widths[3], 1, f"{name}_2a"), widths[4], 3, f"{name}_2b")
        b3 = layers.MaxPooling3D(3, strides=1, padding="same", name=f"{name}_3a")(x)
        b3 = unit(b3, widths[5], 1, f"{name}_3b")
        return layers.Concatenate(axis=4, name=name)([b0, b1, b2, b3])

    inp = keras.Input((8, 32, 32, 3))
    x = unit(inp, 8, 7, "Conv3d_1a_7x7", strides=2)
    x = layers.MaxPooling3D((1, 3, 3), strides=(1, 2, 2), padding="same", name="MaxPool2d_2a_3x3")(x)
    x = unit(x, 8, 1, "Conv3d_2b_1x1")
    x = unit(x, 12, 3, "Conv3d_2c_3x3")
    x = layers.MaxPooling3D((1, 3, 3), strides=(1, 2, 2), padding="same", name="MaxPool2d_3a_3x3")(x)
    x = mixed(x, (4, 6, 8, 2, 4, 4), "Mixed_3b")
    x = layers.MaxPooling3D(3, strides=2, padding="same", name="MaxPool2d_4a_3x3")(x)
    x = mixed(x, (8, 6, 10, 2, 4, 4), "Mixed_4b")
    x = layers.AveragePooling3D((2, 2, 2), strides=(1, 1, 1), padding="valid", name="global_avg_pool")(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Conv3D(num_classes, 1, padding="same", use_bias=True, name="Conv3d_6a_1x1")(x)
    frames_left = x.shape[1]
    x = layers.Reshape((frames_left, num_classes))(x)
    if mean == "lambda":
        x = layers.Lambda(lambda t: ops.mean(t, axis=1), output_shape=(num_classes,))(x)
    else:
        x = layers.GlobalAveragePooling1D()(x)
    out = layers.Activation("softmax", name="prediction")(x)
    return keras.Model(inp, out, name="i3d_inception")


def lrcn(recurrent_activation: str | Callable, frames: int = 6, size: int = 32) -> keras.Model:
    """The Keras LRCN: TimeDistributed conv/BN/pool stack, Flatten, LSTM 256, softmax."""
    td = layers.TimeDistributed
    model = keras.Sequential([keras.Input((frames, size, size, 3))], name="lrcn")
    for i, width in enumerate((8, 16), start=1):
        model.add(td(layers.Conv2D(width, 3, padding="same"), name=f"conv{i}"))
        model.add(td(layers.BatchNormalization(), name=f"bn{i}"))
        model.add(td(layers.Activation("relu"), name=f"relu{i}"))
        model.add(td(layers.MaxPooling2D(2), name=f"pool{i}"))
    model.add(td(layers.Flatten(), name="flatten"))
    model.add(layers.LSTM(256, recurrent_activation=recurrent_activation, name="lstm"))
    model.add(layers.Dropout(0.5))
    model.add(layers.Dense(7, activation="softmax", name="predictions"))
    return model


def built(factory: Callable[[], keras.Model], seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return randomize(factory(), seed)


# --------------------------------------------------------------------------- equality


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[keras.Model, Path]]:
    """The small models, each built and saved once: name -> (Keras model, its .h5)."""
    folder = tmp_path_factory.mktemp("keras_zoo")
    factories = {"conv2d": conv2d_zoo, "conv3d": conv3d_zoo, "recurrent": recurrent_zoo, "scale_sum": scale_sum_model,
                 "c3d": c3d, "i3d_lambda": lambda: i3d("lambda"), "i3d_pool": lambda: i3d("pool"),
                 "lrcn_sigmoid": lambda: lrcn("sigmoid"), "lrcn_hard_sigmoid": lambda: lrcn("hard_sigmoid")}
    out = {}
    for seed, (name, factory) in enumerate(factories.items()):
        model = built(factory, seed)
        path = folder / f"{name}.h5"
        model.save(path)
        out[name] = (model, path)
    return out


def _layout(path: Path, layout: str, **legacy) -> Path:
    return path if layout == "keras3" else to_tf_keras2(path, path.with_name(f"{path.stem}-tf2.h5"), **legacy)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["conv3d", "recurrent", "c3d", "i3d_lambda", "i3d_pool", "lrcn_sigmoid"])
def test_clip_model_matches_keras(zoo, name: str, layout: str) -> None:
    model, path = zoo[name]
    x = inputs((2, *model.input_shape[1:]), seed=1)
    assert_matches_keras(model, x, _layout(path, layout))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["conv2d", "scale_sum"])
def test_frame_model_matches_keras_on_single_frames(zoo, name: str, layout: str) -> None:
    model, path = zoo[name]
    assert_matches_keras(model, inputs((3, *model.input_shape[1:]), seed=2), _layout(path, layout))


def test_frame_model_averages_per_frame_softmax_over_the_clip(zoo) -> None:
    model, path = zoo["conv2d"]
    frames = inputs((4, *model.input_shape[1:]), seed=3)  # one clip of 4 frames
    expected = model.predict(frames, verbose=0).mean(0, keepdims=True)
    clip = torch.from_numpy(frames).permute(3, 0, 1, 2).unsqueeze(0)
    imported = load_h5(path)
    with torch.no_grad():
        logits = imported(clip)
        np.testing.assert_allclose(imported.predict_proba(clip).numpy(), expected, atol=1e-6)
    # logits = log(mean probability): softmax gives the mean back, and they are finite for training
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), expected, atol=1e-6)


def test_lrcn_hard_sigmoid_keras3_matches_keras(zoo) -> None:
    model, path = zoo["lrcn_hard_sigmoid"]
    assert_matches_keras(model, inputs((2, *model.input_shape[1:]), seed=4), path)


def test_lrcn_hard_sigmoid_tf_keras2_uses_keras2_definition(tmp_path: Path) -> None:
    # Keras 2's hard_sigmoid (0.2 x + 0.5) built in Keras 3 as a function, saved as tf.keras 2.x
    # wrote an LRCN: recurrent_activation "hard_sigmoid" and keras_version 2.2.4-tf.
    model = built(lambda: lrcn(k2_hard_sigmoid), seed=5)
    x = inputs((2, *model.input_shape[1:]), seed=5)
    path = saved(model, tmp_path, "tf_keras2", activations={"k2_hard_sigmoid": "hard_sigmoid"})
    assert json.loads(h5py.File(path, "r").attrs["model_config"])["config"]["layers"][-3]["config"]["recurrent_activation"] == "hard_sigmoid"
    assert_matches_keras(model, x, path)


def test_hard_sigmoid_follows_the_keras_version_that_wrote_the_file(zoo, tmp_path: Path) -> None:
    _, path = zoo["lrcn_hard_sigmoid"]
    clip = to_clip(inputs((1, 6, 32, 32, 3), seed=6))
    keras3 = load_h5(path)
    as_keras2 = load_h5(to_tf_keras2(path, tmp_path / "k2.h5"))
    with torch.no_grad():
        assert not torch.allclose(keras3(clip), as_keras2(clip), atol=1e-4)


def test_layer_names_split_into_chunks_are_joined(zoo, tmp_path: Path) -> None:
    model, path = zoo["conv3d"]
    legacy = to_tf_keras2(path, tmp_path / "chunked.h5", chunk_layer_names=3)
    assert "layer_names" not in h5py.File(legacy, "r")["model_weights"].attrs
    assert_matches_keras(model, inputs((2, *model.input_shape[1:]), seed=7), legacy)


def test_tf_keras2_layout_is_what_the_helper_claims(zoo, tmp_path: Path) -> None:
    legacy = to_tf_keras2(zoo["recurrent"][1], tmp_path / "r.h5")
    with h5py.File(legacy, "r") as f:
        assert f.attrs["keras_version"] in ("2.2.4-tf", b"2.2.4-tf")
        config = json.loads(f.attrs["model_config"])
        assert config["class_name"] == "Model"
        first, second = config["config"]["layers"][:2]
        assert first["config"]["batch_input_shape"] == [None, 5, 6, 6, 3]
        assert second["inbound_nodes"] == [[[first["name"], 0, 0, {}]]]
        names = [n.decode() for n in f["model_weights/per_frame"].attrs["weight_names"]]
        assert names[0] == "fconv/kernel:0" and "per_frame/fconv/kernel:0" in f["model_weights"]
        assert [n.decode() for n in f["model_weights/lstm"].attrs["weight_names"]] == [
            "lstm/kernel:0", "lstm/recurrent_kernel:0", "lstm/bias:0"]


# --------------------------------------------------------------------------- the contract


def test_imported_model_follows_the_vidzoo_contract(zoo) -> None:
    model, path = zoo["i3d_lambda"]
    imported = load_h5(path)
    cfg = imported.default_cfg
    assert cfg.arch == "keras_graph" and input_size(cfg) == (8, 32, 32) and cfg.clip.norm == {"scale": [0.0, 1.0]}
    assert imported.classes == [f"class_{i:03d}" for i in range(6)]
    clip = to_clip(inputs((2, 8, 32, 32, 3), seed=8))
    with torch.no_grad():
        feats = imported.forward_features(clip)
        assert imported.forward_head(feats, pre_logits=True).shape == (2, imported.num_features)
        logits = imported.forward_head(feats)
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), model.predict(clip.permute(0, 2, 3, 4, 1).numpy(), verbose=0), atol=1e-6)
    assert imported.get_classifier().keras_name == "Conv3d_6a_1x1"
    imported.reset_classifier(3)
    assert imported(clip).shape == (2, 3)


def test_load_model_round_trip_is_exact(zoo, tmp_path: Path) -> None:
    _, path = zoo["c3d"]
    imported = load_h5(path, classes=[f"action {i}" for i in range(6)])
    file = save_model(imported, tmp_path / "c3d.safetensors", extra={"keras": imported.keras_source})
    loaded = load_model(file)
    clip = to_clip(inputs((2, 16, 32, 32, 3), seed=9))
    with torch.no_grad():
        assert torch.equal(loaded(clip), imported(clip))
        assert torch.equal(loaded.predict_proba(clip), imported.predict_proba(clip))
    assert loaded.classes == [f"action {i}" for i in range(6)]


# --------------------------------------------------------------------------- refusals


def test_a_file_that_is_not_hdf5_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    path.write_text("not a model")
    with pytest.raises(KerasImportError, match=r"model\.h5 is not an HDF5 file"):
        load_h5(path)


def _without_config(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "a") as f:
        del f.attrs["model_config"]
    return dst


def test_a_weights_only_file_needs_arch(zoo, tmp_path: Path) -> None:
    path = _without_config(zoo["c3d"][1], tmp_path / "weights.h5")
    with pytest.raises(KerasImportError, match="holds weights only .* pass --arch"):
        load_h5(path)
    with pytest.raises(KerasImportError, match=r"onto the vidzoo architecture 'i3d' is not available \(it can be mapped onto: c3d\)"):
        load_h5(path, arch="i3d")
    with pytest.raises(ValueError, match="unknown model 'c3dd'. Did you mean 'c3d'"):
        load_h5(path, arch="c3dd")


def test_an_unknown_lambda_is_refused_without_running_it(tmp_path: Path) -> None:
    inp = keras.Input((4, 4, 3))
    x = layers.Lambda(lambda t: ops.square(t) * 2.0, name="mystery")(inp)
    model = keras.Model(inp, layers.Dense(2, activation="softmax")(layers.Flatten()(x)))
    path = saved(model, tmp_path, "keras3")
    code = json.loads(h5py.File(path, "r").attrs["model_config"])["config"]["layers"][1]["config"]["function"]["config"]["code"]
    with pytest.raises(KerasImportError, match="Lambda layer 'mystery' is not one vidzoo recognises") as info:
        load_h5(path)
    assert "square" in str(info.value) and code.strip()[:40] not in str(info.value)


def test_unsupported_layer_types_are_listed_all_at_once(tmp_path: Path) -> None:
    inp = keras.Input((4, 4, 3))
    x = layers.Conv2DTranspose(2, 3, name="up_conv")(inp)
    x = layers.UpSampling2D(name="upsample")(x)
    x = layers.LayerNormalization(name="norm")(x)
    model = keras.Model(inp, layers.Dense(2, activation="softmax")(layers.Flatten()(x)))
    with pytest.raises(KerasImportError, match=r"3 layer\(s\) .*up_conv \(Conv2DTranspose\), upsample \(UpSampling2D\), norm \(LayerNormalization\)"):
        load_h5(saved(model, tmp_path, "keras3"))


def test_missing_and_misshaped_weights_are_named(zoo, tmp_path: Path) -> None:
    path = tmp_path / "broken.h5"
    path.write_bytes(zoo["c3d"][1].read_bytes())
    with h5py.File(path, "a") as f:
        fc7, conv2 = f["model_weights/fc7"], f["model_weights/conv2"]
        kernel_name, bias_name = fc7.attrs["weight_names"]  # "c3d/fc7/kernel", "c3d/fc7/bias"
        del fc7[bias_name]
        fc7.attrs["weight_names"] = np.array([kernel_name.encode()])
        kernel_name = conv2.attrs["weight_names"][0]
        shape = conv2[kernel_name].shape
        del conv2[kernel_name]
        conv2.create_dataset(kernel_name, data=np.zeros((*shape[:-1], shape[-1] + 1), "float32"))
    with pytest.raises(KerasWeightError) as info:
        load_h5(path)
    message = str(info.value)
    assert "layer 'fc7' (Dense): the file lacks its weight(s) bias" in message
    assert f"weight {kernel_name!r} has shape (3, 3, 3, 4, 9)" in message


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def mit_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small C3D with the zoo's 339 outputs, saved as tf.keras 2.x wrote the zoo."""
    folder = tmp_path_factory.mktemp("mit")
    model = built(lambda: c3d(num_classes=339, frames=16, size=16, width=32), seed=11)
    return saved(model, folder, "tf_keras2", name="C3D-16x16x16x3-339-m")


def test_cli_import_keras_with_mit_v1_classes(mit_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "c3d.safetensors"
    result = runner.invoke(app, ["import-keras", str(mit_model), "--classes", "mit-v1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    meta = read_model_metadata(out)
    assert meta["classes"] == MIT_V1.read_text().splitlines()
    keras_meta = meta["extra"]["keras"]
    assert keras_meta["source_file"] == mit_model.name
    assert keras_meta["source_sha256"] == hashlib.sha256(mit_model.read_bytes()).hexdigest()
    assert keras_meta["classes_source"].startswith("mit-v1") and "[0, 1]" in keras_meta["input_scaling"]
    assert meta["clip"]["norm"] == {"scale": [0.0, 1.0]} and meta["clip"]["frames"] == 16
    shown = runner.invoke(app, ["info", str(out)])
    assert shown.exit_code == 0
    info = json.loads(shown.stdout)
    assert info["extra"]["keras"]["classes_source"].startswith("mit-v1")
    assert info["model_args"]["model_config"].startswith("<Keras Sequential with")


def test_cli_import_keras_with_a_class_file_and_default_placeholders(mit_model: Path, tmp_path: Path) -> None:
    names = tmp_path / "order.txt"
    names.write_text("\n".join(f"folder+{i}" for i in range(339)))
    out = tmp_path / "with_file.safetensors"
    assert runner.invoke(app, ["import-keras", str(mit_model), "--classes", str(names), "--out", str(out)]).exit_code == 0
    meta = read_model_metadata(out)
    assert meta["classes"][:2] == ["folder+0", "folder+1"] and meta["extra"]["keras"]["classes_source"] == "file order.txt"

    default = runner.invoke(app, ["import-keras", str(mit_model), "--out", str(tmp_path / "plain.safetensors")])
    assert default.exit_code == 0 and "placeholders" in default.output
    meta = read_model_metadata(tmp_path / "plain.safetensors")
    assert meta["classes"][0] == "class_000" and meta["classes"][-1] == "class_338"
    assert meta["history"]["name"] in ("m", "keras")


def test_cli_import_keras_errors_are_plain(mit_model: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    result = runner.invoke(app, ["import-keras", str(mit_model), "--classes", str(short)])
    assert result.exit_code == 2
    assert "has 2 names but the model has 339 outputs" in result.output
    missing = runner.invoke(app, ["import-keras", str(mit_model), "--classes", "mit-v2"])
    assert missing.exit_code == 2 and "Did you mean 'mit-v1'" in missing.output

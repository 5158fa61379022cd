"""C2D and LRCN: time averaging, parameter counts against Keras Applications, readouts, freezing.

The contract every model keeps (tiny clips, backward, save/load, ...) is in test_models.py.
"""

from __future__ import annotations

import pytest
import timm
import torch
from conftest import input_size
from torch import nn

from vidzoo.models import (
    create_model,
    get_model_entry,
    list_models,
    model_parameter_count,
)
from vidzoo.models.c2d import BACKBONES, C2D
from vidzoo.models.lrcn import LRCN

NUM_CLASSES = 5
# The smallest timm backbone worth having: 0.6M parameters, and its pooled width (1024, after
# the conv head) differs from its num_features (288).
TINY_BACKBONE = "mobilenetv3_small_050"
C2D_VARIANTS = [name for name in list_models("c2d_*") if name != "c2d_timm"]


def tiny_c2d(**kwargs: object) -> C2D:
    torch.manual_seed(0)
    kwargs = {**get_model_entry("c2d_timm").test_args, **kwargs}
    return create_model("c2d_timm", num_classes=NUM_CLASSES, **kwargs)


def tiny_lrcn(**kwargs: object) -> LRCN:
    torch.manual_seed(0)
    kwargs = {**get_model_entry("lrcn").test_args, **kwargs}
    return create_model("lrcn", num_classes=NUM_CLASSES, **kwargs)


def clip(frames: int = 3, size: int = 32, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(1))


def timm_count(name: str, **kwargs: object) -> int:
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **kwargs)
    return sum(p.numel() for p in model.parameters())


# --- C2D: averaging over time ---------------------------------------------------------------------


@torch.no_grad()
def test_c2d_logits_are_the_mean_of_per_frame_logits() -> None:
    model = tiny_c2d().eval()
    x = clip()
    per_frame = [model.fc(model.backbone.net(x[:, :, t])) for t in range(x.shape[2])]
    torch.testing.assert_close(model(x), torch.stack(per_frame).mean(0))


@torch.no_grad()
def test_c2d_probs_average_the_per_frame_softmax() -> None:
    model = tiny_c2d(average="probs").eval()
    x = clip()
    per_frame = [model.fc(model.backbone.net(x[:, :, t])).softmax(-1) for t in range(x.shape[2])]
    torch.testing.assert_close(model(x).softmax(-1), torch.stack(per_frame).mean(0))


@torch.no_grad()
def test_c2d_averaging_features_equals_averaging_logits() -> None:
    by_logits = tiny_c2d().eval()
    by_features = tiny_c2d(average="features").eval()
    by_features.load_state_dict(by_logits.state_dict())
    torch.testing.assert_close(by_features(clip()), by_logits(clip()))


@pytest.mark.parametrize("average", ["logits", "features", "probs"])
def test_c2d_features_are_per_frame_whatever_the_head_averages(average: str) -> None:
    model = tiny_c2d(average=average)
    feats = model.forward_features(clip(frames=3))
    assert feats.shape == (2, 3, model.num_features)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)


@pytest.mark.parametrize("average", ["logits", "features", "probs"])
@torch.no_grad()
def test_c2d_clip_of_identical_frames_gives_the_single_frame_output(average: str) -> None:
    model = tiny_c2d(average=average).eval()
    frame = clip(frames=1)
    torch.testing.assert_close(model(frame.expand(-1, -1, 4, -1, -1)), model(frame))


def test_c2d_forward_head_rejects_pooled_features() -> None:
    model = tiny_c2d()
    with pytest.raises(ValueError, match=r"takes per-frame features \(B, T, F\), got shape \(2, 1024\)"):
        model.forward_head(torch.zeros(2, model.num_features))


# --- C2D: backbones and parameter counts ----------------------------------------------------------


@pytest.mark.parametrize("variant", C2D_VARIANTS)
def test_c2d_parameter_count_is_the_backbone_plus_the_classifier(variant: str) -> None:
    timm_name = BACKBONES[variant.removeprefix("c2d_")].timm_name
    with torch.device("meta"):
        model = create_model(variant, num_classes=NUM_CLASSES)
    expected = timm_count(timm_name, num_classes=0) + (model.num_features + 1) * NUM_CLASSES
    assert sum(p.numel() for p in model.parameters()) == expected


# Keras Applications trainable counts with the 1000-class top (REFERENCE.md).
@pytest.mark.parametrize(
    ("variant", "keras_trainable"),
    [
        ("c2d_vgg16", 138_357_544),
        ("c2d_vgg19", 143_667_240),
        ("c2d_xception", 22_855_952),
        ("c2d_mobilenet_v1", 4_231_976),
        ("c2d_mobilenet_v2", 3_504_872),
        ("c2d_densenet169", 14_149_480),
        ("c2d_densenet201", 20_013_928),
    ],
)
def test_c2d_with_1000_classes_has_the_keras_parameter_count(
    variant: str, keras_trainable: int
) -> None:
    assert model_parameter_count(variant, num_classes=1000) == keras_trainable


@pytest.mark.parametrize(
    ("variant", "keras_trainable"),
    [("c2d_inception_v3", 23_817_352), ("c2d_inception_resnet_v2", 55_813_192)],
)
def test_c2d_inceptions_differ_from_keras_only_by_batch_norm_gamma(
    variant: str, keras_trainable: int
) -> None:
    with torch.device("meta"):
        model = create_model(variant, num_classes=1000)
    gammas = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert sum(p.numel() for p in model.parameters()) - gammas == keras_trainable


def test_c2d_resnet50_differs_from_keras_only_by_conv_biases() -> None:
    with torch.device("meta"):
        model = create_model("c2d_resnet50", num_classes=1000)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(conv.bias is None for conv in convs)
    biases = sum(conv.out_channels for conv in convs)
    assert sum(p.numel() for p in model.parameters()) + biases == 25_583_592


@pytest.mark.parametrize(
    ("variant", "num_features", "frame_size"),
    [
        ("c2d_resnet50", 2048, 224),
        ("c2d_inception_v3", 2048, 299),
        ("c2d_inception_resnet_v2", 1536, 299),
        ("c2d_xception", 2048, 299),
        ("c2d_vgg16", 4096, 224),
    ],
)
def test_c2d_defaults_follow_the_backbone(variant: str, num_features: int, frame_size: int) -> None:
    with torch.device("meta"):
        model = create_model(variant)
    assert model.num_features == num_features
    assert input_size(model.default_cfg) == (16, frame_size, frame_size)
    assert model.default_cfg.clip.sampling == "segment"
    assert model.num_classes == 339


def test_c2d_timm_takes_any_timm_model() -> None:
    with torch.device("meta"):
        model = create_model("c2d_timm", backbone="efficientnet_b0", num_classes=NUM_CLASSES)
    assert model.num_features == 1280
    assert model.default_cfg.clip.norm == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert input_size(model.default_cfg) == (16, 224, 224)


def test_c2d_timm_builds_fixed_size_backbones_for_img_size() -> None:
    model = create_model("c2d_timm", backbone="test_vit", frames=2, size=32)
    assert model(clip(frames=2, size=32)).shape == (2, 339)


def test_c2d_timm_needs_a_backbone() -> None:
    with pytest.raises(ValueError, match="c2d_timm needs backbone .*--model-arg backbone="):
        create_model("c2d_timm")


def test_c2d_unknown_backbone_suggests_close_names() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet5O'.*Did you mean 'resnet50'"):
        C2D("resnet5O")


def test_c2d_variant_refuses_another_backbone() -> None:
    with pytest.raises(ValueError, match="backbone='vgg19' is fixed by the variant 'c2d_vgg16'"):
        create_model("c2d_vgg16", backbone="vgg19")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"average": "max"}, "average must be one of"),
        ({"size": 64}, "size 64x64 is too small for backbone 'inception_v3'.* 75x75"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_c2d_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message), torch.device("meta"):
        C2D("inception_v3", **kwargs)


def test_c2d_rejects_frames_smaller_than_the_backbone_accepts() -> None:
    with torch.device("meta"):
        model = create_model("c2d_vgg16")
        with pytest.raises(ValueError, match="backbone 'vgg16' needs frames of at least 32x32"):
            model(torch.zeros(1, 3, 2, 16, 32))


# --- LRCN -------------------------------------------------------------------------------------


def test_lrcn_default_is_the_small_cnn_with_256_lstm_units() -> None:
    with torch.device("meta"):
        model = create_model("lrcn")
    assert input_size(model.default_cfg) == (16, 112, 112)
    assert (model.lstm.input_size, model.lstm.hidden_size) == (128, 256)
    convs = 3 * 16 * 9 + 16 * 32 * 9 + 32 * 64 * 9 + 64 * 128 * 9
    batch_norms = 2 * (16 + 32 + 64 + 128)
    lstm = 4 * 256 * (128 + 256) + 2 * 4 * 256  # PyTorch keeps two bias vectors
    fc = 256 * 101 + 101
    assert model_parameter_count("lrcn") == convs + batch_norms + lstm + fc


@pytest.mark.parametrize("readout", ["average", "last"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lrcn_readouts_give_clip_logits(readout: str, bidirectional: bool) -> None:
    model = tiny_lrcn(readout=readout, bidirectional=bidirectional)
    feats = model.forward_features(clip(frames=4))
    assert feats.shape == (2, 4, model.num_features)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    assert model.forward_head(feats).shape == (2, NUM_CLASSES)


def test_lrcn_bidirectional_doubles_num_features() -> None:
    assert tiny_lrcn(bidirectional=True).num_features == 2 * tiny_lrcn().num_features == 512


@torch.no_grad()
def test_lrcn_average_readout_averages_per_step_logits() -> None:
    model = tiny_lrcn().eval()
    feats = model.forward_features(clip(frames=4))
    torch.testing.assert_close(model.forward_head(feats), model.fc(feats).mean(1))


@torch.no_grad()
def test_lrcn_last_readout_ends_each_direction() -> None:
    model = tiny_lrcn(readout="last", bidirectional=True).eval()
    x = clip(frames=4)
    _, (h_n, _) = model.lstm(model.backbone(x))
    torch.testing.assert_close(
        model.forward_head(model.forward_features(x), pre_logits=True), torch.cat([*h_n], -1)
    )


def test_lrcn_takes_a_timm_backbone() -> None:
    model = tiny_lrcn(backbone=TINY_BACKBONE)
    assert model.lstm.input_size == 1024
    assert model.default_cfg.clip.norm["mean"] == [0.485, 0.456, 0.406]
    assert model(clip(frames=4)).shape == (2, NUM_CLASSES)


def test_lrcn_forget_gate_bias_starts_at_one() -> None:
    lstm = tiny_lrcn().lstm
    hidden = lstm.hidden_size
    assert torch.equal(lstm.bias_ih_l0[hidden : 2 * hidden], torch.ones(hidden))
    assert lstm.bias_ih_l0.sum() == hidden and lstm.bias_hh_l0.abs().sum() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"readout": "max"}, "readout must be one of"),
        ({"size": 8}, "size 8x8 is too small for backbone 'small'.* 16x16"),
        ({"pretrained_backbone": True}, "the small CNN has no pretrained weights"),
        ({"hidden_size": 0}, "hidden_size and num_layers must be >= 1"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_lrcn_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LRCN(**kwargs)


# --- freezing the per-frame backbone --------------------------------------------------------------


@pytest.fixture(params=["lrcn", "c2d"])
def frozen_model(request: pytest.FixtureRequest) -> nn.Module:
    build = tiny_lrcn if request.param == "lrcn" else tiny_c2d
    return build(freeze_backbone=True).train()


def test_frozen_backbone_gets_no_gradient(frozen_model: nn.Module) -> None:
    frozen_model(clip(frames=2)).sum().backward()
    for name, param in frozen_model.named_parameters():
        trained = not name.startswith("backbone.")
        assert param.requires_grad == trained, name
        assert (param.grad is not None) == trained, name


def test_frozen_backbone_keeps_batch_norm_in_eval_mode(frozen_model: nn.Module) -> None:
    norms = [m for m in frozen_model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    frozen_model(clip(frames=2))
    assert norms and not any(m.training for m in norms)
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))
    assert frozen_model.training and frozen_model.fc.training

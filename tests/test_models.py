"""The model registry, the contract every registered model keeps, and C3D's published facts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vidzoo.model_file import load_model, read_model_metadata, save_model
from vidzoo.models import (
    UnknownModelError,
    VideoClassifier,
    create_model,
    get_model_cfg,
    get_model_entry,
    list_models,
    register_model,
)
from vidzoo.models import _registry
from vidzoo.models.c3d import C3D

NUM_CLASSES = 7


# --- registry ---------------------------------------------------------------------------------


def test_register_model_refuses_a_duplicate_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))

    def c3d(**kwargs: object) -> VideoClassifier:
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="'c3d' is already registered by vidzoo.models.c3d.c3d"):
        register_model()(c3d)
    assert _registry._MODELS["c3d"].builder.__module__ == "vidzoo.models.c3d"


def test_register_model_refuses_a_name_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))
    builder = lambda **kwargs: None  # noqa: E731
    builder.__name__ = "my-net"
    with pytest.raises(ValueError, match="'my-net' must be lowercase letters"):
        register_model()(builder)


def test_create_model_unknown_name_suggests_close_names() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown model 'c3db'\. Did you mean 'c3d'"):
        create_model("c3db")


def test_unknown_model_error_is_a_value_error() -> None:
    assert issubclass(UnknownModelError, ValueError)


def test_list_models_filters_with_wildcards() -> None:
    assert list_models("c3d*") == ["c3d", "c3d_bn"]
    assert list_models("*_bn") == ["c3d_bn"]
    assert list_models("nothing*") == []


def test_list_models_is_sorted() -> None:
    assert list_models() == sorted(list_models())


def test_create_model_records_kwargs_and_arch() -> None:
    tiny = get_model_entry("c3d_bn").test_kwargs
    model = create_model("c3d_bn", num_classes=NUM_CLASSES, **tiny)
    assert model.init_kwargs == {"num_classes": NUM_CLASSES, **tiny}
    assert model.default_cfg.arch == "c3d_bn"


def test_create_model_unknown_pretrained_tag_is_an_error() -> None:
    with pytest.raises(ValueError, match="no pretrained weights 'sports1m' for model 'c3d'"):
        create_model("c3d", pretrained="sports1m")


def test_get_model_cfg_matches_the_built_model() -> None:
    kwargs = get_model_entry("c3d").test_kwargs
    assert get_model_cfg("c3d", **kwargs) == create_model("c3d", **kwargs).default_cfg


# --- contract, for every registered model ------------------------------------------------------


@pytest.fixture(params=list_models())
def model(request: pytest.FixtureRequest) -> VideoClassifier:
    torch.manual_seed(0)
    entry = get_model_entry(request.param)
    return create_model(entry.name, num_classes=NUM_CLASSES, **entry.test_kwargs)


def clip_for(model: VideoClassifier, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    cfg = model.default_cfg
    return torch.randn(batch, cfg.in_chans, *cfg.input_size, generator=generator)


def test_forward_gives_one_logit_per_class(model: VideoClassifier) -> None:
    assert model(clip_for(model)).shape == (2, NUM_CLASSES)


def test_backward_reaches_every_parameter(model: VideoClassifier) -> None:
    model(clip_for(model)).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


def test_pre_logits_have_num_features(model: VideoClassifier) -> None:
    feats = model.forward_features(clip_for(model))
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)


def test_reset_classifier_changes_only_the_head(model: VideoClassifier) -> None:
    before = {name: t.clone() for name, t in model.state_dict().items()}
    model.reset_classifier(5)
    after = model.state_dict()
    head = next(name for name, module in model.named_modules() if module is model.get_classifier())
    changed = {
        name
        for name in after
        if before[name].shape != after[name].shape or not torch.equal(before[name], after[name])
    }
    assert changed == {f"{head}.{name}" for name, _ in model.get_classifier().named_parameters()}
    assert model.num_classes == 5
    assert model.eval()(clip_for(model)).shape == (2, 5)


def test_feature_info_matches_layer_outputs(model: VideoClassifier) -> None:
    outputs: dict[str, torch.Tensor] = {}
    for info in model.feature_info:
        model.get_submodule(info["name"]).register_forward_hook(
            lambda module, args, out, name=info["name"]: outputs.__setitem__(name, out)
        )
    model(clip_for(model))
    input_size = model.default_cfg.input_size
    for info in model.feature_info:
        out = outputs[info["name"]]
        assert out.shape[1] == info["channels"], info
        for size, extent, reduction in zip(out.shape[2:], input_size, info["reduction"]):
            assert size in (extent // reduction, math.ceil(extent / reduction)), info


def test_save_load_gives_identical_outputs(model: VideoClassifier, tmp_path) -> None:
    model.eval()
    clip = clip_for(model)
    loaded = load_model(save_model(model, directory=tmp_path, history="synthetic"))
    assert type(loaded) is type(model)
    assert torch.equal(loaded(clip), model(clip))


def test_saved_metadata_describes_the_model(model: VideoClassifier, tmp_path) -> None:
    meta = read_model_metadata(save_model(model, directory=tmp_path, history="synthetic"))
    cfg = model.default_cfg
    assert meta["arch"] == cfg.arch
    assert meta["kwargs"] == model.init_kwargs
    frames, height, width = cfg.input_size
    assert meta["input"] == {
        "frames": frames, "height": height, "width": width, "channels": cfg.in_chans
    }
    assert meta["norm"] == {key: list(values) for key, values in cfg.norm.items()}
    assert meta["sampling"] == {"kind": cfg.sampling, "frame_stride": cfg.frame_stride}
    assert len(meta["classes"]) == model.num_classes


def test_loaded_model_has_the_saved_cfg(model: VideoClassifier, tmp_path) -> None:
    classes = [f"action {i}" for i in range(NUM_CLASSES)]
    loaded = load_model(save_model(model, directory=tmp_path, classes=classes))
    assert loaded.classes == classes
    assert loaded.default_cfg == model.default_cfg.replace(classes=tuple(classes))


# --- C3D ---------------------------------------------------------------------------------------


def count_params(name: str, **kwargs: object) -> int:
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("num_classes", "expected"),
    [(487, 79_991_015), (101, 78_409_573), (400, 79_634_576), (339, 79_384_659)],
)
def test_c3d_parameter_count_matches_the_published_figure(num_classes: int, expected: int) -> None:
    assert count_params("c3d", num_classes=num_classes) == expected


def test_c3d_layer_parameter_counts_match_the_published_figures() -> None:
    with torch.device("meta"):
        model = create_model("c3d")
    assert sum(p.numel() for p in model.features.parameters()) == 27_655_936
    assert sum(p.numel() for p in model.fc6.parameters()) == 33_558_528
    assert sum(p.numel() for p in model.fc7.parameters()) == 16_781_312


@pytest.mark.parametrize(("img_size", "fc6_inputs"), [(112, 8192), (224, 25088)])
def test_c3d_fc6_is_sized_from_the_input(img_size: int, fc6_inputs: int) -> None:
    with torch.device("meta"):
        model = create_model("c3d", img_size=img_size)
    assert model.fc6.in_features == fc6_inputs


def test_c3d_pool5_rounds_up_like_caffe() -> None:
    pool5 = create_model("c3d", **get_model_entry("c3d").test_kwargs).features.pool5
    conv5b_map = torch.arange(2 * 7 * 7, dtype=torch.float32).reshape(1, 1, 2, 7, 7)
    # The maximum of an increasing ramp is each window's last element; windows start at 0,2,4,6
    # and the last one holds a single row/column.
    last = [1, 3, 5, 6]
    expected = conv5b_map[0, 0, 1][last][:, last].reshape(1, 1, 1, 4, 4)
    assert torch.equal(pool5(conv5b_map), expected)


def test_c3d_refuses_a_clip_of_another_size() -> None:
    model = create_model("c3d", **get_model_entry("c3d").test_kwargs)
    with pytest.raises(ValueError, match="C x T x H x W = 3x8x32x32 .* got 3x16x32x32"):
        model(torch.zeros(1, 3, 16, 32, 32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_frames": 4}, "too small: nothing is left to pool at pool4"),
        ({"img_size": 8}, "too small: nothing is left to pool at pool"),
        ({"width": 0}, "width must be > 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"num_classes": 0}, "num_classes must be a positive int"),
        ({"img_size": (112, 112, 3)}, "img_size must be an int or"),
    ],
)
def test_c3d_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        C3D(**kwargs)


def test_c3d_bn_refuses_to_turn_batch_norm_off() -> None:
    with pytest.raises(ValueError, match="batch_norm is fixed by variant 'c3d_bn'"):
        create_model("c3d_bn", batch_norm=False)


def test_c3d_bn_has_batch_norm_after_every_conv() -> None:
    model = create_model("c3d_bn", **get_model_entry("c3d_bn").test_kwargs)
    blocks = [m for m in model.features if isinstance(m, nn.Sequential)]
    assert len(blocks) == 8
    assert all(isinstance(block.bn, nn.BatchNorm3d) and block.conv.bias is None for block in blocks)


def test_c3d_width_scales_features() -> None:
    with torch.device("meta"):
        model = create_model("c3d", width=0.25)
    assert model.num_features == 1024
    assert model.feature_info[-1]["channels"] == 128

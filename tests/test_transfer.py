"""vidzoo.transfer: freezing (frozen BatchNorm included), per-part learning rates, truncation
with a new head, and the train flags built on them (--freeze, --train-last, --backbone-lr-mult,
--unfreeze-at, --truncate-after), on tiny models and the tiny synthetic dataset."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_ARGS, TINY_MODEL, input_size, tiny_config
from typer.testing import CliRunner

from vidzoo.cli import app
from vidzoo.model_file import read_model_metadata
from vidzoo.models import (
    create_model,
    get_model_entry,
    list_models,
    load_model,
    save_model,
)
from vidzoo.train import TrainConfig, VideoClassificationModule, train
from vidzoo.transfer import (
    TruncatedClassifier,
    freeze,
    is_frozen_batchnorm,
    layer_names,
    param_groups,
    train_last,
    truncate,
    unfreeze,
)
from vidzoo.weights import classifier_keys


def tiny(name: str, num_classes: int = 3, **kwargs):
    torch.manual_seed(0)
    return create_model(name, num_classes=num_classes, **{**get_model_entry(name).test_args, **kwargs})


def clip_for(model, batch: int = 2) -> torch.Tensor:
    cfg = model.default_cfg
    return torch.randn(batch, cfg.in_chans, *input_size(cfg), generator=torch.Generator().manual_seed(1))


def trainable(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


# --- freezing ----------------------------------------------------------------------------------------


def meta(name: str):
    """`tiny(name)` on the meta device: freezing needs parameters' flags and shapes, no values."""
    with torch.device("meta"):
        return tiny(name)


@pytest.mark.parametrize("name", list_models())
def test_freeze_backbone_leaves_only_the_classifier_trainable(name: str) -> None:
    model = meta(name)
    freeze(model, until="backbone")
    assert trainable(model) == set(classifier_keys(model)) - {k for k, _ in model.named_buffers()}


@pytest.mark.parametrize("name", list_models())
def test_freeze_until_the_middle_layer_freezes_the_start_and_keeps_the_head(name: str) -> None:
    model = meta(name)
    names = layer_names(model)
    if not names:
        pytest.skip(f"{name} lists no layers (empty feature_info): only 'backbone' applies")
    for layer in names:
        model.get_submodule(layer)
    middle = len(names) // 2
    frozen = freeze(model, until=names[middle])
    assert set(classifier_keys(model)) & {n for n, _ in model.named_parameters()} <= trainable(model)
    assert frozen and not any(p.requires_grad for layer in names[: middle + 1]
                              for p in model.get_submodule(layer).parameters())


def test_freeze_until_a_layer_freezes_it_and_everything_before() -> None:
    model = tiny("i3d")
    freeze(model, until="features.Mixed_4f")
    later = ("features.Mixed_5b.", "features.Mixed_5c.", "logits.")
    assert trainable(model) == {n for n, _ in model.named_parameters() if n.startswith(later)}


def test_a_unique_last_part_names_the_layer() -> None:
    a, b = tiny("i3d"), tiny("i3d")
    assert freeze(a, until="Mixed_4f") == freeze(b, until="features.Mixed_4f")


def test_an_unknown_layer_lists_the_layers_with_a_did_you_mean() -> None:
    with pytest.raises(ValueError, match=r"unknown layer 'pool6' for c3d\. Did you mean 'features\.pool5'\? "
                                         r"Layers of c3d: features\.conv1, .*features\.pool5"):
        freeze(tiny("c3d"), until="pool6")


def test_a_model_without_layers_says_to_use_backbone() -> None:
    with pytest.raises(ValueError, match="swin3d_t lists no layers .* or 'backbone'"):
        freeze(tiny("swin3d_t"), until="features.3")


def test_lrcn_names_the_frame_cnn_blocks_and_freezes_up_to_one() -> None:
    model = tiny("lrcn")
    assert layer_names(model) == [f"backbone.net.block{i}" for i in range(1, 5)]
    freeze(model, until="block2")
    frozen = {n for n, _ in model.named_parameters()} - trainable(model)
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith(("backbone.net.block1.", "backbone.net.block2."))}


def test_c2d_names_timm_stages_under_backbone_net() -> None:
    assert layer_names(tiny("c2d_resnet50")) == [f"backbone.net.{m}" for m in ("act1", "layer1", "layer2", "layer3", "layer4")]


def test_frozen_batchnorm_keeps_its_statistics_through_model_train() -> None:
    model = tiny("c3d_bn")
    freeze(model, until="backbone")
    bn = model.features.conv1.bn
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    model.train()
    model(clip_for(model))
    assert is_frozen_batchnorm(bn) and not bn.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_unfreeze_lets_batchnorm_statistics_and_parameters_change_again() -> None:
    model = tiny("c3d_bn")
    freeze(model, until="backbone")
    unfreeze(model)
    before = model.features.conv1.bn.running_mean.clone()
    model.train()
    model(clip_for(model))
    assert trainable(model) == {n for n, _ in model.named_parameters()}
    assert not torch.equal(model.features.conv1.bn.running_mean, before)


def test_unfreeze_from_a_layer_undoes_freeze_until_the_layer_before() -> None:
    model = tiny("i3d")
    freeze(model)
    unfreeze(model, from_layer="Mixed_5b")
    reference = tiny("i3d")
    freeze(reference, until="MaxPool3d_5a_2x2")
    assert trainable(model) == trainable(reference)


def test_unfreeze_reaches_a_backbone_built_frozen() -> None:
    model = tiny("lrcn", freeze_backbone=True)
    unfreeze(model)
    model(clip_for(model)).sum().backward()
    assert model.backbone.net.block1.conv.weight.grad is not None


def test_train_last_two_trains_the_last_two_layers_and_the_head() -> None:
    model = tiny("i3d")
    train_last(model, 2)
    later = ("features.Mixed_5b.", "features.Mixed_5c.", "logits.")
    assert trainable(model) == {n for n, _ in model.named_parameters() if n.startswith(later)}


def test_train_last_more_layers_than_the_model_has_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"train_last needs 0 <= n <= 4 .*backbone\.net\.block1.*got 5"):
        train_last(tiny("lrcn"), 5)


def test_frozen_parameters_get_no_gradient() -> None:
    model = tiny("c3d_bn")
    freeze(model, until="conv3b")
    model(clip_for(model)).sum().backward()
    assert model.features.conv3a.conv.weight.grad is None
    assert model.features.conv4a.conv.weight.grad is not None


def test_param_groups_put_the_head_at_lr_and_the_rest_at_lr_times_mult() -> None:
    model = tiny("c3d")
    head, backbone = param_groups(model, lr=1e-3, backbone_lr_mult=0.1)
    assert (head["name"], head["lr"]) == ("head", 1e-3)
    assert backbone["name"] == "backbone" and backbone["lr"] == pytest.approx(1e-4)
    assert {id(p) for p in head["params"]} == {id(p) for p in model.fc8.parameters()}
    everything = {id(p) for p in model.parameters()}
    assert {id(p) for p in backbone["params"]} == everything - {id(p) for p in head["params"]}


# --- truncation ------------------------------------------------------------------------------------


def test_truncated_i3d_pools_the_cut_layers_output() -> None:
    model = tiny("i3d").eval()
    original = copy.deepcopy(model)
    taps = {}
    original.features.Mixed_4f.register_forward_hook(lambda m, a, out: taps.__setitem__("4f", out))
    clip = clip_for(model)
    original(clip)
    cut = truncate(model, after="Mixed_4f", num_classes=5).eval()
    assert cut.num_features == taps["4f"].shape[1] == model.feature_info[12].channels
    torch.testing.assert_close(cut.forward_features(clip), taps["4f"], rtol=0, atol=0)
    torch.testing.assert_close(cut.forward_head(cut.forward_features(clip), pre_logits=True),
                               taps["4f"].mean(dim=(2, 3, 4)), rtol=0, atol=0)
    assert cut(clip).shape == (2, 5)


def test_truncation_removes_the_layers_after_the_cut() -> None:
    cut = truncate(tiny("i3d"), after="Mixed_4f")
    names = {n for n, _ in cut.named_parameters()}
    assert not any(n.startswith(("body.features.Mixed_5", "body.logits")) for n in names)
    assert any(n.startswith("body.features.Mixed_4f.") for n in names)
    assert layer_names(cut)[-1] == "body.features.Mixed_4f"


def test_truncated_per_frame_model_averages_frames_and_space() -> None:
    model = tiny("lrcn").eval()
    original = copy.deepcopy(model)
    cut = truncate(model, after="block3").eval()
    clip = clip_for(model)
    b, c, t, h, w = clip.shape
    frames = clip.transpose(1, 2).reshape(b * t, c, h, w)
    expected = torch.nn.Sequential(*list(original.backbone.net.children())[:3])(frames).mean(dim=(2, 3)).reshape(b, t, -1).mean(1)
    pooled = cut.forward_head(cut.forward_features(clip), pre_logits=True)
    torch.testing.assert_close(pooled, expected, rtol=1e-6, atol=1e-6)


def test_c3d_cut_at_pool5_with_an_mlp_head_keeps_the_contract() -> None:
    cut = truncate(tiny("c3d"), after="pool5", head="mlp", hidden=16, num_classes=4)
    clip = clip_for(cut)
    feats = cut.forward_features(clip)
    assert feats.shape[:2] == (2, cut.num_features)  # the pool5 map
    assert cut.forward_head(feats, pre_logits=True).shape == (2, cut.num_features)
    cut(clip).sum().backward()
    assert all(p.grad is not None for p in cut.parameters())
    cut.reset_classifier(6)
    assert cut(clip).shape == (2, 6)


def test_c2d_vgg16_cuts_after_a_block() -> None:
    cut = truncate(tiny("c2d_vgg16"), after="features.22", num_classes=4)
    assert cut.num_features == 512 and cut(clip_for(cut)).shape == (2, 4)
    assert not any(n.startswith("body.backbone.net.pre_logits") for n, _ in cut.named_parameters())


def test_truncated_model_saves_and_loads_with_identical_outputs(tmp_path: Path) -> None:
    model = create_model("i3d", num_classes=5, truncate={"after": "Mixed_4f", "head": "mlp"},
                         **get_model_entry("i3d").test_args).eval()
    assert isinstance(model, TruncatedClassifier)
    path = save_model(model, directory=tmp_path, history="synthetic")
    assert read_model_metadata(path)["model_args"]["truncate"] == {
        "after": "features.Mixed_4f", "head": "mlp", "dropout": 0.5, "hidden": None}
    loaded = load_model(path)
    clip = clip_for(model)
    assert torch.equal(loaded(clip), model(clip))


def test_truncate_an_unknown_layer_lists_the_layers() -> None:
    with pytest.raises(ValueError, match=r"unknown layer 'Mixed_9z' for i3d\..*Layers of i3d: features\.Conv3d_1a_7x7"):
        truncate(tiny("i3d"), after="Mixed_9z")


def test_create_model_refuses_unknown_truncate_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown truncate keys \['layer'\]; allowed: after, head, dropout, hidden"):
        create_model("c3d", truncate={"after": "pool5", "layer": 1}, **get_model_entry("c3d").test_args)


# --- training flags --------------------------------------------------------------------------------


def test_config_rejects_a_malformed_freeze() -> None:
    with pytest.raises(ValueError, match="freeze must be none, backbone or until:LAYER, got 'until:'"):
        TrainConfig(data="x", freeze="until:")


def test_config_rejects_unfreeze_at_with_nothing_frozen() -> None:
    with pytest.raises(ValueError, match="unfreeze_at needs something frozen first"):
        TrainConfig(data="x", unfreeze_at=2)


def test_optimizer_groups_follow_backbone_lr_mult(dataset: Path, tmp_path: Path) -> None:
    config = tiny_config(dataset, tmp_path, lr=1e-3, backbone_lr_mult=0.1, freeze="backbone")
    model = create_model("c3d_bn", num_classes=8, **TINY_MODEL)
    freeze(model, until="backbone")
    optimizer = VideoClassificationModule(model, config, 2).configure_optimizers()["optimizer"]
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, pytest.approx(1e-4)]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


@pytest.fixture(scope="module")
def start_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny C3D-BN model file to start from, so the initial weights are known."""
    torch.manual_seed(3)
    model = create_model("c3d_bn", num_classes=8, **TINY_MODEL)
    return save_model(model, directory=tmp_path_factory.mktemp("start"), history="init")


def test_train_cli_freeze_backbone_keeps_the_backbone_bit_identical(dataset, start_file, tmp_path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": "c3d_bn", "model_args": TINY_ARGS, "frames": TINY_MODEL["frames"],
                                      "size": TINY_MODEL["size"], "workers": 0, "progress": False, "batch_size": 4,
                                      "epochs": 1}))
    result = CliRunner().invoke(app, [
        "train", "--config", str(config), "--data", str(dataset / "train.csv"), "--val", str(dataset / "val.csv"),
        "--pretrained", str(start_file), "--freeze", "backbone", "--lr", "0.01", "--out", str(tmp_path / "run"),
    ])
    assert result.exit_code == 0, result.output
    before = load_model(start_file).state_dict()
    after = load_model(next((tmp_path / "run").glob("c3d_bn-*.safetensors"))).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc8.weight", "fc8.bias"}
    # The command says what it loaded and how much of the model trained.
    assert f"pretrained weights {start_file}" in result.output
    head = before["fc8.weight"].numel() + before["fc8.bias"].numel()
    assert f"trained {head:,} of {sum(t.numel() for k, t in before.items() if 'running' not in k and 'num_batches' not in k):,} parameters" in result.output


def test_train_unknown_freeze_layer_fails_before_training(dataset, tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown layer 'conv9' for c3d_bn"):
        train(tiny_config(dataset, tmp_path, freeze="until:conv9"))


@pytest.fixture(scope="module")
def unfreezing(dataset: Path, start_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """freeze backbone, unfreeze at epoch 1, 2 epochs: run straight through, and run 1 epoch then resumed."""
    config = tiny_config(dataset, tmp_path_factory.mktemp("runs") / "straight", pretrained=str(start_file),
                         freeze="backbone", unfreeze_at=1, backbone_lr_mult=0.5, lr=1e-2)
    straight = train(config)
    resumed_dir = tmp_path_factory.mktemp("runs") / "resumed"
    train(config.model_copy(update={"epochs": 1, "out": str(resumed_dir)}))
    first_epoch = _last_state(resumed_dir)
    resumed = train(config.model_copy(update={"out": str(resumed_dir)}), resume=resumed_dir)
    return straight, first_epoch, resumed


def _last_state(run_dir) -> dict[str, torch.Tensor]:
    ckpt = torch.load(Path(run_dir) / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    return {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}


def test_gradual_unfreezing_trains_only_the_head_before_the_epoch(unfreezing, start_file) -> None:
    _, first_epoch, _ = unfreezing
    start = load_model(start_file).state_dict()
    assert {k for k in start if not torch.equal(start[k], first_epoch[k])} == {"fc8.weight", "fc8.bias"}


def test_gradual_unfreezing_trains_the_backbone_from_the_epoch(unfreezing, start_file) -> None:
    straight, _, _ = unfreezing
    start, end = load_model(start_file).state_dict(), _last_state(straight.run_dir)
    assert not torch.equal(start["features.conv1.conv.weight"], end["features.conv1.conv.weight"])
    assert not torch.equal(start["features.conv1.bn.running_mean"], end["features.conv1.bn.running_mean"])


def test_gradual_unfreezing_resumes_to_exactly_the_uninterrupted_weights(unfreezing) -> None:
    straight, _, resumed = unfreezing
    expected, got = _last_state(straight.run_dir), _last_state(resumed.run_dir)
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []


def test_truncate_after_trains_and_saves_a_truncated_model(dataset, tmp_path) -> None:
    result = train(tiny_config(dataset, tmp_path, epochs=1, truncate_after="conv4b"))
    model = load_model(result.model_file)
    assert isinstance(model, TruncatedClassifier) and model.after == "features.conv4b"
    assert read_model_metadata(result.model_file)["model_args"]["truncate"]["after"] == "features.conv4b"

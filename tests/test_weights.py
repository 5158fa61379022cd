"""Pretrained weights: tags resolved through the torch hub / Hugging Face caches (offline, with
files the tests make), local files (vidzoo, safetensors, torchvision and piergiaj state dicts),
the head replaced for a new class count and reported exactly, every other mismatch an error.

Nothing here downloads: VIDZOO_OFFLINE=1 and the caches point into tmp_path."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import time
import urllib.error
from pathlib import Path

import pytest
import torch
from conftest import replace_weights
from safetensors.torch import save_file
from test_i3d import piergiaj_state_dict
from typer.testing import CliRunner

from vidzoo.cli import app
from vidzoo.data.synthetic import make_synthetic_dataset
from vidzoo.models import create_model, load_model, save_model
from vidzoo.train import TrainConfig, train
from vidzoo.weights import (
    UnknownWeightsError,
    WeightsChecksumError,
    WeightsMismatchError,
    WeightsNotFoundError,
    classifier_keys,
    load_pretrained,
)

TINY_R3D = {"frames": 4, "size": 32}
TINY_C3D = {"width": 0.0625, "frames": 8, "size": 16, "dropout": 0.0}
R3D_HEAD = ["net.fc.weight", "net.fc.bias"]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Offline, with an empty torch hub cache in tmp_path/torch (returned)."""
    monkeypatch.setenv("VIDZOO_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch" / "hub"))
    return tmp_path / "torch" / "hub"


@pytest.fixture(scope="module")
def r3d_torchvision_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    """A Kinetics-400-shaped r3d_18 checkpoint in torchvision's own key names, its SHA-256 and
    its state dict."""
    torch.manual_seed(0)
    state = create_model("r3d_18", num_classes=400, **TINY_R3D).net.state_dict()
    path = tmp_path_factory.mktemp("tv") / "r3d_18.pth"
    torch.save(state, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), state


def publish(monkeypatch: pytest.MonkeyPatch, sha256: str) -> str:
    """Point r3d_18.kinetics400 at a URL whose file name carries ``sha256``'s prefix, as
    torchvision's do; return that file name."""
    filename = f"r3d_18-{sha256[:8]}.pth"
    replace_weights(monkeypatch, "r3d_18", "kinetics400", url=f"https://download.pytorch.org/models/{filename}",
                    sha256=sha256[:8])
    return filename


def put_in_cache(cache: Path, filename: str, source: Path) -> Path:
    target = cache / "checkpoints" / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    return target


def test_tag_from_the_torch_hub_cache_loads_everything_with_400_classes(
    monkeypatch, offline, r3d_torchvision_file
):
    path, sha256, state = r3d_torchvision_file
    cached = put_in_cache(offline, publish(monkeypatch, sha256), path)
    model = create_model("r3d_18", pretrained="kinetics400", **TINY_R3D)
    report = model.load_report
    assert model.num_classes == 400
    assert report.skipped_head == [] and report.not_covered == []
    assert sorted(report.loaded) == sorted(f"net.{key}" for key in state)
    assert report.file == str(cached) and report.file_sha256 == sha256
    assert len(model.classes) == 400 and model.classes[0] == "abseiling"
    assert torch.equal(model.net.fc.weight, state["fc.weight"])


def test_tag_with_a_new_class_count_skips_exactly_the_head_and_says_so(
    monkeypatch, offline, r3d_torchvision_file, caplog
):
    path, sha256, state = r3d_torchvision_file
    put_in_cache(offline, publish(monkeypatch, sha256), path)
    with caplog.at_level(logging.INFO, logger="vidzoo.weights"):
        model = create_model("r3d_18", pretrained="kinetics400", num_classes=8, **TINY_R3D)
    report = model.load_report
    head = classifier_keys(model)
    assert sorted(head) == sorted(R3D_HEAD)
    assert sorted(report.skipped_head) == sorted(head)
    assert sorted(report.loaded) == sorted(f"net.{k}" for k in state if f"net.{k}" not in head)
    assert model.net.fc.weight.shape == (8, 512) and model.classes is None
    assert torch.equal(model.net.layer4[1].conv2[0].weight, state["layer4.1.conv2.0.weight"])
    assert "net.fc.weight" in caplog.text and "skipped" in caplog.text
    print(report)


def test_offline_checks_the_published_hash_prefix(monkeypatch, offline, r3d_torchvision_file):
    path, sha256, _ = r3d_torchvision_file
    wrong = ("0" if sha256[0] != "0" else "1") + sha256[1:]
    put_in_cache(offline, publish(monkeypatch, wrong), path)
    with pytest.raises(WeightsChecksumError, match=f"{sha256}.*does not start with {wrong[:8]}"):
        create_model("r3d_18", pretrained="kinetics400", **TINY_R3D)


def test_offline_missing_file_names_the_exact_path(monkeypatch, offline):
    filename = publish(monkeypatch, "ab" * 32)
    expected = offline / "checkpoints" / filename
    with pytest.raises(WeightsNotFoundError, match=re.escape(str(expected))):
        create_model("r3d_18", pretrained="kinetics400", **TINY_R3D)


def test_online_download_into_a_fresh_cache_and_a_failed_download(monkeypatch, offline, r3d_torchvision_file):
    """Online, the cache folder is created and the file fetched (here copied by a stand-in for
    torch's downloader); a download that fails names the URL and the path to put the file at."""
    source, sha256, _ = r3d_torchvision_file
    filename = publish(monkeypatch, sha256)
    monkeypatch.setenv("VIDZOO_OFFLINE", "0")
    monkeypatch.setattr("vidzoo.weights.network_unreachable", lambda url, timeout=3.0: None)  # "online"
    fetched = []

    def download(url, dst, hash_prefix=None):
        fetched.append((url, hash_prefix))
        Path(dst).write_bytes(source.read_bytes())  # fails unless the folder exists

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    model = create_model("r3d_18", pretrained="kinetics400", **TINY_R3D)
    assert fetched == [(f"https://download.pytorch.org/models/{filename}", sha256[:8])]
    assert model.load_report.file == str(offline / "checkpoints" / filename)

    def no_network(url, dst, hash_prefix=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsNotFoundError, match=r"could not download https://download\.pytorch\.org/models/i3d"):
        replace_weights(monkeypatch, "i3d", "imagenet", url="https://download.pytorch.org/models/i3d-test.pth",
                        sha256=None)
        create_model("i3d", pretrained="imagenet", frames=16, size=32, width=0.125)


def test_without_a_network_a_download_fails_at_once_naming_the_file_and_the_offline_switch(
        monkeypatch, offline, r3d_torchvision_file):
    _, sha256, _ = r3d_torchvision_file
    filename = publish(monkeypatch, sha256)
    monkeypatch.setenv("VIDZOO_OFFLINE", "0")

    def refused(address, timeout=None):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refused)
    started = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as err:
        create_model("r3d_18", pretrained="kinetics400", **TINY_R3D)
    assert time.perf_counter() - started < 5.0  # not the hub client's minute of retries (loose: a busy CI machine)
    message = str(err.value)
    assert "no network" in message and str(offline / "checkpoints" / filename) in message
    assert "VIDZOO_OFFLINE=1" in message


def test_timm_weights_without_a_network_look_in_the_cache_at_once(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("VIDZOO_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("vidzoo.models._layers.network_unreachable", lambda url, timeout=3.0: "cannot reach huggingface.co")
    started = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match=r"no network\).*mobilenetv3_small_050.lamb_in1k/model.safetensors"):
        create_model("c2d_timm", pretrained="imagenet", num_classes=4, **TIMM_TINY)
    assert time.perf_counter() - started < 5.0


def test_the_real_entry_is_looked_for_under_torchvisions_file_name(offline):
    with pytest.raises(WeightsNotFoundError, match=re.escape(str(offline / "checkpoints" / "r3d_18-b3b3357e.pth"))):
        create_model("r3d_18", pretrained="kinetics400", **TINY_R3D)


def test_a_renamed_layer_fails_naming_both_keys(tmp_path, r3d_torchvision_file):
    _, _, state = r3d_torchvision_file
    state = dict(state)
    state["layer2.0.conv_1.0.weight"] = state.pop("layer2.0.conv1.0.weight")
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    with pytest.raises(WeightsMismatchError) as err:
        create_model("r3d_18", pretrained=str(path), num_classes=8, **TINY_R3D)
    message = str(err.value)
    assert "missing from the weights: 'net.layer2.0.conv1.0.weight'" in message
    assert "'net.layer2.0.conv_1.0.weight'" in message and "unexpected" in message
    assert "fc.weight" not in message


def test_a_mis_shaped_backbone_tensor_is_an_error_even_with_a_new_head(tmp_path, r3d_torchvision_file):
    _, _, state = r3d_torchvision_file
    state = dict(state)
    state["layer1.0.conv1.1.weight"] = torch.ones(3)
    path = tmp_path / "misshaped.pth"
    torch.save(state, path)
    with pytest.raises(WeightsMismatchError, match=r"wrong shape: 'net.layer1.0.conv1.1.weight' \(3,\)"):
        create_model("r3d_18", pretrained=str(path), num_classes=8, **TINY_R3D)


def test_a_head_with_other_features_is_not_a_class_count_change(tmp_path):
    model = create_model("c3d_bn", num_classes=4, **TINY_C3D)
    state = model.state_dict()
    head = classifier_keys(model)
    state[head[0]] = torch.zeros(4, state[head[0]].shape[1] + 1)
    path = tmp_path / "head.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    with pytest.raises(WeightsMismatchError, match="wrong shape"):
        create_model("c3d_bn", pretrained=path, num_classes=3, **TINY_C3D)


def test_unknown_tag_that_is_no_file_is_an_error_with_the_tags():
    with pytest.raises(UnknownWeightsError, match="Did you mean 'kinetics400'"):
        create_model("r3d_18", pretrained="kinetics", **TINY_R3D)


def test_vidzoo_model_file_with_a_new_class_count_gets_a_new_head(tmp_path):
    torch.manual_seed(0)
    trained = create_model("c3d_bn", num_classes=8, **TINY_C3D)
    path = save_model(trained, tmp_path / "m.safetensors", classes=[f"c{i}" for i in range(8)])

    same = create_model("c3d_bn", pretrained=path, **TINY_C3D)  # the file's 8 classes
    assert same.num_classes == 8 and same.classes == [f"c{i}" for i in range(8)]
    assert same.load_report.skipped_head == []

    model = create_model("c3d_bn", pretrained=path, num_classes=3, **TINY_C3D)
    report = model.load_report
    head = classifier_keys(model)
    assert sorted(report.skipped_head) == sorted(head)
    assert sorted(report.loaded + report.skipped_head) == sorted(trained.state_dict())
    assert model.num_classes == 3 and model.classes is None
    for key, value in trained.state_dict().items():
        if key not in head:
            assert torch.equal(model.state_dict()[key], value), key
    assert model.model_args == {"num_classes": 3, **TINY_C3D}  # no pretrained= to refetch


def test_plain_safetensors_state_dict_loads(tmp_path):
    source = create_model("c3d_bn", num_classes=5, **TINY_C3D)
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    model = load_pretrained(create_model("c3d_bn", num_classes=5, **TINY_C3D), path)
    assert model.skipped_head == [] and len(model.loaded) == len(source.state_dict())


def test_piergiaj_i3d_file_via_the_converter_with_a_new_head(tmp_path):
    state = piergiaj_state_dict()
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(state, path)
    model = create_model("i3d", pretrained=str(path), num_classes=5)
    assert sorted(model.load_report.skipped_head) == ["logits.bias", "logits.weight"]
    assert model.logits.weight.shape[0] == 5
    assert torch.equal(
        model.features.Mixed_4c.branch1[1].conv.weight, state["Mixed_4c.b1b.conv3d.weight"]
    )


def test_piergiaj_file_for_another_model_is_an_error(tmp_path):
    path = tmp_path / "rgb_imagenet.pt"
    torch.save({"Conv3d_1a_7x7.conv3d.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsMismatchError, match="unexpected \\(not in the model\\): 'Conv3d_1a_7x7.conv3d.weight'"):
        create_model("c3d_bn", pretrained=str(path), num_classes=5, **TINY_C3D)


TIMM_TINY = {"backbone": "mobilenetv3_small_050", "frames": 2, "size": 32}


def test_timm_imagenet_offline_without_cache_names_the_hub_file(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(
        WeightsNotFoundError,
        match=re.escape("timm/mobilenetv3_small_050.lamb_in1k/model.safetensors"),
    ):
        create_model("c2d_timm", pretrained="imagenet", num_classes=4, **TIMM_TINY)


def test_timm_imagenet_from_the_hf_cache_loads_the_backbone_only(monkeypatch, tmp_path):
    import timm
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    repo = cache / "models--timm--mobilenetv3_small_050.lamb_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    imagenet = timm.create_model("mobilenetv3_small_050", num_classes=1000).state_dict()
    save_file({k: v.contiguous() for k, v in imagenet.items()}, snapshot / "model.safetensors")

    model = create_model("c2d_timm", pretrained="imagenet", num_classes=4, **TIMM_TINY)
    report = model.load_report
    assert sorted(report.skipped_head) == ["fc.bias", "fc.weight"]
    assert report.not_covered == []
    key = "conv_stem.weight"
    assert torch.equal(model.backbone.net.state_dict()[key], imagenet[key])
    assert all(k.startswith("backbone.net.") for k in report.loaded)


def test_cli_lists_pretrained_weights_as_json():
    result = CliRunner().invoke(app, ["models", "--pretrained", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["weights"]: row for row in json.loads(result.output)}
    r3d = rows["r3d_18.kinetics400"]
    assert r3d["num_classes"] == 400 and r3d["acc@1"] == 63.2
    assert r3d["source"] == "https://download.pytorch.org/models/r3d_18-b3b3357e.pth"
    assert rows["c2d_resnet50.imagenet"]["source"].startswith("timm:resnet50")


def test_train_from_a_model_file_with_another_class_count(tmp_path):
    data = tmp_path / "data"
    make_synthetic_dataset(data, videos_per_class=3, frames=8, size=32, fps=8, overwrite=True)
    torch.manual_seed(123)  # not the run's seed: a fresh init would differ from these weights
    start = save_model(create_model("c3d_bn", num_classes=3, **TINY_C3D), tmp_path / "start.safetensors")
    config = TrainConfig(
        model="c3d_bn", model_args={"width": 0.0625, "dropout": 0.0}, frames=8, size=16, data=str(data / "train.csv"),
        val=str(data / "val.csv"), workers=0, progress=False, batch_size=4, epochs=1,
        out=str(tmp_path / "run"), pretrained=str(start),
    )
    result = train(config)
    model_path = next(Path(result.run_dir).glob("c3d_bn-*.safetensors"))
    model = load_model(model_path)
    assert model.num_classes == 8 and len(model.classes) == 8
    start_state = load_model(start).state_dict()
    fresh = create_model("c3d_bn", num_classes=8, **TINY_C3D).state_dict()
    # The backbone started from the file (then took two small steps), not from scratch.
    first = next(k for k in start_state if k.endswith("weight"))
    moved = (model.state_dict()[first] - start_state[first]).abs().max()
    assert moved < 0.01 < (fresh[first] - start_state[first]).abs().max()
    assert model.state_dict()[classifier_keys(model)[0]].shape[0] == 8
    # The run reports what it loaded: exactly the old head was skipped.
    assert "skipped (old head, freshly initialised): fc8.weight, fc8.bias" in result.load_report
    assert result.trainable_parameters == result.total_parameters

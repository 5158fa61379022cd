"""Model files on the Hugging Face hub: ``hf-hub:ORG/NAME[@REV]`` wherever a model file is
accepted (load_model, --pretrained, train, eval, predict, info), fetched through the hub's cache.

Nothing here touches the network: the hub cache is a folder the tests fill (HF_HUB_CACHE points
at it), and the one online test replaces the download itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL
from typer.testing import CliRunner

from vidzoo import weights
from vidzoo.cli import app
from vidzoo.models import create_model, load_model, save_model
from vidzoo.weights import WeightsNotFoundError, parse_hf_hub_ref, resolve_model_file, vidzoo_file_metadata

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CLASSES = [f"class {i}" for i in range(8)]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model("c3d_bn", num_classes=len(CLASSES), **TINY_MODEL)
    return save_model(model, directory=tmp_path_factory.mktemp("models"), classes=CLASSES, history="synthetic")


@pytest.fixture
def hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Offline, with an empty Hugging Face hub cache (HF_HUB_CACHE, set after huggingface_hub
    was imported, as a user's shell would not do but a notebook might)."""
    monkeypatch.setenv("VIDZOO_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def put_in_hub_cache(cache: Path, repo_id: str, files: dict[str, Path], revision: str = "main") -> Path:
    """The layout huggingface_hub keeps: models--ORG--NAME/{refs/REV, snapshots/COMMIT/...}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    for name, source in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, snapshot / name)
    return snapshot


def test_load_model_reads_a_hub_model_file_from_the_cache(model_file, hub_cache) -> None:
    put_in_hub_cache(hub_cache, "someone/tiny-c3d", {"model.safetensors": model_file})
    model = load_model("hf-hub:someone/tiny-c3d")
    original = load_model(model_file)
    clip = torch.randn(1, 3, 8, 16, 16)
    assert torch.equal(model(clip), original(clip))
    assert model.classes == CLASSES and model.source_file == "hf-hub:someone/tiny-c3d"


def test_a_revision_and_a_file_of_the_repo_can_be_named(model_file, hub_cache) -> None:
    snapshot = put_in_hub_cache(hub_cache, "someone/zoo", {f"c3d/{model_file.name}": model_file}, revision="v2")
    assert resolve_model_file(f"hf-hub:someone/zoo/c3d/{model_file.name}@v2") == snapshot / "c3d" / model_file.name
    with pytest.raises(WeightsNotFoundError, match=f"someone/zoo/c3d/{model_file.name} is not in"):
        resolve_model_file(f"hf-hub:someone/zoo/c3d/{model_file.name}")  # main: not cached


def test_pretrained_from_the_hub_starts_a_model_with_a_new_head(model_file, hub_cache) -> None:
    put_in_hub_cache(hub_cache, "someone/tiny-c3d", {"model.safetensors": model_file})
    assert vidzoo_file_metadata("hf-hub:someone/tiny-c3d")["arch"] == "c3d_bn"
    model = create_model("c3d_bn", pretrained="hf-hub:someone/tiny-c3d", num_classes=3)
    assert model.load_report.source == "hf-hub:someone/tiny-c3d"
    assert model.load_report.skipped_head == ["fc8.weight", "fc8.bias"]
    assert model.clip_spec.frames == TINY_MODEL["frames"]  # the file's architecture and clip


def test_predict_and_info_take_a_hub_model_file(model_file, hub_cache, dataset) -> None:
    put_in_hub_cache(hub_cache, "someone/tiny-c3d", {"model.safetensors": model_file})
    video = sorted((dataset / "videos").rglob("*.mp4"))[0]
    result = CliRunner().invoke(app, ["predict", "hf-hub:someone/tiny-c3d", str(video), "--top-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    (prediction,) = json.loads(result.stdout)
    assert prediction["path"] == str(video) and len(prediction["top"]) == 2
    result = CliRunner().invoke(app, ["info", "hf-hub:someone/tiny-c3d"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["arch"] == "c3d_bn"


def test_train_and_eval_take_a_hub_model_file(model_file, hub_cache, dataset, tmp_path, capfd) -> None:
    put_in_hub_cache(hub_cache, "someone/tiny-c3d", {"model.safetensors": model_file})
    result = CliRunner().invoke(app, [
        "train", "--pretrained", "hf-hub:someone/tiny-c3d", "--data", str(dataset / "train.csv"),
        "--val", str(dataset / "val.csv"), "--epochs", "1",
        "--batch-size", "4", "--workers", "0", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    err = result.stderr + capfd.readouterr().err
    assert "pretrained weights hf-hub:someone/tiny-c3d" in err
    (trained,) = (tmp_path / "run").glob("c3d_bn-*.safetensors")  # the hub file's architecture and clip
    assert load_model(trained).clip_spec == load_model(model_file).clip_spec
    put_in_hub_cache(hub_cache, "someone/trained", {"model.safetensors": trained})
    result = CliRunner().invoke(app, ["eval", "hf-hub:someone/trained", str(dataset / "test.csv"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_videos"] == 8


def test_an_uncached_hub_model_offline_is_one_line_naming_it_and_the_cache(hub_cache, dataset) -> None:
    video = sorted((dataset / "videos").rglob("*.mp4"))[0]
    result = CliRunner().invoke(app, ["predict", "hf-hub:someone/absent", str(video)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = "".join(result.stderr.split())
    assert "someone/absent/model.safetensorsisnotintheHuggingFacehubcache" in message
    assert "".join(str(hub_cache).split()) in message


def test_hf_hub_offline_alone_reads_the_cache_and_nothing_else(model_file, hub_cache, dataset, monkeypatch) -> None:
    monkeypatch.delenv("VIDZOO_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after huggingface_hub was imported: read by vidzoo itself
    monkeypatch.setattr(weights, "network_unreachable", lambda *args, **kwargs: pytest.fail("probed the network"))
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *args, **kwargs: pytest.fail("downloaded"))
    put_in_hub_cache(hub_cache, "someone/tiny-c3d", {"model.safetensors": model_file})
    assert load_model("hf-hub:someone/tiny-c3d").classes == CLASSES
    started = create_model("c3d_bn", pretrained="hf-hub:someone/tiny-c3d", num_classes=3)
    assert started.load_report.skipped_head == ["fc8.weight", "fc8.bias"]
    video = sorted((dataset / "videos").rglob("*.mp4"))[0]
    result = CliRunner().invoke(app, ["predict", "hf-hub:someone/tiny-c3d", str(video), "--json"])
    assert result.exit_code == 0, result.output
    with pytest.raises(WeightsNotFoundError, match="HF_HUB_OFFLINE.*someone/absent/model.safetensors is not in"):
        load_model("hf-hub:someone/absent")


def test_online_the_file_is_downloaded_into_the_cache_the_environment_names(model_file, hub_cache, monkeypatch):
    monkeypatch.delenv("VIDZOO_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "network_unreachable", lambda url, timeout=None: None)
    calls = []

    def download(repo_id, filename, *, revision=None, cache_dir=None):
        calls.append((repo_id, filename, revision, Path(cache_dir)))
        snapshot = put_in_hub_cache(Path(cache_dir), repo_id, {filename: model_file}, revision=revision or "main")
        return str(snapshot / filename)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    model = load_model("hf-hub:someone/tiny-c3d@v1")
    assert calls == [("someone/tiny-c3d", "model.safetensors", "v1", hub_cache)]
    assert model.classes == CLASSES


@pytest.mark.parametrize("ref", ["hf-hub:", "hf-hub:no-slash", "hf-hub:a/b@"])
def test_a_malformed_reference_says_how_to_write_it(ref) -> None:
    with pytest.raises(ValueError, match=r"write hf-hub:ORG/NAME\[@REVISION\]"):
        parse_hf_hub_ref(ref)


def test_a_reference_names_repo_file_and_revision() -> None:
    assert parse_hf_hub_ref("hf-hub:org/name") == ("org/name", "model.safetensors", None)
    assert parse_hf_hub_ref("hf-hub:org/name@main") == ("org/name", "model.safetensors", "main")
    assert parse_hf_hub_ref("hf-hub:org/name/sub/x.safetensors@abc") == ("org/name", "sub/x.safetensors", "abc")

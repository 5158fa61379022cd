"""transformers' video classifiers as vidzoo models (vidzoo.models.hf_video): tiny random
checkpoints of every family, written with save_pretrained and loaded through create_model, give
transformers' own logits; their clip description comes from the processor config and is checked;
the head is replaced and reported like every family's; freezing names their blocks.

Everything is offline: the checkpoints are made here, a hub id is read from a cache made here.
transformers takes seconds to import, so every test of it lives in this module, on module-scoped
checkpoints.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

transformers = pytest.importorskip("transformers")
from transformers.utils import logging as hf_logging  # noqa: E402

from vidzoo.cli import app  # noqa: E402
from vidzoo.data.transforms import Normalize  # noqa: E402
from vidzoo.models import create_model, load_model, save_model  # noqa: E402
from vidzoo.models.hf_video import FAMILIES, VARIANTS, video_classification_model_types  # noqa: E402
from vidzoo.transfer import freeze, train_last  # noqa: E402
from vidzoo.weights import UnknownWeightsError, WeightsMismatchError, WeightsNotFoundError  # noqa: E402

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

B, T, S, LABELS = 2, 4, 32, 5
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# name -> (vidzoo model, transformers config values beyond the family's tiny ones)
CHECKPOINTS = {
    "videomae": ("hf_videomae", {}),
    "videomae_token0": ("hf_videomae", {"use_mean_pooling": False}),
    "timesformer": ("hf_timesformer", {}),
    "vivit": ("hf_vivit", {}),
    "vjepa2": ("hf_vjepa2", {}),
    "videoprism": ("hf_videoprism", {}),
}
CLASSES = [f"action {i}" for i in range(LABELS)]


def _processor(model_type: str):
    """A processor that follows the family's documented preprocessing at the tiny size."""
    sized = {"size": {"shortest_edge": 36}, "crop_size": {"height": S, "width": S}}
    if model_type == "videomae":
        return transformers.VideoMAEVideoProcessor(**sized, image_mean=IMAGENET["mean"], image_std=IMAGENET["std"])
    if model_type == "timesformer":
        return transformers.TimesformerVideoProcessor(**sized, image_mean=[0.45] * 3, image_std=[0.225] * 3)
    if model_type == "vivit":
        # x / 127.5 - 1 and no normalisation: scenic's zero-centring to [-1, 1].
        return transformers.VivitVideoProcessor(**sized, rescale_factor=1 / 127.5, do_normalize=False)
    if model_type == "vjepa2":
        return transformers.VJEPA2VideoProcessor(crop_size=S)
    return transformers.LlavaOnevisionVideoProcessor(size={"height": S, "width": S}, do_normalize=False)


def _write_checkpoint(directory: Path, name: str, seed: int) -> Path:
    arch, extra = CHECKPOINTS[name]
    model_type = VARIANTS[arch]
    family = FAMILIES[model_type]
    config = transformers.AutoConfig.for_model(
        model_type, **family.tiny, **extra, **{family.frames_key: T, family.size_key: S},
        id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)})
    torch.manual_seed(seed)
    model = transformers.AutoModelForVideoClassification.from_config(config)
    with torch.no_grad():  # no tensor left at its initial value (zero biases included)
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(directory)
    _processor(model_type).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_checkpoints")
    return {name: _write_checkpoint(root / name, name, seed) for seed, name in enumerate(CHECKPOINTS)}


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return torch.randn(B, 3, T, S, S, generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Offline, with an empty Hugging Face cache in tmp_path/hub (returned)."""
    monkeypatch.setenv("VIDZOO_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _transformers_logits(directory: Path, clip: torch.Tensor) -> torch.Tensor:
    reference = transformers.AutoModelForVideoClassification.from_pretrained(directory).eval()
    with torch.no_grad():
        logits = reference(**{reference.main_input_name: clip.transpose(1, 2)}).logits
    return logits.squeeze(1) if logits.ndim == 3 else logits  # VideoPrism's keeps its pooling axis


def test_every_video_classifier_of_transformers_is_a_vidzoo_model() -> None:
    assert set(video_classification_model_types()) == set(FAMILIES) == set(VARIANTS.values())


# --- loading a checkpoint ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_logits_are_transformers_own(checkpoints, clip, name) -> None:
    model = create_model(CHECKPOINTS[name][0], pretrained=str(checkpoints[name])).eval()
    with torch.no_grad():
        ours = model(clip)
    theirs = _transformers_logits(checkpoints[name], clip)
    assert ours.shape == (B, LABELS)
    assert (ours - theirs).abs().max().item() <= 1e-6


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_a_checkpoint_loads_whole_with_its_labels_and_clip(checkpoints, name) -> None:
    arch = CHECKPOINTS[name][0]
    model = create_model(arch, pretrained=str(checkpoints[name]))
    report = model.load_report
    assert report.skipped_head == [] and report.not_covered == [] and report.warnings == []
    assert sorted(report.loaded) == sorted(model.state_dict())
    assert model.classes == CLASSES and model.num_classes == LABELS
    family = FAMILIES[VARIANTS[arch]]
    spec = model.clip_spec
    assert (spec.frames, spec.size, spec.norm) == (T, (S, S), dict(family.norm))
    assert spec.resize_short == (int(S * 256 / 224) if arch == "hf_vjepa2" else 36 if arch != "hf_videoprism" else S)
    assert model.model_args["config"]["hidden_size"] == 32


@pytest.mark.parametrize("name", ["videomae", "timesformer", "vivit", "vjepa2", "videoprism"])
def test_the_clip_norm_gives_the_processors_own_pixels(checkpoints, name) -> None:
    directory = checkpoints[name]
    saved = json.loads((directory / "video_preprocessor_config.json").read_text())
    processor = getattr(transformers, saved["video_processor_type"]).from_pretrained(directory)
    values = np.array([10, 128, 250], np.uint8)
    video = np.broadcast_to(values, (T, 40, 48, 3)).copy()  # constant per channel: any resize keeps it
    out = processor(videos=video, return_tensors="pt")
    theirs = (out["pixel_values_videos"] if "pixel_values_videos" in out else out["pixel_values"])[0]
    spec = create_model(CHECKPOINTS[name][0], pretrained=str(directory)).clip_spec
    ours = Normalize.from_spec(spec.norm)(torch.from_numpy(video))  # (3, T, H, W)
    assert torch.allclose(ours.mean(dim=(1, 2, 3)), theirs.mean(dim=(0, 2, 3)), atol=1e-3)


@pytest.mark.parametrize(("arch", "processor"), [("hf_vjepa2", "VJEPA2VideoProcessor"),
                                                ("hf_videomae", "VideoMAEVideoProcessor")])
def test_the_default_clip_resizes_as_the_familys_processor(arch, processor) -> None:
    # Without a checkpoint the clip is the documented protocol: V-JEPA 2's processor resizes the
    # short side to int(256 * 256 / 224) = 292 before its 256 crop (rounded down, not to 293).
    with torch.device("meta"):
        model = create_model(arch, config=dict(FAMILIES[VARIANTS[arch]].tiny))
    assert model.clip_spec.resize_short == getattr(transformers, processor)().size["shortest_edge"]


def test_a_saved_pretrained_model_rebuilds_without_the_checkpoint(checkpoints, clip, tmp_path) -> None:
    directory = tmp_path / "moved"
    shutil.copytree(checkpoints["vivit"], directory)
    model = create_model("hf_vivit", pretrained=str(directory)).eval()
    saved = save_model(model, directory=tmp_path, history="synthetic")
    shutil.rmtree(directory)
    loaded = load_model(saved)
    assert loaded.classes == CLASSES and loaded.clip_spec == model.clip_spec
    with torch.no_grad():
        assert torch.equal(loaded(clip), model(clip))


def test_train_fine_tunes_a_checkpoint_folder(checkpoints, dataset, tmp_path, capfd) -> None:
    result = CliRunner().invoke(app, [
        "train", "--model", "hf_videomae", "--pretrained", str(checkpoints["videomae"]),
        "--data", str(dataset / "train.csv"), "--val", str(dataset / "val.csv"), "--freeze", "until:layer.0",
        "--epochs", "1", "--batch-size", "4", "--workers", "0", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    err = result.stderr + capfd.readouterr().err
    assert "skipped (old head, freshly initialised): hf.classifier.weight, hf.classifier.bias" in err
    (saved,) = (tmp_path / "run").glob("hf_videomae-*.safetensors")
    model = load_model(saved)  # rebuilt from the file alone: the checkpoint's config travels in it
    assert model.num_classes == 8 and model.model_args["config"]["hidden_size"] == 32
    assert (model.clip_spec.frames, model.clip_spec.size, model.clip_spec.norm) == (T, (S, S), IMAGENET)
    start = create_model("hf_videomae", pretrained=str(checkpoints["videomae"]))
    frozen = "hf.videomae.encoder.layer.0.output.dense.weight"
    assert torch.equal(model.state_dict()[frozen], start.state_dict()[frozen])


# --- the head, freezing -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["videomae", "vjepa2"])
def test_a_new_class_count_replaces_only_the_head_and_reports_it(checkpoints, clip, name) -> None:
    arch = CHECKPOINTS[name][0]
    whole = create_model(arch, pretrained=str(checkpoints[name])).eval()
    model = create_model(arch, pretrained=str(checkpoints[name]), num_classes=3).eval()
    assert model.load_report.skipped_head == ["hf.classifier.weight", "hf.classifier.bias"]
    assert "skipped (old head, freshly initialised): hf.classifier.weight, hf.classifier.bias" in str(model.load_report)
    assert model.classes is None
    with torch.no_grad():
        assert model(clip).shape == (B, 3)
        assert torch.equal(model.forward_head(model.forward_features(clip), pre_logits=True),
                           whole.forward_head(whole.forward_features(clip), pre_logits=True))


def test_freezing_until_a_block_freezes_the_embeddings_and_blocks_before_it(checkpoints) -> None:
    model = create_model("hf_videomae", pretrained=str(checkpoints["videomae"]), num_classes=3)
    assert model.layer_names() == ["hf.videomae.encoder.layer.0", "hf.videomae.encoder.layer.1"]
    frozen = set(freeze(model, until="layer.0"))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert frozen == {name for name in dict(model.named_parameters())
                      if name.startswith(("hf.videomae.embeddings.", "hf.videomae.encoder.layer.0."))}
    assert {"hf.classifier.weight", "hf.fc_norm.weight"} <= trainable
    assert all(name.startswith("hf.videomae.encoder.layer.1.") or not name.startswith("hf.videomae.")
               for name in trainable)
    assert set(train_last(model, 1)) == frozen


def test_a_truncated_checkpoint_model_pools_the_tokens_of_its_cut(checkpoints, clip) -> None:
    model = create_model("hf_timesformer", pretrained=str(checkpoints["timesformer"]), num_classes=3,
                         truncate={"after": "layer.0"}).eval()
    with torch.no_grad():
        assert model(clip).shape == (B, 3)
    assert not any(".encoder.layer.1." in name for name in model.state_dict())


# --- what the checkpoint says, checked --------------------------------------------------------


def test_a_processor_normalisation_unlike_the_documented_one_is_a_warning_and_not_used(
    checkpoints, tmp_path, caplog
) -> None:
    directory = tmp_path / "videomae_default_processor"
    shutil.copytree(checkpoints["videomae"], directory)
    # VideoMAEVideoProcessor's own defaults are 0.5/0.5, not VideoMAE's ImageNet statistics.
    transformers.VideoMAEVideoProcessor(size={"shortest_edge": 36}, crop_size={"height": S, "width": S}) \
        .save_pretrained(directory)
    with caplog.at_level(logging.WARNING, logger="vidzoo.weights"):
        model = create_model("hf_videomae", pretrained=str(directory))
    (warning,) = model.load_report.warnings
    assert "mean [0.5, 0.5, 0.5] std [0.5, 0.5, 0.5]" in warning
    assert "documented videomae mean [0.485, 0.456, 0.406] std [0.229, 0.224, 0.225]" in warning
    assert f"warning: {warning}" in str(model.load_report)
    assert warning in caplog.text
    assert model.clip_spec.norm == IMAGENET


def test_the_canonical_vivit_processor_maps_pixels_to_minus_three_and_is_flagged(checkpoints, tmp_path) -> None:
    # google/vivit-b-16x2-kinetics400's preprocessor_config.json: 1/127.5, offset (its default),
    # then (x - 0.5) / 0.5, which maps pixel 0 to -3 and 255 to 1 (scenic trains on [-1, 1]).
    directory = tmp_path / "vivit_hub_processor"
    shutil.copytree(checkpoints["vivit"], directory)
    (directory / "video_preprocessor_config.json").unlink()
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "VivitImageProcessor", "do_resize": True, "size": {"shortest_edge": 36},
        "do_center_crop": True, "crop_size": {"height": S, "width": S}, "do_rescale": True,
        "rescale_factor": 1 / 127.5, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    model = create_model("hf_vivit", pretrained=str(directory))
    (warning,) = model.load_report.warnings
    assert "mean [0.75, 0.75, 0.75] std [0.25, 0.25, 0.25]" in warning
    assert model.clip_spec.norm == {"mean": [0.5] * 3, "std": [0.5] * 3}


def test_a_processor_for_another_size_or_frame_count_is_a_warning(checkpoints, tmp_path) -> None:
    directory = tmp_path / "videoprism_other_size"
    shutil.copytree(checkpoints["videoprism"], directory)
    transformers.LlavaOnevisionVideoProcessor(size={"height": 48, "width": 48}, do_normalize=False,
                                              do_sample_frames=True, num_frames=8).save_pretrained(directory)
    model = create_model("hf_videoprism", pretrained=str(directory))
    assert model.load_report.warnings == [
        "the processor samples 8 frames, the model config has 4: using 4",
        "the processor makes 48x48 frames, the model config's size is 32x32: using 32x32",
    ]
    assert (model.clip_spec.frames, model.clip_spec.size) == (T, (S, S))


def test_a_checkpoint_without_a_processor_config_is_a_warning(checkpoints, tmp_path) -> None:
    directory = tmp_path / "no_processor"
    shutil.copytree(checkpoints["timesformer"], directory)
    (directory / "video_preprocessor_config.json").unlink()
    model = create_model("hf_timesformer", pretrained=str(directory))
    assert [w.split(":")[0] for w in model.load_report.warnings] == [
        "the checkpoint has no processor config (video_preprocessor_config.json or preprocessor_config.json)"]
    assert model.clip_spec.norm == {"mean": [0.45] * 3, "std": [0.225] * 3}


def test_a_missing_tensor_is_an_error_not_a_zero(checkpoints, tmp_path) -> None:
    directory = tmp_path / "no_bias"
    shutil.copytree(checkpoints["vivit"], directory)
    tensors = load_file(directory / "model.safetensors")
    dropped = next(key for key in tensors if key.endswith("bias") and "classifier" not in key)
    del tensors[dropped]
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsMismatchError, match=r"do not fit its own config: missing .*bias"):
        create_model("hf_vivit", pretrained=str(directory))


def test_a_checkpoint_of_another_family_names_the_model_to_use(checkpoints) -> None:
    with pytest.raises(UnknownWeightsError, match="is a transformers 'vivit' checkpoint, not 'videomae'; "
                                                  "load it with model hf_vivit"):
        create_model("hf_videomae", pretrained=str(checkpoints["vivit"]))


def test_a_directory_that_is_no_checkpoint_says_so(tmp_path) -> None:
    with pytest.raises(WeightsNotFoundError, match="has no config.json, so it is no transformers checkpoint"):
        create_model("hf_videomae", pretrained=str(tmp_path))


# --- hub ids, offline ---------------------------------------------------------------------------


def _put_in_hub_cache(cache: Path, repo_id: str, directory: Path, revision: str = "main") -> str:
    """The layout huggingface_hub keeps: models--ORG--NAME/{refs/REV, snapshots/COMMIT/files}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / revision).write_text(commit)
    shutil.copytree(directory, repo / "snapshots" / commit)
    return commit


def test_a_cached_hub_id_loads_offline_with_its_documented_protocol(checkpoints, clip, offline) -> None:
    repo_id = "MCG-NJU/videomae-base-finetuned-kinetics"
    _put_in_hub_cache(offline, repo_id, checkpoints["videomae"])
    model = create_model("hf_videomae", pretrained=repo_id).eval()
    assert model.load_report.file.startswith(str(offline))
    spec = model.clip_spec
    protocol = (spec.frame_stride, spec.sampling, spec.clips_per_video, spec.crops, spec.resize_short)
    assert protocol == (4, "dense", 5, 3, 224)
    with torch.no_grad():
        assert torch.equal(model(clip), _transformers_logits(checkpoints["videomae"], clip))


def test_a_cached_hub_id_loads_with_hf_hub_offline_alone(checkpoints, offline, monkeypatch) -> None:
    monkeypatch.delenv("VIDZOO_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # after huggingface_hub's import, which reads it once
    _put_in_hub_cache(offline, "someone/tiny-timesformer", checkpoints["timesformer"])
    model = create_model("hf_timesformer", pretrained="someone/tiny-timesformer", num_classes=3)
    assert model.load_report.file.startswith(str(offline))
    with pytest.raises(WeightsNotFoundError, match="someone/absent/config.json is not in the Hugging Face hub cache"):
        create_model("hf_timesformer", pretrained="someone/absent")


def test_a_tag_is_read_as_its_hub_id(checkpoints, clip, offline) -> None:
    _put_in_hub_cache(offline, "facebook/timesformer-base-finetuned-k400", checkpoints["timesformer"])
    model = create_model("hf_timesformer", pretrained="kinetics400").eval()
    assert model.load_report.source == "hf_timesformer.kinetics400"
    assert model.load_report.file.startswith(str(offline)) and model.classes == CLASSES
    assert (model.clip_spec.frames, model.clip_spec.frame_stride) == (T, 32)  # its config; the documented stride
    with torch.no_grad():
        assert torch.equal(model(clip), _transformers_logits(checkpoints["timesformer"], clip))
    with pytest.raises(WeightsNotFoundError, match="google/vivit-b-16x2-kinetics400/config.json is not in"):
        create_model("hf_vivit", pretrained="kinetics400")


def test_the_tags_are_listed_with_their_hub_id_and_protocol() -> None:
    result = CliRunner().invoke(app, ["models", "--pretrained", "--json"])
    rows = {row["weights"]: row for row in json.loads(result.stdout) if row["model"].startswith("hf_")}
    assert sorted(rows) == ["hf_timesformer.kinetics400", "hf_videomae.kinetics400", "hf_videomae.ssv2",
                            "hf_vivit.kinetics400", "hf_vjepa2.ssv2"]
    assert rows["hf_videomae.kinetics400"]["source"].startswith("MCG-NJU/videomae-base-finetuned-kinetics ")
    assert rows["hf_vjepa2.ssv2"]["clip"].startswith("16x256x256")


def test_a_hub_id_at_a_revision_reads_that_revision(checkpoints, offline) -> None:
    _put_in_hub_cache(offline, "someone/tiny-vjepa2", checkpoints["vjepa2"], revision="v1")
    model = create_model("hf_vjepa2", pretrained="someone/tiny-vjepa2@v1")
    assert model.load_report.source == "someone/tiny-vjepa2@v1"
    with pytest.raises(WeightsNotFoundError, match="someone/tiny-vjepa2/config.json is not in"):
        create_model("hf_vjepa2", pretrained="someone/tiny-vjepa2")


def test_an_uncached_hub_id_offline_names_it_and_the_cache_at_once(offline) -> None:
    start = time.monotonic()
    with pytest.raises(WeightsNotFoundError) as err:
        create_model("hf_vivit", pretrained="google/vivit-b-16x2-kinetics400")
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "google/vivit-b-16x2-kinetics400/config.json is not in the Hugging Face hub cache" in message
    assert str(offline) in message and "VIDZOO_OFFLINE" in message


# --- inputs and imports -------------------------------------------------------------------------


def test_vjepa2_takes_any_frame_count_but_only_its_frame_size(checkpoints) -> None:
    model = create_model("hf_vjepa2", pretrained=str(checkpoints["vjepa2"])).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 8, S, S)).shape == (1, LABELS)
    with pytest.raises(ValueError, match="takes clips of 32x32 frames"):
        model(torch.randn(1, 3, T, 48, 48))


def test_the_other_families_refuse_another_clip_size_before_transformers_runs(checkpoints) -> None:
    model = create_model("hf_timesformer", pretrained=str(checkpoints["timesformer"]))
    with pytest.raises(ValueError, match="built for 4x32x32 clips"):
        model(torch.randn(1, 3, 8, S, S))  # TimeSformer itself would run and mix up its tokens


def test_registering_the_family_does_not_import_transformers() -> None:
    # The registry imports every family to list the zoo: this one must not cost transformers' import.
    code = ("import sys, vidzoo.models.hf_video as family; from vidzoo.models import _registry; "
            "print(sorted(n for n in _registry._MODELS if n.startswith('hf_')), 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["['hf_timesformer',", "'hf_videomae',", "'hf_videoprism',", "'hf_vivit',", "'hf_vjepa2']",
                           "False"]


def test_without_transformers_the_error_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
    with pytest.raises(ImportError, match=r"needs the transformers package, an optional extra: "
                                          r"pip install 'vidzoo\[hf\]'"):
        create_model("hf_vivit")


def test_without_transformers_a_command_says_what_to_install_in_one_line(monkeypatch, dataset, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    result = CliRunner().invoke(app, ["extract", "hf_vivit", str(dataset / "train.csv"), "--out", str(tmp_path / "f.npy")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [
        "error: the vivit model needs the transformers package, an optional extra: pip install 'vidzoo[hf]'"]

"""Feature extraction: rows aligned with the source, the default and tapped layers computed as
the model computes them, per-video means, resumable chunked files, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL

from vidzoo.data.dataset import VideoDataset
from vidzoo.data.sources import load_source
from vidzoo.data.video import VideoDecodeError
from vidzoo.features import (
    Features,
    extract_features,
    layer_names,
    load_features,
    resolve_model,
    save_features,
)
from vidzoo.models import UnknownModelError, create_model, get_model_entry, save_model
from vidzoo.transfer import layer_names as transfer_layer_names

# The module's fixtures are costly: one xdist worker runs all its tests (make test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("features")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("c3d_bn", num_classes=8, **TINY_MODEL).eval()


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory) -> Path:
    """One 16-frame video per class: long enough for distinct 8-frame clips."""
    from vidzoo.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("long")
    make_synthetic_dataset(root, videos_per_class=1, frames=16, size=32, fps=8, splits=(1, 0, 0), overwrite=True)
    return root / "labels.csv"


def views(model, source, index: int, clips: int = 1) -> torch.Tensor:
    """The clips of one video, cut independently of vidzoo.features (as `vidzoo eval` cuts them)."""
    spec = model.clip_spec.replace(clips_per_video=clips)
    return VideoDataset.from_spec(source, spec, train=False)[index][0]


def test_rows_are_aligned_with_the_source(model, dataset):
    source = load_source(dataset / "labels.csv")
    features = extract_features(model, source, progress=False)
    assert features.features.shape == (len(source), model.num_features)
    assert features.features.dtype == np.float32
    assert features.video_ids == [s.video_id for s in source.samples]
    assert features.labels.tolist() == [s.label for s in source.samples]
    assert features.classes == source.classes
    assert (features.layer, features.per, features.clip_index) == ("pre_logits", "video", None)


def test_default_layer_is_the_pre_logits_vector(model, dataset):
    source = load_source(dataset / "test.csv")
    features = extract_features(model, source, progress=False)
    with torch.no_grad():
        expected = torch.stack([model.forward_head(model.forward_features(views(model, source, i)), pre_logits=True)[0]
                                for i in range(len(source))])
    np.testing.assert_allclose(features.features, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_per_video_is_the_mean_of_the_per_clip_rows(model, long_videos):
    per_clip = extract_features(model, long_videos, per="clip", clips_per_video=3, progress=False)
    per_video = extract_features(model, long_videos, per="video", clips_per_video=3, progress=False)
    n = len(per_video.video_ids)
    assert per_clip.features.shape == (3 * n, model.num_features)
    assert per_clip.clip_index.tolist() == [0, 1, 2] * n
    assert per_clip.video_ids == [v for v in per_video.video_ids for _ in range(3)]
    clips = per_clip.features.reshape(n, 3, -1)
    assert not np.allclose(clips[:, 0], clips[:, 2])  # the clips differ, so the mean means something
    np.testing.assert_allclose(per_video.features, clips.mean(axis=1), rtol=1e-5, atol=1e-6)


def test_per_token_rows_are_the_positions_of_the_layer_output_clip_by_clip(model, dataset):
    source = load_source(dataset / "test.csv")
    features = extract_features(model, source, layer="conv3b", per="token", clips_per_video=2, progress=False)
    with torch.no_grad():
        out = model.forward_intermediates(views(model, source, 0, clips=2), ["features.conv3b"])["features.conv3b"]
    channels, tokens = out.shape[1], out[0, 0].numel()  # (clips, C, T, H, W): T x H x W tokens a clip
    assert tokens > 1 and features.features.shape == (len(source) * 2 * tokens, channels)
    first = slice(0, 2 * tokens)  # the first video's rows
    np.testing.assert_allclose(features.features[first], out.flatten(2).transpose(1, 2).reshape(-1, channels).numpy(),
                               rtol=1e-5, atol=1e-6)
    assert features.clip_index[first].tolist() == [0] * tokens + [1] * tokens
    assert features.token_index[first].tolist() == list(range(tokens)) * 2
    assert features.video_ids[first] == [source.samples[0].video_id] * (2 * tokens)
    assert (features.per, features.layer) == ("token", "features.conv3b")


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_per_token_indices_round_trip(tmp_path, suffix):
    rows = Features(np.arange(12, dtype=np.float32).reshape(6, 2), ["a"] * 4 + ["b"] * 2, np.array([0] * 4 + [1] * 2),
                    ["x", "y"], np.array([0, 0, 1, 1, 0, 0]), per="token", token_index=np.array([0, 1, 0, 1, 0, 1]))
    loaded = load_features(save_features(rows, tmp_path / f"t{suffix}"))
    assert (loaded.per, loaded.clip_index.tolist(), loaded.token_index.tolist()) == (
        "token", [0, 0, 1, 1, 0, 0], [0, 1, 0, 1, 0, 1])


@pytest.mark.parametrize("layer", ["features.conv1", "features.conv3b"])
def test_a_tapped_layer_is_its_module_output_pooled(model, dataset, layer):
    source = load_source(dataset / "test.csv")
    features = extract_features(model, source, layer=layer, progress=False)
    outputs = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, out: outputs.append(out.clone()))
    try:
        with torch.no_grad():
            for i in range(len(source)):
                model(views(model, source, i))
    finally:
        handle.remove()
    expected = torch.cat([out.mean(dim=(2, 3, 4)) for out in outputs])
    channels = next(info.channels for info in model.feature_info if info.module == layer)
    assert features.features.shape == (len(source), channels)
    assert features.layer == layer
    np.testing.assert_allclose(features.features, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_unknown_layer_lists_the_layers_with_a_did_you_mean(model, dataset):
    with pytest.raises(ValueError, match="unknown layer 'features.conv3'.*Did you mean 'features.conv3b'") as info:
        extract_features(model, dataset / "test.csv", layer="features.conv3", progress=False)
    for name in layer_names(model):
        assert name in str(info.value)


def test_a_per_frame_layer_is_averaged_over_frames_and_space(dataset):
    # The layers freezing lists are the layers extraction taps: LRCN's frame CNN's blocks.
    torch.manual_seed(0)
    lrcn = create_model("lrcn", num_classes=8, **get_model_entry("lrcn").test_args).eval()
    assert "backbone.net.block3" in layer_names(lrcn) and "backbone.net.block3" in transfer_layer_names(lrcn)
    source = load_source(dataset / "test.csv")
    features = extract_features(lrcn, source, layer="block3", clips_per_video=1, progress=False)
    assert features.layer == "backbone.net.block3"
    clip = views(lrcn, source, 0)
    b, c, t, h, w = clip.shape
    with torch.no_grad():
        blocks = torch.nn.Sequential(*list(lrcn.backbone.net.children())[:3])
        maps = blocks(clip.transpose(1, 2).reshape(b * t, c, h, w))  # blocks 1-3, per frame
    np.testing.assert_allclose(features.features[0], maps.mean(dim=(0, 2, 3)).numpy(), rtol=1e-5, atol=1e-6)


def test_a_model_without_layers_says_so(dataset):
    model = create_model("swin3d_t", num_classes=8, **get_model_entry("swin3d_t").test_args)
    assert model.feature_info == []
    with pytest.raises(ValueError, match="swin3d_t lists no layers.*pre-logits"):
        extract_features(model, dataset / "test.csv", layer="features.3", progress=False)


def test_model_file_and_model_give_the_same_features(model, dataset, tmp_path):
    path = save_model(model, tmp_path / "tiny.safetensors", history="test")
    from_file = extract_features(path, dataset / "test.csv", progress=False)
    from_model = extract_features(model, dataset / "test.csv", progress=False)
    np.testing.assert_array_equal(from_file.features, from_model.features)
    assert from_file.model["tensors_sha256"] == from_model.model["tensors_sha256"]
    assert from_file.model["file"] == str(path)


def test_resolve_model_builds_a_registered_name_and_rejects_an_unknown_one(tmp_path):
    assert resolve_model("c3d_bn", **TINY_MODEL).num_features == 256
    with pytest.raises(UnknownModelError, match="c3d_bnn"):
        resolve_model("c3d_bnn")
    with pytest.raises(FileNotFoundError, match="no_such.safetensors"):
        resolve_model(tmp_path / "no_such.safetensors")


# --------------------------------------------------------------------------- files and resuming


class Interrupt(Exception):
    pass


def test_an_interrupted_extraction_resumes_without_recomputing(model, dataset, tmp_path):
    source = load_source(dataset / "labels.csv")  # 24 videos: chunks of 5 make 5 chunks
    out = tmp_path / "feats.npy"

    def stop_after_two(chunk: int, total: int) -> None:
        if chunk == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        extract_features(model, source, out=out, chunk_size=5, clips_per_video=2, per="clip", progress=False,
                         on_chunk=stop_after_two)
    parts = tmp_path / "feats.npy.parts"
    assert sorted(p.name for p in parts.glob("chunk-*")) == ["chunk-000000.safetensors", "chunk-000001.safetensors"]
    assert not out.exists()

    computed: list[int] = []
    resumed = extract_features(model, source, out=out, chunk_size=5, clips_per_video=2, per="clip", progress=False,
                               on_chunk=lambda chunk, total: computed.append(chunk))
    assert computed == [2, 3, 4]
    assert not parts.exists()
    # Same chunks, so the same batches: the numbers must match bit for bit.
    one_shot = extract_features(model, source, out=tmp_path / "one_shot.npy", chunk_size=5, clips_per_video=2, per="clip",
                                progress=False)
    np.testing.assert_array_equal(resumed.features, one_shot.features)
    np.testing.assert_array_equal(load_features(out).features, one_shot.features)
    assert resumed.video_ids == one_shot.video_ids
    assert resumed.clip_index.tolist() == one_shot.clip_index.tolist()


def test_resuming_with_other_settings_is_refused(model, dataset, tmp_path):
    out = tmp_path / "feats.npy"

    def stop(chunk: int, total: int) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        extract_features(model, dataset / "labels.csv", out=out, chunk_size=5, progress=False, on_chunk=stop)
    with pytest.raises(FileExistsError, match=r"other settings \(differs in: layer\)"):
        extract_features(model, dataset / "labels.csv", out=out, chunk_size=5, layer="features.conv2", progress=False)
    redone = extract_features(model, dataset / "labels.csv", out=out, chunk_size=5, layer="features.conv2",
                              overwrite=True, progress=False)
    assert load_features(out).layer == redone.layer == "features.conv2"


def test_an_existing_output_is_not_overwritten(model, dataset, tmp_path):
    out = tmp_path / "feats.npy"
    extract_features(model, dataset / "test.csv", out=out, progress=False)
    with pytest.raises(FileExistsError, match="feats.npy already exists.*overwrite"):
        extract_features(model, dataset / "test.csv", out=out, progress=False)


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_features_files_round_trip(model, dataset, tmp_path, suffix):
    features = extract_features(model, dataset / "test.csv", per="clip", clips_per_video=2, out=tmp_path / f"f{suffix}",
                                progress=False)
    loaded = load_features(tmp_path / f"f{suffix}")
    np.testing.assert_array_equal(loaded.features, features.features)
    assert loaded.video_ids == features.video_ids
    assert loaded.labels.tolist() == features.labels.tolist()
    assert loaded.classes == features.classes
    assert loaded.clip_index.tolist() == features.clip_index.tolist()
    assert (loaded.layer, loaded.per, loaded.clips_per_video, loaded.model) == ("pre_logits", "clip", 2, features.model)
    assert loaded.clip_spec == features.clip_spec


def test_the_npy_sidecar_describes_the_extraction(model, dataset, tmp_path):
    extract_features(model, dataset / "test.csv", out=tmp_path / "f.npy", progress=False)
    meta = json.loads((tmp_path / "f.json").read_text())
    source = load_source(dataset / "test.csv")
    assert meta["video_ids"] == [s.video_id for s in source.samples]
    assert [meta["classes"][i] for i in meta["labels"]] == [source.classes[s.label] for s in source.samples]
    assert meta["model"]["name"] == "c3d_bn"
    assert (meta["layer"], meta["per"], meta["shape"]) == ("pre_logits", "video", [8, 256])
    assert meta["clips_per_video"] == model.clip_spec.clips_per_video == 10  # the model's, by default
    assert meta["clip_spec"]["frames"] == TINY_MODEL["frames"]
    assert "throughput" not in meta  # timings differ run to run: not part of the data


def test_extraction_reports_its_rate_and_data_wait_share(model, dataset):
    """As `vidzoo eval` does: clips per second of the loop, and the share spent waiting for decoding."""
    features = extract_features(model, dataset / "test.csv", per="clip", clips_per_video=2, progress=False)
    speed = features.throughput
    assert speed["clips_per_s"] > 0 and 0 < speed["data_wait_share"] <= 1  # 0 workers: every decode is waited for


def test_a_parquet_file_without_labels_loads_with_labels_none(tmp_path):
    features = Features(np.eye(3, dtype=np.float32), ["a", "b", "c"], None, None)
    save_features(features, tmp_path / "f.parquet")
    loaded = load_features(tmp_path / "f.parquet")
    assert loaded.labels is None and loaded.classes is None
    np.testing.assert_array_equal(loaded.features, features.features)


def test_missing_features_file_and_sidecar_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="features file .*missing.npy not found"):
        load_features(tmp_path / "missing.npy")
    np.save(tmp_path / "bare.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="bare.npy has no sidecar bare.json"):
        load_features(tmp_path / "bare.npy")
    with pytest.raises(ValueError, match=r"expected a .npy or .parquet file, got '.csv'"):
        load_features(tmp_path / "f.csv")


# --------------------------------------------------------------------------- broken videos


@pytest.fixture
def with_broken_video(dataset, tmp_path) -> Path:
    """Class folders: the test videos plus one file of garbage bytes named like a video."""
    root = tmp_path / "data"
    for video in sorted((dataset / "videos").glob("*/*_0002.mp4")):
        (root / video.parent.name).mkdir(parents=True, exist_ok=True)
        (root / video.parent.name / video.name).symlink_to(video)
    (root / "grow" / "broken.mp4").write_bytes(b"not a video at all" * 100)
    return root


def test_a_broken_video_fails_naming_it(model, with_broken_video):
    with pytest.raises(VideoDecodeError, match="broken.mp4.*skip-bad"):
        extract_features(model, with_broken_video, progress=False)


def test_skip_bad_excludes_and_lists_broken_videos(model, with_broken_video, tmp_path):
    features = extract_features(model, with_broken_video, skip_bad=True, out=tmp_path / "f.npy", progress=False)
    assert len(features.video_ids) == 8 and "grow/broken.mp4" not in features.video_ids
    assert [e["video_id"] for e in features.excluded] == ["grow/broken.mp4"]
    assert features.excluded[0]["reason"]
    assert load_features(tmp_path / "f.npy").excluded == features.excluded


# --------------------------------------------------------------------------- command line


def test_extract_command_writes_features_and_sidecar(model, dataset, tmp_path):
    from typer.testing import CliRunner

    from vidzoo.cli import app

    model_file = save_model(model, tmp_path / "tiny.safetensors", history="test")
    out = tmp_path / "feats.parquet"
    args = ["extract", str(model_file), str(dataset / "test.csv"), "--out", str(out), "--layer", "features.conv2",
            "--per", "clip", "--clips-per-video", "2", "--workers", "0", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["rows"], summary["layer"], summary["per"]) == (16, "features.conv2", "clip")
    assert summary["clips_per_s"] > 0 and 0 < summary["data_wait_share"] <= 1
    expected = extract_features(model, dataset / "test.csv", layer="features.conv2", per="clip", clips_per_video=2,
                                progress=False)
    np.testing.assert_array_equal(load_features(out).features, expected.features)

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_parquet_without_pyarrow_fails_before_extracting(model, dataset, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    calls = []
    with pytest.raises(ImportError, match=r"pip install 'vidzoo\[parquet\]'.*or write a .npy file"):
        extract_features(model, dataset / "test.csv", out=tmp_path / "f.parquet", progress=False,
                         on_chunk=lambda *a: calls.append(a))
    assert calls == [] and not (tmp_path / "f.parquet.parts").exists()


def test_a_unique_last_part_names_the_layer(model, dataset):
    short = extract_features(model, dataset / "test.csv", layer="conv3b", progress=False)
    full = extract_features(model, dataset / "test.csv", layer="features.conv3b", progress=False)
    assert short.layer == "features.conv3b"
    np.testing.assert_array_equal(short.features, full.features)

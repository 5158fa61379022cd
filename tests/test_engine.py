"""The inference engine: forced variants run as asked, `auto` keeps only variants that agree with
fp32, caches its choice, falls back when a compiler fails, and gives the model back as it was;
predict, eval and extract run through it."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import TINY_MODEL
from typer.testing import CliRunner

import vidzoo.engine as engine_module
from vidzoo.cli import app
from vidzoo.data.sources import load_source
from vidzoo.engine import Variant, build_engine, build_feature_engine, inference_engine
from vidzoo.evaluate import evaluate
from vidzoo.features import extract_features
from vidzoo.models.factory import create_model, save_model

CLASSES = ["move_left", "move_right", "move_up", "move_down", "grow", "shrink", "rotate_cw", "rotate_ccw"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDZOO_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = create_model("c3d_bn", num_classes=len(CLASSES), **TINY_MODEL).eval()
    m.classes = CLASSES
    return m


@pytest.fixture
def with_bf16(monkeypatch):
    """A CPU that reports native bf16, whatever this one has (the choice logic is under test)."""
    monkeypatch.setattr(engine_module, "_cpu_flags", lambda: {"avx512_bf16"})


def clips(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, TINY_MODEL["frames"], TINY_MODEL["size"], TINY_MODEL["size"],
                       generator=torch.Generator().manual_seed(seed))


def test_forced_fp32_eager_is_the_model_itself(model):
    x = clips(5)
    with torch.no_grad():
        expected = model(x)
    with inference_engine(model, engine="eager", precision="fp32", batch_size=5) as run:
        assert run.summary == "engine: eager fp32, batch 5 (as asked)"
        assert torch.equal(run(x), expected)
    with inference_engine(model, engine="eager", precision="fp32", batch_size=2) as run:
        torch.testing.assert_close(run(x), expected)  # 2 + 2 + 1: the same clips, another batching


def test_the_model_gets_its_memory_format_and_mode_back(model, tmp_path, with_bf16):
    model.train()
    with inference_engine(model, engine="eager", precision="bf16") as run:
        assert run.variant == Variant("eager", "bf16", True)
        run(clips(2))
        assert any(p.dim() == 5 and not p.is_contiguous() for p in model.parameters())  # channels-last inside
    assert model.training
    assert all(p.is_contiguous() for p in model.parameters())
    save_model(model, tmp_path / "m.safetensors", classes=CLASSES)  # safetensors needs contiguous tensors


def test_auto_measures_once_then_decides_from_the_cache(model, with_bf16, tmp_path):
    first = build_engine(model, calibration=clips(), job_clips=1000)
    assert "measured on" in first.summary
    variants = {m.variant for m in first.measurements}
    assert {Variant("eager", "fp32", False), Variant("eager", "bf16", True)} <= variants
    cache = json.loads((tmp_path / "cache" / "engines.json").read_text())
    assert len(cache) == 1
    decoded = []

    def calibration():  # what eval, extract and predict pass: decoding the clips is the cost
        decoded.append(True)
        return clips()

    second = build_engine(model, calibration=calibration, job_clips=1000)
    assert "from cached measurements" in second.summary
    assert (second.variant, second.batch_size) == (first.variant, first.batch_size)
    assert not decoded  # a cached choice needs no calibration clips
    third = build_engine(model, calibration=calibration, job_clips=1000, use_cache=False)
    assert "measured on" in third.summary and decoded == [True]
    for run in (first, second, third):
        run.close()


def test_auto_drops_a_variant_that_disagrees_with_fp32(model, with_bf16, monkeypatch):
    real = engine_module._torch_forward

    def broken_bf16(model, variant, device, function=None):
        forward = real(model, variant, device, function)
        if variant.precision != "bf16":
            return forward
        return lambda x: forward(x).flip(1) * 10  # fast but wrong

    monkeypatch.setattr(engine_module, "_torch_forward", broken_bf16)
    run = build_engine(model, calibration=clips(), job_clips=1000, use_cache=False)
    assert run.variant.precision == "fp32"
    assert "not accurate enough: eager bf16 channels-last" in run.summary
    bf16 = next(m for m in run.measurements if m.variant.precision == "bf16")
    assert bf16.top1_agreement < 0.99 and not bf16.accurate
    run.close()


def test_a_compiler_failure_leaves_eager_running(model, monkeypatch, caplog):
    real = engine_module._torch_forward

    def no_compiler(model, variant, device, function=None):
        if variant.engine == "compile":
            raise RuntimeError("no C++ compiler found")
        return real(model, variant, device, function)

    monkeypatch.setattr(engine_module, "_torch_forward", no_compiler)
    monkeypatch.setattr(engine_module, "_onnxruntime_installed", lambda: False)
    with caplog.at_level(logging.WARNING, logger="vidzoo.engine"):
        run = build_engine(model, engine="auto", calibration=clips(), job_clips=None, use_cache=False)
    assert run.variant.engine == "eager"
    assert "did not build, so it is not used: RuntimeError: no C++ compiler found" in caplog.text
    compiled = next(m for m in run.measurements if m.variant.engine == "compile")
    assert compiled.clips_per_s == 0 and not compiled.accurate
    run.close()


def test_a_short_job_is_not_calibrated(model):
    run = build_engine(model, calibration=clips(2), job_clips=2)
    assert run.variant == Variant("eager", "fp32", False)
    assert "too short to calibrate" in run.summary


def test_bf16_without_native_support_is_refused(model, monkeypatch):
    monkeypatch.setattr(engine_module, "_cpu_flags", lambda: set())
    with pytest.raises(ValueError, match="precision bf16 is not native"):
        build_engine(model, engine="eager", precision="bf16")


def test_unknown_engine_is_a_clear_error(model):
    with pytest.raises(ValueError, match="engine must be one of auto, eager, compile, onnxruntime"):
        build_engine(model, engine="tensorrt")


def test_feature_engine_keeps_bf16_only_within_the_cosine_rule(model, with_bf16, monkeypatch):
    features = lambda x: model.forward_head(model.forward_features(x), pre_logits=True)  # noqa: E731
    run = build_feature_engine(model, features, calibration=clips(), job_clips=1000)
    fp32, bf16 = run.measurements
    assert 1 - bf16.max_prob_diff > 0.9  # a cosine similarity was measured
    assert run.variant.precision in ("fp32", "bf16")
    run.close()
    with pytest.raises(ValueError, match="ONNX file computes logits only"):
        build_feature_engine(model, features, engine="onnxruntime")


def test_evaluate_reports_its_engine_and_data_wait(model, dataset):
    source = load_source(dataset / "test.csv")
    auto = evaluate(model, source, clips_per_video=2, engine="auto", precision="auto", progress=False)
    reference = evaluate(model, source, clips_per_video=2, progress=False)
    assert reference.engine == "engine: eager fp32, batch 8 (as asked)"
    assert auto.engine.startswith("engine: ") and auto.clips_per_s > 0 and 0 <= auto.data_wait_share <= 1
    assert auto.num_videos == reference.num_videos


def test_extract_records_its_engine_and_fp32_features_do_not_change(model, dataset):
    source = load_source(dataset / "test.csv")
    plain = extract_features(model, source, clips_per_video=1, progress=False)
    forced = extract_features(model, source, clips_per_video=1, progress=False, engine="eager", precision="fp32")
    assert forced.model["engine"] == "engine: eager fp32, batch 8 (as asked)"
    assert (plain.features == forced.features).all()


def test_cli_predict_says_its_engine_in_one_line(model, dataset, tmp_path):
    path = save_model(model, tmp_path / "m.safetensors", classes=CLASSES)
    video = next((dataset / "videos").rglob("*.mp4"))
    result = CliRunner().invoke(app, ["predict", str(path), str(video), "--engine", "eager", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert "engine: eager fp32, batch 8 (as asked)" in result.output
    result = CliRunner().invoke(app, ["predict", str(path), str(video), "--engine", "warp"])
    assert result.exit_code != 0 and "engine must be one of" in result.output and "Traceback" not in result.output

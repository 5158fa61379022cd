"""`vidzoo export`: every family exports and is verified; a file that does not compute what the
model computes is never written; an exported ONNX file carries its clip description and
`vidzoo predict` runs it."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import require_videos
from typer.testing import CliRunner

import vidzoo.export as export_module
from vidzoo.cli import app
from vidzoo.export import ExportError, OnnxModel, export_model, read_export_metadata
from vidzoo.models._registry import get_model_entry
from vidzoo.models.factory import create_model, load_model, save_model
from vidzoo.predict import predict_video

pytest.importorskip("onnxruntime")

CLASSES = ["a", "b", "c"]
# One architecture per family file (X3D's and the Keras graph's included; the torchvision file by
# R3D-18: its MViT and Swin take minutes, see benchmarks/export.py): each must export to
# ONNX and pass verification at its tiny test size.
FAMILIES = ["c3d_bn", "c3d", "c2d_timm", "lrcn", "i3d", "r3d_18", "x3d_xs", "keras_graph"]


def tiny(name: str):
    torch.manual_seed(0)
    return create_model(name, num_classes=len(CLASSES), **get_model_entry(name).test_args).eval()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "c3d_bn-8x32x32x3-3-test.safetensors"
    return save_model(tiny("c3d_bn"), path, classes=CLASSES)


@pytest.fixture(scope="module")
def sample_video():
    return require_videos() / "mmaction2-samples" / "tests" / "data" / "test.mp4"


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_exports_to_onnx_within_the_tolerance(name, tmp_path):
    model = tiny(name)
    report = export_model(model, tmp_path / "m.onnx", dynamic_batch=True)
    assert [c.passed for c in report.checks] == [True, True]
    assert report.max_abs_diff <= min(c.allowed for c in report.checks)
    assert all(c.top1_agreement == 1.0 for c in report.checks)
    # The file runs at a batch size it was not exported at, and gives the model's logits.
    clips = torch.randn(3, *_input_shape(model))
    with torch.no_grad():
        expected = model(clips)
    torch.testing.assert_close(OnnxModel(tmp_path / "m.onnx")(clips), expected, atol=1e-4, rtol=1e-4)


def test_torch_export_writes_a_program_with_the_description(tmp_path):
    model = tiny("c3d_bn")
    model.classes = CLASSES
    report = export_model(model, tmp_path / "m.pt2", format="torch-export", batch_size=2)
    assert report.batch_size == 2 and all(c.passed for c in report.checks)
    meta = read_export_metadata(tmp_path / "m.pt2")
    assert meta["classes"] == CLASSES and meta["clip"] == model.clip_spec.model_dump(mode="json")
    assert meta["export"]["format"] == "torch-export"


def test_a_file_that_does_not_match_the_model_is_not_written(tmp_path, monkeypatch):
    real_export = export_module._export_onnx

    def off_by_a_little(*args, **kwargs):
        run = real_export(*args, **kwargs)
        return lambda clips: run(clips) + 1e-2

    monkeypatch.setattr(export_module, "_export_onnx", off_by_a_little)
    with pytest.raises(ExportError, match=r"logits differ by up to 0\.01.*nothing was written"):
        export_model(tiny("c3d_bn"), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_an_exporter_failure_names_the_operator(tmp_path, monkeypatch):
    def unsupported(*args, **kwargs):
        raise RuntimeError("Unsupported: aten.grid_sampler_3d.default has no ONNX translation\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    with pytest.raises(ExportError, match=r"c3d_bn cannot be exported with ONNX: operator\(s\) "
                                          r"aten\.grid_sampler_3d\.default not supported"):
        export_model(tiny("c3d_bn"), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export_then_predict_on_the_onnx_file_gives_the_models_answer(model_file, sample_video, tmp_path):
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["export", str(model_file), "--out", str(out), "--dynamic-batch",
                                      "--verify-with", str(sample_video), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["checks"][0]["inputs"].endswith(f"decoded from {sample_video.name}")
    meta = read_export_metadata(out)
    assert meta["source_file"] == model_file.name and len(meta["source_sha256"]) == 64
    assert meta["classes"] == CLASSES

    result = CliRunner().invoke(app, ["predict", str(out), str(sample_video), "--json"])
    assert result.exit_code == 0, result.output
    from_onnx = json.loads(result.stdout)[0]
    expected = predict_video(load_model(model_file), sample_video)
    assert [t["class"] for t in from_onnx["top"]] == [name for name, _ in expected.top]
    assert from_onnx["probabilities"] == pytest.approx(expected.probabilities, abs=1e-5)


def test_cli_export_of_a_missing_file_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["export", str(tmp_path / "none.safetensors")])
    assert result.exit_code != 0
    assert "none.safetensors" in result.output and "Traceback" not in result.output


def _input_shape(model) -> tuple[int, ...]:
    spec = model.clip_spec
    return (model.default_cfg.in_chans, spec.frames, spec.height, spec.width)

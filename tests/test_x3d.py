"""X3D: the published sizes (parameters, and FLOPs in both conventions), logits equal to those of
PyTorchVideo's own ``create_x3d`` on the same weights, and PyTorchVideo checkpoints through the
converter, a ``.pyth`` file and the torch hub cache.

PyTorchVideo 0.1.5 is the reference (``make install`` installs it with ``--no-deps``, see the
Makefile). Only ``pytorchvideo.models.x3d`` is imported: ``pytorchvideo.transforms`` needs a
torchvision module that no longer exists. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vidzoo.models import create_model, get_model_entry, model_flops, model_parameter_count
from vidzoo.models.x3d import convert_pytorchvideo_x3d_state_dict
from vidzoo.weights import WeightsMismatchError

VARIANTS = ["x3d_xs", "x3d_s", "x3d_m", "x3d_l"]
# create_x3d's arguments for each (PyTorchVideo's torch hub entries), with logits out.
PTV_ARGS = {
    "x3d_xs": {"input_clip_length": 4, "input_crop_size": 160},
    "x3d_s": {"input_clip_length": 13, "input_crop_size": 160},
    "x3d_m": {"input_clip_length": 16, "input_crop_size": 224},
    "x3d_l": {"input_clip_length": 16, "input_crop_size": 312, "depth_factor": 5.0},
}
PARAMS = {"x3d_xs": 3_794_274, "x3d_s": 3_794_274, "x3d_m": 3_794_274, "x3d_l": 6_153_384}
# PyTorchVideo's model zoo table: "Params (M)" and "Flops (G)" per view (X3D-L is not in it).
PTV_TABLE = {"x3d_xs": (3.79, 0.91), "x3d_s": (3.79, 2.96), "x3d_m": (3.79, 6.72)}
# fvcore 0.1.5's FlopCountAnalysis of PyTorchVideo's model in training mode at the 3-crop test
# size, measured once (fvcore runs the real model: seconds per variant): the table's convention.
FVCORE_GFLOPS = {"x3d_xs": 0.9146, "x3d_s": 2.9567, "x3d_m": 6.7205, "x3d_l": 26.6373}
# The paper's (and SlowFast's model zoo's) GFLOPs per view at the training clip: multiply-adds.
PAPER_GFLOPS = {"x3d_xs": 0.60, "x3d_s": 1.96, "x3d_m": 4.73, "x3d_l": 18.37}
TEST_CROP = {"x3d_xs": 182, "x3d_s": 182, "x3d_m": 256, "x3d_l": 356}

# vidzoo's tiny test X3D (width 0.25, depth 0.2) as create_x3d builds it.
TINY = {"frames": 4, "size": 32, "width": 0.25, "depth": 0.2}
TINY_PTV = {"input_clip_length": 4, "input_crop_size": 32, "width_factor": 2.0 * 0.25, "depth_factor": 2.2 * 0.2,
            "head_dim_out": 2048 // 4}


@pytest.fixture(scope="module")
def create_x3d():
    """PyTorchVideo's builder, with logits out (its default head ends in a softmax)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # fvcore calls torch.jit.script at import
            from pytorchvideo.models.x3d import create_x3d
    except ImportError as err:
        pytest.fail(f"PyTorchVideo, the reference of these tests, is not installed ({err}); `make install` "
                    "installs it", pytrace=False)
    return lambda **kwargs: create_x3d(head_activation=None, **kwargs)


@torch.no_grad()
def randomized(net: nn.Module, clip_shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """`net` with random weights everywhere (BN scales and biases too) and BatchNorm statistics of
    random clips, in eval mode: every path of the network shows in its outputs."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in net.named_parameters():
        if param.ndim > 1:
            param.copy_(torch.randn(param.shape, generator=generator) * (2 / param[0].numel()) ** 0.5)
        elif name.endswith("weight"):
            param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
        else:
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.reset_running_stats()
            module.momentum = None  # the plain mean over the calibration batch
    net.train()(torch.randn(clip_shape, generator=generator))
    return net.eval()


def clip(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(seed))


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def relative_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """The largest difference relative to the largest of `theirs`."""
    return max_abs_diff(ours, theirs) / float(theirs.abs().max())


# --- sizes: counted on the meta device ----------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_count_is_pytorchvideos_and_the_published_one(name: str, create_x3d) -> None:
    with torch.device("meta"):
        theirs = sum(p.numel() for p in create_x3d(**PTV_ARGS[name]).parameters())
    assert model_parameter_count(name) == theirs == PARAMS[name]
    if name in PTV_TABLE:
        assert round(PARAMS[name] / 1e6, 2) == PTV_TABLE[name][0]


@pytest.mark.parametrize("name", VARIANTS)
def test_flops_at_the_training_clip_are_twice_the_papers_multiply_adds(name: str) -> None:
    # vidzoo models counts a multiply-add as 2 FLOPs; X3D's "GFLOPs" are multiply-adds. XS counts
    # 0.6053 G against a printed 0.60, hence the tolerance.
    assert model_flops(name) / 2e9 == pytest.approx(PAPER_GFLOPS[name], abs=0.006)


@pytest.mark.parametrize("name", VARIANTS)
def test_pytorchvideos_flops_are_fvcores_count_at_the_test_crop(name: str) -> None:
    """PyTorchVideo's "Flops (G)": fvcore's count at the 3-crop test size (182 px for XS), the
    sliding-window head of the checkpoints (lin5 and fc at every position; here fc runs once on
    their mean, so the other positions' fc are added), 1 per multiply-add, plus 5 per BatchNorm
    output element (fvcore's count for BatchNorm in training mode)."""
    side = TEST_CROP[name]
    with torch.device("meta"):
        model = create_model(name, fixed_head_pool=True).eval()
        bn_elements, conv5 = [], []
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.register_forward_hook(lambda _m, _i, out: bn_elements.append(out.numel()))
        model.features.conv5.register_forward_hook(lambda _m, _i, out: conv5.append(out.shape[2:]))
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, 3, model.clip_spec.frames, side, side))
    positions = math.prod(s - k + 1 for s, k in zip(conv5[0], model.head_pool_kernel))
    macs = counter.get_total_flops() // 2 + (positions - 1) * model.fc.weight.numel()
    gflops = (macs + 5 * sum(bn_elements)) / 1e9
    assert positions > 1
    assert gflops == pytest.approx(FVCORE_GFLOPS[name], abs=1e-4)
    if name in PTV_TABLE:
        assert round(gflops, 2) == PTV_TABLE[name][1]


# --- outputs: equal to PyTorchVideo's ----------------------------------------------------------


@pytest.fixture(scope="module")
def xs_reference(create_x3d) -> nn.Module:
    """PyTorchVideo's X3D-XS with random weights."""
    return randomized(create_x3d(**PTV_ARGS["x3d_xs"]), (2, 3, 4, 160, 160))


@pytest.fixture(scope="module")
def xs_file(xs_reference: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`xs_reference` saved as the model zoo's files are: PySlowFast's checkpoint dict, whose
    ``model_state`` the torch hub entry loads into ``create_x3d``."""
    path = tmp_path_factory.mktemp("x3d") / "X3D_XS.pyth"
    torch.save({"epoch": 300, "model_state": xs_reference.state_dict(), "cfg": "MODEL:\n  ARCH: x3d\n"}, path)
    return path


def test_xs_from_a_pyth_file_gives_pytorchvideos_logits(xs_reference, xs_file) -> None:
    model = create_model("x3d_xs", pretrained=str(xs_file)).eval()
    assert model.load_report.skipped_head == [] and model.load_report.file_sha256 is not None
    x = clip(4, 160, 160)
    with torch.no_grad():
        ours, theirs = model(x), xs_reference(x)
    assert theirs.abs().max() > 0.5  # the random weights give logits worth comparing
    assert relative_diff(ours, theirs) < 1e-5


@pytest.mark.parametrize("name", ["x3d_s", "x3d_m", "x3d_l"])
def test_logits_equal_pytorchvideos_on_the_same_weights(name: str, create_x3d) -> None:
    # The published networks on 4x64x64 clips (a 4x2x2 conv5 map), to stay fast on a CPU; their
    # layers do not depend on the clip size (time is never strided), only the head's pool does.
    ptv_args = {**PTV_ARGS[name], "input_clip_length": 4, "input_crop_size": 64}
    theirs = randomized(create_x3d(**ptv_args), (2, 3, 4, 64, 64))
    model = create_model(name, frames=4, size=64).eval()
    model.load_state_dict(convert_pytorchvideo_x3d_state_dict(theirs.state_dict()))
    x = clip(4, 64, 64)
    with torch.no_grad():
        assert relative_diff(model(x), theirs(x)) < 1e-4  # float32 rounding, growing with depth
        # In float64 the rounding all but vanishes: the same function.
        assert relative_diff(model.double()(x.double()), theirs.double()(x.double())) < 1e-10


def test_fixed_head_pool_is_pytorchvideos_window_at_the_test_crop(xs_reference, xs_file) -> None:
    """At 182 px, the published test crop, PyTorchVideo's XS pools 2x2 windows of 5x5 (sized for
    160 px); fixed_head_pool reproduces it, the default global pool is another function there, and
    the two agree at 160 px."""
    window = create_model("x3d_xs", pretrained=str(xs_file), fixed_head_pool=True).eval()
    global_pool = create_model("x3d_xs", pretrained=str(xs_file)).eval()
    x = clip(4, 182, 182)
    with torch.no_grad():
        theirs = xs_reference(x)
        assert relative_diff(window(x), theirs) < 1e-5
        assert relative_diff(global_pool(x), theirs) > 1e-2
        centre = x[..., 11:171, 11:171]
        assert relative_diff(window(centre), global_pool(centre)) < 1e-6


# --- weights: the registered entries and PyTorchVideo checkpoints -------------------------------


@pytest.fixture
def hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, xs_file: Path) -> Path:
    """Offline, with `xs_file` where the torch hub cache keeps x3d_xs.kinetics400's URL."""
    monkeypatch.setenv("VIDZOO_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    url = get_model_entry("x3d_xs").weights["kinetics400"].url
    cached = tmp_path / "hub" / "checkpoints" / url.rpartition("/")[2]
    cached.parent.mkdir(parents=True)
    shutil.copyfile(xs_file, cached)
    return cached


def test_kinetics400_loads_from_the_torch_hub_cache_with_its_published_protocol(hub_cache, xs_file) -> None:
    model = create_model("x3d_xs", pretrained="kinetics400").eval()
    report = model.load_report
    assert report.file == str(hub_cache) and report.skipped_head == []
    assert report.file_sha256 == hashlib.sha256(hub_cache.read_bytes()).hexdigest()  # none is published
    assert model.num_classes == 400 and model.classes[:2] == ["abseiling", "air drumming"]
    spec = model.clip_spec  # the published test: 10 clips x 3 crops of 182 px, every 12th frame
    assert (spec.frames, spec.frame_stride, spec.size, spec.resize_short) == (4, 12, (182, 182), 182)
    assert (spec.crops, spec.clips_per_video) == (3, 10)
    x = clip(4, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), create_model("x3d_xs", pretrained=str(xs_file)).eval()(x))


def test_kinetics400_with_a_new_class_count_skips_only_fc(hub_cache) -> None:
    model = create_model("x3d_xs", pretrained="kinetics400", num_classes=5)
    assert sorted(model.load_report.skipped_head) == ["fc.bias", "fc.weight"]
    assert model.fc.out_features == 5 and model.classes is None


def pytorchvideo_hub_entries() -> dict[str, dict]:
    """PyTorchVideo's torch hub entries for X3D, read as text from pytorchvideo/models/hub/x3d.py
    (importing pytorchvideo.models.hub would import more than the models): per name its file URL,
    the top-1 its docstring states and its create_x3d arguments."""
    source = (Path(sys.modules["pytorchvideo.models.x3d"].__file__).parent / "hub" / "x3d.py").read_text()
    root = re.search(r'root_dir = "([^"]+)"', source)[1]
    urls = {name: f"{root}/{file}" for name, file in re.findall(r'"(x3d_\w+)": f"\{root_dir\}/([\w.]+)"', source)}
    entries = {}
    for name, body in re.findall(r"\ndef (x3d_\w+)\((.*?)(?=\ndef |\Z)", source, flags=re.S):
        args = {key: float(value) if "." in value else int(value)
                for key, value in re.findall(r"(input_clip_length|input_crop_size|depth_factor)=(\d+(?:\.\d+)?)", body)}
        top1 = float(re.search(r"top1 accuracy of (\d+\.\d+)", body)[1])
        entries[name] = {"url": urls[name], "top1": top1, "args": args}
    return entries


def test_the_weights_entries_are_pytorchvideos_hub_entries(create_x3d) -> None:
    hub = pytorchvideo_hub_entries()
    assert sorted(hub) == sorted(VARIANTS) and {name: hub[name]["args"] for name in hub} == PTV_ARGS
    for name, entry in hub.items():
        weights = get_model_entry(name).weights["kinetics400"]
        assert (weights.url, weights.metrics["kinetics400"]["acc@1"]) == (entry["url"], entry["top1"]), name
        with torch.device("meta"):
            model = create_model(name)
        assert model.clip_spec.frames == entry["args"]["input_clip_length"], name
        assert model.clip_spec.size == (entry["args"]["input_crop_size"],) * 2, name


@pytest.mark.parametrize("name", VARIANTS)
def test_the_weights_entries_describe_the_published_test(name: str) -> None:
    weights = get_model_entry(name).weights["kinetics400"]
    assert weights.sha256 is None and weights.class_count == 400  # no checksum is published
    assert weights.clip.size == (TEST_CROP[name],) * 2 and weights.clip.resize_short == TEST_CROP[name]
    assert (weights.clip.crops, weights.clip.clips_per_video) == (3, 10)


def tiny_file(path: Path, create_x3d, *, prefix: str = "", extra: dict | None = None, **ptv_args) -> Path:
    """A tiny PyTorchVideo X3D (vidzoo's test size unless `ptv_args` say otherwise) saved at `path`."""
    torch.manual_seed(0)
    state = {f"{prefix}{key}": value for key, value in create_x3d(**{**TINY_PTV, **ptv_args}).state_dict().items()}
    torch.save({"model_state": state, **(extra or {})}, path)
    return path


def test_a_slowfast_checkpoint_of_the_wrapped_model_loads(tmp_path: Path, create_x3d) -> None:
    # SlowFast's PTVX3D holds create_x3d's network as "model": its keys start "model.blocks.".
    path = tiny_file(tmp_path / "slowfast.pyth", create_x3d, prefix="model.")
    model = create_model("x3d_xs", pretrained=str(path), **TINY)
    assert model.load_report.skipped_head == [] and len(model.load_report.loaded) == len(model.state_dict())


def test_a_key_vidzoo_has_no_place_for_is_named_with_the_file(tmp_path: Path, create_x3d) -> None:
    # head_bn_lin5_on puts a BatchNorm after lin5, which the published X3D does not have.
    path = tiny_file(tmp_path / "bn_lin5.pyth", create_x3d, head_bn_lin5_on=True)
    with pytest.raises(WeightsMismatchError, match=rf"{path}: .*'blocks\.5\.pool\.post_norm\.weight'"):
        create_model("x3d_xs", pretrained=str(path), **TINY)


def test_a_deeper_checkpoint_names_the_blocks_the_model_lacks(tmp_path: Path, create_x3d) -> None:
    path = tiny_file(tmp_path / "deeper.pyth", create_x3d, depth_factor=5.0 * 0.2)  # tiny X3D-L
    with pytest.raises(WeightsMismatchError, match=r"unexpected \(not in the model\): 'features\.res3\.1\."):
        create_model("x3d_xs", pretrained=str(path), **TINY)
    assert create_model("x3d_l", pretrained=str(path), **TINY).load_report.skipped_head == []


def test_a_pyth_file_holding_a_python_object_is_refused(tmp_path: Path, create_x3d) -> None:
    # Read with weights_only=True: a pickled object (here a config object) is never executed.
    path = tiny_file(tmp_path / "object.pyth", create_x3d, extra={"cfg": argparse.Namespace(lr=0.1)})
    with pytest.raises(WeightsMismatchError, match=f"{path}: not a loadable state dict"):
        create_model("x3d_xs", pretrained=str(path), **TINY)

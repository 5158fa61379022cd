"""Inflating 2D weights to 3D (vidzoo.transfer.inflate) and the i3d ``imagenet`` weights:
torchvision's GoogLeNet inflated onto I3D, checked tensor by tensor and on clips of identical
frames. Nothing is downloaded: a random GoogLeNet is written into a temporary torch hub cache."""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import replace_weights
from torch import nn

from vidzoo.models import create_model, get_model_entry
from vidzoo.models.i3d import same_padding
from vidzoo.transfer import inflate, inflate_state_dict, inflate_weight
from vidzoo.weights import WeightsMismatchError

# --- inflate_weight / inflate -----------------------------------------------------------------------


def test_inflate_weight_repeats_the_kernel_along_time_divided_by_its_length() -> None:
    weight = torch.randn(4, 3, 5, 5)
    inflated = inflate_weight(weight, 3)
    assert inflated.shape == (4, 3, 3, 5, 5)
    for t in range(3):
        assert torch.equal(inflated[:, :, t], weight / 3)


def _net_2d() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 5, stride=2, padding=2), nn.BatchNorm2d(6), nn.ReLU(),
    )


def _net_3d() -> nn.Sequential:
    # The 2D twin's spatial padding and no temporal padding: every output step sees 3 or 2 frames
    # of the clip itself, none of padding.
    return nn.Sequential(
        nn.Conv3d(3, 8, (3, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(8), nn.ReLU(),
        nn.Conv3d(8, 6, (2, 5, 5), stride=(1, 2, 2), padding=(0, 2, 2)), nn.BatchNorm3d(6), nn.ReLU(),
    )


@pytest.fixture
def twins() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    net2d, net3d = _net_2d(), _net_3d()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so their placement matters
        for bn in (net2d[1], net2d[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    inflate(net2d, net3d)
    return net2d.eval(), net3d.eval()


def test_identical_frames_give_the_2d_output_at_every_time_step(twins) -> None:
    net2d, net3d = twins
    image = torch.randn(2, 3, 12, 12)
    out3d = net3d(image[:, :, None].repeat(1, 1, 6, 1, 1))
    out2d = net2d(image)
    assert out3d.shape == (2, 6, 3, 6, 6)
    for t in range(out3d.shape[2]):
        torch.testing.assert_close(out3d[:, :, t], out2d, rtol=1e-5, atol=1e-5)


def test_frames_that_differ_do_not_give_the_2d_output(twins) -> None:
    net2d, net3d = twins
    clip = torch.randn(2, 3, 6, 12, 12)
    out3d = net3d(clip)
    assert not torch.allclose(out3d[:, :, 0], net2d(clip[:, :, 0]), atol=1e-3)


def test_inflate_names_keys_the_2d_weights_leave_unset() -> None:
    net3d = nn.Sequential(nn.Conv3d(3, 8, 3), nn.Conv3d(8, 8, 1))
    with pytest.raises(ValueError, match=r"leave 2 keys of the 3D model unset: '1\.weight', '1\.bias'"):
        inflate(nn.Sequential(nn.Conv2d(3, 8, 3)), net3d)


def test_inflate_skip_keeps_those_keys_as_they_are() -> None:
    net3d = nn.Sequential(nn.Conv3d(3, 8, 3), nn.Conv3d(8, 8, 1))
    before = net3d[1].weight.clone()
    loaded = inflate(nn.Sequential(nn.Conv2d(3, 8, 3)), net3d, skip=["1.weight", "1.bias"])
    assert loaded == ["0.weight", "0.bias"] and torch.equal(net3d[1].weight, before)


def test_inflate_state_dict_names_a_mapped_key_that_does_not_exist() -> None:
    with pytest.raises(ValueError, match=r"not in the 3D model: 'conv\.0\.wieght' \(did you mean 'conv\.0\.weight'\?\)"):
        inflate_state_dict({"0.weight": torch.zeros(8, 3, 3, 3)}, nn.Sequential(OrderedDict(conv=nn.Sequential(nn.Conv3d(3, 8, 3)))),
                           {"0.weight": "conv.0.wieght"})


def test_inflate_state_dict_refuses_a_kernel_of_another_spatial_size() -> None:
    with pytest.raises(ValueError, match=r"0\.weight -> 0\.weight: cannot inflate a tensor of shape \(8, 3, 5, 5\) to \(8, 3, 3, 3, 3\)"):
        inflate_state_dict({"0.weight": torch.zeros(8, 3, 5, 5)}, nn.Sequential(nn.Conv3d(3, 8, 3, bias=False)))


# --- i3d.imagenet: GoogLeNet inflated -------------------------------------------------------------------

# Written out by hand from torchvision's GoogLeNet and DeepMind's I3D endpoint names, independently
# of i3d.py's table: (GoogLeNet key, i3d key, temporal kernel size).
PLACEMENTS = [
    ("conv1.conv.weight", "features.Conv3d_1a_7x7.conv.weight", 7),
    ("conv1.bn.running_var", "features.Conv3d_1a_7x7.bn.running_var", None),
    ("conv2.conv.weight", "features.Conv3d_2b_1x1.conv.weight", 1),
    ("conv3.conv.weight", "features.Conv3d_2c_3x3.conv.weight", 3),
    ("conv3.bn.bias", "features.Conv3d_2c_3x3.bn.bias", None),
    ("inception3a.branch1.conv.weight", "features.Mixed_3b.branch0.conv.weight", 1),
    ("inception3a.branch2.0.conv.weight", "features.Mixed_3b.branch1.0.conv.weight", 1),
    ("inception3a.branch2.1.conv.weight", "features.Mixed_3b.branch1.1.conv.weight", 3),
    ("inception3b.branch3.0.bn.running_mean", "features.Mixed_3c.branch2.0.bn.running_mean", None),
    ("inception4a.branch3.1.conv.weight", "features.Mixed_4b.branch2.1.conv.weight", 3),
    ("inception4b.branch4.1.conv.weight", "features.Mixed_4c.branch3.1.conv.weight", 1),
    ("inception4c.branch2.1.bn.weight", "features.Mixed_4d.branch1.1.bn.weight", None),
    ("inception4d.branch1.conv.weight", "features.Mixed_4e.branch0.conv.weight", 1),
    ("inception4e.branch3.1.conv.weight", "features.Mixed_4f.branch2.1.conv.weight", 3),
    ("inception5a.branch4.1.bn.running_var", "features.Mixed_5b.branch3.1.bn.running_var", None),
    ("inception5b.branch2.1.conv.weight", "features.Mixed_5c.branch1.1.conv.weight", 3),
]


@pytest.fixture(scope="module")
def googlenet() -> nn.Module:
    """torchvision's GoogLeNet with aux classifiers (as its published file has), random weights
    and random BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    net = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.fixture
def hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, googlenet: nn.Module) -> Path:
    """Offline, with the random GoogLeNet in a temporary torch hub cache under a file name that
    carries its SHA-256 prefix, as torchvision's do; i3d.imagenet points at it."""
    monkeypatch.setenv("VIDZOO_OFFLINE", "1")
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    staging = tmp_path / "googlenet.pth"
    torch.save(googlenet.state_dict(), staging)
    sha = hashlib.sha256(staging.read_bytes()).hexdigest()[:8]
    cached = hub / "checkpoints" / f"googlenet-{sha}.pth"
    cached.parent.mkdir(parents=True)
    staging.rename(cached)
    replace_weights(monkeypatch, "i3d", "imagenet", url=f"https://download.pytorch.org/models/{cached.name}",
                    sha256=sha)
    return cached


def test_imagenet_entry_is_torchvisions_googlenet() -> None:
    entry = get_model_entry("i3d").weights["imagenet"]
    weights = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1
    assert entry.url == weights.url and weights.url.endswith(f"-{entry.sha256}.pth")
    assert list(entry.classes) == list(weights.meta["categories"]) and len(entry.classes) == 1000


@pytest.mark.parametrize(("theirs", "ours", "time"), PLACEMENTS)
def test_every_googlenet_tensor_lands_in_its_i3d_place(hub_cache, googlenet, theirs, ours, time) -> None:
    model = create_model("i3d", pretrained="imagenet", num_classes=5)
    expected = googlenet.state_dict()[theirs]
    if time is not None:
        expected = expected.unsqueeze(2).repeat(1, 1, time, 1, 1) / time
    assert torch.equal(model.state_dict()[ours], expected)


def test_imagenet_weights_report_the_1000_class_head_skipped(hub_cache, googlenet) -> None:
    model = create_model("i3d", pretrained="imagenet", num_classes=5)
    report = model.load_report
    assert report.skipped_head == ["logits.weight", "logits.bias"]
    assert report.file == str(hub_cache)
    # Everything else came from GoogLeNet: one i3d tensor per GoogLeNet tensor, aux heads aside.
    non_aux = [k for k in googlenet.state_dict() if not k.startswith(("aux1.", "aux2.", "fc."))]
    assert len(report.loaded) == len(non_aux) == len(model.state_dict()) - 2
    assert "skipped (old head, freshly initialised): logits.weight, logits.bias" in str(report)


def _valid_time_steps(frames: int) -> list[int]:
    """Mixed_5c time steps whose temporal receptive field lies inside a clip of `frames` frames,
    following I3D's (kernel, stride) in time and its "SAME" padding layer by layer."""
    chain = [(7, 2), (1, 1), (1, 1), (3, 1), (1, 1), (3, 1), (3, 1), (3, 2), *[(3, 1)] * 5, (2, 2), (3, 1), (3, 1)]
    valid, size = [True] * frames, frames
    for kernel, stride in chain:
        out, before = math.ceil(size / stride), same_padding(size, kernel, stride)[0]
        valid = [
            all(0 <= j * stride - before + i < size and valid[j * stride - before + i] for i in range(kernel))
            for j in range(out)
        ]
        size = out
    return [j for j, ok in enumerate(valid) if ok]


def test_identical_frames_give_googlenets_features_and_logits(hub_cache, googlenet) -> None:
    # 31x31 frames: odd, so GoogLeNet's symmetric stem padding equals TF "SAME", and every map
    # its ceil-mode pools see is even, where ceil rounding equals "SAME" too. 104 frames leave
    # one Mixed_5c step whose receptive field (99 frames) holds no temporal padding.
    frames = 104
    steps = _valid_time_steps(frames)
    assert steps == [6]
    model = create_model("i3d", pretrained="imagenet", size=31).eval()
    assert model.num_classes == 1000 and model.load_report.skipped_head == []
    image = torch.randn(1, 3, 31, 31)
    taps = {}
    googlenet.inception5b.register_forward_hook(lambda module, args, out: taps.__setitem__("2d", out))
    with torch.no_grad():
        logits_2d = googlenet(image)
        mixed_5c = model.features(image[:, :, None].repeat(1, 1, frames, 1, 1))
        step = mixed_5c[:, :, steps[0]]
        logits_3d = model.forward_head(step[:, :, None])  # one time step: the head averages its space
    torch.testing.assert_close(step, taps["2d"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits_3d, logits_2d, rtol=1e-4, atol=1e-5)


def test_imagenet_weights_do_not_fit_a_narrower_i3d(hub_cache) -> None:
    with pytest.raises(WeightsMismatchError, match=r"Conv3d_1a_7x7\.conv\.weight: cannot inflate a tensor of shape \(64, 3, 7, 7\)"):
        create_model("i3d", pretrained="imagenet", width=0.5)

import pytest
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from vidzoo.data.transforms import (
    KINETICS400_NORM,
    CenterCrop,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    ResizeShortSide,
    ThreeCrop,
    eval_transform,
    train_transform,
)


def video(t: int = 4, h: int = 24, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=gen(seed))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def coordinates(t: int, h: int, w: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) whose channels hold (row, column, frame): every crop is traceable."""
    rows = torch.arange(h).view(1, h, 1).expand(t, h, w)
    cols = torch.arange(w).view(1, 1, w).expand(t, h, w)
    frames = torch.arange(t).view(t, 1, 1).expand(t, h, w)
    return torch.stack([rows, cols, frames], dim=-1).to(torch.uint8)


RANDOM_TRANSFORMS = [
    RandomCrop(16),
    RandomHorizontalFlip(),
    RandomResizedCrop(16),
    train_transform(16),
    train_transform(16, random_resized_crop=True),
]


# --------------------------------------------------------------------------- shapes and dtypes


@pytest.mark.parametrize(
    "transform, expected",
    [
        (ResizeShortSide(12), (4, 12, 16, 3)),
        (RandomCrop(16), (4, 16, 16, 3)),
        (RandomCrop((8, 20)), (4, 8, 20, 3)),
        (CenterCrop(16), (4, 16, 16, 3)),
        (ThreeCrop(16), (3, 4, 16, 16, 3)),
        (RandomHorizontalFlip(), (4, 24, 32, 3)),
        (RandomResizedCrop(16), (4, 16, 16, 3)),
        (RandomResizedCrop((10, 14)), (4, 10, 14, 3)),
    ],
)
def test_spatial_shape_keeps_uint8(transform, expected):
    out = transform(video(), gen(0))
    assert tuple(out.shape) == expected
    assert out.dtype == torch.uint8


@pytest.mark.parametrize("h, w", [(241, 321), (321, 241), (112, 112), (113, 200)])
def test_train_pipeline_shape_and_dtype(h, w):
    out = train_transform(112)(video(3, h, w), gen(0))
    assert tuple(out.shape) == (3, 3, 112, 112)
    assert out.dtype == torch.float32 and out.is_contiguous()


@pytest.mark.parametrize("h, w", [(241, 321), (321, 241), (90, 90)])
def test_train_pipeline_random_resized_crop_shape(h, w):
    out = train_transform(64, random_resized_crop=True)(video(3, h, w), gen(0))
    assert tuple(out.shape) == (3, 3, 64, 64) and out.dtype == torch.float32


@pytest.mark.parametrize("crops, expected", [(1, (3, 3, 112, 112)), (3, (3, 3, 3, 112, 112))])
def test_eval_pipeline_shape(crops, expected):
    out = eval_transform(112, crops=crops)(video(3, 241, 321))
    assert tuple(out.shape) == expected and out.dtype == torch.float32


def test_eval_pipeline_is_deterministic_without_generator():
    clip = video(3, 241, 321)
    torch.testing.assert_close(eval_transform(112)(clip), eval_transform(112)(clip), rtol=0, atol=0)


# --------------------------------------------------------------------------- resize


@pytest.mark.parametrize(
    "h, w, size, expected",
    [
        (241, 321, 128, (128, 170)),  # 321 * 128 / 241 = 170.49
        (321, 241, 128, (170, 128)),
        (240, 320, 128, (128, 171)),  # 170.67: C3D's 128x171
        (100, 100, 50, (50, 50)),
        (128, 171, 128, (128, 171)),  # already there
    ],
)
def test_resize_short_side_size(h, w, size, expected):
    assert tuple(ResizeShortSide(size)(video(2, h, w)).shape[1:3]) == expected


def test_resize_matches_torchvision_on_channels_first():
    clip = video(3, 241, 321)
    expected = F.resize(
        clip.permute(0, 3, 1, 2).contiguous(),
        [128, 170],
        interpolation=InterpolationMode.BILINEAR,
        antialias=True,
    ).permute(0, 2, 3, 1)
    torch.testing.assert_close(ResizeShortSide(128)(clip), expected, rtol=0, atol=1)


def test_resize_same_size_is_identity():
    clip = video()
    assert ResizeShortSide(24)(clip) is clip


# --------------------------------------------------------------------------- crops and flips


@pytest.mark.parametrize(
    "h, w, size, top, left",
    [
        (10, 10, 4, 3, 3),
        (11, 13, 4, 3, 4),  # odd margins: the extra pixel stays at the bottom/right
        (241, 321, 112, 64, 104),
        (6, 8, (2, 8), 2, 0),
    ],
)
def test_center_crop_exact_pixels(h, w, size, top, left):
    out = CenterCrop(size)(coordinates(2, h, w))
    crop_h, crop_w = (size, size) if isinstance(size, int) else size
    assert out[0, 0, 0, :2].tolist() == [top, left]
    assert out[0, -1, -1, :2].tolist() == [top + crop_h - 1, left + crop_w - 1]


@pytest.mark.parametrize(
    "h, w, expected_corners",
    [
        (20, 40, [(5, 0), (5, 15), (5, 30)]),  # landscape: left, centre, right
        (40, 20, [(0, 5), (15, 5), (30, 5)]),  # portrait: top, centre, bottom
        (21, 41, [(5, 0), (5, 15), (5, 31)]),
    ],
)
def test_three_crop_covers_long_side(h, w, expected_corners):
    out = ThreeCrop(10)(coordinates(2, h, w))
    assert [tuple(c[0, 0, 0, :2].tolist()) for c in out] == expected_corners


def test_three_crop_through_normalize_keeps_crop_dim():
    out = Normalize.from_spec({"scale": [0, 1]})(ThreeCrop(10)(coordinates(2, 20, 40)))
    assert tuple(out.shape) == (3, 3, 2, 10, 10)
    assert out[2, 1, :, :, -1].mul(255).round().unique().tolist() == [39.0]  # right edge column


def test_random_crop_is_a_window_of_the_input():
    out = RandomCrop((5, 7))(coordinates(3, 20, 30), gen(0))
    top, left = out[0, 0, 0, :2].tolist()
    torch.testing.assert_close(out, coordinates(3, 20, 30)[:, top : top + 5, left : left + 7])


def test_random_crop_same_box_for_all_frames():
    out = RandomCrop(8)(coordinates(5, 20, 30), gen(1))
    assert torch.equal(out[..., :2], out[:1, ..., :2].expand(5, -1, -1, -1))


def test_random_crop_reaches_every_position():
    corners = [RandomCrop(3)(coordinates(1, 5, 4), gen(s))[0, 0, 0, :2] for s in range(200)]
    assert {tuple(c.tolist()) for c in corners} == {(t, l) for t in range(3) for l in range(2)}


@pytest.mark.parametrize("p, flipped", [(1.0, True), (0.0, False)])
def test_flip_is_exact(p, flipped):
    clip = video()
    expected = torch.flip(clip, dims=[2]) if flipped else clip
    assert torch.equal(RandomHorizontalFlip(p)(clip, gen(0)), expected)


def test_flip_happens_about_half_the_time():
    clip = video(1, 4, 6)
    flips = sum(not torch.equal(RandomHorizontalFlip()(clip, gen(s)), clip) for s in range(200))
    assert 70 < flips < 130


def test_random_resized_crop_full_box_is_a_resize():
    # scale and ratio pinned to the whole frame: the box is the input itself.
    clip = video(2, 24, 24)
    out = RandomResizedCrop(12, scale=(1.0, 1.0), ratio=(1.0, 1.0))(clip, gen(0))
    torch.testing.assert_close(out, ResizeShortSide(12)(clip), rtol=0, atol=0)


def test_random_resized_crop_same_box_for_all_frames():
    clip = coordinates(1, 40, 40).expand(4, -1, -1, -1)
    out = RandomResizedCrop(10)(clip, gen(3))
    assert all(torch.equal(out[0], frame) for frame in out)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("transform", RANDOM_TRANSFORMS, ids=repr)
def test_same_seed_same_output(transform):
    clip = video(3, 40, 50)
    assert torch.equal(transform(clip, gen(42)), transform(clip, gen(42)))


@pytest.mark.parametrize("transform", RANDOM_TRANSFORMS, ids=repr)
def test_different_seeds_differ(transform):
    clip = video(3, 40, 50)
    outputs = [transform(clip, gen(s)) for s in range(8)]
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])


# --------------------------------------------------------------------------- normalize


def test_normalize_mean_std_math():
    clip = video(2, 5, 6)
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    out = Normalize(mean, std)(clip)
    pixels = clip.permute(3, 0, 1, 2).float() / 255
    expected = (pixels - torch.tensor(mean).view(3, 1, 1, 1)) / torch.tensor(std).view(3, 1, 1, 1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    "spec, low, high",
    [
        ({"scale": [0, 1]}, 0.0, 1.0),
        ({"scale": [-1, 1]}, -1.0, 1.0),
        ({"scale": [0, 255]}, 0.0, 255.0),
    ],
)
def test_normalize_scale_math(spec, low, high):
    clip = torch.tensor([0, 1, 127, 128, 254, 255], dtype=torch.uint8).view(1, 1, 2, 3)
    out = Normalize.from_spec(spec)(clip)
    expected = low + (high - low) * clip.permute(3, 0, 1, 2).double() / 255
    torch.testing.assert_close(out, expected.float())
    assert out.min().item() == pytest.approx(low) and out.max().item() == pytest.approx(high)


def test_normalize_from_spec_mean_std_equals_constructor():
    clip = video()
    from_spec = Normalize.from_spec(KINETICS400_NORM)(clip)
    torch.testing.assert_close(from_spec, Normalize(**KINETICS400_NORM)(clip), rtol=0, atol=0)


def test_normalize_layout_is_channels_first():
    out = Normalize.from_spec({"scale": [0, 255]})(coordinates(3, 4, 5))
    assert tuple(out.shape) == (3, 3, 4, 5)
    assert out[0, 0, :, 0].tolist() == [0, 1, 2, 3]  # channel 0 holds the row
    assert out[2, :, 0, 0].tolist() == [0, 1, 2]  # channel 2 holds the frame


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"mean": [0.5] * 3}, "mean.*std"),
        ({"scale": [1, 0]}, "low < high"),
        ({"mean": [0.5] * 3, "stdev": [0.5] * 3}, "did you mean 'std'"),
        ({"mean": [0.5] * 3, "std": [0.5] * 2}, "one value per channel"),
        ({"mean": [0.5] * 3, "std": [0.5, 0.0, 0.5]}, "positive"),
        ({"scale": [0, 1], "mean": [0.5] * 3}, "scale"),
    ],
)
def test_normalize_bad_spec(spec, match):
    with pytest.raises(ValueError, match=match):
        Normalize.from_spec(spec)


def test_normalize_rejects_float_input():
    with pytest.raises(ValueError, match="uint8"):
        Normalize.from_spec({"scale": [0, 1]})(video().float())


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "transform", [RandomCrop(30), CenterCrop(30), ThreeCrop(30), RandomCrop((10, 40))]
)
def test_crop_larger_than_input_names_sizes(transform):
    with pytest.raises(ValueError, match=r"larger than the input 24x32"):
        transform(video(), gen(0))


@pytest.mark.parametrize(
    "transform", [CenterCrop(8), ResizeShortSide(8), Normalize(**KINETICS400_NORM)]
)
def test_rejects_non_video_input(transform):
    with pytest.raises(ValueError, match=r"\(T, H, W, C\)"):
        transform(torch.zeros(24, 32, 3, dtype=torch.uint8))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: RandomCrop(0), "size"),
        (lambda: CenterCrop((4, 4, 4)), "size"),
        (lambda: ResizeShortSide((4, 4)), "size"),
        (lambda: RandomHorizontalFlip(1.5), r"\[0, 1\]"),
        (lambda: RandomResizedCrop(8, scale=(0.5, 0.1)), "scale"),
        (lambda: eval_transform(112, crops=5), "crops must be 1 or 3"),
        (lambda: train_transform(112, resize_short=128, random_resized_crop=True), "resize_short"),
    ],
)
def test_bad_constructor_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


# --------------------------------------------------------------------------- builders


@pytest.mark.parametrize("size, short", [(112, 128), (224, 256), (160, 183)])
def test_default_resize_short(size, short):
    assert eval_transform(size).transforms[0].size == short


def test_train_transform_steps():
    steps = [type(t) for t in train_transform(112, flip=False).transforms]
    assert steps == [ResizeShortSide, RandomCrop, Normalize]


def test_compose_passes_generator_to_each_step():
    clip = video(2, 40, 50)
    composed = Compose([RandomCrop(20), RandomHorizontalFlip()])
    g = gen(5)
    expected = RandomHorizontalFlip()(RandomCrop(20)(clip, g), g)
    assert torch.equal(composed(clip, gen(5)), expected)

"""Model file names, MiT zoo aliases, and the `vidzoo models` listing."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import vidzoo
from vidzoo.cli import app
from vidzoo.model_file import model_filename
from vidzoo.models import create_model, get_model_cfg, list_models
from vidzoo.models.names import (
    ALIASES,
    CLIP_CODES,
    ZOO_BACKBONES,
    ModelName,
    model_aliases,
    parse_model_name,
    resolve_alias,
)

# The module's fixtures are costly: one xdist worker runs all its tests (make test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("names")

# --- parse_model_name ----------------------------------------------------------------------------


IM = ("ImageNet", "Moments in Time")
IKM = ("ImageNet", "Kinetics", "Moments in Time")


# Every file of the MiT zoo's README table, as listed there (LRCN's "m6h5" is its typo of "m.h5").
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("C3D-16x224x224x3-339-m.h5",
         ModelName("c3d", "C3D", 16, 224, 224, 3, 339, "m", ("Moments in Time",), "C3D")),
        ("D169-224x224x3-339-im.h5",
         ModelName("c2d_densenet169", "D169", None, 224, 224, 3, 339, "im", IM, "DenseNet169")),
        ("D201-224x224x3-339-im.h5",
         ModelName("c2d_densenet201", "D201", None, 224, 224, 3, 339, "im", IM, "DenseNet201")),
        ("I3DIv1-16x224x224x3-339-ikm.h5",
         ModelName("i3d", "I3DIv1", 16, 224, 224, 3, 339, "ikm", IKM, "I3D Inception-v1")),
        ("I3DIv1-32x224x224x3-339-ikm.h5",
         ModelName("i3d", "I3DIv1", 32, 224, 224, 3, 339, "ikm", IKM, "I3D Inception-v1")),
        ("IRv2-224x224x3-339-ikm.h5",
         ModelName("c2d_inception_resnet_v2", "IRv2", None, 224, 224, 3, 339, "ikm", IKM,
                   "InceptionResNetV2")),
        ("IRv2avg-64x224x224x3-339-ikm.h5",
         ModelName("c2d_inception_resnet_v2", "IRv2avg", 64, 224, 224, 3, 339, "ikm", IKM,
                   "InceptionResNetV2")),
        ("Iv3-224x224x3-339-im.h5",
         ModelName("c2d_inception_v3", "Iv3", None, 224, 224, 3, 339, "im", IM, "InceptionV3")),
        ("LRCN-16x224x224x3-339-m6h5",
         ModelName("lrcn", "LRCN", 16, 224, 224, 3, 339, "m", ("Moments in Time",), "LRCN")),
        ("M-224x224x3-339-im.h5",
         ModelName("c2d_mobilenet_v1", "M", None, 224, 224, 3, 339, "im", IM, "MobileNet")),
        ("Mv2-224x224x3-339-im.h5",
         ModelName("c2d_mobilenet_v2", "Mv2", None, 224, 224, 3, 339, "im", IM, "MobileNetV2")),
        ("R50-224x224x3-339-im.h5",
         ModelName("c2d_resnet50", "R50", None, 224, 224, 3, 339, "im", IM, "ResNet50")),
        ("VGG19-224x224x3-339-im.h5",
         ModelName("c2d_vgg19", "VGG19", None, 224, 224, 3, 339, "im", IM, "VGG19")),
        ("X-224x224x3-339-im.h5",
         ModelName("c2d_xception", "X", None, 224, 224, 3, 339, "im", IM, "Xception")),
    ],
)
def test_parse_model_name_reads_every_mit_zoo_file(name: str, expected: ModelName) -> None:
    assert parse_model_name(name) == expected


def test_a_2d_form_irv2avg_name_takes_its_64_frames_from_the_code() -> None:
    assert parse_model_name("IRv2avg-299x299x3-339-im").frames == 64


def test_parse_model_name_reads_a_small_test_model_name() -> None:
    assert parse_model_name("R50-32x32x3-5-im.h5") == ModelName(
        "c2d_resnet50", "R50", None, 32, 32, 3, 5, "im", IM, "ResNet50"
    )


def test_the_mistyped_h5_history_is_read_only_for_zoo_codes() -> None:
    # In a vidzoo name "m6h5" is whatever the user called the run, kept as written.
    parsed = parse_model_name("lrcn-16x112x112x3-8-m6h5")
    assert (parsed.history, parsed.history_sources, parsed.backbone) == (
        "m6h5", ("Moments in Time",), None
    )


def test_a_vidzoo_name_parses_without_a_zoo_backbone() -> None:
    assert parse_model_name("c3d_bn-8x32x32x3-8-synthetic") == ModelName(
        "c3d_bn", None, 8, 32, 32, 3, 8, "synthetic", ()
    )


def test_every_zoo_code_names_its_backbone() -> None:
    assert set(ZOO_BACKBONES) == set(ALIASES)
    assert CLIP_CODES <= set(ALIASES)


@pytest.mark.parametrize(
    "path", ["C3D-16x112x112x3-339-m.h5", "zoo/C3D-16x112x112x3-339-m.safetensors"]
)
def test_parse_model_name_strips_folders_and_the_extension(path: str) -> None:
    assert parse_model_name(path) == parse_model_name("C3D-16x112x112x3-339-m")


def test_history_that_is_not_mit_letters_names_no_sources() -> None:
    # "kinetics400" starts with k and i, but they are part of a word, not the zoo's letter code.
    assert parse_model_name("r3d_18-16x112x112x3-400-kinetics400").history_sources == ()


def test_parse_model_name_reads_a_vidzoo_file_name() -> None:
    with torch.device("meta"):
        model = create_model("c3d", num_classes=101)
    cfg = model.default_cfg
    parsed = parse_model_name(model_filename(cfg.arch, cfg.clip, cfg.in_chans, model.num_classes, "ucf101"))
    assert (parsed.arch, parsed.frames, parsed.height, parsed.width, parsed.channels) == (
        "c3d", 16, 112, 112, 3
    )
    assert (parsed.num_classes, parsed.history) == (101, "ucf101")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("C3D", "must have four '-'-separated fields"),
        ("C3D-16x112x112x3-339", "must have four '-'-separated fields"),
        ("I3Dv1-16x224x224x3-339-im", "unknown architecture code 'I3Dv1'. Did you mean 'I3DIv1'"),
        ("C3D-16x112-339-im", "shape field '16x112' .* must be TxHxWxC or, for 2D models, HxWxC"),
        ("C3D-16x112x112x3-many-im", "classes field 'many' .* must be a positive integer"),
        ("C3D-0x112x112x3-339-im", "must be positive"),
        ("C3D-112x112x3-339-m", "'112x112x3' .* has no frame count, but C3D reads clips: .*'16x112x112x3'"),
        ("LRCN-224x224x3-339-m.h5", "has no frame count, but LRCN reads clips"),
        ("R50-224x224-339-im.h5", "shape field '224x224'"),
        ("X-224x224x3-339.h5", "must have four '-'-separated fields"),
    ],
)
def test_unparseable_names_are_value_errors(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_model_name(name)


def test_parse_model_name_is_exported_at_the_top_level() -> None:
    assert vidzoo.parse_model_name is parse_model_name


# --- aliases -------------------------------------------------------------------------------------


def test_every_alias_names_a_registered_model() -> None:
    assert set(ALIASES.values()) <= set(list_models())


@pytest.mark.parametrize(
    ("code", "arch"), [("C3D", "c3d"), ("I3DIv1", "i3d"), ("X", "c2d_xception")]
)
def test_resolve_alias(code: str, arch: str) -> None:
    assert resolve_alias(code) == arch


def test_resolve_alias_passes_vidzoo_names_through() -> None:
    assert resolve_alias("c3d_bn") == "c3d_bn"


def test_resolve_alias_unknown_code_suggests_close_codes() -> None:
    with pytest.raises(ValueError, match="unknown architecture code 'Inv3'. Did you mean 'Iv3'"):
        resolve_alias("Inv3")


def test_model_aliases_lists_every_code_of_an_architecture() -> None:
    assert model_aliases("c2d_inception_resnet_v2") == ["IRv2", "IRv2avg"]
    assert model_aliases("c3d_bn") == []


# --- vidzoo models -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def listing() -> dict[str, dict]:
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout)}


def _builds_with_defaults(name: str) -> bool:
    try:
        get_model_cfg(name)
    except ValueError:
        return False
    return True


def test_models_lists_every_registered_model(listing: dict[str, dict]) -> None:
    assert sorted(listing) == list_models()


@pytest.mark.parametrize("name", list_models())
def test_models_reports_size_and_cost(listing: dict[str, dict], name: str) -> None:
    row = listing[name]
    if _builds_with_defaults(name):
        assert row["params"] > 0 and row["gflops"] > 0, row
    else:  # its builder needs arguments, and the listing says which
        assert row["params"] is None and row["note"], row


def test_models_counts_c3d_at_77_gflops(listing: dict[str, dict]) -> None:
    # REFERENCE.md: about 38.5 GMAC = 77 GFLOP per 16x112x112 clip.
    assert listing["c3d"]["gflops"] == pytest.approx(77, rel=0.03)


def test_models_shows_family_weights_and_aliases(listing: dict[str, dict]) -> None:
    assert (listing["c3d"]["family"], listing["c3d"]["aliases"]) == ("c3d", ["C3D"])
    assert listing["r3d_18"]["family"] == "torchvision_video"
    assert listing["r3d_18"]["pretrained"] == ["kinetics400"]


def test_the_shipped_zoo_table_is_current() -> None:
    # `vidzoo models` reads the counted table shipped with vidzoo (listing takes well under a
    # second instead of building every family); it must equal a fresh count.
    from vidzoo.models.zoo_table import TABLE_FILE, compute_rows

    shipped = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
    assert shipped == compute_rows(), (
        f"{TABLE_FILE.name} is stale: regenerate it with `python -m vidzoo.models.zoo_table`")

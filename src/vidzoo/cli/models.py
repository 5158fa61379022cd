"""Model commands: ``models`` (the zoo, its weights, a model's layers), ``info``, ``import-keras``."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from vidzoo.cli._common import console, print_json, user_errors, wide_console

_CLASSES_SHOWN = 10  # `vidzoo info` shows this many class names of a long list


def _clip_text(clip: dict[str, Any]) -> str:
    h, w = clip["size"]
    how = "segments" if clip["sampling"] == "segment" else (
        "dense" if clip["frame_stride"] == 1 else f"dense, stride {clip['frame_stride']}")
    return f"{clip['frames']}x{h}x{w} ({how})"


@user_errors
def models(
    pattern: Optional[str] = typer.Argument(None, help="A model name, or a wildcard filter such as 'c3d*'."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    pretrained: bool = typer.Option(
        False, "--pretrained", help="List the pretrained weights instead: source, classes, accuracy, clip, licence."),
    layers: bool = typer.Option(False, "--layers", help="List the model's layers (for --freeze until:, "
                                "--truncate-after, extract --layer) with channels and stride."),
) -> None:
    """The registered architectures: family, parameters, GFLOPs per clip at the default clip,
    default clip, pretrained weights and MiT zoo aliases.

    GFLOPs: torch.utils.flop_counter's count for one clip, a multiply-add counting as 2 FLOPs,
    on the meta device (nothing is allocated or computed). A model whose constructor needs an
    argument (c2d_timm: a backbone) shows no sizes."""
    from vidzoo.models.zoo_table import rows as zoo_rows

    if pretrained:
        _pretrained_table(pattern, as_json)
        return
    if layers:
        _layers_table(pattern, as_json)
        return
    rows = zoo_rows(pattern)
    if as_json:
        print_json(rows)
        return
    table = Table()
    # In a narrow terminal the text columns fold onto more lines: nothing is cut.
    for header in ("name", "family", "params", "GFLOPs", "default clip", "pretrained", "aliases"):
        table.add_column(header, no_wrap=header in ("params", "GFLOPs"), overflow="fold")
    for r in rows:
        sizes = ["", "", ""] if r["params"] is None else [f"{r['params']:,}", f"{r['gflops']:.1f}", _clip_text(r["clip"])]
        table.add_row(r["name"], r["family"], *sizes, ", ".join(r["pretrained"]), ", ".join(r["aliases"]))
    wide_console().print(table)


def _layers_table(name: Optional[str], as_json: bool) -> None:
    import torch

    from vidzoo.models.factory import create_model

    if name is None:
        raise ValueError("--layers needs a model name, e.g. vidzoo models i3d --layers")
    with torch.device("meta"):
        model = create_model(name)
    rows = [{"layer": info.module, "channels": info.channels, "stride (t, h, w)": list(info.reduction),
             "layout": info.layout} for info in model.feature_info]
    if as_json:
        print_json(rows)
        return
    table = Table("layer", "channels", "stride (t, h, w)", "layout")
    for r in rows:
        table.add_row(r["layer"], str(r["channels"]), "x".join(map(str, r["stride (t, h, w)"])), r["layout"])
    wide_console().print(table)
    if not rows:
        console.print(f"{name} lists no layers: use its pre-logits features, or --freeze backbone")


def _pretrained_table(pattern: Optional[str], as_json: bool) -> None:
    from vidzoo.models._registry import get_model_entry, list_pretrained
    from vidzoo.weights import describe_weights

    rows = []
    for weights in list_pretrained():
        name, tag = weights.split(".", 1)
        rows.append(describe_weights(name, tag, get_model_entry(name).weights[tag]))
    if pattern is not None:
        rows = [r for r in rows if fnmatch.fnmatch(r["model"], pattern) or fnmatch.fnmatch(r["weights"], pattern)]
    if as_json:
        print_json(rows)
        return
    table = Table()
    table.add_column("weights", no_wrap=True)
    table.add_column("source", overflow="fold")  # a URL is only useful whole
    for header in ("classes", "acc@1", "acc@5", "licence"):
        table.add_column(header)
    for r in rows:
        acc = ["" if r[k] is None else f"{r[k]:.1f}" for k in ("acc@1", "acc@5")]
        classes = "" if r["num_classes"] is None else f"{r['num_classes']} ({r['dataset']})"
        table.add_row(r["weights"], r["source"] or "", classes, *acc, r["licence"] or "")
    wide_console().print(table)


@user_errors
def info(
    model_file: str = typer.Argument(..., help="A vidzoo model file (.safetensors), or hf-hub:ORG/NAME[@REVISION] for "
                                     "one on the Hugging Face hub."),
    full: bool = typer.Option(False, "--full", help="Show every class name, and an imported Keras model's whole "
                              "model_config."),
) -> None:
    """Print a model file's metadata: architecture, classes, clip description, history.

    A long class list is shortened (--full shows it all). For a model imported from Keras,
    extra.keras says where it came from: the source file and its SHA-256, the input scaling and
    where the class names came from (classes_source)."""
    from vidzoo.model_file import read_model_metadata
    from vidzoo.weights import resolve_model_file

    meta = read_model_metadata(resolve_model_file(model_file))
    config = meta.get("model_args", {}).get("model_config")
    if not full:
        if isinstance(config, dict):  # an imported Keras model's architecture: long
            layers = config.get("config", {}).get("layers", []) if isinstance(config.get("config"), dict) else []
            meta["model_args"]["model_config"] = f"<Keras {config.get('class_name')} with {len(layers)} layers; --full shows it>"
        classes = meta["classes"]
        if len(classes) > _CLASSES_SHOWN:
            meta["classes"] = [*classes[:_CLASSES_SHOWN], f"... and {len(classes) - _CLASSES_SHOWN} more "
                               f"({len(classes)} classes; --full shows them all)"]
    print_json(meta)


@user_errors
def import_keras(
    h5_file: Path = typer.Argument(..., help="A Keras .h5 model file (model.save, tf.keras 2.x or Keras 3)."),
    classes: Optional[str] = typer.Option(
        None, help="Class names in output order: a text file (one per line), or 'mit-v1' for the Moments in "
        "Time v1 list. Default: class_000, class_001, ..."),
    out: Optional[Path] = typer.Option(None, help="Model file to write (default: the .h5 path with .safetensors)."),
    arch: Optional[str] = typer.Option(
        None, help="For a weights-only .h5 (save_weights, no architecture): the vidzoo architecture to map it onto. "
        "Mappable: c3d (the widely used Keras C3D, layers conv1...fc8); the result is a vidzoo c3d taking RGB in [0, 1]."),
    frames: Optional[int] = typer.Option(
        None, help="Default clip length a 2D (per-frame) model averages over (16); with --arch, the clip length the "
        "Keras model was built for (default 16)."),
    size: Optional[int] = typer.Option(None, help="With --arch: the frame size the Keras model was built for (default 112)."),
) -> None:
    """Import a Keras .h5 model (e.g. the Moments in Time zoo) as a vidzoo model file.

    The architecture is rebuilt from the file's model_config (for a weights-only file: the vidzoo
    --arch) and the weights copied with h5py; nothing in the file is executed. The model takes RGB
    in [0, 1]; its metadata records the source file, its SHA-256, the input scaling and the
    class-name source."""
    from vidzoo.keras import import_h5, import_summary

    path = import_h5(h5_file, out, classes, arch=arch, frames=frames, size=size)
    console.print(f"model file: [bold]{path}[/]", highlight=False)
    for key, value in import_summary(path).items():
        console.print(f"  {key}: {value}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command(name="models")(models)
    app.command(name="info")(info)
    app.command(name="import-keras")(import_keras)

"""The `vidzoo` command: a thin layer over the Python API (same names, same arguments)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="vidzoo: train, evaluate and run video classifiers on your own labeled videos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
make_dataset_app = typer.Typer(help="Write a built-in dataset to disk.", no_args_is_help=True)
app.add_typer(make_dataset_app, name="make-dataset")
console = Console()
err_console = Console(stderr=True)


def _fail(error: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {error}", highlight=False, markup=True)
    raise typer.Exit(code=2)


def _user_errors():
    """Errors a user can fix: print them plainly (no traceback) and exit 2."""
    from vidzoo.data.datasets import AnnotationError
    from vidzoo.data.video import VideoDecodeError
    from vidzoo.model_file import ModelFileError
    from vidzoo.models import UnknownModelError
    from vidzoo.train import TrainingError

    return (AnnotationError, VideoDecodeError, ModelFileError, UnknownModelError, TrainingError,
            FileNotFoundError, FileExistsError, ValueError)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------- data


@make_dataset_app.command("synthetic")
def make_dataset_synthetic(
    out: Path = typer.Argument(..., help="Folder to write (videos/, labels.csv, train/val/test.csv, classes.txt)."),
    videos_per_class: int = typer.Option(40, help="Videos per class (8 classes)."),
    frames: int = typer.Option(16, help="Frames per video."),
    size: int = typer.Option(48, help="Frame height and width in pixels (even)."),
    fps: int = typer.Option(8, help="Frames per second."),
    seed: int = typer.Option(0, help="Everything is deterministic from this seed."),
    overwrite: bool = typer.Option(False, help="Replace a synthetic dataset already in OUT."),
) -> None:
    """The synthetic motion dataset: 8 classes that differ only in how a shape moves."""
    from vidzoo.data.synthetic import make_synthetic_dataset

    try:
        summary = make_synthetic_dataset(out, videos_per_class=videos_per_class, frames=frames, size=size,
                                         fps=fps, seed=seed, overwrite=overwrite)
    except _user_errors() as e:
        _fail(e)
    console.print(summary.summary_table(), highlight=False)


@app.command(name="inspect")
def inspect_command(
    videos: List[Path] = typer.Argument(..., help="Video files."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """What the decoder sees in each video: exact frame count, fps, size, rotation, codec."""
    from dataclasses import asdict

    from vidzoo.data.video import VideoDecodeError, read_video_info

    rows, failed = [], 0
    for path in videos:
        try:
            rows.append(asdict(read_video_info(path)))
        except VideoDecodeError as e:
            failed += 1
            rows.append({"path": str(path), "error": type(e).__name__, "reason": e.reason})
    if as_json:
        _print_json(rows)
    else:
        table = Table("video", "frames", "fps", "size", "rotation", "codec", "note")
        for r in rows:
            if "error" in r:
                table.add_row(r["path"], "", "", "", "", "", f"[red]{r['error']}: {r['reason']}[/]")
            else:
                note = "header says %d" % r["header_num_frames"] if r["header_num_frames"] not in (0, r["num_frames"]) else ""
                table.add_row(r["path"], str(r["num_frames"]), f"{r['fps']:.3f}", f"{r['width']}x{r['height']}",
                              str(r["rotation"]), r["codec"], note)
        console.print(table)
    if failed:
        raise typer.Exit(code=1)


@app.command()
def check(
    data: Path = typer.Argument(..., help="A folder of videos (class folders or not) or a CSV/TSV annotation."),
    clip_len: int = typer.Option(16, "--clip-len", help="Videos with fewer frames are reported too_short."),
    workers: int = typer.Option(2, help="Worker processes (0: decode in this process, no timeout)."),
    random_frames: int = typer.Option(3, "--random-frames", help="Random frames decoded per video, besides first and last."),
    seed: int = typer.Option(0, help="Seed of the random frames."),
    timeout: float = typer.Option(120.0, help="Seconds one file may take before it is reported unreadable."),
    report: Path = typer.Option(Path("check_report.csv"), help="CSV report, one row per video."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary and every video as JSON."),
) -> None:
    """Pre-flight check: decode the first, last and random frames of every video; report per file
    ok / too_short / unreadable / no_video_stream and the flags rotated, variable_frame_rate,
    odd_size, frame_count_mismatch. Exit code 1 when any video is unusable."""
    from vidzoo.check import check_dataset

    try:
        result = check_dataset(data, clip_len=clip_len, workers=workers, random_frames=random_frames, seed=seed,
                               timeout=timeout, progress=not as_json)
    except _user_errors() as e:
        _fail(e)
    result.write_csv(report)
    if as_json:
        _print_json(result.to_dict())
    else:
        table = Table("status", "flags / reason")
        table.add_column("video", overflow="fold")
        for r in result.results:
            if r.status != "ok" or r.flags:
                detail = ", ".join(r.flags + ([f"{r.error}: {r.reason}" if r.error else r.reason] if r.reason else []))
                table.add_row(r.status, detail, r.path)
        if table.row_count:
            console.print(table)
        summary = Table("summary", "count")
        for key, value in result.summary().items():
            summary.add_row(key, str(value))
        console.print(summary)
        console.print(f"report: {report}", highlight=False)
    if result.unusable:
        raise typer.Exit(code=1)


# --------------------------------------------------------------------------- models


@app.command()
def models(
    pattern: Optional[str] = typer.Argument(None, help="Wildcard filter, e.g. 'c3d*' or 'c2d_*'."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    pretrained: bool = typer.Option(
        False, "--pretrained", help="List the pretrained weights instead: source, classes, accuracy, licence."
    ),
) -> None:
    """The registered architectures: family, parameters, GFLOPs per clip at the default input,
    default input, sampling, pretrained weights and MiT zoo aliases.

    --pretrained lists the weights (``model.tag``, for ``create_model(name, pretrained=tag)``)
    with their source (URL or Hugging Face hub id), class count, published top-1/top-5 and licence.

    GFLOPs: torch.utils.flop_counter's count for one clip, a multiply-add counting as 2 FLOPs.
    Counted on the meta device, so nothing is allocated or computed.
    A model whose builder needs arguments (c2d_timm: a backbone) shows no sizes; --json says why.
    """
    from vidzoo.models import get_model_cfg, get_model_entry, list_models, model_flops, model_parameter_count
    from vidzoo.models.names import model_aliases

    if pretrained:
        _pretrained_table(pattern, as_json)
        return
    rows = []
    for name in list_models(pattern):
        entry = get_model_entry(name)
        row: dict[str, Any] = {"name": name, "family": entry.builder.__module__.rpartition(".")[2],
                               "params": None, "gflops": None, "input": None, "sampling": None,
                               "frame_stride": None, "norm": None, "paper": None,
                               "pretrained": sorted(entry.weights), "aliases": model_aliases(name)}
        try:
            cfg = get_model_cfg(name)
            flops = model_flops(name)
        except ValueError as e:  # the builder needs arguments
            row["note"] = str(e)
        else:
            t, h, w = cfg.input_size
            row.update(params=model_parameter_count(name),
                       gflops=round(flops / 1e9, 3), input=f"{t}x{h}x{w}",
                       sampling=cfg.sampling, frame_stride=cfg.frame_stride, norm=cfg.norm,
                       paper=cfg.paper_title)
        rows.append(row)
    if as_json:
        _print_json(rows)
        return
    table = Table()
    table.add_column("name", no_wrap=True)  # the one column that must stay whole on a narrow terminal
    for header in ("family", "params", "GFLOPs", "default input", "sampling", "pretrained", "aliases"):
        table.add_column(header)
    for r in rows:
        if r["params"] is None:
            table.add_row(r["name"], r["family"], "", "", "", "", ", ".join(r["pretrained"]), ", ".join(r["aliases"]))
            continue
        sampling = r["sampling"] if r["frame_stride"] == 1 else f"{r['sampling']}, stride {r['frame_stride']}"
        table.add_row(r["name"], r["family"], f"{r['params']:,}", f"{r['gflops']:.1f}", r["input"], sampling,
                      ", ".join(r["pretrained"]), ", ".join(r["aliases"]))
    console.print(table)


def _pretrained_table(pattern: Optional[str], as_json: bool) -> None:
    from vidzoo.models import list_pretrained
    from vidzoo.weights import describe_weights

    rows = [describe_weights(*weights.split(".", 1)) for weights in list_pretrained()]
    if pattern is not None:
        import fnmatch

        rows = [r for r in rows if fnmatch.fnmatch(r["model"], pattern) or fnmatch.fnmatch(r["weights"], pattern)]
    if as_json:
        _print_json(rows)
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
    console.print(table)


@app.command()
def info(
    model_file: Path = typer.Argument(..., help="A vidzoo model file (.safetensors)."),
    full: bool = typer.Option(False, "--full", help="Show an imported Keras model's whole model_config too."),
) -> None:
    """Print a model file's metadata: architecture, classes, input, normalisation, history.

    For a model imported from Keras, extra.keras says where it came from: the source file and its
    SHA-256, the input scaling and where the class names came from (classes_source)."""
    from vidzoo.model_file import read_model_metadata

    try:
        meta = read_model_metadata(model_file)
    except _user_errors() as e:
        _fail(e)
    config = meta.get("kwargs", {}).get("model_config")
    if isinstance(config, dict) and not full:  # an imported Keras model's architecture: long
        layers = config.get("config", {}).get("layers", []) if isinstance(config.get("config"), dict) else []
        meta["kwargs"]["model_config"] = f"<Keras {config.get('class_name')} with {len(layers)} layers; --full shows it>"
    _print_json(meta)


@app.command(name="import-keras")
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

    try:
        path = import_h5(h5_file, out, classes, arch=arch, num_frames=frames, img_size=size)
        summary = import_summary(path)
    except _user_errors() as e:
        _fail(e)
    console.print(f"model file: [bold]{path}[/]", highlight=False)
    for key, value in summary.items():
        console.print(f"  {key}: {value}", highlight=False)


# --------------------------------------------------------------------------- train / eval / predict


@app.command(name="train")
def train_command(
    data: Optional[str] = typer.Option(None, help="Training videos: a folder per class, or a CSV/TSV 'path,label' file."),
    model: Optional[str] = typer.Option(None, help="Architecture (see `vidzoo models`). Default c3d_bn."),
    config: Optional[Path] = typer.Option(None, help="YAML/JSON file of options; flags given here override it."),
    val: Optional[str] = typer.Option(None, help="Validation videos (folder or CSV)."),
    val_split: Optional[float] = typer.Option(None, help="Hold out this stratified fraction instead of --val (default 0.2)."),
    classes: Optional[str] = typer.Option(None, help="Class-list file fixing the label order."),
    frames: Optional[int] = typer.Option(None, help="Frames per clip (default: the model's)."),
    size: Optional[int] = typer.Option(None, help="Crop size in pixels (default: the model's)."),
    stride: Optional[int] = typer.Option(None, help="Take every N-th frame."),
    width: Optional[float] = typer.Option(None, help="C3D channel-width multiplier (1.0 = the paper)."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Random horizontal flips (off when classes depend on direction)."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs (default 30)."),
    batch_size: Optional[int] = typer.Option(None, help="Clips per batch (default 8)."),
    optimizer: Optional[str] = typer.Option(None, help="adam (default), adamw or sgd."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default 1e-4)."),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay."),
    schedule: Optional[str] = typer.Option(None, help="constant (default), step or cosine."),
    warmup_epochs: Optional[float] = typer.Option(None, help="Linear warm-up length in epochs."),
    label_smoothing: Optional[float] = typer.Option(None, help="Label smoothing for the loss."),
    patience: Optional[int] = typer.Option(None, help="Stop after N epochs without a better val accuracy."),
    target_accuracy: Optional[float] = typer.Option(None, help="Stop once val accuracy reaches this (e.g. 0.75)."),
    pretrained: Optional[str] = typer.Option(None, help="Start from weights: a tag (see `vidzoo models --pretrained`) or a file."),
    freeze: Optional[str] = typer.Option(None, help="none (default), backbone (train only the classifier) or until:LAYER "
                                         "(that layer and all before it stay fixed; layers as feature_info names them)."),
    train_last: Optional[int] = typer.Option(None, help="Train only the last N layers and the head."),
    backbone_lr_mult: Optional[float] = typer.Option(None, help="Everything but the classifier learns at lr times this (default 1)."),
    unfreeze_at: Optional[int] = typer.Option(None, help="From this epoch (0-based, as in metrics.csv) everything trains."),
    truncate_after: Optional[str] = typer.Option(None, help="Cut the model after this layer (e.g. Mixed_4f) and put a new head on it."),
    workers: Optional[int] = typer.Option(None, help="DataLoader worker processes (default 2)."),
    sample_timeout: Optional[float] = typer.Option(None, help="Seconds one video may take to decode in a worker (default 120)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default 0)."),
    precision: Optional[str] = typer.Option(None, help="Lightning precision: 32-true, bf16-mixed, 16-mixed."),
    accelerator: Optional[str] = typer.Option(None, help="Lightning accelerator: auto, cpu, gpu."),
    devices: Optional[str] = typer.Option(None, help="Lightning devices: auto, a count, or a list."),
    strategy: Optional[str] = typer.Option(None, help="Lightning strategy, e.g. ddp."),
    num_nodes: Optional[int] = typer.Option(None, help="Machines for multi-node DDP."),
    history: Optional[str] = typer.Option(None, help="Training-history field of the model file name."),
    out: Optional[str] = typer.Option(None, help="Run directory (default runs/exp)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this directory from its last checkpoint."),
) -> None:
    """Train a model; writes config.yaml, metrics.csv, curves.png, checkpoints, the model file
    and summary.json to the run directory."""
    from vidzoo.train import TrainConfig, train

    options = dict(data=data, model=model, val=val, val_split=val_split, classes=classes, frames=frames, size=size,
                   stride=stride, flip=flip, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                   weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs,
                   label_smoothing=label_smoothing, patience=patience, target_accuracy=target_accuracy,
                   pretrained=pretrained, freeze=freeze, train_last=train_last, backbone_lr_mult=backbone_lr_mult,
                   unfreeze_at=unfreeze_at, truncate_after=truncate_after, workers=workers, sample_timeout=sample_timeout, seed=seed, precision=precision, accelerator=accelerator,
                   devices=_devices(devices), strategy=strategy, num_nodes=num_nodes, history=history, out=out)
    try:
        if resume is not None:
            run_config = resume / "config.yaml" if resume.is_dir() else resume.parent.parent / "config.yaml"
            cfg = TrainConfig.from_file(run_config)
        elif config is not None:
            cfg = TrainConfig.from_file(config, **options)
        else:
            if data is None:
                raise ValueError("--data is required (or --config with a 'data' entry)")
            cfg = TrainConfig(**{k: v for k, v in options.items() if v is not None})
        if width is not None:
            cfg.model_kwargs["width"] = width
        result = train(cfg, resume=resume)
    except _user_errors() as e:
        _fail(e)
    if not result.model_file:  # a DDP rank other than 0: rank 0 writes the model and reports
        return
    if result.load_report:
        console.print(result.load_report, highlight=False, soft_wrap=True)
    if result.trainable_parameters != result.total_parameters:
        console.print(f"trained {result.trainable_parameters:,} of {result.total_parameters:,} parameters")
    console.print(f"model file: [bold]{result.model_file}[/]")
    console.print(f"best val accuracy: {result.best_val_accuracy} (epoch {result.best_epoch}); run dir {result.run_dir}")


def _devices(devices: str | None):
    if devices is None:
        return None
    return int(devices) if devices.isdigit() else devices


@app.command(name="eval")
def eval_command(
    model_file: Path = typer.Argument(..., help="A vidzoo model file."),
    data: str = typer.Argument(..., help="Test videos: a folder per class or a CSV/TSV file."),
    clips: int = typer.Option(10, help="Clips per video, evenly spaced (video accuracy averages them)."),
    crops: int = typer.Option(1, help="1 (centre) or 3 (left/centre/right) crops per clip."),
    batch_size: int = typer.Option(8, help="Views per forward pass (bounds memory)."),
    workers: int = typer.Option(2, help="DataLoader worker processes."),
    skip_bad: bool = typer.Option(False, help="Exclude videos that fail to decode, and report them."),
    device: str = typer.Option("cpu", help="torch device."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    out: Optional[Path] = typer.Option(None, help="Write report.json, confusion.csv and confusion.png here."),
) -> None:
    """Clip and video accuracy, top-5, per-class accuracy and the confusion matrix."""
    from vidzoo.data.datasets import load_source
    from vidzoo.evaluate import evaluate, write_report
    from vidzoo.model_file import load_model

    try:
        model = load_model(model_file)
        report = evaluate(model, load_source(data), num_clips=clips, crops=crops, batch_size=batch_size,
                          workers=workers, skip_bad=skip_bad, device=device, progress=not as_json)
    except _user_errors() as e:
        _fail(e)
    if out is not None:
        write_report(report, out)
    if as_json:
        _print_json(report.to_dict())
        return
    console.print(f"videos: {report.num_videos}  clip accuracy: {report.clip_accuracy:.2%}  "
                  f"video accuracy: {report.video_accuracy:.2%}  top-{report.top_k}: {report.top5_accuracy:.2%}  "
                  f"mean class accuracy: {report.mean_class_accuracy:.2%}")
    if report.excluded:
        console.print(f"[yellow]excluded {len(report.excluded)} video(s) that failed to decode:[/]")
        for item in report.excluded:
            console.print(f"  {item['path']}: {item['reason']}", highlight=False)
    if out is not None:
        console.print(f"report written to {out}")


@app.command()
def predict(
    model_file: Path = typer.Argument(..., help="A vidzoo model file."),
    videos: List[Path] = typer.Argument(..., help="Video files."),
    top_k: int = typer.Option(5, help="Labels to show per video."),
    window: Optional[float] = typer.Option(None, help="Predict per window of this many seconds (long videos)."),
    stride: Optional[float] = typer.Option(None, help="Seconds between window starts (default: --window)."),
    device: str = typer.Option("cpu", help="torch device."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Top-k labels per video, or per time window with --window/--stride."""
    from vidzoo.model_file import load_model
    from vidzoo.predict import predict_video, predict_windows

    results = []
    try:
        model = load_model(model_file)
        for video in videos:
            if window is not None:
                windows = predict_windows(model, video, window=window, stride=stride or window, top_k=top_k, device=device)
                results.append({"path": str(video), "windows": [w.to_dict() for w in windows]})
            else:
                results.append(predict_video(model, video, top_k=top_k, device=device).to_dict())
    except _user_errors() as e:
        _fail(e)
    if as_json:
        _print_json(results)
        return
    for result in results:
        console.print(f"[bold]{result['path']}[/]", highlight=False)
        if "windows" in result:
            for w in result["windows"]:
                top = ", ".join(f"{t['class']} {t['probability']:.2f}" for t in w["top"])
                console.print(f"  {w['start_s']:8.2f}-{w['end_s']:8.2f} s  {top}", highlight=False)
        else:
            for t in result["top"]:
                console.print(f"  {t['probability']:.3f}  {t['class']}", highlight=False)


# --------------------------------------------------------------------------- features / linear probes


@app.command()
def extract(
    model: str = typer.Argument(..., help="A vidzoo model file, or a registered model name (see `vidzoo models`)."),
    data: str = typer.Argument(..., help="Labeled videos: a folder per class or a CSV/TSV 'path,label' file."),
    out: Path = typer.Option(..., help="Features file: FILE.npy (with a FILE.json sidecar) or FILE.parquet."),
    layer: Optional[str] = typer.Option(
        None, help="A layer of the model's feature_info, averaged over time and space (default: pre_logits)."),
    per: str = typer.Option("video", help="One row per 'video' (the mean over its clips) or per 'clip'."),
    clips: int = typer.Option(1, help="Clips per video, evenly spaced."),
    pretrained: Optional[str] = typer.Option(None, help="Weights for a registered model name: a tag or a file."),
    batch_size: int = typer.Option(8, help="Clips per forward pass (bounds memory)."),
    workers: int = typer.Option(2, help="DataLoader worker processes."),
    device: str = typer.Option("cpu", help="torch device."),
    skip_bad: bool = typer.Option(False, help="Leave out videos that fail to decode, and list them."),
    chunk_size: int = typer.Option(256, help="Videos per saved chunk: an interrupted run resumes at its first unfinished chunk."),
    overwrite: bool = typer.Option(False, help="Replace OUT, and discard unfinished chunks made with other settings."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Features of every video (or clip) at a layer, with video ids and labels, for linear probes.
    Rerun the same command after an interruption to continue where it stopped."""
    from vidzoo.features import extract_features

    try:
        features = extract_features(model, data, layer=layer, per=per, clips=clips, out=out, pretrained=pretrained,
                                    batch_size=batch_size, workers=workers, device=device, skip_bad=skip_bad,
                                    chunk_size=chunk_size, overwrite=overwrite, progress=not as_json)
    except (*_user_errors(), ImportError) as e:
        _fail(e)
    summary = {"out": str(out), "rows": len(features.features), "dim": features.dim, "layer": features.layer,
               "per": features.per, "clips": features.clips, "classes": features.classes,
               "excluded": features.excluded}
    if as_json:
        _print_json(summary)
        return
    console.print(f"{summary['rows']} x {summary['dim']} features ({features.layer}, per {features.per}) "
                  f"written to [bold]{out}[/]", highlight=False)
    _print_excluded(features.excluded)


def _print_excluded(excluded: list[dict[str, str]]) -> None:
    if excluded:
        console.print(f"[yellow]excluded {len(excluded)} video(s) that failed to decode:[/]")
        for item in excluded:
            console.print(f"  {item['path']}: {item['reason']}", highlight=False)


@app.command()
def probe(
    inputs: List[str] = typer.Argument(
        ..., metavar="FEATURES | MODEL DATA",
        help="A features file from `vidzoo extract` (.npy or .parquet), or a model and labeled videos to extract from."),
    val: Optional[str] = typer.Option(
        None, help="Validation set: a features file (with FEATURES) or labeled videos (with MODEL DATA)."),
    val_split: float = typer.Option(0.2, help="Without --val: hold out this stratified fraction of the videos."),
    classifier: str = typer.Option("logreg", help="logreg (logistic regression) or linear_svm."),
    c: float = typer.Option(1.0, "--c", help="Inverse regularisation strength (scikit-learn's C)."),
    max_iter: int = typer.Option(1000, help="Solver iterations."),
    seed: int = typer.Option(0, help="Seed of the validation split and the solver."),
    out: Path = typer.Option(Path("runs/probe"), help="Writes report.json, confusion.csv, confusion.png, probe.safetensors."),
    layer: Optional[str] = typer.Option(None, help="With MODEL DATA: the layer to extract (default: pre_logits)."),
    per: str = typer.Option("video", help="With MODEL DATA: one row per 'video' or per 'clip'."),
    clips: int = typer.Option(1, help="With MODEL DATA: clips per video."),
    pretrained: Optional[str] = typer.Option(None, help="With MODEL DATA: weights for a registered model name."),
    batch_size: int = typer.Option(8, help="With MODEL DATA: clips per forward pass."),
    workers: int = typer.Option(2, help="With MODEL DATA: DataLoader worker processes."),
    device: str = typer.Option("cpu", help="With MODEL DATA: torch device."),
    skip_bad: bool = typer.Option(False, help="With MODEL DATA: leave out videos that fail to decode, and list them."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Train a linear classifier (scikit-learn, on standardised features) and report its held-out
    accuracy and confusion matrix. With MODEL DATA the features are extracted first, into OUT.
    (To see what the decoder sees in a video, use `vidzoo inspect`.)"""
    from vidzoo.data.datasets import VIDEO_EXTENSIONS
    from vidzoo.features import extract_features
    from vidzoo.linear_probe import linear_probe, write_probe_report

    try:
        videos = [i for i in inputs if Path(i).suffix.lower() in VIDEO_EXTENSIONS]
        if videos:
            raise ValueError(f"{videos[0]} is a video: `vidzoo probe` trains linear probes on features "
                             "(FEATURES, or MODEL DATA); to see what the decoder sees in a video, run "
                             f"`vidzoo inspect {' '.join(videos)}`")
        if len(inputs) not in (1, 2):
            raise ValueError(f"expected FEATURES or MODEL DATA, got {len(inputs)} arguments: {' '.join(inputs)}")
        if len(inputs) == 2:
            def extracted(data: str, name: str) -> Path:
                # Files in OUT belong to this probe: a rerun replaces them (an interrupted one resumes).
                path = out / name
                features = extract_features(
                    inputs[0], data, layer=layer, per=per, clips=clips, out=path, pretrained=pretrained,
                    batch_size=batch_size, workers=workers, device=device, skip_bad=skip_bad, overwrite=True,
                    progress=not as_json)
                if not as_json:
                    _print_excluded(features.excluded)
                return path

            train_features = extracted(inputs[1], "features.npy")
            val_features = extracted(val, "val_features.npy") if val is not None else None
        else:
            train_features, val_features = Path(inputs[0]), val
        fitted, report = linear_probe(train_features, val=val_features, val_split=val_split, classifier=classifier,
                                      c=c, max_iter=max_iter, seed=seed)
        write_probe_report(fitted, report, out)
    except (*_user_errors(), ImportError) as e:
        _fail(e)
    if as_json:
        _print_json(report.to_dict())
        return
    _confusion_table(report.confusion_matrix, report.classes)
    console.print(f"{report.classifier} probe on {report.layer}: accuracy {report.accuracy:.2%}  "
                  f"video accuracy {report.video_accuracy:.2%}  mean class accuracy {report.mean_class_accuracy:.2%}  "
                  f"(train {report.train_accuracy:.2%}; {report.num_train} train rows, {report.num_val} validation "
                  f"rows from {report.val_from})", highlight=False)
    if not report.converged:
        console.print(f"[yellow]the solver did not converge in {max_iter} iterations; raise --max-iter[/]")
    console.print(f"report and probe written to {out}", highlight=False)


_TABLE_MAX_CLASSES = 20  # a wider confusion table no longer fits a terminal; confusion.csv has it all


def _confusion_table(matrix: list[list[int]], classes: list[str]) -> None:
    if len(classes) > _TABLE_MAX_CLASSES:
        return
    # Columns by class number: the names would not fit side by side.
    table = Table("true \\ predicted", *map(str, range(len(classes))), title="validation confusion matrix (videos)")
    for i, (name, row) in enumerate(zip(classes, matrix)):
        table.add_row(f"{i} {name}", *(f"[bold green]{n}[/]" if i == j and n else str(n) for j, n in enumerate(row)))
    console.print(table)


@app.command(name="quickstart")
def quickstart_command(
    out: Path = typer.Option(Path("runs/quickstart"), help="Folder for the dataset, run, evaluation and summary.json."),
    epochs: Optional[int] = typer.Option(None, help="Override the recipe's epochs (20)."),
    videos_per_class: int = typer.Option(100, help="Synthetic videos per class."),
    workers: int = typer.Option(2, help="DataLoader worker processes."),
) -> None:
    """Make the synthetic dataset, train a light C3D-BN, evaluate it on the test split and
    predict two test videos (about 3 minutes on 2 CPU cores)."""
    from vidzoo.quickstart import quickstart

    try:
        summary = quickstart(out, epochs=epochs, videos_per_class=videos_per_class, workers=workers,
                             progress=sys.stderr.isatty(), log=lambda m: console.print(m, highlight=False))
    except _user_errors() as e:
        _fail(e)
    console.print(f"\n[bold green]test video accuracy {summary['test_video_accuracy']:.1%}[/] "
                  f"(clip accuracy {summary['test_clip_accuracy']:.1%}) in {summary['seconds']:.0f} s")
    console.print(f"model file: {summary['model_file']}\nrun directory: {summary['run_dir']}\n"
                  f"evaluation: {summary['eval_dir']}\nsummary: {Path(out) / 'summary.json'}")


def main() -> None:  # pragma: no cover - console-script entry point
    # No basicConfig: Lightning installs its own handler, and warnings from vidzoo's loggers
    # reach stderr through logging's last-resort handler, each once.
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

"""Features and linear probes: ``extract`` and ``probe``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from vidzoo.cli._common import (
    DEVICES_HELP,
    DISTRIBUTED,
    INFERENCE,
    NUM_NODES_HELP,
    PRECISION_HELP,
    STRATEGY_HELP,
    console,
    print_excluded,
    print_json,
    user_errors,
)

_TABLE_MAX_CLASSES = 20  # a wider confusion table no longer fits a terminal; confusion.csv has it all


@user_errors
def extract(
    model: str = typer.Argument(..., help="A vidzoo model file (hf-hub:ORG/NAME for one on the Hugging Face hub), "
                                "or a registered model name (see `vidzoo models`)."),
    data: str = typer.Argument(..., help="Labeled videos: a folder per class or a CSV/TSV 'path,label' file."),
    out: Path = typer.Option(..., help="Features file: FILE.npy (with a FILE.json sidecar) or FILE.parquet."),
    layer: Optional[str] = typer.Option(
        None, help="A layer of the model (`vidzoo models NAME --layers`), averaged over time and space "
        "(default: pre_logits)."),
    per: str = typer.Option("video", help="One row per 'video' (the mean over its clips) or per 'clip'."),
    clips_per_video: Optional[int] = typer.Option(None, min=1, help="Clips per video, evenly spaced (default: the "
                                                  "model's clips_per_video)."),
    pretrained: Optional[str] = typer.Option(None, help="Weights for a registered model name: a tag or a file."),
    batch_size: int = typer.Option(8, help="Clips per forward pass (bounds memory)."),
    workers: int = typer.Option(2, help="DataLoader worker processes."),
    device: str = typer.Option("cpu", help="torch device."),
    skip_bad: bool = typer.Option(False, help="Leave out videos that fail to decode, and list them."),
    chunk_size: int = typer.Option(256, help="Videos per saved chunk: an interrupted run resumes at its first unfinished chunk."),
    overwrite: bool = typer.Option(False, help="Replace OUT, and discard unfinished chunks made with other settings."),
    devices: int = typer.Option(1, min=1, rich_help_panel=DISTRIBUTED, help=DEVICES_HELP),
    strategy: str = typer.Option("auto", rich_help_panel=DISTRIBUTED, help=STRATEGY_HELP),
    num_nodes: int = typer.Option(1, min=1, rich_help_panel=DISTRIBUTED, help=NUM_NODES_HELP),
    engine: str = typer.Option("auto", rich_help_panel=INFERENCE, help="How the model runs: auto or eager (eager "
                               "unless compiling is asked for), or compile (torch.compile)."),
    precision: str = typer.Option("auto", rich_help_panel=INFERENCE, help=PRECISION_HELP + " auto keeps bf16 only "
                                  "where it is faster and every clip's features stay within cosine 0.999 of fp32's."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Features of every video (or clip) at a layer, with video ids and labels, for linear probes.
    Rerun the same command after an interruption to continue where it stopped; with --devices N
    --strategy ddp, N processes share the videos out and the file is the same as one process writes."""
    from vidzoo.features import extract_features

    features = extract_features(model, data, layer=layer, per=per, clips_per_video=clips_per_video, out=out,
                                pretrained=pretrained, batch_size=batch_size, workers=workers, device=device,
                                skip_bad=skip_bad, chunk_size=chunk_size, overwrite=overwrite, progress=not as_json,
                                devices=devices, strategy=strategy, num_nodes=num_nodes, engine=engine,
                                precision=precision)
    if features is None:  # a process other than 0 of a distributed run: process 0 reports
        return
    summary = {"out": str(out), "rows": len(features.features), "dim": features.dim, "layer": features.layer,
               "per": features.per, "clips_per_video": features.clips_per_video, "classes": features.classes,
               "excluded": features.excluded, "engine": features.model.get("engine")}
    if as_json:
        print_json(summary)
        return
    console.print(f"{summary['rows']} x {summary['dim']} features ({features.layer}, per {features.per}) "
                  f"written to [bold]{out}[/]", highlight=False)
    console.print(summary["engine"], highlight=False, soft_wrap=True)
    print_excluded(features.excluded)


@user_errors
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
    clips_per_video: Optional[int] = typer.Option(None, min=1, help="With MODEL DATA: clips per video."),
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
    from vidzoo.data.sources import VIDEO_EXTENSIONS
    from vidzoo.features import extract_features
    from vidzoo.linear_probe import linear_probe, write_probe_report

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
                inputs[0], data, layer=layer, per=per, clips_per_video=clips_per_video, out=path,
                pretrained=pretrained, batch_size=batch_size, workers=workers, device=device, skip_bad=skip_bad,
                overwrite=True, progress=not as_json)
            if not as_json:
                print_excluded(features.excluded)
            return path

        train_features = extracted(inputs[1], "features.npy")
        val_features = extracted(val, "val_features.npy") if val is not None else None
    else:
        train_features, val_features = Path(inputs[0]), val
    fitted, report = linear_probe(train_features, val=val_features, val_split=val_split, classifier=classifier,
                                  c=c, max_iter=max_iter, seed=seed)
    write_probe_report(fitted, report, out)
    if as_json:
        print_json(report.to_dict())
        return
    _confusion_table(report.confusion_matrix, report.classes)
    console.print(f"{report.classifier} probe on {report.layer}: accuracy {report.accuracy:.2%}  "
                  f"video accuracy {report.video_accuracy:.2%}  mean class accuracy {report.mean_class_accuracy:.2%}  "
                  f"(train {report.train_accuracy:.2%}; {report.num_train} train rows, {report.num_val} validation "
                  f"rows from {report.val_from})", highlight=False)
    if not report.converged:
        console.print(f"[yellow]the solver did not converge in {max_iter} iterations; raise --max-iter[/]")
    console.print(f"report and probe written to {out}", highlight=False)


def _confusion_table(matrix: list[list[int]], classes: list[str]) -> None:
    if len(classes) > _TABLE_MAX_CLASSES:
        return
    # Columns by class number: the names would not fit side by side.
    table = Table("true \\ predicted", *map(str, range(len(classes))), title="validation confusion matrix (videos)")
    for i, (name, row) in enumerate(zip(classes, matrix)):
        table.add_row(f"{i} {name}", *(f"[bold green]{n}[/]" if i == j and n else str(n) for j, n in enumerate(row)))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command(name="extract")(extract)
    app.command(name="probe")(probe)

"""Features and probes: ``extract`` and ``probe``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer
from rich.table import Table

from vidzoo.cli._common import (
    DECODER_HELP,
    DEVICES_HELP,
    DISTRIBUTED,
    INFERENCE,
    NUM_NODES_HELP,
    PRECISION_HELP,
    STRATEGY_HELP,
    check_decoder_option,
    console,
    print_excluded,
    print_json,
    user_errors,
)

if TYPE_CHECKING:
    from vidzoo.probe_sweep import SweepResult

_GRID = "Grid"  # the help panel of the swept settings
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
    per: str = typer.Option("video", help="One row per 'video' (the mean over its clips), per 'clip', or per "
                            "'token' (each position of the layer's output in each clip, for attentive probes; "
                            "default layer: the output the head pools)."),
    clips_per_video: Optional[int] = typer.Option(None, min=1, help="Clips per video, evenly spaced (default: the "
                                                  "model's clips_per_video)."),
    pretrained: Optional[str] = typer.Option(None, help="Weights for a registered model name: a tag or a file."),
    batch_size: int = typer.Option(8, help="Clips per forward pass (bounds memory)."),
    workers: int = typer.Option(2, help="DataLoader worker processes."),
    decoder: str = typer.Option("auto", help=DECODER_HELP),
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

    check_decoder_option(decoder)
    features = extract_features(model, data, layer=layer, per=per, clips_per_video=clips_per_video, out=out,
                                pretrained=pretrained, batch_size=batch_size, workers=workers, device=device,
                                skip_bad=skip_bad, chunk_size=chunk_size, overwrite=overwrite, progress=not as_json,
                                devices=devices, strategy=strategy, num_nodes=num_nodes, engine=engine,
                                precision=precision, decoder=decoder)
    if features is None:  # a process other than 0 of a distributed run: process 0 reports
        return
    summary = {"out": str(out), "rows": len(features.features), "dim": features.dim, "layer": features.layer,
               "per": features.per, "clips_per_video": features.clips_per_video, "classes": features.classes,
               "excluded": features.excluded, "engine": features.model.get("engine"),
               **(features.throughput or {})}
    if as_json:
        print_json(summary)
        return
    console.print(f"{summary['rows']} x {summary['dim']} features ({features.layer}, per {features.per}) "
                  f"written to [bold]{out}[/]", highlight=False)
    speed = features.throughput or {}
    if speed.get("data_wait_share") is not None:
        console.print(f"{speed['clips_per_s']:.1f} clips/s, {speed['data_wait_share']:.0%} of the time waiting for "
                      f"decoded videos ({workers} worker(s)); {summary['engine']}", highlight=False, soft_wrap=True)
    else:
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
    test: Optional[str] = typer.Option(
        None, help="Test set (features, or videos with MODEL DATA): the chosen probe's test accuracy is reported."),
    test_split: Optional[float] = typer.Option(
        None, help="Without --test: hold out this stratified fraction of the videos as a test set (seed + 1)."),
    classifier: List[str] = typer.Option(
        ["logreg"], metavar="KIND", rich_help_panel=_GRID,
        help="logreg (logistic regression), linear_svm or attentive (learned-query cross-attention over a "
        "video's clips or tokens, then a linear layer; extract with --per clip or --per token); repeat to "
        "sweep several."),
    c: List[float] = typer.Option([1.0], "--c", rich_help_panel=_GRID,
                                  help="Inverse regularisation strength of logreg/linear_svm (scikit-learn's C); "
                                  "repeat to sweep."),
    lr: List[float] = typer.Option([1e-3], rich_help_panel=_GRID, help="attentive: AdamW learning rate; repeat to sweep."),
    weight_decay: List[float] = typer.Option([0.01], rich_help_panel=_GRID,
                                             help="attentive: AdamW weight decay; repeat to sweep (x every --lr)."),
    epochs: int = typer.Option(50, min=1, rich_help_panel=_GRID, help="attentive: epochs (cosine learning-rate decay)."),
    balance: str = typer.Option("none", help="Class balance: none, loss (class-weighted loss) or sampling "
                                "(training rows drawn every class equally often)."),
    max_iter: int = typer.Option(1000, help="Solver iterations of logreg/linear_svm."),
    seed: int = typer.Option(0, help="Seed of the splits, the solvers and the attentive probes."),
    out: Path = typer.Option(Path("runs/probe"), help="Writes grid.json, grid.png, report.json, confusion.csv, "
                             "confusion.png, probe.safetensors."),
    layer: Optional[str] = typer.Option(None, help="With MODEL DATA: the layer to extract (default: pre_logits)."),
    per: str = typer.Option("video", help="With MODEL DATA: one row per 'video', per 'clip' or per 'token'."),
    clips_per_video: Optional[int] = typer.Option(None, min=1, help="With MODEL DATA: clips per video."),
    pretrained: Optional[str] = typer.Option(None, help="With MODEL DATA: weights for a registered model name."),
    batch_size: int = typer.Option(8, help="With MODEL DATA: clips per forward pass."),
    workers: int = typer.Option(2, help="With MODEL DATA: DataLoader worker processes."),
    decoder: str = typer.Option("auto", help="With MODEL DATA: " + DECODER_HELP),
    device: str = typer.Option("cpu", help="With MODEL DATA: torch device."),
    skip_bad: bool = typer.Option(False, help="With MODEL DATA: leave out videos that fail to decode, and list them."),
    as_json: bool = typer.Option(False, "--json", help="Print the report and the grid as JSON."),
) -> None:
    """Train probes on frozen features, one per cell of the grid (classifiers x C, or x learning
    rate x weight decay for attentive probes), pick the best by validation video accuracy, and
    report the whole grid, the chosen probe's confusion matrix and, with --test/--test-split, its
    test accuracy. Linear probes are scikit-learn's, on standardised features. With MODEL DATA the
    features are extracted first, into OUT. (To see what the decoder sees in a video, use `vidzoo inspect`.)"""
    from vidzoo.data.sources import VIDEO_EXTENSIONS
    from vidzoo.features import extract_features
    from vidzoo.probe_sweep import probe_sweep, write_sweep

    videos = [i for i in inputs if Path(i).suffix.lower() in VIDEO_EXTENSIONS]
    if videos:
        raise ValueError(f"{videos[0]} is a video: `vidzoo probe` trains probes on features "
                         "(FEATURES, or MODEL DATA); to see what the decoder sees in a video, run "
                         f"`vidzoo inspect {' '.join(videos)}`")
    if len(inputs) not in (1, 2):
        raise ValueError(f"expected FEATURES or MODEL DATA, got {len(inputs)} arguments: {' '.join(inputs)}")
    if len(inputs) == 2:
        def extracted(data: Optional[str], name: str) -> Optional[Path]:
            if data is None:
                return None
            # Files in OUT belong to this probe: a rerun replaces them (an interrupted one resumes).
            path = out / name
            features = extract_features(
                inputs[0], data, layer=layer, per=per, clips_per_video=clips_per_video, out=path,
                pretrained=pretrained, batch_size=batch_size, workers=workers, device=device, skip_bad=skip_bad,
                overwrite=True, progress=not as_json, decoder=decoder)
            if not as_json:
                print_excluded(features.excluded)
            return path

        train_features = extracted(inputs[1], "features.npy")
        val_features, test_features = extracted(val, "val_features.npy"), extracted(test, "test_features.npy")
    else:
        train_features, val_features, test_features = Path(inputs[0]), val, test
    result = probe_sweep(train_features, val=val_features, val_split=val_split, test=test_features,
                         test_split=test_split, classifiers=classifier, cs=c, lrs=lr, weight_decays=weight_decay,
                         balance=balance, max_iter=max_iter, epochs=epochs, seed=seed)
    write_sweep(result, out)
    report = result.report
    if as_json:
        print_json({**report.to_dict(), "grid": [dataclasses.asdict(cell) for cell in result.cells]})
        return
    _grid_table(result)
    _confusion_table(report.confusion_matrix, report.classes)
    settings = ", ".join(f"{k} {v:g}" for k, v in report.settings.items())
    console.print(f"chosen: {report.classifier} ({settings}) on {report.layer}: validation video accuracy "
                  f"{report.video_accuracy:.2%}  mean class accuracy {report.mean_class_accuracy:.2%}  "
                  f"(train {report.train_accuracy:.2%}; {report.num_train} train rows, {report.num_val} validation "
                  f"rows from {report.val_from})", highlight=False)
    if report.test is not None:
        console.print(f"[bold]test video accuracy {report.test['video_accuracy']:.2%}[/] on "
                      f"{report.test['num_videos']} videos ({report.test['test_from']})", highlight=False)
    if "attentive" in classifier and result.info["per"] == "video":
        console.print("[yellow]the features have one row per video, so the attentive probe had a single row to "
                      "attend over; extract with --per clip to give it the clips[/]")
    if not all(cell.converged for cell in result.cells):
        console.print(f"[yellow]a solver did not converge in {max_iter} iterations; raise --max-iter[/]")
    console.print(f"grid, report and chosen probe written to {out}", highlight=False)


def _grid_table(result: SweepResult) -> None:
    table = Table("classifier", "settings", "val accuracy", "train accuracy", "seconds", title="probe grid (videos)")
    for i, cell in enumerate(result.cells):
        chosen = i == result.best
        settings = ", ".join(f"{k} {v:g}" for k, v in cell.settings.items())
        table.add_row(cell.classifier, settings, f"[bold green]{cell.val_accuracy:.2%}[/]" if chosen
                      else f"{cell.val_accuracy:.2%}", f"{cell.train_accuracy:.2%}", f"{cell.seconds:.2f}")
    console.print(table)


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

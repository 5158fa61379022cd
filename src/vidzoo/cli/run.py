"""Running a trained model: ``eval`` and ``predict``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vidzoo.cli._common import (
    DECODER_HELP,
    DEVICES_HELP,
    DISTRIBUTED,
    ENGINE_HELP,
    INFERENCE,
    NUM_NODES_HELP,
    PRECISION_HELP,
    STRATEGY_HELP,
    check_decoder_option,
    console,
    err_console,
    print_json,
    user_errors,
)

MODEL_FILE_HELP = "A vidzoo model file, or hf-hub:ORG/NAME[@REVISION] for one on the Hugging Face hub."
CLIPS_HELP = "Clips per video, spread evenly over it (default: the model file's clips_per_video)."
CROPS_HELP = "Crops per clip: 1 (centre) or 3 (along the long side) (default: the model file's)."


@user_errors
def eval_command(
    model_file: str = typer.Argument(..., help=MODEL_FILE_HELP),
    data: str = typer.Argument(..., help="Test videos: a folder per class or a CSV/TSV file."),
    clips_per_video: Optional[int] = typer.Option(None, min=1, help=CLIPS_HELP),
    crops: Optional[int] = typer.Option(None, min=1, max=3, help=CROPS_HELP),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Views per forward pass (default: the engine's "
                                             "choice, 8 when forced)."),
    workers: int = typer.Option(2, help="DataLoader worker processes: they decode ahead of the model."),
    decoder: str = typer.Option("auto", help=DECODER_HELP),
    skip_bad: bool = typer.Option(False, help="Exclude videos that fail to decode, and report them."),
    device: str = typer.Option("cpu", help="torch device."),
    engine: str = typer.Option("auto", rich_help_panel=INFERENCE, help=ENGINE_HELP),
    precision: str = typer.Option("auto", rich_help_panel=INFERENCE, help=PRECISION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    out: Optional[Path] = typer.Option(None, help="Write report.json, confusion.csv and confusion.png here; "
                                       "finished chunks of videos wait in OUT/parts, so a rerun resumes."),
    chunk_size: int = typer.Option(256, min=1, help="Videos per chunk: a batch never spans two, so the figures "
                                   "do not depend on --devices."),
    devices: int = typer.Option(1, min=1, rich_help_panel=DISTRIBUTED, help=DEVICES_HELP),
    strategy: str = typer.Option("auto", rich_help_panel=DISTRIBUTED, help=STRATEGY_HELP),
    num_nodes: int = typer.Option(1, min=1, rich_help_panel=DISTRIBUTED, help=NUM_NODES_HELP),
) -> None:
    """Clip and video accuracy, top-5, per-class accuracy and the confusion matrix, with the
    clips cut as the model file's clip description says. With --devices N --strategy ddp, N
    processes share the videos out and the report is the one a single process writes."""
    from vidzoo.data.sources import load_source
    from vidzoo.evaluate import evaluate, write_report
    from vidzoo.models.factory import load_model

    check_decoder_option(decoder)
    model = load_model(model_file)
    report = evaluate(model, load_source(data), clips_per_video=clips_per_video, crops=crops, batch_size=batch_size,
                      workers=workers, skip_bad=skip_bad, device=device, progress=not as_json, chunk_size=chunk_size,
                      parts=None if out is None else out / "parts", devices=devices, strategy=strategy,
                      num_nodes=num_nodes, engine=engine, precision=precision, decoder=decoder)
    if report is None:  # a process other than 0 of a distributed run: process 0 reports
        return
    if out is not None:
        write_report(report, out)
    if as_json:
        print_json(report.to_dict())
        return
    _print_per_class(report)
    # Top-k says something only when k is smaller than the class count (else it is always 100%).
    top_k = f"  top-{report.top_k}: {report.top5_accuracy:.2%}" if report.top_k < len(report.classes) else ""
    console.print(f"videos: {report.num_videos}  clip accuracy: {report.clip_accuracy:.2%}  "
                  f"video accuracy: {report.video_accuracy:.2%}{top_k}  "
                  f"mean class accuracy: {report.mean_class_accuracy:.2%}  "
                  f"({report.clips_per_video} clip(s) x {report.crops} crop(s) per video)", soft_wrap=True)
    if report.data_wait_share is not None:
        console.print(f"{report.clips_per_s:.1f} clips/s, {report.data_wait_share:.0%} of the time waiting for "
                      f"decoded videos ({workers} worker(s)); {report.engine}", highlight=False, soft_wrap=True)
    if report.excluded:
        console.print(f"[yellow]excluded {len(report.excluded)} video(s) that failed to decode:[/]")
        for item in report.excluded:
            console.print(f"  {item['path']}: {item['reason']}", highlight=False, soft_wrap=True)
    if out is not None:
        console.print(f"report written to {out}")


_PER_CLASS_ROWS = 40  # a longer per-class table shows the worst and the best classes


def _print_per_class(report) -> None:
    from rich.table import Table

    rows = sorted(report.per_class.items(), key=lambda item: (item[1]["accuracy"] is None, item[1]["accuracy"] or 0))
    if len(rows) > _PER_CLASS_ROWS:
        half = _PER_CLASS_ROWS // 2
        rows = [*rows[:half], ("...", {"videos": "", "accuracy": None}), *rows[-half:]]
    table = Table("class", "videos", "accuracy", title="per class (worst first)")
    for name, row in rows:
        accuracy = "" if row["accuracy"] is None else f"{row['accuracy']:.1%}"
        table.add_row(name, str(row["videos"]), accuracy)
    console.print(table)


@user_errors
def predict(
    model_file: str = typer.Argument(..., help=MODEL_FILE_HELP[:-1] + ", or an ONNX file from `vidzoo export`."),
    videos: List[Path] = typer.Argument(..., help="Video files."),
    top_k: int = typer.Option(5, help="Labels to show per video."),
    clips_per_video: Optional[int] = typer.Option(None, min=1, help=CLIPS_HELP),
    window: Optional[float] = typer.Option(None, help="Predict per window of this many seconds (long videos)."),
    stride: Optional[float] = typer.Option(None, help="Seconds between window starts (default: --window)."),
    skip_bad: bool = typer.Option(False, help="A video that fails to decode is listed and does not fail the command."),
    decoder: str = typer.Option("auto", help=DECODER_HELP),
    device: str = typer.Option("cpu", help="torch device."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Clips per forward pass (default: the engine's "
                                             "choice, 8 when forced)."),
    engine: str = typer.Option("auto", rich_help_panel=INFERENCE, help=ENGINE_HELP),
    precision: str = typer.Option("auto", rich_help_panel=INFERENCE, help=PRECISION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    plot: Optional[Path] = typer.Option(None, help="With --window: write each video's timeline, "
                                        "PLOT/<video name>.timeline.png (probabilities of the top classes "
                                        "over time, top-1 segments shaded)."),
) -> None:
    """Top-k labels per video, or per time window with --window/--stride: then also the segments
    where the top-1 label stays the same, and with --plot a timeline PNG per video. Every video
    gets its answer or its error; the exit code is 1 when a video failed (0 with --skip-bad). The
    model runs as --engine/--precision say (auto: measured, said in one line on stderr)."""
    from vidzoo.data.video import VideoDecodeError
    from vidzoo.engine import inference_engine, load_inference_model
    from vidzoo.predict import merge_segments, predict_video, predict_windows, video_views

    check_decoder_option(decoder)
    if plot is not None and window is None:
        raise ValueError("--plot draws the timeline of --window predictions: give --window too")
    results = []
    model = load_inference_model(model_file, device=device)

    def calibration():
        """The first video that decodes gives the calibration clips (only decoded if the engine
        must measure: not when its choice is cached)."""
        for video in videos:
            try:
                return video_views(model, video, clips_per_video, decoder=decoder)[0]
            except VideoDecodeError:
                continue
        return None

    per_video = 1 if window is not None else (clips_per_video or model.clip_spec.clips_per_video) * model.clip_spec.crops
    plotted: set[str] = set()
    with inference_engine(model, engine=engine, precision=precision, device=device, batch_size=batch_size,
                          calibration=calibration, job_clips=len(videos) * per_video) as run:
        err_console.print(run.summary, highlight=False, soft_wrap=True)
        for video in videos:
            try:
                if window is not None:
                    # Every class's probability per window (the plot draws the top classes over
                    # time); the answer lists the top_k of each.
                    windows = predict_windows(run, video, window=window, stride=stride or window,
                                              top_k=run.num_classes, batch_size=run.batch_size,
                                              decoder=decoder)
                    segments = [s.to_dict() for s in merge_segments(windows)]
                    full = [w.to_dict() for w in windows]
                    results.append({"path": str(video), "windows": [w | {"top": w["top"][:top_k]} for w in full],
                                    "segments": segments})
                    if plot is not None:
                        results[-1]["plot"] = str(_plot_timeline(full, segments, plot, Path(video), plotted))
                else:
                    results.append(predict_video(run, video, top_k=top_k, clips_per_video=clips_per_video,
                                                 decoder=decoder).to_dict())
            except VideoDecodeError as e:
                results.append({"path": str(video), "error": type(e).__name__, "reason": e.reason})
            if not as_json:
                _print_prediction(results[-1])
    if as_json:
        print_json(results)
    failed = [r for r in results if "error" in r]
    if failed and not skip_bad:
        raise typer.Exit(code=1)


def _plot_timeline(windows: list[dict], segments: list[dict], folder: Path, video: Path, taken: set[str]) -> Path:
    from vidzoo.plots import plot_timeline

    name = video.stem
    while name in taken:  # two videos of the same name from different folders
        name += "_"
    taken.add(name)
    folder.mkdir(parents=True, exist_ok=True)
    return plot_timeline(windows, segments, folder / f"{name}.timeline.png", title=video.name)


def _print_prediction(result: dict) -> None:
    console.print(f"[bold]{result['path']}[/]", highlight=False, soft_wrap=True)
    if "error" in result:
        err_console.print(f"  [red]{result['error']}:[/] {result['reason']}", highlight=False, soft_wrap=True)
    elif "windows" in result:
        for w in result["windows"]:
            top = ", ".join(f"{t['class']} {t['probability']:.2f}" for t in w["top"])
            console.print(f"  {w['start_s']:8.2f}-{w['end_s']:8.2f} s  {top}", highlight=False, soft_wrap=True)
        console.print("  segments (same top-1):", highlight=False)
        for s in result["segments"]:
            console.print(f"  {s['start_s']:8.2f}-{s['end_s']:8.2f} s  {s['label']} ({s['probability']:.2f}, "
                          f"{s['windows']} window(s))", highlight=False, soft_wrap=True)
        if "plot" in result:
            console.print(f"  timeline: {result['plot']}", highlight=False, soft_wrap=True)
    else:
        for t in result["top"]:
            console.print(f"  {t['probability']:.3f}  {t['class']}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command(name="eval")(eval_command)
    app.command(name="predict")(predict)

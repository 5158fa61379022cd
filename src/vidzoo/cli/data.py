"""Data commands: ``make-dataset``, ``inspect``, ``check``, ``prepare``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from vidzoo.cli._common import DECODER_HELP, check_decoder_option, console, print_json, user_errors, wide_console

make_dataset_app = typer.Typer(help="Write a built-in dataset to disk.", no_args_is_help=True)


@make_dataset_app.command("synthetic")
@user_errors
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

    summary = make_synthetic_dataset(out, videos_per_class=videos_per_class, frames=frames, size=size,
                                     fps=fps, seed=seed, overwrite=overwrite)
    console.print(summary.summary_table(), highlight=False)


@user_errors
def inspect_command(
    videos: List[Path] = typer.Argument(..., help="Video files."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    decoder: str = typer.Option("auto", help=DECODER_HELP),
) -> None:
    """What the decoder sees in each video: exact frame count, fps, size, rotation, codec."""
    from dataclasses import asdict

    from vidzoo.data.video import VideoDecodeError, read_video_info

    check_decoder_option(decoder)
    rows, failed = [], 0
    for path in videos:
        try:
            rows.append(asdict(read_video_info(path, decoder=decoder)))
        except VideoDecodeError as e:
            failed += 1
            rows.append({"path": str(path), "error": type(e).__name__, "reason": e.reason})
    if as_json:
        print_json(rows)
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


_CHECK_ROWS_SHOWN = 20


@user_errors
def check(
    data: Path = typer.Argument(..., help="A folder of videos (class folders or not) or a CSV/TSV annotation."),
    frames: int = typer.Option(16, "--frames", help="Videos with fewer frames than a clip are reported too_short."),
    workers: int = typer.Option(2, help="Worker processes (0: decode in this process, no timeout)."),
    decoder: str = typer.Option("auto", help=DECODER_HELP),
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

    result = check_dataset(data, frames=frames, workers=workers, random_frames=random_frames, seed=seed,
                           timeout=timeout, progress=not as_json, decoder=decoder)
    result.write_csv(report)
    if as_json:
        print_json(result.to_dict())
    else:
        # Unusable videos first; a long list is cut (the report has every row).
        noted = sorted((r for r in result.results if r.status != "ok" or r.flags), key=lambda r: r.usable)
        table = Table("status", "flags / reason")
        table.add_column("video", overflow="fold")
        for r in noted[:_CHECK_ROWS_SHOWN]:
            detail = ", ".join(r.flags + ([f"{r.error}: {r.reason}" if r.error else r.reason] if r.reason else []))
            table.add_row(r.status, detail, r.path)
        if table.row_count:
            wide_console().print(table)
        if len(noted) > _CHECK_ROWS_SHOWN:
            console.print(f"... and {len(noted) - _CHECK_ROWS_SHOWN} more in {report}", highlight=False)
        summary = Table("summary", "count")
        for key, value in result.summary().items():
            summary.add_row(key, str(value))
        console.print(summary)
        console.print(f"report: {report}", highlight=False)
    if result.unusable:
        raise typer.Exit(code=1)


@user_errors
def prepare(
    src: Path = typer.Argument(..., help="A folder of class folders or a CSV/TSV annotation (path,label), "
                                         "as train reads."),
    dst: Path = typer.Argument(..., help="Folder to write: the videos at their relative paths (x.avi as x.avi.mp4), "
                                         "the manifest, NAME.classes.txt, NAME.report.csv. Run again to resume."),
    short_side: int = typer.Option(256, help="Scale the shorter side down to this many pixels (never up)."),
    keyframe_interval: int = typer.Option(16, help="A keyframe every this many frames: a random clip decodes at most "
                                                   "this many extra frames."),
    max_fps: Optional[float] = typer.Option(None, help="Drop frames evenly down to this frame rate "
                                                       "(default: keep all)."),
    crf: int = typer.Option(23, help="x264 quality: 0 lossless, 23 its default, 51 worst."),
    preset: str = typer.Option("veryfast", help="x264 speed/size trade-off: ultrafast ... medium ... veryslow."),
    classes: Optional[Path] = typer.Option(None, help="Class-list file (one name per line) fixing the label order."),
    data_root: Optional[Path] = typer.Option(None, help="Where the CSV's relative paths start (default: its folder)."),
    manifest: Optional[str] = typer.Option(None, help="Manifest file name NAME.csv in DST (default: SRC's file "
                                                      "name, or labels.csv for a folder)."),
    workers: int = typer.Option(2, help="Worker processes, one video each (0: in this process, no timeout)."),
    timeout: float = typer.Option(3600.0, help="Seconds one video may take before it is reported failed."),
    decoder: str = typer.Option("auto", help=DECODER_HELP + " Reads the sources and verifies the outputs."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary and every video as JSON."),
) -> None:
    """Re-encode a dataset once for training: H.264 at a small short side with a keyframe every
    N frames (cheap random clips), rotation applied, audio dropped; each output verified by
    decoding it. Resumable; unreadable videos are reported, not fatal (exit code 1 when any
    failed)."""
    from vidzoo.prepare import PrepareSettings, prepare_dataset

    check_decoder_option(decoder)
    settings = PrepareSettings(short_side=short_side, keyframe_interval=keyframe_interval, max_fps=max_fps, crf=crf,
                               preset=preset)
    report = prepare_dataset(src, dst, settings, classes=classes, data_root=data_root, manifest=manifest,
                             workers=workers, timeout=timeout, progress=not as_json, decoder=decoder)
    if as_json:
        print_json(report.to_dict())
    else:
        failed = report.failed
        if failed:
            table = Table("error", "reason")
            table.add_column("video", overflow="fold")
            for v in failed[:_CHECK_ROWS_SHOWN]:
                table.add_row(v.error, v.reason, v.source)
            wide_console().print(table)
            if len(failed) > _CHECK_ROWS_SHOWN:
                console.print(f"... and {len(failed) - _CHECK_ROWS_SHOWN} more in {report.report}",
                              highlight=False)
        summary = Table("summary", "count")
        for key, value in report.summary().items():
            summary.add_row(key, str(value))
        console.print(summary)
        console.print(f"manifest: {report.manifest}\nclasses: {report.classes}\nreport: {report.report}",
                      highlight=False)
    if report.failed:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.add_typer(make_dataset_app, name="make-dataset")
    app.command(name="inspect")(inspect_command)
    app.command(name="check")(check)
    app.command(name="prepare")(prepare)

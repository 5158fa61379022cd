"""Taking a model out of vidzoo: ``export``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vidzoo.cli._common import console, print_json, user_errors


@user_errors
def export(
    model_file: Path = typer.Argument(..., help="A vidzoo model file."),
    format: str = typer.Option("onnx", "--format", help="onnx (runs on ONNX Runtime and anything that reads ONNX) or "
                               "torch-export (a .pt2 program for PyTorch's own runtimes)."),
    out: Optional[Path] = typer.Option(None, help="The file to write (default: MODEL_FILE's name with .onnx or .pt2)."),
    dynamic_batch: bool = typer.Option(False, help="Accept any batch size (default: exactly --batch-size clips)."),
    batch_size: int = typer.Option(1, min=1, help="The fixed batch size, without --dynamic-batch."),
    verify_with: Optional[List[Path]] = typer.Option(None, help="Real videos to verify on (repeatable; default: a "
                                                     "synthetic video)."),
    as_json: bool = typer.Option(False, "--json", help="Print the export report as JSON."),
) -> None:
    """Export a model to ONNX or torch.export, with its classes and clip description inside, and
    prove it: the file is written only if it gives the model's logits on real and random clips
    (max abs difference within 1e-4 + 1e-4 x max|logit|)."""
    from vidzoo.export import SUFFIXES, export_model
    from vidzoo.models.factory import load_model

    if format not in SUFFIXES:
        raise ValueError(f"--format must be one of {', '.join(SUFFIXES)}, got {format!r}")
    model = load_model(model_file)
    out = out or model_file.with_suffix(SUFFIXES[format])
    report = export_model(model, out, format=format, dynamic_batch=dynamic_batch, batch_size=batch_size,
                          verify_videos=verify_with or ())
    if as_json:
        print_json(report.to_dict())
        return
    batch = "any batch size" if report.dynamic_batch else f"batch size {report.batch_size}"
    console.print(f"wrote [bold]{report.path}[/] ({format}, {batch}) in {report.seconds:.1f} s", highlight=False)
    for check in report.checks:
        console.print(f"  verified on {check.inputs}: max |logit difference| {check.max_abs_diff:.2e} "
                      f"(allowed {check.allowed:.2e}), top-1 agrees on {check.top1_agreement:.0%}",
                      highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command(name="export")(export)

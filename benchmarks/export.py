"""Every registered model exported to ONNX (and torch.export), verified, in one run.

For each architecture (random weights; by default at its registry test size, the small clip and
width its unit tests use, since the exported graph is the same; `--full-size` at its default clip), `vidzoo.export.export_model` exports and verifies on clips decoded
from a real shared video and on random clips: the table gives the max |logit difference| against
the eager PyTorch model, the allowed difference, the export time, or the refusal and its reason.

    .venv/bin/python benchmarks/export.py                  # all models, ONNX and torch.export
    .venv/bin/python benchmarks/export.py --models c3d_bn --formats onnx
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from vidzoo.export import FORMATS, ExportError, export_model
from vidzoo.models import list_models
from vidzoo.models._registry import get_model_entry
from vidzoo.models.factory import create_model

REPO = Path(__file__).resolve().parent.parent
VIDEO = REPO.parent / "shared" / "data" / "videos" / "mmaction2-samples" / "demo" / "demo.mp4"
SKIP: dict[str, str] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--formats", nargs="*", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--full-size", action="store_true", help="the default clip (minutes per model on a CPU)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    torch.manual_seed(0)
    # Rows already in OUT/export.json are kept, so an interrupted run continues where it stopped.
    previous = args.out / "export.json"
    rows = json.loads(previous.read_text())["rows"] if previous.is_file() else []
    done = {(r["model"], r["format"]) for r in rows}
    for name in args.models or list_models():
        if all((name, fmt) in done for fmt in args.formats):
            continue
        if name in SKIP:
            rows.append({"model": name, "format": "-", "status": "skipped", "reason": SKIP[name]})
            continue
        kwargs = {} if args.full_size else get_model_entry(name).test_args
        model = create_model(name, num_classes=10, **kwargs).eval()
        spec = model.clip_spec
        for fmt in args.formats:
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    report = export_model(model, Path(tmp) / f"m.{fmt}", format=fmt, dynamic_batch=True,
                                          verify_videos=[VIDEO] if VIDEO.is_file() else ())
                    rows.append({"model": name, "format": fmt, "status": "verified",
                                 "input": f"{spec.frames}x{spec.height}x{spec.width}",
                                 "max_abs_diff": report.max_abs_diff,
                                 "allowed": min(c.allowed for c in report.checks),
                                 "top1_agreement": min(c.top1_agreement for c in report.checks),
                                 "seconds": round(report.seconds, 1)})
                except ExportError as e:
                    rows.append({"model": name, "format": fmt, "status": "refused", "reason": str(e),
                                 "seconds": round(time.perf_counter() - started, 1)})
            print(json.dumps(rows[-1]), flush=True)
            write(args.out, rows)
    write(args.out, rows)


def write(out: Path, rows: list[dict]) -> None:
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "export.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# Export verification ({meta['date']}, torch {meta['torch']}, {meta['threads']} threads)", "",
             "| model | format | input | result | max abs diff | allowed | top-1 agreement | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["status"] == "verified":
            lines.append(f"| {r['model']} | {r['format']} | {r['input']} | verified | {r['max_abs_diff']:.2e} | "
                         f"{r['allowed']:.2e} | {r['top1_agreement']:.0%} | {r['seconds']} |")
        else:
            lines.append(f"| {r['model']} | {r['format']} | | {r['status']}: {r['reason']} | | | | {r.get('seconds', '')} |")
    (out / "export.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

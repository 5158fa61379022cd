"""Frame averaging against temporal models on the synthetic motion dataset, equal budgets.

Every model is trained from scratch with vidzoo's own `train` on the same videos, with the same
clips (8 frames every 2nd frame, 32-pixel crops, no flips), optimizer, schedule, batch size and
number of epochs, then evaluated on the test split (2 clips per video). The classes differ only
in motion, so a model that averages single frames should sit near chance (12.5%) while models
that see time should not. Results: results/zoo_synthetic.md and .json.

    .venv/bin/python benchmarks/zoo_synthetic.py                 # all models, ~15-20 min on 2 cores
    .venv/bin/python benchmarks/zoo_synthetic.py --models c3d_bn lrcn --epochs 5
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from vidzoo.data.sources import load_source
from vidzoo.data.synthetic import make_synthetic_dataset
from vidzoo.evaluate import evaluate
from vidzoo.models import load_model, model_parameter_count
from vidzoo.train import TrainConfig, train

# (label, registered model, constructor arguments). Light variants where the default is too big
# for a CPU run; the label says which.
MODELS: list[tuple[str, str, dict]] = [
    ("C2D (ResNet-18, frame averaging)", "c2d_timm", {"backbone": "resnet18"}),
    ("C3D-BN (width 0.25)", "c3d_bn", {"width": 0.25, "dropout": 0.0}),
    ("I3D (Inception-v1)", "i3d", {}),
    ("LRCN (small conv stack + LSTM 256)", "lrcn", {}),
    ("R(2+1)D-18", "r2plus1d_18", {}),
]
RECIPE = dict(frames=8, frame_stride=2, size=32, flip=False, batch_size=16, lr=5e-4, schedule="cosine", val_clips=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="registered names to run (default: all in MODELS)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--videos-per-class", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    chosen = [m for m in MODELS if not args.models or m[1] in args.models]
    work = Path(tempfile.mkdtemp(prefix="vidzoo-zoo-"))
    data = work / "dataset"
    make_synthetic_dataset(data, videos_per_class=args.videos_per_class, seed=args.seed)
    test_source = load_source(data / "test.csv")
    rows = []
    for label, name, kwargs in chosen:
        print(f"== {label}: {name} {kwargs}", flush=True)
        config = TrainConfig(
            model=name, model_args=kwargs, data=str(data / "train.csv"), val=str(data / "val.csv"),
            epochs=args.epochs, workers=args.workers, seed=args.seed, out=str(work / name), progress=False,
            history="synthetic", **RECIPE,
        )
        started = time.perf_counter()
        result = train(config)
        train_seconds = time.perf_counter() - started
        report = evaluate(load_model(result.model_file), test_source, clips_per_video=2, batch_size=32,
                          workers=args.workers, progress=False)
        rows.append({
            "label": label, "model": name, "kwargs": kwargs,
            "params": model_parameter_count(name, num_classes=8, frames=8, size=32, **kwargs),
            "best_val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch,
            "test_video_accuracy": report.video_accuracy, "test_clip_accuracy": report.clip_accuracy,
            "train_seconds": round(train_seconds, 1),
        })
        print(json.dumps(rows[-1]), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"recipe": RECIPE, "epochs": args.epochs, "videos_per_class": args.videos_per_class,
            "seed": args.seed, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
    (args.out / "zoo_synthetic.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"Synthetic motion dataset, {args.videos_per_class} videos per class (60/20/20 split), 8 classes "
        f"(chance 12.5%); every model trained from scratch for {args.epochs} epochs: 8 frames at stride 2, "
        "32 px, Adam 5e-4 with a cosine schedule, batch 16; test accuracy with 2 clips per video.",
        "",
        "| model | params | best val acc | test video acc | test clip acc | train time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['label']} | {r['params']:,} | {r['best_val_accuracy']:.1%} | "
                     f"{r['test_video_accuracy']:.1%} | {r['test_clip_accuracy']:.1%} | {r['train_seconds']:.0f} s |")
    (args.out / "zoo_synthetic.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

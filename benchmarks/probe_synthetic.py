"""A probe sweep on the synthetic motion dataset: frozen per-clip features, a grid of probes.

No internet weights: a small C3D-BN is pretrained on four of the eight motions (left, right,
clockwise, counter-clockwise), then frozen; its pre-logits features of the other four (up, down,
grow, shrink; chance 25%) are extracted once per clip (`vidzoo extract --per clip`), and `vidzoo
probe` sweeps logistic regression and a linear SVM over C and the attentive probe over learning
rate x weight decay on them, picks the best cell by validation accuracy and scores it on the test
videos. Writes OUT/grid.json, OUT/grid.png, OUT/report.json (the chosen probe) and
OUT/probe_synthetic.json (the setting and the timings).

    .venv/bin/python benchmarks/probe_synthetic.py                                 # a few minutes on 2 cores
    .venv/bin/python benchmarks/probe_synthetic.py --splits 120 30 50 --pretrain-epochs 15   # the larger run
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from vidzoo.data.sources import load_source
from vidzoo.data.synthetic import make_synthetic_dataset
from vidzoo.features import extract_features
from vidzoo.probe_sweep import probe_sweep, write_sweep
from vidzoo.train import TrainConfig, train

SOURCE_CLASSES = ("move_left", "move_right", "rotate_cw", "rotate_ccw")
TARGET_CLASSES = ("move_up", "move_down", "grow", "shrink")
MODEL = "c3d_bn"
MODEL_ARGS = {"width": 0.25, "dropout": 0.0}
RECIPE = dict(frames=8, frame_stride=2, size=32, flip=False, batch_size=8, schedule="cosine", val_clips=1, lr=5e-4)
GRID = dict(classifiers=("logreg", "linear_svm", "attentive"), cs=(0.01, 0.1, 1.0, 10.0), lrs=(3e-4, 1e-3, 3e-3),
            weight_decays=(0.01, 0.1))


def _of(path: Path, classes: tuple[str, ...], out: Path) -> Path:
    with path.open(newline="") as f:
        rows = [row for row in csv.reader(f) if row[1] in classes]
    with out.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=int, nargs=3, default=[36, 12, 12], metavar=("TRAIN", "VAL", "TEST"),
                        help="videos per class in each split")
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--clips", type=int, default=4, help="clips per video: the rows the attentive probe attends over")
    parser.add_argument("--epochs", type=int, default=50, help="epochs of the attentive probes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/probe_synthetic"))
    args = parser.parse_args()

    started_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="vidzoo-probe-"))
    data = work / "dataset"
    make_synthetic_dataset(data, videos_per_class=sum(args.splits), splits=args.splits, seed=args.seed)

    print("== pretraining on", ", ".join(SOURCE_CLASSES), flush=True)
    started = time.perf_counter()
    pre = train(TrainConfig(
        model=MODEL, model_args=MODEL_ARGS, data=str(_of(data / "train.csv", SOURCE_CLASSES, data / "source_train.csv")),
        val=str(_of(data / "val.csv", SOURCE_CLASSES, data / "source_val.csv")), epochs=args.pretrain_epochs,
        workers=args.workers, seed=args.seed, out=str(work / "pretrain"), progress=False, history="synthetic4",
        **RECIPE,
    ))
    pretrain = {"best_val_accuracy": pre.best_val_accuracy, "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(pretrain), flush=True)

    print(f"== extracting {args.clips} clips per video of", ", ".join(TARGET_CLASSES), flush=True)
    started = time.perf_counter()
    features = {
        split: extract_features(pre.model_file, load_source(_of(data / f"{split}.csv", TARGET_CLASSES,
                                                                data / f"target_{split}.csv")),
                                per="clip", clips_per_video=args.clips, workers=args.workers, progress=False)
        for split in ("train", "val", "test")
    }
    extract_seconds = round(time.perf_counter() - started, 1)

    print("== sweeping", flush=True)
    started = time.perf_counter()
    result = probe_sweep(features["train"], val=features["val"], test=features["test"], epochs=args.epochs,
                         seed=args.seed, **GRID)
    sweep_seconds = round(time.perf_counter() - started, 1)
    write_sweep(result, args.out)
    for cell in result.cells:
        settings = ", ".join(f"{k} {v:g}" for k, v in cell.settings.items())
        print(f"{cell.classifier:<10} {settings:<30} val {cell.val_accuracy:6.1%}  train {cell.train_accuracy:6.1%}")
    chosen = result.cells[result.best]
    print(f"chosen: {chosen.classifier} {chosen.settings}: val {chosen.val_accuracy:.1%}, "
          f"test {result.report.test['video_accuracy']:.1%} on {result.report.test['num_videos']} videos", flush=True)

    meta = {
        "model": MODEL, "model_args": MODEL_ARGS, "recipe": RECIPE, "splits_per_class": args.splits,
        "source_classes": SOURCE_CLASSES, "target_classes": TARGET_CLASSES, "clips_per_video": args.clips,
        "feature_rows": {split: len(f.features) for split, f in features.items()}, "dim": features["train"].dim,
        "grid": GRID, "attentive_epochs": args.epochs, "pretrain": pretrain, "extract_seconds": extract_seconds,
        "sweep_seconds": sweep_seconds, "seed": args.seed, "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"), "total_seconds": round(time.perf_counter() - started_all, 1),
        "chosen": {"classifier": chosen.classifier, "settings": chosen.settings, "val_accuracy": chosen.val_accuracy,
                   "test": result.report.test},
    }
    (args.out / "probe_synthetic.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

"""Transfer learning on the synthetic motion dataset: does pretraining help with few videos?

No internet weights: we pretrain a small C3D-BN on four of the eight motions (left, right,
clockwise, counter-clockwise, with plenty of videos), then adapt it to the other four (up, down,
grow, shrink) from only K training videos per class, four ways, with the same clips and budget:

- scratch: the same architecture, randomly initialised, trained on the K videos per class;
- linear probe: the pretrained network frozen as a feature extractor (pre-logits features, 4 clips
  averaged per video), a scikit-learn logistic regression on top (`vidzoo probe`);
- head only: `vidzoo train --pretrained MODEL --freeze backbone` (only the new fc8 trains);
- fine-tune all: `vidzoo train --pretrained MODEL --backbone-lr-mult 0.1`.

The trained routes get the same epochs, clips and batch size; each picks its learning rate from
LEARNING_RATES by validation accuracy (a linear head needs a larger one than a whole network), and
the probe picks its regularisation C from PROBE_C the same way. Every route is then scored on the
same 50 test videos per target class (4 clips per video); each (K, draw) pair uses a different
random choice of the K training videos, and the table reports the mean and spread over the draws.
Results: results/transfer_synthetic.md and .json.

    .venv/bin/python benchmarks/transfer_synthetic.py                    # ~40 min on 2 cores
    .venv/bin/python benchmarks/transfer_synthetic.py --shots 4 --draws 1 --epochs 10   # smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vidzoo.data.sources import load_source
from vidzoo.data.synthetic import make_synthetic_dataset
from vidzoo.evaluate import evaluate
from vidzoo.features import extract_features
from vidzoo.linear_probe import linear_probe
from vidzoo.models import load_model
from vidzoo.train import TrainConfig, train

SOURCE_CLASSES = ("move_left", "move_right", "rotate_cw", "rotate_ccw")
TARGET_CLASSES = ("move_up", "move_down", "grow", "shrink")
# Per class: 120 train, 30 val, 50 test videos.
SPLITS = (120, 30, 50)
MODEL = "c3d_bn"
MODEL_ARGS = {"width": 0.25, "dropout": 0.0}
RECIPE = dict(frames=8, frame_stride=2, size=32, flip=False, batch_size=8, schedule="cosine", val_clips=1)
PRETRAIN_LR = 5e-4
LEARNING_RATES = (5e-4, 5e-3)
PROBE_C = (0.1, 1.0, 10.0)
TEST_CLIPS = 4
# (label, TrainConfig overrides) of the routes that train with `vidzoo train`.
TRAINED_ROUTES: list[tuple[str, dict]] = [
    ("scratch", {}),
    ("head only", {"pretrained": True, "freeze": "backbone"}),
    ("fine-tune all", {"pretrained": True, "backbone_lr_mult": 0.1}),
]
PROBE = "linear probe"
ROUTES = [label for label, _ in TRAINED_ROUTES[:1]] + [PROBE] + [label for label, _ in TRAINED_ROUTES[1:]]


def _rows(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="") as f:
        return [(row[0], row[1]) for row in csv.reader(f)]


def _write(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def _of(rows: list[tuple[str, str]], classes: tuple[str, ...]) -> list[tuple[str, str]]:
    return [row for row in rows if row[1] in classes]


def _few_shot(rows: list[tuple[str, str]], shots: int, seed: int) -> list[tuple[str, str]]:
    """`shots` random videos of each class (the draw is fixed by `seed`)."""
    rng = random.Random(seed)
    chosen = []
    for cls in TARGET_CLASSES:
        chosen += rng.sample([row for row in rows if row[1] == cls], shots)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, nargs="*", default=[4, 16], help="training videos per target class")
    parser.add_argument("--draws", type=int, default=3, help="random draws of the training videos per shot count")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of every target-task run")
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    started_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="vidzoo-transfer-"))
    data = work / "dataset"
    make_synthetic_dataset(data, videos_per_class=sum(SPLITS), splits=SPLITS, seed=args.seed)
    train_rows, val_rows, test_rows = (_rows(data / f"{split}.csv") for split in ("train", "val", "test"))
    target_val = _write(data / "target_val.csv", _of(val_rows, TARGET_CLASSES))
    target_test = _write(data / "target_test.csv", _of(test_rows, TARGET_CLASSES))
    test_source = load_source(target_test)

    def run(name: str, train_csv: Path, val_csv: Path, epochs: int, **overrides) -> dict:
        config = TrainConfig(
            model=MODEL, model_args=MODEL_ARGS, data=str(train_csv), val=str(val_csv), epochs=epochs,
            workers=args.workers, seed=args.seed, out=str(work / name), progress=False, history="synthetic",
            **RECIPE, **overrides,
        )
        started = time.perf_counter()
        result = train(config)
        seconds = time.perf_counter() - started
        report = evaluate(load_model(result.model_file), test_source, clips_per_video=TEST_CLIPS, batch_size=32,
                          workers=args.workers, progress=False)
        return {"test_video_accuracy": report.video_accuracy, "best_val_accuracy": result.best_val_accuracy,
                "train_seconds": round(seconds, 1)}

    # 1. Pretraining on the source motions.
    print("== pretraining on", ", ".join(SOURCE_CLASSES), flush=True)
    source_train = _write(data / "source_train.csv", _of(train_rows, SOURCE_CLASSES))
    source_val = _write(data / "source_val.csv", _of(val_rows, SOURCE_CLASSES))
    started = time.perf_counter()
    pre = train(TrainConfig(
        model=MODEL, model_args=MODEL_ARGS, data=str(source_train), val=str(source_val),
        epochs=args.pretrain_epochs, workers=args.workers, seed=args.seed, out=str(work / "pretrain"),
        progress=False, history="synthetic4", lr=PRETRAIN_LR, **RECIPE,
    ))
    pretrain = {"best_val_accuracy": pre.best_val_accuracy, "seconds": round(time.perf_counter() - started, 1),
                "train_videos": SPLITS[0] * len(SOURCE_CLASSES)}
    print(json.dumps(pretrain), flush=True)
    pretrained_file = pre.model_file

    # The linear probe's val and test features depend only on the pretrained model: extract them once.
    val_features, test_features = (
        extract_features(pretrained_file, load_source(csv_path), per="video", clips_per_video=TEST_CLIPS,
                         workers=args.workers, progress=False)
        for csv_path in (target_val, target_test)
    )

    # 2. Adapting to the target motions from few videos.
    results = []
    for shots in args.shots:
        for draw in range(args.draws):
            few = _write(data / f"target_train_{shots}_{draw}.csv",
                         _few_shot(_of(train_rows, TARGET_CLASSES), shots, seed=1000 * shots + draw))
            for label, overrides in TRAINED_ROUTES:
                overrides = {**overrides}
                if overrides.pop("pretrained", False):
                    overrides["pretrained"] = pretrained_file
                tried = []
                for lr in LEARNING_RATES:
                    print(f"== {label}, {shots} videos per class, draw {draw}, lr {lr}", flush=True)
                    row = run(f"{label.replace(' ', '_')}_{shots}_{draw}_{lr}", few, target_val, args.epochs,
                              lr=lr, **overrides)
                    tried.append({"lr": lr, **row})
                    print(json.dumps(tried[-1]), flush=True)
                best = max(tried, key=lambda r: r["best_val_accuracy"])  # the first of equals
                results.append({"route": label, "shots": shots, "draw": draw, **best, "tried": tried})
            print(f"== {PROBE}, {shots} videos per class, draw {draw}", flush=True)
            started = time.perf_counter()
            train_features = extract_features(pretrained_file, load_source(few), per="video", clips_per_video=TEST_CLIPS,
                                              workers=args.workers, progress=False)
            tried = []
            for c in PROBE_C:
                _, on_val = linear_probe(train_features, val=val_features, classifier="logreg", c=c, seed=args.seed)
                _, on_test = linear_probe(train_features, val=test_features, classifier="logreg", c=c, seed=args.seed)
                tried.append({"c": c, "best_val_accuracy": on_val.video_accuracy,
                              "test_video_accuracy": on_test.video_accuracy})
            best = max(tried, key=lambda r: r["best_val_accuracy"])
            results.append({"route": PROBE, "shots": shots, "draw": draw, **best, "tried": tried,
                            "train_seconds": round(time.perf_counter() - started, 1)})
            print(json.dumps(results[-1]), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": MODEL, "model_args": MODEL_ARGS, "recipe": RECIPE, "epochs": args.epochs,
        "pretrain_epochs": args.pretrain_epochs, "pretrain_lr": PRETRAIN_LR,
        "learning_rates": LEARNING_RATES, "probe_c": PROBE_C, "splits_per_class": SPLITS, "source_classes": SOURCE_CLASSES,
        "target_classes": TARGET_CLASSES, "test_clips": TEST_CLIPS, "seed": args.seed, "pretrain": pretrain,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
        "total_seconds": round(time.perf_counter() - started_all, 1),
    }
    (args.out / "transfer_synthetic.json").write_text(json.dumps({"meta": meta, "rows": results}, indent=2))
    lines = [
        f"Pretrained: {MODEL} (width 0.25) on {', '.join(SOURCE_CLASSES)} ({SPLITS[0]} videos each, "
        f"{args.pretrain_epochs} epochs; best val {pre.best_val_accuracy:.1%}). Target task: "
        f"{', '.join(TARGET_CLASSES)} (chance 25%), K training videos per class, {SPLITS[1]} val and "
        f"{SPLITS[2]} test videos per class; {args.epochs} epochs for every trained route (8 frames at "
        f"stride 2, 32 px, Adam with a cosine schedule, batch {RECIPE['batch_size']}, best val epoch kept; "
        f"learning rate chosen from {list(LEARNING_RATES)} and the probe's C from {list(PROBE_C)} by val "
        f"accuracy); test accuracy per video ({TEST_CLIPS} clips). Mean over {args.draws} draws of the "
        "training videos (min-max in brackets).",
        "",
        "| K videos per class | " + " | ".join(ROUTES) + " |",
        "|---|" + "---:|" * len(ROUTES),
    ]
    for shots in args.shots:
        cells = []
        for route in ROUTES:
            accs = [r["test_video_accuracy"] for r in results if r["route"] == route and r["shots"] == shots]
            cells.append(f"{statistics.mean(accs):.1%} ({min(accs):.0%}-{max(accs):.0%})")
        lines.append(f"| {shots} | " + " | ".join(cells) + " |")
    (args.out / "transfer_synthetic.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

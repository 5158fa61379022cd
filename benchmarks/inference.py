"""Inference speed of each engine variant, what `--engine auto` picks, and end-to-end eval.

For C3D, R3D-18, R(2+1)D-18, I3D, S3D and a C2D (ResNet-50) at 16x112x112 (random weights: speed
does not depend on them), at batch 1 and batch 8, all in one run:

* clips/s of eager fp32 (the reference), eager fp32 channels-last, eager bf16 channels-last
  (where the CPU has native bf16), torch.compile (freezing, the best eager precision; with
  ``--compile``), and ONNX Runtime fp32, each with its top-1 agreement and max probability
  difference against the reference on the same clips;
* what ``build_engine(engine="auto")`` picks (fresh cache, a long job), and the ratio of its
  clips/s to the best variant's (goal >= 0.95), both timed in alternating passes over the same
  clips (the best variant on a copy of the model), so that a change of machine load between two
  measurements does not show up as a ratio;
* ``evaluate`` end to end on real shared videos (decode in workers included, auto engine)
  against the model-only rate of the chosen variant, with the share of time spent waiting for data.

Writes ``inference.json`` and ``inference.md`` to ``--out``.

    .venv/bin/python benchmarks/inference.py                 # the published table
    .venv/bin/python benchmarks/inference.py --quick         # C3D only, batch 8, few clips
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from vidzoo import engine as engines
from vidzoo.data.sources import VideoSample, VideoSource
from vidzoo.engine import Variant, build_engine, hardware
from vidzoo.evaluate import evaluate
from vidzoo.models.factory import create_model

REPO = Path(__file__).resolve().parent.parent
VIDEOS = REPO.parent / "shared" / "data" / "videos"
CLIP = {"frames": 16, "size": 112}
MODELS = {  # name -> constructor arguments at 16x112x112
    "c3d": CLIP,
    "r3d_18": CLIP,
    "r2plus1d_18": CLIP,
    "i3d": CLIP,
    "s3d": CLIP,
    "c2d_resnet50": CLIP,
}
EVAL_VIDEOS = [  # real clean fixtures of a few seconds each
    "mmaction2-samples/demo/demo.mp4",
    "mmaction2-samples/tests/data/test.mp4",
    "mmaction2-samples/tests/data/test.avi",
    "mmaction2-samples/demo/demo_skeleton.mp4",
]


def measure(forward, clips: torch.Tensor, batch: int, seconds: float) -> tuple[torch.Tensor, float, float]:
    """(logits of `clips`, setup seconds of the first batch, clips/s over repeated passes for `seconds`)."""
    batches = list(clips.split(batch))
    started = time.perf_counter()
    forward(batches[0])
    setup = time.perf_counter() - started
    logits = torch.cat([forward(b).float().cpu() for b in batches])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done < 2 * batch:
        for b in batches:
            forward(b)
            done += len(b)
    return logits, setup, done / (time.perf_counter() - started)


def measure_pair(first, second, clips: torch.Tensor, batch: int, seconds: float) -> tuple[float, float]:
    """clips/s of two forwards timed in alternating passes over `clips` (after one warm-up batch
    each), at least `seconds` each: drifting machine load hits both alike."""
    batches = list(clips.split(batch))
    forwards = (first, second)
    for forward in forwards:
        forward(batches[0])
    spent, done = [0.0, 0.0], [0, 0]
    while min(spent) < seconds or min(done) < 2 * batch:
        for k, forward in enumerate(forwards):
            started = time.perf_counter()
            for b in batches:
                forward(b)
            spent[k] += time.perf_counter() - started
            done[k] += len(clips)
    return done[0] / spent[0], done[1] / spent[1]


def compare(reference: torch.Tensor, logits: torch.Tensor) -> dict[str, float]:
    return {"top1_agreement": float((logits.argmax(1) == reference.argmax(1)).float().mean()),
            "max_prob_diff": float((logits.softmax(1) - reference.softmax(1)).abs().max())}


def bench_model(name: str, batch: int, clips: torch.Tensor, args) -> dict:
    torch.manual_seed(0)
    model = create_model(name, num_classes=400, **MODELS[name]).eval()
    info = hardware("cpu")
    variants = [Variant("eager", "fp32", False), Variant("eager", "fp32", True)]
    if info["bf16"]:
        variants.append(Variant("eager", "bf16", True))
    rows, reference = [], None
    by_name = {v.describe(): v for v in variants}
    for variant in variants:
        forward = engines._torch_forward(model, variant, torch.device("cpu"))
        logits, setup, rate = measure(forward, clips, batch, args.seconds)
        reference = logits if reference is None else reference
        rows.append({"variant": variant.describe(), "clips_per_s": rate, "setup_s": setup, **compare(reference, logits)})
    engines._set_memory_format(model, False)
    best_eager = max((r for r in rows if r["top1_agreement"] >= engines.AGREEMENT
                      and r["max_prob_diff"] <= engines.PROB_TOLERANCE), key=lambda r: r["clips_per_s"])
    if args.compile:
        precision = best_eager["variant"].split()[1]
        variant = Variant("compile", precision, True)
        by_name[variant.describe()] = variant
        try:
            started = time.perf_counter()
            forward = engines._torch_forward(model, variant, torch.device("cpu"))
            logits, setup, rate = measure(forward, clips, batch, args.seconds)
            rows.append({"variant": variant.describe(), "clips_per_s": rate,
                         "setup_s": setup + time.perf_counter() - started - args.seconds, **compare(reference, logits)})
        except Exception as e:  # noqa: BLE001 - a compiler failure is a result too
            rows.append({"variant": variant.describe(), "error": f"{type(e).__name__}: {str(e).splitlines()[0]}"})
        engines._set_memory_format(model, False)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VIDZOO_CACHE_DIR"] = tmp
        started = time.perf_counter()
        try:
            forward = engines._onnx_forward(model, torch.device("cpu"), "bench")
            export_s = time.perf_counter() - started
            logits, setup, rate = measure(forward, clips, batch, args.seconds)
            rows.append({"variant": "onnxruntime fp32", "clips_per_s": rate, "setup_s": export_s + setup,
                         **compare(reference, logits)})
        except Exception as e:  # noqa: BLE001
            rows.append({"variant": "onnxruntime fp32", "error": f"{type(e).__name__}: {str(e).splitlines()[0]}"})
        usable = [r for r in rows if "clips_per_s" in r and r["top1_agreement"] >= engines.AGREEMENT
                  and r["max_prob_diff"] <= engines.PROB_TOLERANCE]
        best = max(usable, key=lambda r: r["clips_per_s"])
        # auto: a fresh cache, a long job (so compile and ONNX Runtime may be tried).
        started = time.perf_counter()
        auto = build_engine(model, batch_size=batch, calibration=clips, job_clips=100_000)
        decide_s = time.perf_counter() - started
        if auto.variant.engine == "compile" and auto.variant.describe() not in by_name:
            # Without --compile the table has no compiled column: auto's own measurement stands for it.
            _, _, auto_rate = measure(auto, clips, batch, args.seconds)
            if auto_rate > best["clips_per_s"]:
                best = {"variant": auto.variant.describe(), "clips_per_s": auto_rate}
            best_rate = best["clips_per_s"]
        else:
            model_copy = copy.deepcopy(model)
            engines._set_memory_format(model_copy, False)
            best_forward = (engines._onnx_forward(model_copy, torch.device("cpu"), "bench")
                            if best["variant"].startswith("onnx")
                            else engines._torch_forward(model_copy, by_name[best["variant"]], torch.device("cpu")))
            auto_rate, best_rate = measure_pair(auto, best_forward, clips, batch, args.seconds)
        auto.close()
    reference_rate = rows[0]["clips_per_s"]
    return {"model": name, "batch": batch, "variants": rows, "best": best["variant"],
            "auto": auto.variant.describe(), "auto_summary": auto.summary, "auto_clips_per_s": auto_rate,
            "best_clips_per_s_beside_auto": best_rate, "auto_decide_s": decide_s,
            "auto_over_best": auto_rate / best_rate, "best_over_eager_fp32": best["clips_per_s"] / reference_rate}


def bench_eval(name: str, args, picked: dict | None) -> dict:
    videos = [VIDEOS / v for v in EVAL_VIDEOS if (VIDEOS / v).is_file()]
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, **MODELS[name]).eval()
    model.classes = ["a", "b"]
    samples = [VideoSample(str(v), i % 2, str(v.relative_to(VIDEOS))) for i, v in enumerate(videos)]
    source = VideoSource(["a", "b"], samples, str(VIDEOS), "benchmarks/inference.py")
    out = {}
    for workers in (0, 2):
        # The variant auto picked for this model at batch 8 (a fresh model's first job would be
        # too short to calibrate), so the model-only rate to compare with is that row's.
        engine, precision = (picked["auto"].split()[:2] if picked else ("auto", "auto"))
        report = evaluate(model, source, clips_per_video=args.eval_clips, crops=1, workers=workers, progress=False,
                          batch_size=8, engine=engine, precision=precision)
        out[f"workers_{workers}"] = {"clips_per_s": report.clips_per_s, "data_wait_share": report.data_wait_share,
                                     "engine": report.engine, "videos": report.num_videos}
    model_only = picked["auto_clips_per_s"] if picked else None
    return {"model": name, "videos": [str(v.relative_to(VIDEOS)) for v in videos], "model_only_clips_per_s": model_only,
            **out}


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [f"# Inference on {meta['cpu']} ({meta['threads']} threads, torch {meta['torch']}, native bf16: "
             f"{meta['bf16']}), {meta['date']}", "",
             "clips/s at 16x112x112; agreement and prob diff against eager fp32 on the same clips. auto / best: "
             "auto's engine and the best variant (on a copy of the model) timed in alternating passes, one after "
             "the other, in the same run.", "",
             "| model | batch | eager fp32 | fp32 channels-last | bf16 channels-last | compile | ONNX Runtime | best "
             "| auto picked | auto / best |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["models"]:
        cells = {}
        for v in r["variants"]:
            key = ("compile" if v["variant"].startswith("compile") else v["variant"])
            cells[key] = ("error" if "error" in v else
                          f"{v['clips_per_s']:.1f} ({v['top1_agreement']:.0%}, {v['max_prob_diff']:.0e})")
        if r["auto"].startswith("compile") and "compile" not in cells:  # measured by auto itself
            cells["compile"] = f"{r['auto_clips_per_s']:.1f} (auto's)"
        lines.append(f"| {r['model']} | {r['batch']} | {cells.get('eager fp32', '')} | "
                     f"{cells.get('eager fp32 channels-last', '')} | {cells.get('eager bf16 channels-last', 'n/a')} | "
                     f"{cells.get('compile', 'not run')} | {cells.get('onnxruntime fp32', '')} | "
                     f"{r['best']} ({r['best_over_eager_fp32']:.1f}x) | {r['auto']} | {r['auto_over_best']:.2f} |")
    if results.get("eval"):
        lines += ["", "End to end `evaluate` on real videos (decode included, auto engine):", "",
                  "| model | workers | clips/s | model-only clips/s | data wait share | engine |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for e in results["eval"]:
            model_only = f"{e['model_only_clips_per_s']:.1f}" if e["model_only_clips_per_s"] else ""
            for key in ("workers_0", "workers_2"):
                w = e[key]
                lines.append(f"| {e['model']} | {key[-1]} | {w['clips_per_s']:.1f} | {model_only} | "
                             f"{w['data_wait_share']:.0%} | {w['engine']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    parser.add_argument("--clips", type=int, default=16, help="calibration/measurement clips per model")
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per variant")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (minutes per model)")
    parser.add_argument("--eval-models", nargs="*", default=["c3d", "r3d_18"])
    parser.add_argument("--eval-clips", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="C3D at batch 8 only, short timings")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--render", action="store_true", help="rewrite inference.md from inference.json")
    args = parser.parse_args()
    if args.render:
        results = json.loads((args.out / "inference.json").read_text())
        for r in results["models"]:
            if r["auto"].startswith("compile") and r["auto_clips_per_s"] > r["auto_clips_per_s"] / r["auto_over_best"]:
                r["best"], r["auto_over_best"] = r["auto"], 1.0  # auto's own compiled measurement is the best
                r["best_over_eager_fp32"] = r["auto_clips_per_s"] / r["variants"][0]["clips_per_s"]
        (args.out / "inference.md").write_text(markdown(results))
        return
    if args.quick:
        args.models, args.batches, args.clips, args.seconds, args.eval_models = ["c3d"], [8], 8, 1.0, ["c3d"]
    clips = torch.randn(args.clips, 3, CLIP["frames"], CLIP["size"], CLIP["size"],
                        generator=torch.Generator().manual_seed(0))
    info = hardware("cpu")
    results = {"meta": {"date": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
                        "cpu": info["device"], "bf16": info["bf16"], "threads": torch.get_num_threads(),
                        "machine": platform.machine(), "seconds_per_variant": args.seconds},
               "models": [], "eval": []}
    # Written after every row, so an interrupted run keeps what it measured.
    def write() -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "inference.json").write_text(json.dumps(results, indent=1))
        (args.out / "inference.md").write_text(markdown(results))

    for name in args.models:
        for batch in args.batches:
            results["models"].append(bench_model(name, batch, clips, args))
            print(json.dumps({k: v for k, v in results["models"][-1].items() if k != "variants"}), flush=True)
            write()
    for name in args.eval_models:
        picked = next((r for r in results["models"] if r["model"] == name and r["batch"] == 8), None)
        results["eval"].append(bench_eval(name, args, picked))
        print(json.dumps(results["eval"][-1]), flush=True)
        write()
    print(markdown(results))


if __name__ == "__main__":
    main()

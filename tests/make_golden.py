"""Regenerate tests/golden/ffmpeg_thumbnails.json from the FFmpeg command-line tool.

The thumbnails are an independent reference for the decoder tests: FFmpeg (with its default
autorotation) decodes frames 0, middle and last of every clean fixture to RGB, and we keep
4x4 block means, small enough to store and tolerant of swscale rounding differences between
FFmpeg versions. Run only when fixtures change:

    python tests/make_golden.py          # needs `ffmpeg` on PATH (Debian package ffmpeg)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
OUT = Path(__file__).parent / "golden" / "ffmpeg_thumbnails.json"
GRID = 4


def block_means(frame: np.ndarray, grid: int = GRID) -> list:
    h, w, _ = frame.shape
    rows = np.array_split(np.arange(h), min(grid, h))
    cols = np.array_split(np.arange(w), min(grid, w))
    return [[frame[r][:, c].reshape(-1, 3).mean(0).round(2).tolist() for c in cols] for r in rows]


def ffmpeg_frame(path: Path, index: int) -> np.ndarray:
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
         "-show_entries", "stream_side_data=rotation", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )
    info = json.loads(probe.stdout)["streams"][0]
    w, h = info["width"], info["height"]
    rotation = next((abs(int(s.get("rotation", 0))) for s in info.get("side_data_list", [])), 0)
    if rotation in (90, 270):
        w, h = h, w
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-threads", "1", "-i", str(path), "-map", "0:v:0",
         "-vf", f"select=eq(n\\,{index})", "-vsync", "0", "-frames:v", "1",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(h, w, 3)


def main() -> None:
    probe = json.loads((VIDEOS / "ffprobe.json").read_text())
    golden = {}
    for name, meta in sorted(probe.items()):
        if not meta.get("clean"):
            continue
        n = meta["frames"]
        entry = {}
        for index in sorted({0, n // 2, n - 1}):
            try:
                entry[str(index)] = block_means(ffmpeg_frame(VIDEOS / name, index))
            except (subprocess.CalledProcessError, ValueError) as e:
                print(f"skip {name} frame {index}: {e}")
        golden[name] = entry
    OUT.write_text(json.dumps(golden, separators=(",", ":")))
    print(f"wrote {OUT} ({len(golden)} videos)")


if __name__ == "__main__":
    main()

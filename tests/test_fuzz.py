"""Bounded fuzzing of the decoder: damaged copies of real fixtures (flipped bytes, truncations,
corrupted MP4 box sizes) must each end in valid frames or a `VideoDecodeError`, never a crash,
a hang, an empty tensor or another exception type.

Every case is decoded in a child process with a per-case timeout, so a crash or hang is caught
and reported instead of taking the test run down. One child handles the cases one by one (its
imports cost more than most decodes), shared by the tests of this module, and is replaced after
a crash or a timeout.
The seed is fixed: the same 300 cases run every time. `fuzz/fuzz_decode.py` is the open-ended
atheris harness for long runs outside CI.

Set VIDZOO_FUZZ_REPORT to a file path to get one JSON line of outcome counts per test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import select
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import require_videos

SEED = 20260522
CASE_TIMEOUT_S = 20.0  # a healthy decode of these small files takes well under a second
CASES_PER_TEST = 20

# (fixture, is an ISO-BMFF/QuickTime file whose boxes can be corrupted)
FIXTURES = {
    "h265": ("torchcodec-resources/test/resources/h265_video.mp4", True),
    "mov": ("decord-testdata/tests/test_data/video_0.mov", True),
    "h264": ("mmaction2-samples/tests/data/rawvideo_dataset/part_0.mp4", True),
    "webm": ("mediabunny-testdata/test/public/frames.webm", False),
    "avi": ("tiny-ucf101/v_Basketball_g01_c01.avi", False),
}
MUTATIONS = ("flip", "truncate", "box")
# 5 fixtures x 3 mutations (box -> flip again for the non-MP4 ones) x 20 cases = 300 cases.
PARAMS = [(name, mutation) for name in FIXTURES for mutation in MUTATIONS]

# The child: reads one case path per line on stdin, answers one JSON line per case on stdout.
WORKER = r"""
import json, sys, traceback
import torch
from vidzoo.data.video import VideoDecodeError, VideoReader

for line in sys.stdin:
    path = line.strip()
    try:
        with VideoReader(path) as video:
            n = video.num_frames
            indices = sorted({0, n // 2, n - 1})
            expected = (len(indices), *video.output_size(32), 3)
            frames = video.get_frames(indices, size=32)
        if frames.numel() == 0:
            result = {"outcome": "empty tensor", "detail": str(tuple(frames.shape))}
        elif frames.dtype != torch.uint8 or tuple(frames.shape) != expected:
            result = {"outcome": "bad tensor", "detail": f"{frames.dtype} {tuple(frames.shape)} != {expected}"}
        else:
            result = {"outcome": "frames", "detail": str(tuple(frames.shape))}
    except VideoDecodeError as e:
        result = {"outcome": "VideoDecodeError", "detail": type(e).__name__}
    except BaseException as e:
        result = {"outcome": "other exception", "detail": traceback.format_exc()}
    print(json.dumps(result), flush=True)
"""
GOOD = {"frames", "VideoDecodeError"}


# --------------------------------------------------------------------------- mutations


_CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"mvex", b"moof", b"traf"}


def mp4_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[int, bytes]]:
    """(offset, type) of every box header, descending into moov/trak/mdia/minf/stbl and friends."""
    end = len(data) if end is None else end
    boxes = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1 and pos + 16 <= end:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            break
        boxes.append((pos, kind))
        if kind in _CONTAINER_BOXES:
            boxes.extend(mp4_boxes(data, pos + header, pos + size))
        pos += size
    return boxes


def mutate(data: bytes, mutation: str, rng: random.Random) -> tuple[bytes, str]:
    """A damaged copy of `data` and a description of the damage (to reproduce a failure)."""
    out = bytearray(data)
    if mutation == "truncate":
        keep = rng.randrange(1, len(data))
        return bytes(out[:keep]), f"truncated to {keep} of {len(data)} bytes"
    if mutation == "box":
        offset, kind = rng.choice(mp4_boxes(data))
        old = struct.unpack(">I", data[offset:offset + 4])[0]
        new = rng.choice([0, 1, 7, 0xFFFFFFFF, 0x7FFFFFFF, max(0, old - rng.randint(1, 16)), old + rng.randint(1, 16)])
        out[offset:offset + 4] = struct.pack(">I", new)
        return bytes(out), f"{kind.decode('latin-1')} box at {offset}: size {old} -> {new}"
    flips = [(rng.randrange(len(data)), rng.randrange(1, 256)) for _ in range(rng.randint(1, 50))]
    for offset, mask in flips:
        out[offset] ^= mask
    return bytes(out), f"xor (offset, mask) {flips}"


# --------------------------------------------------------------------------- the child


class DecodeWorker:
    """A child process that decodes one case at a time; restarted after a crash or a hang."""

    def __init__(self, log_dir: Path, script: str = WORKER, timeout: float = CASE_TIMEOUT_S):
        self.log_dir = log_dir
        self.script = script
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def _start(self) -> subprocess.Popen:
        self.starts += 1
        stderr = open(self.log_dir / f"worker{self.starts}.stderr", "wb")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env,
        )
        stderr.close()
        return self.proc

    def run(self, path: Path) -> dict:
        proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
        proc.stdin.write(f"{path}\n".encode())
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
        line = proc.stdout.readline() if ready else b""
        if line:
            return json.loads(line)
        if not ready:
            proc.kill()
            proc.wait()
            return {"outcome": "hang", "detail": f"no answer in {self.timeout:g} s"}
        code = proc.wait()
        return {"outcome": "crash", "detail": f"child exited with {code} (negative: killed by that signal)"}

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def _report(counts: Counter, name: str, mutation: str) -> None:
    print(f"fuzz {name}/{mutation}: {dict(counts)}")
    report = os.environ.get("VIDZOO_FUZZ_REPORT")
    if report:
        with open(report, "a", encoding="utf-8") as f:
            f.write(json.dumps({"fixture": name, "mutation": mutation, **counts}) + "\n")


@pytest.fixture(scope="module")
def decode_worker(tmp_path_factory: pytest.TempPathFactory):
    worker = DecodeWorker(tmp_path_factory.mktemp("fuzz-worker"))
    yield worker
    worker.close()


@pytest.mark.slow
@pytest.mark.parametrize(("name", "mutation"), PARAMS, ids=[f"{n}-{m}" for n, m in PARAMS])
def test_damaged_video_gives_frames_or_decode_error(name: str, mutation: str, tmp_path: Path,
                                                    decode_worker: DecodeWorker) -> None:
    relative, is_mp4 = FIXTURES[name]
    data = (require_videos() / relative).read_bytes()
    if mutation == "box" and not is_mp4:
        mutation = "flip2"  # keeps 60 cases per fixture; a different seed stream than "flip"
    counts: Counter = Counter()
    failures = []
    for i in range(CASES_PER_TEST):
        case_id = f"{name}-{mutation}-{i}"
        rng = random.Random(f"{SEED}-{case_id}")
        damaged, damage = mutate(data, mutation.rstrip("2"), rng)
        case = tmp_path / f"{case_id}{Path(relative).suffix}"
        case.write_bytes(damaged)
        result = decode_worker.run(case)
        counts[result["outcome"]] += 1
        if result["outcome"] not in GOOD:
            failures.append(f"{case_id} ({relative}, {damage}): {result['outcome']}: {result['detail']}")
        else:
            case.unlink()
    _report(counts, name, mutation)
    assert not failures, "\n\n".join(failures)


def test_worker_reports_crash_and_hang_and_restarts(tmp_path: Path) -> None:
    """The harness itself: a child killed by a signal is a crash, one that stops answering a
    hang, and the next case gets a fresh child."""
    script = (
        "import os, signal, sys, time\n"
        "for line in sys.stdin:\n"
        "    kind = line.strip()\n"
        "    if kind == 'crash': os.kill(os.getpid(), signal.SIGSEGV)\n"
        "    if kind == 'hang': time.sleep(60)\n"
        "    print('{\"outcome\": \"frames\", \"detail\": \"\"}', flush=True)\n"
    )
    worker = DecodeWorker(tmp_path, script=script, timeout=2.0)
    try:
        outcomes = [worker.run(Path(kind))["outcome"] for kind in ("ok", "crash", "ok", "hang", "ok")]
    finally:
        worker.close()
    assert outcomes == ["frames", "crash", "frames", "hang", "frames"]
    assert worker.starts == 3


def test_atheris_harness_accepts_a_video_and_garbage() -> None:
    """`fuzz/fuzz_decode.py` stays runnable: its entry point, without atheris installed."""
    spec = importlib.util.spec_from_file_location("fuzz_decode", Path(__file__).parents[1] / "fuzz" / "fuzz_decode.py")
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    harness.TestOneInput((require_videos() / FIXTURES["h265"][0]).read_bytes())
    harness.TestOneInput(b"\x00\x00\x00\x18ftypmp42 not really a video")

"""atheris harness for the decoder, for long runs outside CI (CI runs the bounded
`tests/test_fuzz.py`). Any input must end in frames or a `VideoDecodeError`; anything else
(another exception, a crash, a hang past libFuzzer's -timeout) is a finding. See README.md.
"""

from __future__ import annotations

import os
import sys
import tempfile

from vidzoo.data.video import VideoDecodeError, VideoReader

_FILE = os.path.join(tempfile.mkdtemp(prefix="vidzoo-fuzz-"), "input.bin")


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name atheris expects
    with open(_FILE, "wb") as f:
        f.write(data)
    try:
        with VideoReader(_FILE) as video:
            n = video.num_frames
            frames = video.get_frames(sorted({0, n // 2, n - 1}), size=32)
    except VideoDecodeError:
        return
    if frames.numel() == 0:
        raise AssertionError(f"empty tensor {tuple(frames.shape)} instead of frames or VideoDecodeError")


def main() -> None:
    import atheris  # only needed here: `pip install atheris`

    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

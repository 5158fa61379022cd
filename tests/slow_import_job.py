"""A job whose module takes a while to import, as a decoder's (torch, FFmpeg) does: for the pool test."""

import time

time.sleep(1.5)


def double(x: int) -> int:
    return 2 * x

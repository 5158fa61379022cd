"""Worker jobs that the serve tests swap in for the real one: kept in a module that imports
nothing heavy, so a freshly spawned worker unpickles them in a moment."""

import os
import time


def sleep_then_fail(model_name, path, options, limits, seconds: float = 3.0) -> dict:
    """Stay busy, then answer an error (holds a worker without killing it)."""
    time.sleep(seconds)
    return {"error": "slept", "message": "slept"}


def hang(*args) -> dict:
    time.sleep(3600)
    return {}


def crash(*args) -> dict:
    os.abort()


def fail(*args) -> dict:
    raise RuntimeError("a bug in the job")

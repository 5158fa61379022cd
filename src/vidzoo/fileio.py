"""Writing files so that a crash never leaves half of one, and hashing files."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomically(path: str | os.PathLike, write: Callable[[Path], Any], *, fsync: bool = True) -> Path:
    """Call ``write(temp)`` on a sibling temporary file, flush it to disk, then rename it to `path`.

    Readers (and a resumed run) see the old file or the complete new one, never half of one:
    the temporary file is on the same file system, so ``os.replace`` is atomic. On any error,
    the temporary file is removed and `path` is untouched. `fsync=False` skips the flush for
    files that are cheap to rebuild (plots).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(temp)
        if fsync:
            with open(temp, "r+b") as handle:
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

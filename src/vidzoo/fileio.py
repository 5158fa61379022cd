"""Writing files so that a crash never leaves half of one, hashing files, and reading our small
safetensors files (probes) back with their JSON metadata."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _file_mode() -> int:
    """The mode a new file gets from open(): 0o666 less the process umask (read without changing
    it where /proc says it; os.umask can only be read by setting it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomically(path: str | os.PathLike, write: Callable[[Path], Any], *, fsync: bool = True) -> Path:
    """Call ``write(temp)`` on a sibling temporary file, flush it to disk, then rename it to `path`.

    Readers (and a resumed run) see the old file or the complete new one, never half of one:
    the temporary file is on the same file system, so ``os.replace`` is atomic. On any error,
    the temporary file is removed and `path` is untouched. `fsync=False` skips the flush for
    files that are cheap to rebuild (plots). The file gets the mode any new file gets (libraries
    that write through their own temporary files, like safetensors, would leave it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(temp)
        os.chmod(temp, _file_mode())
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


def read_safetensors_with_metadata(path: str | os.PathLike, *, key: str, what: str, format_version: int,
                                   framework: str = "np") -> tuple[dict[str, Any], dict[str, Any]]:
    """The tensors of a safetensors file vidzoo wrote, and the JSON metadata stored under `key`.
    Raises FileNotFoundError, or ValueError naming the file when it is not safetensors, has no
    `key` metadata (not a `what`), or was written by a newer vidzoo (a higher format version)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} not found")
    try:
        with safe_open(str(path), framework=framework) as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}
            header = f.metadata() or {}
    except SafetensorError as e:
        raise ValueError(f"{path} is not a safetensors file: {e}") from None
    if key not in header:
        raise ValueError(f"{path} is not a vidzoo {what} (no {key!r} metadata)")
    meta = json.loads(header[key])
    if meta.get("format_version", 0) > format_version:
        raise ValueError(f"{path} has {what} format_version {meta['format_version']}; upgrade vidzoo to read it")
    return tensors, meta

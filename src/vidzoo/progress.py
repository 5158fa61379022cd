"""The one progress bar of the long loops (evaluate, extract, check)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, label: str, done: int = 0, stderr: bool = False) -> Iterator[Callable[[], None]]:
    """A callable that advances a transient rich progress bar by one item (a no-op if off).

    The bar starts at `done` (items finished by an earlier, interrupted run); `stderr` keeps it
    off standard output, for commands whose output is data.
    """
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True) if stderr else None
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(label, total=total, completed=done)
        yield lambda: bar.advance(task)

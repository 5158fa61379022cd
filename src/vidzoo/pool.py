"""One file at a time in worker processes that a stuck decoder cannot hang (`check`, `prepare`)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["run_per_file"]

T = TypeVar("T")
R = TypeVar("R")


def run_per_file(
    function: Callable[[T], R],
    tasks: Sequence[T],
    *,
    workers: int,
    timeout: float,
    failed: Callable[[T, str, str], R],
    advance: Callable[[], None] = lambda: None,
    start_method: str = "spawn",
) -> list[R]:
    """``[function(task) for task in tasks]`` in `workers` processes (0: in this process, with no
    timeout), in task order. A task that raises, or gives no answer within `timeout` seconds,
    gets ``failed(task, error_name, reason)`` instead; its worker is killed and the others go on.

    `function` must be importable by name (the workers are spawned, not forked: the parent may
    hold torch's threads and locks). `advance` is called once per finished task.
    """
    if workers == 0:
        results = []
        for task in tasks:
            try:
                results.append(function(task))
            except Exception as e:  # noqa: BLE001 - one file's failure must not stop the others
                results.append(failed(task, type(e).__name__, str(e)))
            advance()
        return results
    return _run_in_pool(function, list(tasks), workers, timeout, failed, advance, start_method)


def _run_in_pool(function, tasks: list, workers: int, timeout: float, failed, advance, start_method: str) -> list:
    # A multiprocessing Pool rather than concurrent.futures: a worker stuck in the decoder
    # cannot be interrupted, and Pool.terminate() kills it where an executor would wait forever.
    # Results are awaited in task order and tasks start in that order, so when every earlier
    # task is done the awaited one has been running at least as long as we wait for it: the
    # timeout blames the right file. After one, the pool is replaced (its worker is stuck) and the
    # unfinished tasks run again; the workers' start-up (importing torch) is never counted.
    results: dict[int, object] = {}
    remaining = list(enumerate(tasks))
    context = multiprocessing.get_context(start_method)
    while remaining:
        pool = context.Pool(min(workers, len(remaining)), maxtasksperchild=50)
        try:
            # Wait until the workers are up, with `function`'s module imported (unpickling the
            # function imports it: torch, for a decoder), so no task's clock counts that.
            pool.map(_ready, [function] * min(workers, len(remaining)))
            pending = [(i, task, pool.apply_async(function, (task,))) for i, task in remaining]
            remaining = []
            for k, (i, task, job) in enumerate(pending):
                try:
                    results[i] = job.get(timeout=timeout)
                except multiprocessing.TimeoutError:
                    results[i] = failed(task, "Timeout", f"no answer after {timeout:g} s")
                    advance()
                    remaining = _collect(pending[k + 1:], results, advance)
                    break
                except Exception as e:  # noqa: BLE001 - a bug on one file must not stop the others
                    results[i] = failed(task, type(e).__name__, str(e))
                advance()
        finally:
            pool.terminate()
            pool.join()
    return [results[i] for i in range(len(tasks))]


def _ready(_function: Callable) -> None:
    time.sleep(0.05)  # long enough that each worker takes one of these


def _collect(pending, results: dict, advance) -> list:
    """Keep the finished results of `pending`; return the unfinished tasks to run again."""
    unfinished = []
    for i, task, job in pending:
        if job.ready() and job.successful():
            results[i] = job.get()
            advance()
        else:
            unfinished.append((i, task))
    return unfinished

"""The local executor: runs independent tasks in worker processes and streams their progress back.

Tasks never depend on which worker runs them or in what order they finish, so the number of workers
changes only the speed. Workers come from a fork server (never forked from the parent itself, so threads
in the parent — DuckDB, the progress bar — can never deadlock a child) that imports the task code once:
each worker starts with the modules loaded instead of importing them again.
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import queue
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from refinery.pipelines.engine.executors import register
from refinery.pipelines.engine.executors.base import Executor, TaskFn, guarded

_progress_queue: Any = None


def _init_worker(progress_queue: Any) -> None:
    global _progress_queue
    _progress_queue = progress_queue


def _report(n: int) -> None:
    _progress_queue.put(n)


def _call(fn: TaskFn, job: Any) -> Any:
    return fn(job, _report)


@register
class LocalExecutor(Executor):
    """Processes on this machine (`workers` of them; all cores by default)."""

    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers or os.cpu_count() or 1)

    def map(
        self, fn: TaskFn, jobs: Sequence[Any], on_progress: Callable[[int], None], describe: Callable[[Any], str]
    ) -> Iterator[tuple[Any, Any]]:
        """Yield (job, result) as tasks finish; `on_progress(n)` receives records read as they are read."""
        if self.workers == 1 or len(jobs) <= 1:
            for job in jobs:
                yield job, guarded(lambda j=job: fn(j, on_progress), job, describe)
            return
        context = _worker_context(fn)
        progress_queue = context.Queue()
        with ProcessPoolExecutor(
            max_workers=min(self.workers, len(jobs)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(progress_queue,),
        ) as pool:
            futures: dict[Future, int] = {pool.submit(_call, fn, job): i for i, job in enumerate(jobs)}
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    _drain(progress_queue, on_progress)
                    for future in sorted(done, key=futures.__getitem__):
                        job = jobs[futures[future]]
                        yield job, guarded(future.result, job, describe)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
            _drain(progress_queue, on_progress)


def _worker_context(fn: TaskFn) -> mp.context.BaseContext:
    if "forkserver" not in mp.get_all_start_methods():  # not on Windows or macOS' defaults
        return mp.get_context("spawn")
    context = mp.get_context("forkserver")
    # pyarrow imports pandas (when installed) on its first pa.array(): once in the server, not once per worker.
    extra = ["pandas"] if importlib.util.find_spec("pandas") else []
    context.set_forkserver_preload([fn.__module__, *extra])
    return context


def _drain(progress_queue: Any, on_progress: Callable[[int], None]) -> None:
    while True:
        try:
            on_progress(progress_queue.get_nowait())
        except queue.Empty:
            return

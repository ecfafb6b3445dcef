"""The executor contract: how the engine hands a pass's tasks to whatever runs them.

A *task* is a picklable job (a `TaskJob`: one read range of one input, through one pass of the recipe) and a
module-level function `fn(job, report) -> dict`. The function does all the work and all the writing: it
clears what an earlier attempt of the same task left, writes its outputs atomically, and writes its
done-marker last. `report(n)` may be called with the number of records read so far (for progress bars).

An executor must:
- run `fn(job, report)` once per job, anywhere (a local process, a cluster node), in any order, and yield
  `(job, result)` as each finishes; it may retry a task that failed or whose worker died (tasks are idempotent);
- raise `TaskFailed` naming the task (`describe(job)`) when a task fails for good, and stop the others;
- never decide completion itself: the engine trusts only the done-markers, so a rerun redoes exactly the
  tasks without one. Output is therefore identical whatever runs the tasks and however many workers there are.

    @register
    class ThreadExecutor(Executor):
        name = "threads"

        def __init__(self, workers: int = 4):
            self.workers = workers

        def map(self, fn, jobs, on_progress, describe):
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(self.workers) as pool:
                futures = [(job, pool.submit(fn, job, on_progress)) for job in jobs]
                for job, future in futures:
                    yield job, guarded(future.result, job, describe)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

TaskFn = Callable[[Any, Callable[[int], None]], Any]


class TaskFailed(RuntimeError):
    """A task raised; the message names the task so the user knows which input to look at."""


class Executor:
    """Runs a pass's independent tasks; see the module docstring for what it must guarantee."""

    name: ClassVar[str]

    def map(
        self, fn: TaskFn, jobs: Sequence[Any], on_progress: Callable[[int], None], describe: Callable[[Any], str]
    ) -> Iterator[tuple[Any, Any]]:
        """Yield (job, result) as tasks finish; `on_progress(n)` receives records read as they are read."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor holds (workers, a cluster connection); called once after the run."""


def guarded(call: Callable[[], Any], job: Any, describe: Callable[[Any], str]) -> Any:
    """Run `call`; an error becomes TaskFailed naming the task (Ctrl-C and TaskFailed pass through)."""
    try:
        return call()
    except (KeyboardInterrupt, TaskFailed):
        raise
    except Exception as err:
        raise TaskFailed(f"{describe(job)} failed: {type(err).__name__}: {err}") from err

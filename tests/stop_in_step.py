"""An executor for tests of resumption: the local executor, stopping the run in the driver (as Ctrl-C does) once
the first part of a chosen step of a finish has finished, the other parts of that step in flight or not begun."""

from __future__ import annotations

from refinery.pipelines.engine.executors import Executor, create_executor
from refinery.pipelines.engine.segments import FinishJob


class StopInStep(Executor):
    """The local executor, recording the finish parts it is given, and stopping the run (as Ctrl-C does, in the
    driver) once the first part of `step` has finished, the other parts of that step in flight or not begun."""

    name = "test-stop-in-step"

    def __init__(self, step: str | None = None):
        self.inner, self.step, self.given = create_executor("local", workers=2), step, []

    def map(self, fn, jobs, on_progress, describe):
        self.given += [(job.step, job.part) for job in jobs if isinstance(job, FinishJob)]
        for job, result in self.inner.map(fn, jobs, on_progress, describe):
            yield job, result
            if isinstance(job, FinishJob) and job.step == self.step:
                raise KeyboardInterrupt(f"stopped in {self.step}")

"""The progress bar of a pass: named by what the pass does, with a total, so that it shows an ETA.

    pass 1/2: read, extract text, find duplicates:  47%|████▋     | 1.20GB/2.56GB of input [00:30<00:34, 40.0MB/s,
        task 3/8, 12,345 records]
    pass 2/2: drop duplicates:  60%|██████    | 7402/12337 records [00:05<00:03, 1480.40 records/s, task 5/8]

(The name goes on a line of its own where the terminal is too narrow for it and the ETA.)

Records are counted as they are read, but a pass that reads the inputs cannot know how many there are: its bar
counts input bytes instead (a file's bytes shared evenly by its tasks), each task's share when the task ends, and
shows the records read beside them. A pass that reads an earlier pass's parts knows their rows before it starts:
its bar counts records. Under a limit (`refinery run --limit N`) a task reads at most N records: the bar counts
records against N per task, and a task that ends with fewer (a shorter file) adds what it did not read.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any

from tqdm import tqdm

from refinery.corpora.atomic import read_json
from refinery.pipelines.engine.layout import RunLayout
from refinery.pipelines.engine.segments import Segment, TaskJob, pass_words

_METER_COLUMNS = 64  # what the bar, counts, times and rate need beside the pass's name
_REFRESH_SECONDS = 0.5
_SCALED_FROM = 100_000  # records shown as 1.2M from here on; below, as they are


def input_bytes_per_task(tasks: list[Any], inputs: list[dict[str, Any]]) -> list[int]:
    """Each read task's share of its file's bytes (`inputs`: the manifest's fingerprints, with `bytes`)."""
    size = {entry["path"]: int(entry.get("bytes") or 0) for entry in inputs}
    per_file: dict[str, int] = {}
    for task in tasks:
        per_file[task.path] = per_file.get(task.path, 0) + 1
    return [max(1, size.get(task.path, 0) // per_file[task.path]) for task in tasks]


def _rows_written(layout: RunLayout, segment: int, task_index: int) -> int:
    """The documents a finished task of a pass wrote, as its done-marker says; 0 where that cannot be read, for a
    progress bar only estimates and must never be what stops a run (a missing part fails its task, by name)."""
    try:
        return int(read_json(layout.segment_done(segment, task_index))["kept"])
    except (OSError, ValueError, KeyError):
        return 0


class PassProgress:
    """One pass's bar: `read(n)` takes the executor's progress reports, `task_done(job, result)` each ended task."""

    def __init__(self, segment: Segment, passes: int, jobs: list[TaskJob], pending: list[TaskJob],
                 layout: RunLayout, task_bytes: list[int], limit: int | None, show: bool):
        self.tasks, self.done, self.records, self.limit = len(jobs), len(jobs) - len(pending), 0, limit
        self.reads_inputs = segment.source is None
        if not self.reads_inputs:  # the parts it reads are written: their rows are known
            self.shares = {job.task_index: _rows_written(layout, segment.source, job.task_index) for job in pending}
        elif limit is not None:
            self.shares = {job.task_index: limit for job in pending}
        else:
            self.shares = {job.task_index: task_bytes[job.task_index] for job in pending}
        self.in_bytes = self.reads_inputs and limit is None
        title = f"pass {segment.index + 1}/{passes}: {pass_words(segment)}"
        shown = show and sys.stderr.isatty()  # as tqdm decides: no bar where stderr is a file or a pipe
        if shown and len(title) + _METER_COLUMNS > shutil.get_terminal_size((100, 24)).columns:
            tqdm.write(title, file=sys.stderr)  # a name the bar would cut off: on a line of its own
            title = f"pass {segment.index + 1}/{passes}"
        total = sum(self.shares.values())
        # tqdm writes no unit after the counts: "1.14MB/3.20MB of input" says what they are.
        counts = "{n_fmt}B/{total_fmt}B of input" if self.in_bytes else "{n_fmt}/{total_fmt} records"
        self.bar = tqdm(desc=title, total=total, unit="B" if self.in_bytes else " records",
                        unit_scale=self.in_bytes or total >= _SCALED_FROM, unit_divisor=1000,
                        bar_format="{l_bar}{bar}| " + counts + " [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
                        disable=not shown, dynamic_ncols=True, mininterval=_REFRESH_SECONDS)
        self.shown = time.monotonic()
        self._describe()

    def read(self, records: int) -> None:
        """Records read by some task (the executor's `on_progress`)."""
        self.records += records
        if not self.in_bytes:
            self.bar.update(records)
        elif time.monotonic() - self.shown >= _REFRESH_SECONDS:  # the bar moves only as tasks end: show the records
            self._describe(refresh=True)

    def task_done(self, job: TaskJob, result: dict[str, Any]) -> None:
        self.done += 1
        if self.in_bytes:
            self.bar.update(self.shares[job.task_index])
        elif self.reads_inputs:  # under a limit: a task that read fewer than the limit adds the rest
            self.bar.update(self.shares[job.task_index] - result["stats"]["read"]["docs_in"])
        self._describe(refresh=True)

    def _describe(self, refresh: bool = False) -> None:
        records = f", {self.records:,} records" if self.in_bytes else ""
        self.bar.set_postfix_str(f"task {self.done}/{self.tasks}{records}", refresh=refresh)
        self.shown = time.monotonic()

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> PassProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

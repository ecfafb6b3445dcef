"""A global stage's finish scaled out: exact_dedup's barrier cut by hash into partitions, each a task on the
executor's workers; the decisions, and so every output byte, are the same for any number of partitions."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from refinery.corpora.atomic import read_json
from refinery.pipelines.engine.executors import create_executor, guarded
from refinery.pipelines.engine.executors.base import Executor
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.pipelines.engine.segments import FinishJob


class Recording(Executor):
    """The local executor, noting which finish partitions it was handed."""

    name = "test-recording"

    def __init__(self) -> None:
        self.inner = create_executor("local", workers=2)
        self.partitions: list[int] = []

    def map(self, fn, jobs, on_progress, describe):
        self.partitions += [job.part for job in jobs if isinstance(job, FinishJob)]
        yield from self.inner.map(fn, jobs, on_progress, describe)


def outputs(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for folder in ("data", "removed", "quarantine")
            for p in sorted((run_dir / folder).rglob("*.parquet"))}


@pytest.fixture
def inputs(data_dir) -> list[dict]:
    # The dedup demo set repeats documents; C4 and CCNet beside it make many tasks (64KB each).
    return [{"path": str(data_dir / "text/redpajama-pile-samples/*.jsonl")},
            {"path": str(data_dir / "text/c4_demo.jsonl")}, {"path": str(data_dir / "text/cc_en_head-*.jsonl.gz")}]


def run(write_recipe, inputs, partitions: int, output: str, executor=None):
    recipe = write_recipe(inputs, [{"exact_dedup": {"partitions": partitions}}], task_size="64KB", output=output)
    return run_recipe(load_recipe(recipe), workers=2, progress=False, executor=executor)


def test_any_number_of_partitions_gives_the_same_bytes(write_recipe, inputs):
    one = run(write_recipe, inputs, 1, "one")
    assert one.removed > 0  # real duplicates were found
    reference = outputs(one.run_dir)
    recording = Recording()
    many = run(write_recipe, inputs, 13, "many", executor=recording)
    assert outputs(many.run_dir) == reference
    assert (many.read, many.kept, many.removed) == (one.read, one.kept, one.removed)
    # Every partition was a task of the executor, and each wrote its own part of the decisions.
    assert sorted(recording.partitions) == list(range(13))
    parts = sorted((many.run_dir / "work/exact_dedup/decisions").glob("part-*.parquet"))
    assert len(parts) == 13
    assert sum(pq.read_metadata(p).num_rows for p in parts) == many.removed


def test_the_collected_rows_hold_each_partition_in_its_own_row_groups(write_recipe, inputs):
    run_dir = run(write_recipe, inputs, 5, "out").run_dir
    for part in sorted((run_dir / "work/exact_dedup/collected").glob("part-*.parquet")):
        metadata = pq.read_metadata(part)
        for group in range(metadata.num_row_groups):
            stats = metadata.row_group(group).column(metadata.schema.names.index("partition")).statistics
            assert stats.min == stats.max  # so a partition's finish skips the others' row groups


def test_a_finish_stopped_midway_resumes_with_the_partitions_left(write_recipe, inputs):
    recipe = write_recipe(inputs, [{"exact_dedup": {"partitions": 6}}], task_size="64KB")
    reference = outputs(run_recipe(load_recipe(recipe), workers=2, progress=False).run_dir)
    run_dir = load_recipe(recipe).output_dir
    manifest = read_json(run_dir / "manifest.json")
    del manifest["phases"]["exact_dedup.finish"]
    manifest["status"] = "running"
    from refinery.corpora.atomic import write_json

    write_json(run_dir / "manifest.json", manifest)
    for partition in (1, 4):  # as if these two had not finished when the run was killed
        (run_dir / f"work/exact_dedup/finished/partition-{partition:05d}.json").unlink()
        (run_dir / f"work/exact_dedup/decisions/part-{partition:05d}.parquet").unlink()
    recording = Recording()
    run_recipe(load_recipe(recipe), progress=False, executor=recording)
    assert sorted(recording.partitions) == [1, 4]
    assert outputs(run_dir) == reference


def test_a_failing_partition_names_itself(write_recipe, inputs):
    class Failing(Executor):
        name = "test-failing-finish"

        def __init__(self):
            self.inner = create_executor("local", workers=1)

        def map(self, fn, jobs, on_progress, describe):
            if jobs and isinstance(jobs[0], FinishJob):
                yield from ((job, guarded(lambda: 1 / 0, job, describe)) for job in jobs)
            else:
                yield from self.inner.map(fn, jobs, on_progress, describe)

    from refinery.pipelines.engine.executors import TaskFailed

    with pytest.raises(TaskFailed, match="partition 0 of exact_dedup's finish failed: ZeroDivisionError"):
        run(write_recipe, inputs, 3, "out", executor=Failing())

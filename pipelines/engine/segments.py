"""Segments: the streaming passes a recipe is cut into at its global stages, and the work of one task.

Stages [m1, m2, G, m3, P] (maps m, a global stage G that applies decisions, a producer P) become:
  pass 0: read → m1 → m2 → collect G        (writes an intermediate part per task)
  barrier: G.finish
  pass 1: part → G.apply → m3 → collect P    (the last pass that changes documents writes data/)
  barrier: P.finish                           (a producer keeps every document: no pass after it)
A pass that neither applies nor maps (a producer followed by another global stage) writes no documents: it
collects from the parts of the last pass that wrote some. Each task of a pass is independent, writes its
outputs atomically, and records a done-marker last, so a killed run resumes by redoing only the tasks
without a marker.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from refinery.corpora.atomic import AtomicParquetWriter, read_json, write_json
from refinery.corpora.readers import ReadBatch, ReadTask, read_task
from refinery.corpora.records import DOCUMENT_SCHEMA, QUARANTINE_SCHEMA
from refinery.pipelines.engine.layout import RunLayout, part_name
from refinery.pipelines.engine.recipe import StageSpec
from refinery.pipelines.engine.stats import StageCounter
from refinery.pipelines.stages import STAGES, GlobalStage, MapStage, build_stage
from refinery.pipelines.stages.base import RunContext, StageResult

# Ordinals number every document of a segment's output: task index in the high bits, row in the low.
ORDINAL_TASK_SHIFT = 32


@dataclass
class Segment:
    index: int
    head: StageSpec | None = None  # a global stage whose decisions this pass applies first
    maps: list[StageSpec] = field(default_factory=list)
    tail: StageSpec | None = None  # a global stage whose rows this pass collects
    final: bool = False  # the last pass that writes documents: it writes data/
    source: int | None = None  # the pass whose documents this one reads (None: the recipe's inputs)

    @property
    def stage_keys(self) -> list[str]:
        return [s.key for s in ([self.head] if self.head else []) + self.maps]

    @property
    def writes_documents(self) -> bool:
        return self.source is None or self.head is not None or bool(self.maps)


def plan_segments(stages: list[StageSpec]) -> list[Segment]:
    """Cut the stage list at every global stage."""
    segments = [Segment(0)]
    for spec in stages:
        cls = STAGES[spec.name]
        if cls.kind == "global":
            segments[-1].tail = spec
            segments.append(Segment(len(segments), head=spec if cls.applies else None))
        else:
            segments[-1].maps.append(spec)
    last = segments[-1]
    if len(segments) > 1 and last.head is None and not last.maps:  # after a final producer: nothing to do
        segments.pop()
    writer = None
    for segment in segments:
        segment.source = writer
        if segment.writes_documents:
            writer = segment.index
    segments[writer].final = True
    return segments


def pass_words(segment: Segment) -> str:
    """What a pass does to the documents, in the stages' plain words, each said once: "read, extract text, filter by
    quality, find duplicates" (the progress bar's and the plan's name of the pass)."""
    words = ["read"] if segment.source is None else []
    if segment.head is not None:
        words.append(STAGES[segment.head.name].does or f"apply {segment.head.name}")
    words += [STAGES[spec.name].does or spec.name.replace("_", " ") for spec in segment.maps]
    if segment.tail is not None:
        words.append(STAGES[segment.tail.name].collect_does or f"collect for {segment.tail.name}")
    return ", ".join(dict.fromkeys(words))


@dataclass(frozen=True)
class TaskJob:
    """Everything a worker process needs to run one task of one segment (picklable)."""

    run_dir: str
    segment: int
    task_index: int
    read: ReadTask
    stages: list[StageSpec]
    batch_rows: int
    # The columns every reader's documents are conformed to (the union over the recipe's input formats),
    # so that every part of a run has one schema.
    document_schema: pa.Schema = DOCUMENT_SCHEMA
    recipe_dir: str = "."
    publish_to: str | None = None  # an object-storage output: the task uploads what it delivers (publish.py)

    @property
    def context(self) -> RunContext:
        return RunContext(Path(self.run_dir), Path(self.recipe_dir))


def task_output(layout: RunLayout, segment: Segment, task_index: int) -> Path:
    folder = layout.data if segment.final else layout.segment(segment.index)
    return folder / part_name(task_index)


def collected_part(layout: RunLayout, stage_key: str, task_index: int) -> Path:
    """One task's rows collected for a global stage's `finish`."""
    return layout.stage_work(stage_key) / "collected" / part_name(task_index)


def ordinal_range(task_index: int) -> tuple[int, int]:
    first = task_index << ORDINAL_TASK_SHIFT
    return first, first + (1 << ORDINAL_TASK_SHIFT) - 1


def _ordinals(task_index: int, start: int, count: int) -> pa.Array:
    first = (task_index << ORDINAL_TASK_SHIFT) + start
    return pa.array(range(first, first + count), pa.int64())


def _input_part(job: TaskJob, layout: RunLayout, segment: Segment) -> Path:
    source = plan_segments(job.stages)[segment.source]
    return task_output(layout, source, job.task_index)


def _batches(job: TaskJob, layout: RunLayout, segment: Segment) -> Iterator[ReadBatch]:
    if segment.source is None:
        for batch in read_task(job.read, job.batch_rows):
            batch.documents = conform(batch.documents, job.document_schema)
            yield batch
        return
    previous = pq.ParquetFile(_input_part(job, layout, segment))
    for batch in previous.iter_batches(batch_size=job.batch_rows):
        docs = pa.Table.from_batches([batch])
        yield ReadBatch(docs, QUARANTINE_SCHEMA.empty_table(), docs.num_rows)


def conform(docs: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table with exactly `schema`'s columns, in order; columns it lacks are filled with nulls."""
    if docs.schema.equals(schema):
        return docs
    columns = [
        docs.column(f.name).cast(f.type) if f.name in docs.column_names else pa.nulls(docs.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


class _RemovedWriters:
    """One Parquet file per stage for the rows it removed in this task, opened on the first removal."""

    def __init__(self, layout: RunLayout, task_index: int):
        self.layout, self.task_index = layout, task_index
        self.writers: dict[str, AtomicParquetWriter] = {}

    def write(self, stage_key: str, removed: pa.Table) -> None:
        if not removed.num_rows:
            return
        removed = removed.append_column("stage", pa.array([stage_key] * removed.num_rows, pa.string()))
        if stage_key not in self.writers:
            path = self.layout.removed(stage_key) / part_name(self.task_index)
            self.writers[stage_key] = AtomicParquetWriter(path, removed.schema)
        self.writers[stage_key].write(removed)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


class _Chain:
    """The fused stages of one segment, applied batch by batch with their counters."""

    def __init__(self, segment: Segment, job: TaskJob, layout: RunLayout):
        context = job.context
        self.head: GlobalStage | None = build_stage(segment.head, context) if segment.head else None
        self.maps: list[tuple[str, MapStage]] = [(s.key, build_stage(s, context)) for s in segment.maps]
        self.head_key = segment.head.key if segment.head else ""
        self.counters = {key: StageCounter() for key in segment.stage_keys}
        self.decisions = None
        if self.head is not None:
            first, last = ordinal_range(job.task_index)
            self.decisions = self.head.load_decisions(layout.stage_work(self.head_key), first, last)

    def run(self, docs: pa.Table, ordinals: pa.Array, on_removed: Callable[[str, pa.Table], None]) -> pa.Table:
        if self.head is not None:
            docs = self._step(self.head_key, docs, lambda d: self.head.apply(d, ordinals, self.decisions), on_removed)
        for key, stage in self.maps:
            docs = self._step(key, docs, stage.process, on_removed)
        return docs

    def _step(self, key: str, docs: pa.Table, fn: Callable[[pa.Table], StageResult], on_removed) -> pa.Table:
        started = time.perf_counter()
        result = fn(docs)
        self.counters[key].add(docs, result, time.perf_counter() - started)
        on_removed(key, result.removed)
        return result.kept

    def output_schema(self, input_schema: pa.Schema) -> pa.Schema:
        """The columns this chain produces, found by running it on an empty table."""
        empty = input_schema.empty_table()
        docs = self.head.apply(empty, pa.array([], pa.int64()), self.decisions).kept if self.head else empty
        for _, stage in self.maps:
            docs = stage.process(docs).kept
        return docs.schema


class _Collector:
    """The rows this pass collects for the global stage after it (its `collect` phase), timed and counted."""

    def __init__(self, segment: Segment, job: TaskJob, layout: RunLayout):
        self.spec = segment.tail
        self.stage: GlobalStage = build_stage(self.spec, job.context)
        self.path = collected_part(layout, self.spec.key, job.task_index)
        self.writer: AtomicParquetWriter | None = None
        # A producer keeps every document: it is counted here, as no pass applies it.
        self.counter = StageCounter()

    def add(self, docs: pa.Table, ordinals: pa.Array) -> None:
        started = time.perf_counter()
        rows = self.stage.collect(docs, ordinals)
        if self.stage.partition_column:
            rows = with_partitions(rows, self.stage.partition_column, self.stage.partitions)
        if self.writer is None:
            self.writer = AtomicParquetWriter(self.path, rows.schema)
        if self.stage.partition_column:
            # One row group per partition and batch: a partition's finish then reads only its own row groups
            # (Parquet statistics), from one file per task rather than tasks × partitions small files.
            bounds = np.flatnonzero(np.diff(rows.column("partition").to_numpy(), prepend=-1, append=-1))
            for start, end in zip(bounds[:-1], bounds[1:]):
                self.writer.write(rows.slice(start, end - start))
        else:
            self.writer.write(rows)
        seconds = time.perf_counter() - started
        if self.stage.applies:
            self.counter.seconds += seconds
        else:
            self.counter.add_kept(docs, seconds)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def with_partitions(rows: pa.Table, column: str, partitions: int) -> pa.Table:
    """The rows with a `partition` column (their hash column modulo `partitions`), sorted by it (stably)."""
    partition = pa.array(np.mod(rows.column(column).to_numpy(), partitions), pa.int32())
    rows = rows.append_column("partition", partition)
    return rows.take(pc.sort_indices(partition)) if rows.num_rows else rows


@dataclass(frozen=True)
class FinishJob:
    """One part of one step of a global stage's finish (a partition of a partitioned finish), run as a task on the
    executor (picklable)."""

    run_dir: str
    stage: StageSpec
    recipe_dir: str
    part: int
    collected: list[str]
    step: str = "partition"

    def marker(self, layout: RunLayout) -> Path:
        return layout.stage_work(self.stage.key) / "finished" / f"{self.step}-{self.part:05d}.json"


def run_finish(job: FinishJob, report: Callable[[int], None]) -> dict[str, Any]:
    """Run one part of a finish; its marker, written last, says it is done (a retry after that returns it)."""
    layout = RunLayout(job.run_dir)
    marker = job.marker(layout)
    if marker.is_file():
        return read_json(marker)
    started = time.perf_counter()
    stage = build_stage(job.stage, RunContext(Path(job.run_dir), Path(job.recipe_dir)))
    stage.run_step(job.step, job.part, [Path(f) for f in job.collected], layout.stage_work(job.stage.key))
    result = {"step": job.step, "part": job.part, "seconds": round(time.perf_counter() - started, 3)}
    write_json(marker, result)
    report(1)
    return result


def _task_outputs(layout: RunLayout, segment: Segment, task_index: int, delivered_only: bool = False) -> list[Path]:
    """Every file a task of the segment writes (besides its marker); delivered_only: those the run delivers
    (removed and quarantined rows, kept documents of the last pass), not the parts the next pass or step reads."""
    paths = [layout.removed(key) / part_name(task_index) for key in segment.stage_keys]
    if segment.writes_documents and (segment.final or not delivered_only):
        paths.append(task_output(layout, segment, task_index))
    if segment.source is None:
        paths.append(layout.quarantine / part_name(task_index))
    if segment.tail and not delivered_only:
        paths.append(collected_part(layout, segment.tail.key, task_index))
    return paths


def _clear_task_outputs(layout: RunLayout, segment: Segment, task_index: int) -> None:
    """A task that is redone starts from nothing, so no half-finished earlier attempt can mix in."""
    for path in _task_outputs(layout, segment, task_index):
        path.unlink(missing_ok=True)


def _upload_delivered(job: TaskJob, layout: RunLayout, segment: Segment) -> None:
    """Upload what the task delivers to the run's object storage, before its marker: the driver's publication then
    finds them there, recorded, and uploads only what the finishes wrote (so no single machine moves the data)."""
    from refinery.pipelines.engine.publish import record_uploaded

    files = [p for p in _task_outputs(layout, segment, job.task_index, delivered_only=True) if p.is_file()]
    record_uploaded(layout, job.publish_to, files, f"segment-{job.segment}-task-{job.task_index:05d}")


def run_task(job: TaskJob, report: Callable[[int], None]) -> dict[str, Any]:
    """Run one task of one segment; `report(n)` is called with the number of records read per batch."""
    layout = RunLayout(job.run_dir)
    marker_path = layout.segment_done(job.segment, job.task_index)
    if marker_path.is_file():
        # A retry of an attempt that completed, whose worker died before the executor had its result: the
        # outputs are whole, and clearing them now could leave a marker without its files if the driver died too.
        return read_json(marker_path)
    segment = plan_segments(job.stages)[job.segment]
    _clear_task_outputs(layout, segment, job.task_index)
    chain = _Chain(segment, job, layout)
    collector = _Collector(segment, job, layout) if segment.tail else None
    input_schema = job.document_schema if segment.source is None else pq.read_schema(
        _input_part(job, layout, segment))
    output = task_output(layout, segment, job.task_index)
    kept_writer = AtomicParquetWriter(output, chain.output_schema(input_schema)) if segment.writes_documents else None
    removed = _RemovedWriters(layout, job.task_index)
    quarantine: AtomicParquetWriter | None = None
    read_counter = StageCounter()
    rows_in = rows_out = 0

    for batch in _batches(job, layout, segment):
        report(batch.records)
        read_counter.add_read(batch)
        if batch.quarantined.num_rows:
            if quarantine is None:
                quarantine = AtomicParquetWriter(layout.quarantine / part_name(job.task_index), QUARANTINE_SCHEMA)
            quarantine.write(batch.quarantined)
        docs = chain.run(batch.documents, _ordinals(job.task_index, rows_in, batch.documents.num_rows), removed.write)
        rows_in += batch.documents.num_rows
        if collector is not None:
            collector.add(docs, _ordinals(job.task_index, rows_out, docs.num_rows))
        rows_out += docs.num_rows
        if kept_writer is not None:
            kept_writer.write(docs)

    for writer in (kept_writer, quarantine, collector):
        if writer is not None:
            writer.close()
    removed.close()
    stats = {key: counter.to_dict() for key, counter in chain.counters.items()}
    if segment.source is None:
        stats["read"] = read_counter.to_dict()
    if collector is not None:
        stats[collector.spec.key] = collector.counter.to_dict()
    # The worker's peak memory so far (Linux reports KiB): benchmarks read it to show memory stays flat.
    peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    marker = {"task": job.task_index, "kept": rows_out, "stats": stats, "worker_peak_rss_mb": peak_rss_mb}
    if job.publish_to is not None:
        _upload_delivered(job, layout, segment)
    write_json(marker_path, marker)
    return marker

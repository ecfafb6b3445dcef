"""Parquet files: split by row groups so a large file feeds several workers."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow.parquet as pq

from refinery.corpora.readers import register
from refinery.corpora.readers.base import DEFAULT_BATCH_ROWS, FieldOptions, ReadBatch, Reader, ReadTask, RecordBuilder
from refinery.corpora.readers.rows import add_rows


@register
class ParquetReader(Reader):
    """Parquet files, split by row groups."""

    name = "parquet"
    suffixes = (".parquet",)
    Options = FieldOptions

    def plan(self, path: str, task_size: int, options: FieldOptions) -> list[tuple[int, int | None]]:
        """Group consecutive row groups into tasks of about task_size (uncompressed) bytes."""
        metadata = pq.ParquetFile(path).metadata
        ranges: list[tuple[int, int | None]] = []
        first, size = 0, 0
        for index in range(metadata.num_row_groups):
            size += metadata.row_group(index).total_byte_size
            if size >= task_size:
                ranges.append((first, index + 1))
                first, size = index + 1, 0
        if first < metadata.num_row_groups or not ranges:
            ranges.append((first, metadata.num_row_groups))
        return ranges

    def read(self, task: ReadTask, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[ReadBatch]:
        parquet = pq.ParquetFile(task.path)
        end = parquet.metadata.num_row_groups if task.end is None else task.end
        row_groups = list(range(task.start, end))
        first_row = sum(parquet.metadata.row_group(i).num_rows for i in range(task.start))
        builder = RecordBuilder(task)
        batches = parquet.iter_batches(batch_size=batch_rows, row_groups=row_groups) if row_groups else []
        yield from add_rows(builder, batches, first_row)

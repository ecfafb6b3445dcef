"""Parquet files: split by row groups so a large file feeds several workers.

Damage costs only what it touches: a file whose footer cannot be read (cut, footer missing, not Parquet, empty)
is planned as one task and quarantined whole with the reason, and a row group whose pages do not decode is
quarantined from its first unread row on, while the rows before it and the other row groups are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.corpora import storage
from refinery.corpora.readers import register
from refinery.corpora.readers.base import (
    DEFAULT_BATCH_ROWS,
    MAX_RAW,
    FieldOptions,
    ReadBatch,
    Reader,
    ReadTask,
)
from refinery.corpora.readers.builder import RecordBuilder
from refinery.corpora.readers.rows import add_rows

# What pyarrow raises on bytes that are not the Parquet they claim to be (OSError: "Corrupt snappy compressed
# data", "Couldn't deserialize thrift"; ArrowInvalid: "Parquet magic bytes not found in footer").
_DAMAGE = (OSError, pa.ArrowException)
_MAGIC = b"PAR1"


@contextmanager
def _opened(path: str) -> Iterator[pq.ParquetFile | str]:
    """The file opened, or what is wrong with it (the reason it is quarantined). pyarrow opens a local file itself
    (natively, faster than through a Python file object); a remote one is handed to it as a file from storage."""
    local = storage.local_path(path)
    with nullcontext(local) if local is not None else storage.open_input(path) as source:
        try:
            parquet = pq.ParquetFile(source)
        except _DAMAGE as err:
            yield _damage(path, err)
        else:
            yield parquet


def _damage(path: str, err: Exception) -> str:
    """Why pyarrow could not open the file: the reason it is quarantined with."""
    size = storage.size(path)
    if size == 0:
        return "not_parquet: the file is empty (0 bytes)"
    if storage.read_prefix(path, len(_MAGIC)) != _MAGIC:
        return f"not_parquet: the file ({size} bytes) does not start with Parquet's magic bytes PAR1"
    return f"corrupt_parquet: the footer of the {size}-byte file does not read ({err})"


@register
class ParquetReader(Reader):
    """Parquet files, split by row groups."""

    name = "parquet"
    suffixes = (".parquet",)
    Options = FieldOptions

    def plan(self, path: str, task_size: int, options: FieldOptions) -> list[tuple[int, int | None]]:
        """Group consecutive row groups into tasks of about task_size (uncompressed) bytes; a file whose footer
        does not read is one task, which quarantines it."""
        with _opened(path) as parquet:
            if isinstance(parquet, str):
                return [(0, None)]
            metadata = parquet.metadata
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
        builder = RecordBuilder(task)
        with _opened(task.path) as parquet:
            if isinstance(parquet, str):
                builder.quarantine(0, parquet, storage.read_prefix(task.path, MAX_RAW))
                yield builder.flush()
                return
            metadata = parquet.metadata
            end = metadata.num_row_groups if task.end is None else task.end
            first = sum(metadata.row_group(i).num_rows for i in range(task.start))
            yield from add_rows(builder, _row_groups(parquet, task.path, range(task.start, end), first, builder,
                                                     batch_rows))


def _row_groups(parquet: pq.ParquetFile, path: str, groups: range, first: int, builder: RecordBuilder,
                batch_rows: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(first row, batch) of the row groups, read one group at a time so that damage in one is told apart from
    the others: from a batch that does not decode on, the group is quarantined as one record (its position the
    first unread row, its raw bytes the group's column chunks)."""
    for group in groups:
        rows = parquet.metadata.row_group(group).num_rows
        read = 0
        try:
            for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=[group]):
                yield first + read, batch
                read += batch.num_rows
        except _DAMAGE as err:
            reason = (f"corrupt_parquet: row group {group} (rows {first}-{first + rows - 1}) does not decode from "
                      f"row {first + read} on: {err}")
            builder.quarantine(first + read, reason, _row_group_bytes(parquet, path, group))
        first += rows


def _row_group_bytes(parquet: pq.ParquetFile, path: str, group: int) -> bytes:
    """The bytes of a row group's column chunks as they lie in the file (at most MAX_RAW)."""
    columns = [parquet.metadata.row_group(group).column(i) for i in range(parquet.metadata.num_columns)]
    starts = [c.dictionary_page_offset if c.has_dictionary_page and c.dictionary_page_offset else c.data_page_offset
              for c in columns]
    start, end = min(starts), max(s + c.total_compressed_size for s, c in zip(starts, columns))
    with storage.open_input(path) as file:
        file.seek(start)
        return file.read(min(end - start, MAX_RAW))

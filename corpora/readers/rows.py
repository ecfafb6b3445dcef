"""Feeding columnar rows (Parquet, Arrow datasets) into a RecordBuilder."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa

from refinery.corpora.readers.base import InputError, ReadBatch
from refinery.corpora.readers.builder import RecordBuilder


def numbered(batches: Iterable[pa.RecordBatch], first_row: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(row number of its first row, batch) for consecutive batches that start at row `first_row`."""
    row = first_row
    for batch in batches:
        yield row, batch
        row += batch.num_rows


def add_rows(builder: RecordBuilder, batches: Iterable[tuple[int, pa.RecordBatch]]) -> Iterator[ReadBatch]:
    """Turn Arrow record batches, each with the row number of its first row, into ReadBatches; the row number is
    each record's stable position."""
    for first, batch in batches:
        if builder.text_field not in batch.schema.names:
            raise InputError(
                f"{builder.task.path} has no column '{builder.text_field}' (columns: "
                f"{', '.join(batch.schema.names)}); set `text_field:` on this input in the recipe"
            )
        try:
            records = batch.to_pylist()
        except UnicodeDecodeError:  # a string column holds bytes that are not UTF-8: find the rows, keep the rest
            records = [_row_or_quarantine(builder, batch, i, first + i) for i in range(batch.num_rows)]
        for row, record in enumerate(records, first):
            if record is not None:
                builder.add(record, row)
        yield builder.flush()
    yield builder.flush()


def _row_or_quarantine(builder: RecordBuilder, batch: pa.RecordBatch, index: int, row: int) -> dict | None:
    """Row `index` of the batch as a dict, or None once it is quarantined with the invalid column's own bytes."""
    one = batch.slice(index, 1)
    try:
        return one.to_pylist()[0]
    except UnicodeDecodeError as err:
        for name, column in zip(one.schema.names, one.columns):
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                binary = pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()
                raw = column.view(binary)[0].as_py()
                try:
                    (raw or b"").decode("utf-8")
                except UnicodeDecodeError as bad:
                    builder.quarantine(row, f"invalid_utf8: byte {bad.start} of column '{name}'", raw)
                    return None
        builder.quarantine(row, f"invalid_utf8: {err.reason} in a nested column", None)
        return None

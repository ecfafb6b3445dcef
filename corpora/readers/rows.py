"""Feeding columnar rows (Parquet, Arrow datasets) into a RecordBuilder."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa

from refinery.corpora.readers.base import InputError, ReadBatch, RecordBuilder


def add_rows(builder: RecordBuilder, batches: Iterable[pa.RecordBatch], first_row: int) -> Iterator[ReadBatch]:
    """Turn Arrow record batches into ReadBatches; the row number is each record's stable position."""
    row = first_row
    for batch in batches:
        if builder.text_field not in batch.schema.names:
            raise InputError(
                f"{builder.task.path} has no column '{builder.text_field}' (columns: "
                f"{', '.join(batch.schema.names)}); set `text_field:` on this input in the recipe"
            )
        for record in batch.to_pylist():
            builder.add(record, row)
            row += 1
        yield builder.flush()
    yield builder.flush()

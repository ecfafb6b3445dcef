"""JSON Lines (plain, .gz, .zst): one JSON object per line; plain files split into byte ranges."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from corpora.readers.base import (
    DEFAULT_BATCH_ROWS,
    ReadBatch,
    ReadTask,
    RecordBuilder,
    byte_ranges,
    is_compressed,
    iter_lines,
)


def plan(path: str, task_size: int) -> list[tuple[int, int | None]]:
    # A compressed stream cannot be entered in the middle, so it is one task.
    if is_compressed(path):
        return [(0, None)]
    return byte_ranges(os.path.getsize(path), task_size)


def read(task: ReadTask, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[ReadBatch]:
    builder = RecordBuilder(task)
    for offset, line in iter_lines(task.path, task.start, task.end):
        if not line.strip():
            continue  # blank lines separate nothing in JSONL; they are not records
        try:
            record = json.loads(line)
        except UnicodeDecodeError as err:
            builder.quarantine(offset, f"invalid_utf8: byte {err.start} of the line", line)
        except json.JSONDecodeError as err:
            builder.quarantine(offset, f"malformed_json: {err.msg} at column {err.colno}", line)
        else:
            builder.add(record, offset, line)
        if len(builder) >= batch_rows:
            yield builder.flush()
    yield builder.flush()

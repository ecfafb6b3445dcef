"""Plain-text files: one document per file, per line, or per blank-line-separated paragraph."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from corpora.readers.base import (
    DEFAULT_BATCH_ROWS,
    InputError,
    ReadBatch,
    ReadTask,
    RecordBuilder,
    byte_ranges,
    is_compressed,
    iter_lines,
    open_binary,
)

UNITS = ("file", "line", "paragraph")
_PARAGRAPH_BREAK = re.compile(rb"\n[ \t\r]*\n")


def plan(path: str, task_size: int, unit: str = "file") -> list[tuple[int, int | None]]:
    if unit not in UNITS:
        raise InputError(f"unknown text unit '{unit}' for {path}: use one of {', '.join(UNITS)}")
    # Only line units can start mid-file; files and paragraphs are read whole.
    if unit != "line" or is_compressed(path):
        return [(0, None)]
    return byte_ranges(os.path.getsize(path), task_size)


def _decode(raw: bytes) -> str:
    """UTF-8 (a leading BOM dropped), with Windows line endings made Unix ones."""
    return raw.decode("utf-8-sig").replace("\r\n", "\n")


def _units(task: ReadTask) -> Iterator[tuple[int, bytes]]:
    unit = task.options.get("unit", "file")
    if unit == "line":
        yield from iter_lines(task.path, task.start, task.end)
        return
    with open_binary(task.path) as stream:
        data = stream.read()
    if unit == "file":
        yield 0, data
        return
    start = 0
    for match in _PARAGRAPH_BREAK.finditer(data):
        yield start, data[start : match.start()]
        start = match.end()
    yield start, data[start:]


def read(task: ReadTask, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[ReadBatch]:
    builder = RecordBuilder(task)
    for offset, raw in _units(task):
        if not raw.strip():
            continue
        try:
            text = _decode(raw)
        except UnicodeDecodeError as err:
            builder.quarantine(offset, f"invalid_utf8: byte {err.start} of the record", raw)
        else:
            builder.add_text(text if task.options.get("unit", "file") == "file" else text.rstrip("\r\n"), offset)
        if len(builder) >= batch_rows:
            yield builder.flush()
    yield builder.flush()

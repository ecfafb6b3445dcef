"""Plain-text files: one document per file, per line, or per blank-line-separated paragraph."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from refinery.corpora.readers.base import (
    DEFAULT_BATCH_ROWS,
    DamagedStream,
    InputError,
    ReadBatch,
    ReadTask,
    RecordBuilder,
    byte_ranges,
    is_compressed,
    iter_lines,
    read_whole,
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
    """(position, raw bytes) of each document; raises DamagedStream after the last intact one."""
    unit = task.options.get("unit", "file")
    if unit == "line":
        yield from iter_lines(task.path, task.start, task.end)
        return
    data, damage = read_whole(task.path)
    if unit == "file":
        if damage is None:  # a file cut short is not the document it claims to be
            yield 0, data
            return
        raise DamagedStream(0, data, damage.detail)
    start = 0
    for match in _PARAGRAPH_BREAK.finditer(data):
        yield start, data[start : match.start()]
        start = match.end()
    if damage is not None:  # the last paragraph may be cut short
        raise DamagedStream(start, data[start:], damage.detail)
    yield start, data[start:]


def read(task: ReadTask, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[ReadBatch]:
    builder = RecordBuilder(task)
    try:
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
    except DamagedStream as damage:
        builder.quarantine(damage.position, f"truncated_stream: {damage.detail}", damage.partial)
    yield builder.flush()

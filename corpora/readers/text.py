"""Plain-text files: one document per file, per line, or per blank-line-separated paragraph."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from refinery.corpora.readers import register
from refinery.corpora.readers.base import (
    DEFAULT_BATCH_ROWS,
    DamagedStream,
    ReadBatch,
    Reader,
    ReaderOptions,
    ReadTask,
    RecordBuilder,
    byte_ranges,
    is_compressed,
    iter_lines,
    read_whole,
)

_PARAGRAPH_BREAK = re.compile(rb"\n[ \t\r]*\n")


class TextOptions(ReaderOptions):
    unit: Literal["file", "line", "paragraph"] = Field(
        "file", description="what one document is: a whole file, a line, or a blank-line-separated paragraph")


def _decode(raw: bytes) -> str:
    """UTF-8 (a leading BOM dropped), with Windows line endings made Unix ones."""
    return raw.decode("utf-8-sig").replace("\r\n", "\n")


def _units(task: ReadTask, unit: str) -> Iterator[tuple[int, bytes]]:
    """(position, raw bytes) of each document; raises DamagedStream after the last intact one."""
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


@register
class TextReader(Reader):
    """Plain text: one document per file, line or paragraph."""

    name = "text"
    suffixes = (".txt", ".txt.gz", ".txt.zst", ".txt.bz2", ".text")
    Options = TextOptions

    def plan(self, path: str, task_size: int, options: TextOptions) -> list[tuple[int, int | None]]:
        # Only line units can start mid-file; files and paragraphs are read whole.
        if options.unit != "line" or is_compressed(path):
            return [(0, None)]
        return byte_ranges(os.path.getsize(path), task_size)

    def read(self, task: ReadTask, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[ReadBatch]:
        unit = self.options_of(task).unit
        builder = RecordBuilder(task)
        try:
            for offset, raw in _units(task, unit):
                if not raw.strip():
                    continue
                try:
                    text = _decode(raw)
                except UnicodeDecodeError as err:
                    builder.quarantine(offset, f"invalid_utf8: byte {err.start} of the record", raw)
                else:
                    builder.add_text(text if unit == "file" else text.rstrip("\r\n"), offset)
                if len(builder) >= batch_rows:
                    yield builder.flush()
        except DamagedStream as damage:
            builder.quarantine(damage.position, f"truncated_stream: {damage.detail}", damage.partial)
        yield builder.flush()

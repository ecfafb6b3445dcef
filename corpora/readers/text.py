"""Plain-text files: one document per file, per line, or per blank-line-separated paragraph."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from refinery.corpora import storage
from refinery.corpora.readers import register
from refinery.corpora.readers.base import (
    DEFAULT_BATCH_ROWS,
    Damaged,
    ReadBatch,
    Reader,
    ReaderOptions,
    ReadTask,
    is_compressed,
)
from refinery.corpora.readers.builder import RecordBuilder
from refinery.corpora.readers.lines import byte_ranges, iter_lines, read_whole

_PARAGRAPH_BREAK = re.compile(rb"\n[ \t\r]*\n")


class TextOptions(ReaderOptions):
    unit: Literal["file", "line", "paragraph"] = Field(
        "file", description="what one document is: a whole file, a line, or a blank-line-separated paragraph")


def _decode(raw: bytes) -> str:
    """UTF-8 (a leading BOM dropped), with Windows line endings made Unix ones."""
    return raw.decode("utf-8-sig").replace("\r\n", "\n")


def _units(task: ReadTask, unit: str) -> Iterator[tuple[int, bytes] | Damaged]:
    """(position, raw bytes) of each document, and a Damaged item for each damage of a compressed stream. A
    whole-file unit ends at the first damage: a file cut short is not the document it claims to be, and the last
    paragraph before the damage may be cut short."""
    if unit == "line":
        yield from iter_lines(task.path, task.start, task.end)
        return
    data, damage = read_whole(task.path)
    if unit == "file":
        yield (0, data) if damage is None else Damaged(0, damage.reason, data)
        return
    start = 0
    for match in _PARAGRAPH_BREAK.finditer(data):
        yield start, data[start : match.start()]
        start = match.end()
    yield (start, data[start:]) if damage is None else Damaged(start, damage.reason, data[start:] or damage.raw)


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
        return byte_ranges(storage.size(path), task_size)

    def read(self, task: ReadTask, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[ReadBatch]:
        unit = self.options_of(task).unit
        builder = RecordBuilder(task)
        for item in _units(task, unit):
            if type(item) is Damaged:
                builder.quarantine(item.position, item.reason, item.raw)
                continue
            offset, raw = item
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
        yield builder.flush()

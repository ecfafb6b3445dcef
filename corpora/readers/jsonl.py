"""JSON Lines (plain, .gz, .zst): one JSON object per line; plain files split into byte ranges.

Lines are parsed with orjson (about twice as fast as `json` on long texts, and it reads bytes without a
decode step). The standard `json` module stays the reference: wherever orjson refuses a line, or may
have read it differently, the line is parsed again with `json`, so what is kept, what is quarantined
and every quarantine reason are exactly those of the `json` reader.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from refinery.corpora import storage
from refinery.corpora.readers import register
from refinery.corpora.readers.base import (
    DEFAULT_BATCH_ROWS,
    Damaged,
    FieldOptions,
    ReadBatch,
    Reader,
    ReadTask,
    is_compressed,
)
from refinery.corpora.readers.builder import RecordBuilder
from refinery.corpora.readers.lines import byte_ranges, iter_lines

# orjson reads an integer literal beyond 64 bits as a float, where `json` keeps it exact; every float
# this large is therefore read again by `json` (a genuine float literal comes out the same either way).
_HUGE = float(2**63)


def _has_huge_float(container: dict | list) -> bool:
    for value in container.values() if type(container) is dict else container:
        kind = type(value)
        if kind is float:
            if not -_HUGE < value < _HUGE:
                return True
        elif (kind is dict or kind is list) and _has_huge_float(value):
            return True
    return False


def _loads(line: bytes) -> Any:
    """The record `json.loads(line)` gives (or its error), found with orjson where the two agree."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        # orjson is stricter (NaN, lone surrogates, a UTF-8 BOM, ...): json decides, and its error is the reason.
        return json.loads(line)
    kind = type(record)
    if kind is dict or kind is list:
        return json.loads(line) if _has_huge_float(record) else record
    return json.loads(line) if kind is float and not -_HUGE < record < _HUGE else record


Quarantine = Callable[[int, str, "bytes | None"], None]


def parsed_lines(task: ReadTask, quarantine: Quarantine) -> Iterator[tuple[int, bytes, Any]]:
    """(offset, raw line, parsed value) of every JSON line of a task. Lines that are not JSON, and the damage
    of a compressed stream (with the line it cut short), go to `quarantine(position, reason, raw)` instead."""
    for item in iter_lines(task.path, task.start, task.end):
        if type(item) is Damaged:  # the lines before the damage were yielded; those after it follow
            quarantine(item.position, item.reason, item.raw)
            continue
        offset, line = item
        if not line or line.isspace():
            continue  # blank lines separate nothing in JSONL; they are not records
        try:
            record = _loads(line)
        except UnicodeDecodeError as err:
            quarantine(offset, f"invalid_utf8: byte {err.start} of the line", line)
        except json.JSONDecodeError as err:
            quarantine(offset, f"malformed_json: {err.msg} at column {err.colno}", line)
        except RecursionError:
            quarantine(offset, "malformed_json: nested too deeply to parse", line)
        else:
            yield offset, line, record


@register
class JsonlReader(Reader):
    """JSON Lines: one JSON object per line, plain, gzip or zstd."""

    name = "jsonl"
    # `.json.gz` is JSON Lines: a whole-file JSON array is not worth compressing separately (plain `.json`
    # is an instruction set, corpora.readers.instructions).
    suffixes = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".jsonl.zst", ".jsonl.zstd", ".json.gz")
    Options = FieldOptions

    def plan(self, path: str, task_size: int, options: FieldOptions) -> list[tuple[int, int | None]]:
        # A compressed stream cannot be entered in the middle, so it is one task.
        if is_compressed(path):
            return [(0, None)]
        return byte_ranges(storage.size(path), task_size)

    def read(self, task: ReadTask, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[ReadBatch]:
        builder = RecordBuilder(task)
        for offset, line, record in parsed_lines(task, builder.quarantine):
            builder.add(record, offset, line)
            if len(builder) >= batch_rows:
                yield builder.flush()
        yield builder.flush()

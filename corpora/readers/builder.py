"""RecordBuilder: the one place that turns parsed records into Document and quarantine rows, so that every reader
of dict-like records (JSON Lines, Parquet, datasets; WARC's builder extends it) follows the same rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from refinery.corpora.readers.base import ReadBatch, ReadTask
from refinery.corpora.readers.fields import TypedFields, declared_schema
from refinery.corpora.records import document_table, encode_meta, position_id, quarantine_table


class RecordBuilder:
    """Collects records as Python values and turns them into Document and quarantine tables.

    Shared by every reader of dict-like records (JSONL lines, Parquet rows, dataset rows), so the rules
    are the same everywhere: text must be a non-null string, an own `id` wins over the position id,
    `url` becomes a column, and every other field goes into `meta`.
    """

    def __init__(self, task: ReadTask):
        self.task = task
        self.file_name = Path(task.path).name
        # Readers without these options (plain text, WARC) get the defaults.
        self.text_field: str = getattr(task.options, "text_field", "text")
        self.id_field: str = getattr(task.options, "id_field", "id")
        self.typed = TypedFields(getattr(task.options, "fields", {}))
        self._reset()

    def _reset(self) -> None:
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.urls: list[str | None] = []
        self.metas: list[str | None] = []
        self.positions: list[int] = []
        self.bad: list[tuple[str, str, str, int, str, bytes | None]] = []
        self.records = 0
        # The input bytes of the documents that may hold a lone surrogate (see _table_without_unencodable), by row.
        self.raws: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self.ids) + len(self.bad)

    def quarantine(self, position: int, reason: str, raw: bytes | None, record_id: str | None = None) -> None:
        """Quarantine one record; its id is the record's own (e.g. a WARC-Record-ID) or its position id."""
        self.records += 1
        pid = record_id or position_id(self.file_name, position)
        self.bad.append((pid, self.task.source, self.task.path, position, reason, raw))

    def add(self, record: Any, position: int, raw: bytes | None = None) -> None:
        """Add one parsed record; anything that is not a usable document is quarantined with a reason."""
        if not isinstance(record, dict):
            self.quarantine(position, f"not_an_object: got {type(record).__name__}", raw)
            return
        text_field, id_field = self.text_field, self.id_field
        text = record.get(text_field)
        if text is None:
            self.quarantine(position, f"missing_text: no '{text_field}' field", raw)
            return
        if not isinstance(text, str):
            self.quarantine(position, f"text_not_string: '{text_field}' is {type(text).__name__}", raw)
            return
        self.records += 1
        # Only a JSON escape (\ud800) makes a lone surrogate; a byte search finds the few lines with one.
        if raw is not None and (b"\\ud" in raw or b"\\uD" in raw):
            self.raws[len(self.ids)] = raw
        self.positions.append(position)
        own_id = record.get(id_field)
        self.ids.append(str(own_id) if own_id is not None else position_id(self.file_name, position))
        self.texts.append(text)
        url = record.get("url")
        url_is_str = isinstance(url, str)
        self.urls.append(url if url_is_str else None)
        # Every field but text, id and url goes to meta; a url that is not a string stays there too.
        extras = None
        for key in record:
            if key != text_field and key != id_field and key != "url":
                extras = {k: v for k, v in record.items() if k not in (text_field, id_field, "url")}
                break
        if url is not None and not url_is_str:
            extras = extras or {}
            extras["url"] = url
        self.metas.append(encode_meta(self.typed.take(extras)))

    def add_text(self, text: str, position: int) -> None:
        """Add a plain-text record (no fields): position id, no url, no meta."""
        self.records += 1
        self.positions.append(position)
        self.ids.append(position_id(self.file_name, position))
        self.texts.append(text)
        self.urls.append(None)
        self.metas.append(self.typed.take(None))

    def flush(self) -> ReadBatch:
        """Return what was collected as tables and start afresh."""
        try:
            docs = document_table(self.ids, self.texts, self.task.source, self.urls, self.metas)
            rows = None
        except (pa.ArrowInvalid, UnicodeEncodeError):
            docs, rows = self._table_without_unencodable()
        if self.typed.declared:
            docs = pa.Table.from_arrays(docs.columns + self.typed.arrays(rows),
                                        schema=pa.schema([*docs.schema, *declared_schema(self.typed.declared)]))
        batch = ReadBatch(docs, quarantine_table(self.bad), self.records)
        self._reset()
        return batch

    def _table_without_unencodable(self) -> tuple[pa.Table, list[int]]:
        # JSON escapes can produce lone surrogates ("\ud800"), which are not valid UTF-8: quarantine them.
        keep = []
        for i, (text, meta) in enumerate(zip(self.texts, self.metas)):
            try:
                text.encode("utf-8")
                (meta or "").encode("utf-8")
                self.ids[i].encode("utf-8")
                keep.append(i)
            except UnicodeEncodeError:
                position = self.positions[i]
                # The input's own bytes; a record given without them (no reader does that today) keeps its text.
                raw = self.raws.get(i) or text.encode("utf-8", "surrogatepass")
                pid = position_id(self.file_name, position)
                reason = "invalid_unicode: lone surrogate"
                self.bad.append((pid, self.task.source, self.task.path, position, reason, raw))
        return document_table(
            [self.ids[i] for i in keep],
            [self.texts[i] for i in keep],
            self.task.source,
            [self.urls[i] for i in keep],
            [self.metas[i] for i in keep],
        ), keep


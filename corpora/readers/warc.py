"""WARC and WET files, plain or gzip: HTML responses and WET conversions become documents.

Refinery frames the records (corpora.readers.warc_framing), FastWARC parses them. Neither FastWARC nor warcio
reports damage: on a clipped record they hand back a short body, past a wrong Content-Length they stop with
an exception or skip silently to the next header (docs/performance.md). Every well-framed record goes to
`fastwarc.WarcRecord.from_reader`; what does not frame is quarantined with a reason and its bytes.

Documents: HTTP `response` records whose payload is HTML (`text` holds the decoded HTML; the `extract` stage
turns it into text) and WET `conversion` records (plain text). Everything else is counted in
`ReadBatch.skipped` by reason: the record type (warcinfo, request, metadata, revisit, resource,
continuation, unknown_type), or for a response not_http, non_2xx_status, not_html, empty. WAT files are
metadata records only, so they are read (and wholly skipped) too.

`position` (in the quarantine) is the byte offset in the *decompressed* stream: it is exact for every
layout, also for WET files gzipped as one stream, where no compressed offset of a record exists
(`zcat FILE | tail -c +$((position + 1))` shows the spot).
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Iterator
from datetime import datetime

import pyarrow as pa
from fastwarc.warc import WarcRecord

from refinery.corpora.readers import register
from refinery.corpora.readers.base import DEFAULT_BATCH_ROWS, ReadBatch, Reader, ReadTask, RecordBuilder
from refinery.corpora.readers.charset import decode_page
from refinery.corpora.readers.warc_framing import Damaged, Framed, frame_records
from refinery.corpora.records import DOCUMENT_SCHEMA, document_table, encode_meta, position_id, quarantine_table

SCHEMA = pa.schema(
    list(DOCUMENT_SCHEMA)
    + [
        pa.field("content_type", pa.string()),  # MIME type without parameters: text/html, text/plain (WET)
        pa.field("crawl_date", pa.timestamp("us", tz="UTC")),  # WARC-Date
        pa.field("warc_record_id", pa.string()),
    ]
)

HTML_TYPES = ("text/html", "application/xhtml+xml")
# Record types that are never documents; the count of each is reported under its own name.
_SKIPPED_TYPES = ("warcinfo", "request", "metadata", "revisit", "resource", "continuation")
_SNIFF_HTML = re.compile(rb"\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)[\s>]", re.IGNORECASE | re.DOTALL)


class _Batch(RecordBuilder):
    """RecordBuilder's lists plus the WARC columns and skip counts of one task, turned into a ReadBatch on flush."""

    def _reset(self) -> None:
        super()._reset()
        self.content_types: list[str] = []
        self.dates: list[datetime | None] = []
        self.record_ids: list[str | None] = []
        self.skipped: Counter[str] = Counter()

    def add(self, record: WarcRecord, position: int, text: str, content_type: str, extras: dict) -> None:
        headers = record.headers
        self.records += 1
        self.positions.append(position)
        self.ids.append(record.record_id or position_id(self.file_name, position))
        self.texts.append(text)
        self.urls.append(_target_uri(headers.get("WARC-Target-URI")))
        self.content_types.append(content_type)
        date = record.record_date
        self.dates.append(date)
        if date is None and headers.get("WARC-Date"):
            extras["warc_date"] = headers.get("WARC-Date")  # unparsable (ClueWeb09 writes "2008-10-294T…")
        if headers.get("WARC-Truncated"):
            extras["warc_truncated"] = headers.get("WARC-Truncated")  # the crawler cut the payload short
        self.metas.append(encode_meta(extras))
        self.record_ids.append(record.record_id)

    def flush(self) -> ReadBatch:
        docs = document_table(self.ids, self.texts, self.task.source, self.urls, self.metas)
        extra = [
            pa.array(self.content_types, pa.string()),
            pa.array(self.dates, SCHEMA.field("crawl_date").type),
            pa.array(self.record_ids, pa.string()),
        ]
        docs = pa.Table.from_arrays(docs.columns + extra, schema=SCHEMA)
        batch = ReadBatch(docs, quarantine_table(self.bad), self.records, dict(self.skipped))
        self._reset()
        return batch


def _target_uri(value: str | None) -> str | None:
    # wget writes WARC-Target-URI as "<http://…>" (the WARC 1.0 grammar, which 1.1 dropped).
    return value.strip().removeprefix("<").removesuffix(">") if value else None


def _mime(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _http_payload(data: bytes) -> tuple[WarcRecord, bytes]:
    """The record with its HTTP headers parsed, and its payload decoded where the headers say so.

    Some crawlers store the payload already decoded but keep `Content-Encoding: gzip` (ClueWeb09 does), or
    keep `Transfer-Encoding: chunked` over a de-chunked body: where decoding fails, the next, lesser decoding
    is tried, down to the payload as stored.
    """
    for decoding in ("all", "transfer"):
        try:
            record = WarcRecord.from_reader(io.BytesIO(data), quirks_mode=True)
            record.parse_http(auto_decode=decoding, quirks_mode=True)
            return record, record.reader.read()
        except OSError:
            continue
    record = WarcRecord.from_reader(io.BytesIO(data), quirks_mode=True)
    record.parse_http(auto_decode="none", quirks_mode=True)
    return record, record.reader.read()


def _html_type(record: WarcRecord, payload: bytes) -> str | None:
    """text/html or application/xhtml+xml when the payload is HTML, from the headers or a look at it."""
    declared = _mime(record.http_content_type)
    if declared in HTML_TYPES:
        return declared
    identified = _mime(record.headers.get("WARC-Identified-Payload-Type"))
    if not declared and identified in HTML_TYPES:
        return identified
    if not declared and _SNIFF_HTML.match(payload, 0, 1024):
        return "text/html"
    return None


def _parse(framed: Framed, batch: _Batch) -> WarcRecord | None:
    """The record's WARC headers parsed, or None once it is quarantined."""
    try:
        return WarcRecord.from_reader(io.BytesIO(framed.data), quirks_mode=True)
    except OSError as err:
        batch.quarantine(framed.position, f"invalid_header: {err}", framed.data, framed.record_id)
        return None


def _add_response(batch: _Batch, framed: Framed) -> None:
    record = _parse(framed, batch)
    if record is None:
        return
    if not record.is_http:  # e.g. a DNS lookup stored as a response
        batch.skipped["not_http"] += 1
        return
    try:
        record, payload = _http_payload(framed.data)
    except OSError as err:
        batch.quarantine(framed.position, f"invalid_http: {err}", framed.data, framed.record_id)
        return
    status = record.http_headers.status_code
    if status is None or not 200 <= status < 300:
        batch.skipped["non_2xx_status"] += 1
        return
    content_type = _html_type(record, payload)
    if content_type is None:
        batch.skipped["not_html"] += 1
        return
    if payload.startswith(b"\x1f\x8b"):
        reason = f"undecodable_content: Content-Encoding {record.http_headers.get('Content-Encoding')} did not decode"
        batch.quarantine(framed.position, reason, framed.data, framed.record_id)
        return
    if not payload.strip():
        batch.skipped["empty"] += 1
        return
    text, codec, how = decode_page(payload, record.http_charset)
    batch.add(record, framed.position, text, content_type, {"charset": codec, "charset_from": how})


def _add_conversion(batch: _Batch, framed: Framed) -> None:
    record = _parse(framed, batch)
    if record is None:
        return
    payload = record.reader.read()
    if not payload.strip():
        batch.skipped["empty"] += 1
        return
    content_type = record.headers.get("Content-Type")
    charset = re.search(r"charset=([^;\s]+)", content_type or "")
    text, codec, how = decode_page(payload, charset.group(1) if charset else None, html=False)
    batch.add(record, framed.position, text, _mime(content_type) or "text/plain", {"charset": codec,
                                                                                  "charset_from": how})


@register
class WarcReader(Reader):
    """WARC, WET and WAT files: HTML responses and WET conversions become documents.

    One task per file (the default plan): gzip members cannot be told apart from the outside and record
    boundaries need a scan. WAT (.warc.wat.gz) holds metadata records only: read as WARC, every record is
    counted as skipped.
    """

    name = "warc"
    suffixes = (".warc", ".warc.gz", ".wet", ".wet.gz", ".wat", ".wat.gz")
    schema = SCHEMA

    def read(self, task: ReadTask, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[ReadBatch]:
        batch = _Batch(task)
        for item in frame_records(task.path):
            if isinstance(item, Damaged):
                batch.quarantine(item.position, item.reason, item.raw, item.record_id)
            elif item.oversized:
                batch.skipped["oversized"] += 1
            elif item.record_type == "response":
                _add_response(batch, item)
            elif item.record_type == "conversion":
                _add_conversion(batch, item)
            else:
                batch.skipped[item.record_type if item.record_type in _SKIPPED_TYPES else "unknown_type"] += 1
            if len(batch) >= batch_rows:
                yield batch.flush()
        yield batch.flush()

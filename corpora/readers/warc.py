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

A page's bytes become text by its declared charset (BOM, HTTP header, `<meta>`), else as valid UTF-8, else by
detection (`decode_page`). Declared labels are read the way browsers read them (the WHATWG Encoding Standard):
`gb2312` means GBK, `iso-8859-1` means windows-1252, `shift_jis` means Microsoft's cp932, and so on; Python's
codecs of the same names are stricter subsets and would fail on pages that browsers show correctly.
"""

from __future__ import annotations

import codecs
import io
import re
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any, NamedTuple

import pyarrow as pa
from fastwarc.warc import WarcRecord

from refinery.corpora.readers import register
from refinery.corpora.readers.base import DEFAULT_BATCH_ROWS, ReadBatch, Reader, ReadTask
from refinery.corpora.readers.builder import RecordBuilder
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


# --- charsets: bytes of a page to text -----------------------------------------------------------------

# Labels whose WHATWG decoder is a superset of the Python codec with the same name.
_WHATWG = {
    **dict.fromkeys(("gb2312", "gbk", "x-gbk", "chinese", "csgb2312", "csiso58gb231280", "gb_2312", "gb_2312-80",
                     "iso-ir-58", "cp936", "ms936", "windows-936", "gb18030"), "gb18030"),
    **dict.fromkeys(("big5", "big5-hkscs", "cn-big5", "csbig5", "x-x-big5"), "big5hkscs"),
    **dict.fromkeys(("shift_jis", "shift-jis", "sjis", "x-sjis", "ms_kanji", "csshiftjis", "windows-31j", "ms932",
                     "cp932"), "cp932"),
    **dict.fromkeys(("euc-kr", "euc_kr", "ks_c_5601-1987", "ks_c_5601-1989", "ksc5601", "korean", "windows-949",
                     "cp949"), "cp949"),
    **dict.fromkeys(("iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1", "l1", "ascii", "us-ascii",
                     "cp819", "ibm819", "windows-1252", "x-cp1252", "cp1252"), "cp1252"),
    **dict.fromkeys(("iso-8859-9", "iso8859-9", "latin5", "l5", "windows-1254", "cp1254"), "cp1254"),
    **dict.fromkeys(("tis-620", "iso-8859-11", "windows-874", "cp874"), "cp874"),
}
# Codecs of one byte per character: a page in any other encoding decodes "without error" in these too.
_SINGLE_BYTE_PREFIXES = ("cp12", "cp874", "iso8859", "latin", "koi8", "mac", "cp437", "cp85", "cp86")

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# <meta charset="x"> and <meta http-equiv="Content-Type" content="text/html; charset=x">, in the page's head.
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:\-]+)""", re.IGNORECASE)
_META_SCAN_BYTES = 8192
# A declared charset may leave a few broken bytes (a cut multi-byte character) and still be the right one.
_MAX_ERRORS_PER_BYTE = 1 / 1000
# Bytes under a UTF-8 label are read as UTF-8 while they hold a valid non-ASCII character per this many invalid
# sequences (see decode_page).
_UTF8_ERRORS_PER_VALID = 10


def python_codec(label: str | None) -> str | None:
    """The Python codec for a charset label as a browser reads it, or None for an unknown label."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    if name in _WHATWG:
        return _WHATWG[name]
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _is_single_byte(codec: str) -> bool:
    return codec.startswith(_SINGLE_BYTE_PREFIXES)


def _decode_as(data: bytes, codec: str) -> str | None:
    """`data` in `codec` if it fits: no error, or (for multi-byte codecs) very few; else None."""
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        pass
    except LookupError:
        return None
    text = data.decode(codec, "replace")
    return text if text.count("\ufffd") <= len(data) * _MAX_ERRORS_PER_BYTE else None


def _utf8(data: bytes) -> str | None:
    # Strict UTF-8 validation runs at memory speed, so it is cheap to know up front.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _detect(data: bytes) -> tuple[str, str]:
    from charset_normalizer import from_bytes  # imported on first use: most pages never need it

    best = from_bytes(data).best()
    if best is not None and best.encoding:
        return data.decode(best.encoding, "replace"), best.encoding
    return data.decode("cp1252", "replace"), "cp1252"


class Decoded(NamedTuple):
    """A page as text: the codec that decoded it, how it was chosen (bom, http, meta, utf-8 or detected), and notes
    for `meta`: charset_errors (byte sequences the codec could not decode, each now U+FFFD), charset_rejected (a
    declared UTF-8 that the bytes are not, and why)."""

    text: str
    codec: str
    how: str
    notes: dict[str, Any]


def _noted(text: str, codec: str, how: str, notes: dict[str, Any], genuine: int = 0) -> Decoded:
    """The decoded page, its replacement characters (less the `genuine` ones the page itself holds) noted."""
    errors = text.count("\ufffd") - genuine
    return Decoded(text, codec, how, {**notes, "charset_errors": errors} if errors > 0 else notes)


def _damaged_utf8(data: bytes) -> tuple[str, int, int]:
    """`data` read as UTF-8 with replacements: (text, invalid sequences, valid non-ASCII characters)."""
    text = data.decode("utf-8", "replace")
    errors = text.count("\ufffd") - data.count("\ufffd".encode())
    return text, errors, len(text) - len(text.encode("ascii", "ignore")) - text.count("\ufffd")


def decode_page(data: bytes, http_charset: str | None = None, html: bool = True) -> Decoded:
    """Decode a page by a byte-order mark, the HTTP charset, the <meta> charset (HTML only), valid UTF-8, else
    detection.

    A declared single-byte charset is passed over when the bytes are valid UTF-8 with non-ASCII in them:
    servers that default to ISO-8859-1 in front of UTF-8 pages are common, while legacy text that happens to be
    valid multi-byte UTF-8 is vanishingly rare. A declared UTF-8 that does not decode cleanly is kept, with a
    replacement character for each invalid sequence, unless the bytes are text in another charset under a wrong
    label: such text read as UTF-8 gives about one valid multi-byte sequence per hundred invalid ones (a pair
    like "Ã©" is rare in real text), while a damaged UTF-8 page keeps as many valid ones as it has non-ASCII
    characters; the line is drawn at one per ten. A rejected label is noted in `charset_rejected`, and the next
    declared charset, valid UTF-8 or detection decides.
    """
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return _noted(data[len(bom):].decode(codec, "replace"), codec, "bom", {})
    declared = [("http", python_codec(http_charset))]
    if html:
        match = _META_CHARSET.search(data, 0, _META_SCAN_BYTES)
        codec = python_codec(match.group(1).decode("ascii")) if match else None
        # A <meta> that could be read as ASCII is not UTF-16, whatever it says (WHATWG: read it as UTF-8).
        declared.append(("meta", "utf-8" if codec and codec.startswith("utf-16") else codec))
    utf8_text = _utf8(data)
    notes: dict[str, Any] = {}
    for how, codec in declared:
        if codec is None:
            continue
        if utf8_text is not None:
            if codec == "utf-8":
                return Decoded(utf8_text, codec, how, {})
            if _is_single_byte(codec) and not data.isascii():
                break  # UTF-8 under a legacy label
        if codec == "utf-8":
            text, errors, valid = _damaged_utf8(data)
            if valid * _UTF8_ERRORS_PER_VALID >= errors:
                return _noted(text, codec, how, notes, text.count("\ufffd") - errors)
            notes["charset_rejected"] = (f"utf-8 ({how}): {errors} invalid byte sequences, {valid} valid non-ASCII "
                                         "characters")
            continue
        text = _decode_as(data, codec)
        if text is not None:
            return _noted(text, codec, how, notes)
    if utf8_text is not None:
        return Decoded(utf8_text, "utf-8", "utf-8", notes)
    text, codec = _detect(data)
    return _noted(text, codec, "detected", notes)


# --- records to rows ----------------------------------------------------------------------------------


class WarcBatch(RecordBuilder):
    """RecordBuilder's lists plus the WARC columns and skip counts of one task, turned into a ReadBatch on flush
    (also the ARC reader's: an ARC response is decided as the WARC response it stands for)."""

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


def _charset_meta(page: Decoded) -> dict[str, Any]:
    return {"charset": page.codec, "charset_from": page.how, **page.notes}


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


def _parse(framed: Framed, batch: WarcBatch) -> WarcRecord | None:
    """The record's WARC headers parsed, or None once it is quarantined."""
    try:
        return WarcRecord.from_reader(io.BytesIO(framed.data), quirks_mode=True)
    except OSError as err:
        batch.quarantine(framed.position, f"invalid_header: {err}", framed.data, framed.record_id)
        return None


def add_response(batch: WarcBatch, framed: Framed) -> None:
    """Decide a framed response record by the WARC rules: a document (an HTML payload with a 2xx status, decoded
    by decode_page), a skip by reason (not_http, non_2xx_status, not_html, empty) or a quarantine (invalid_header,
    invalid_http, undecodable_content)."""
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
    page = decode_page(payload, record.http_charset)
    batch.add(record, framed.position, page.text, content_type, _charset_meta(page))


def _add_conversion(batch: WarcBatch, framed: Framed) -> None:
    record = _parse(framed, batch)
    if record is None:
        return
    payload = record.reader.read()
    if not payload.strip():
        batch.skipped["empty"] += 1
        return
    content_type = record.headers.get("Content-Type")
    charset = re.search(r"charset=([^;\s]+)", content_type or "")
    page = decode_page(payload, charset.group(1) if charset else None, html=False)
    batch.add(record, framed.position, page.text, _mime(content_type) or "text/plain", _charset_meta(page))


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
        batch = WarcBatch(task)
        for item in frame_records(task.path):
            if isinstance(item, Damaged):
                batch.quarantine(item.position, item.reason, item.raw, item.record_id)
            elif item.oversized:
                batch.skipped["oversized"] += 1
            elif item.record_type == "response":
                add_response(batch, item)
            elif item.record_type == "conversion":
                _add_conversion(batch, item)
            else:
                batch.skipped[item.record_type if item.record_type in _SKIPPED_TYPES else "unknown_type"] += 1
            if len(batch) >= batch_rows:
                yield batch.flush()
        yield batch.flush()

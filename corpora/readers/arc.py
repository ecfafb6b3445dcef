"""ARC files (Internet Archive ARC, the format before WARC; Common Crawl 2008–2012), plain or gzip.

An ARC file is a `filedesc://` version block, then records: a header line `URL IP-address Archive-date
Content-type Archive-length`, exactly Archive-length bytes (HTTP response headers and body), and a newline
(which Heritrix leaves out).
The URL may hold spaces and the other fields never do, so the line is split from the right. Version 2 files
(their version block starts `2`) have ten fields, URL IP-address Archive-date Content-type first and
Archive-length last; they are read the same way.

Records are framed with the WARC reader's framer (corpora.readers.warc_framing), so the same damage is found
and kept: a header line that does not parse, a block that runs past the data or is not followed by the next
header line, bytes before a header line, a corrupt gzip member, a gzip stream cut off (inside a record or
between two). Each is quarantined with a reason and its bytes, and reading goes on at the next plausible
header line (a URL, enough fields, a numeric date); every well-framed record is kept. One leniency: where the
Archive-length does not frame a record but the bytes up to the next header line are one whole HTTP response
by its own Content-Length (a file whose line endings an editor changed), the record is kept and its meta
notes `arc_length_declared`.

A well-framed response is converted to the WARC record it stands for (as warcio's arc2warc converts it) and
decided by the WARC reader's response rules, so ARC and WARC documents have the same columns and decisions:
HTML responses with a 2xx status become documents (`text` holds the HTML decoded by the WARC reader's decode_page);
the rest is counted in `ReadBatch.skipped` by reason: `filedesc` (the version block), not_http (a `dns:` or
other non-HTTP URL), empty, non_2xx_status, not_html, oversized. What the WARC rules quarantine (an HTTP
response that does not parse, a payload that does not decode) keeps the ARC record's own bytes.

ARC records have no id: `id` is `<file name>:<position>` and `warc_record_id` is null. The ARC content type
stands as WARC-Identified-Payload-Type (used where the HTTP headers declare none). An archive date that does
not parse leaves `crawl_date` null, the raw date going to meta `warc_date` (as for a WARC-Date). `position` is
the record's offset in the decompressed stream, so `.arc` and `.arc.gz` give the same positions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastwarc.warc import WarcRecord

from refinery.corpora.readers import register
from refinery.corpora.readers.base import DEFAULT_BATCH_ROWS, ReadBatch, Reader, ReadTask, decompressed
from refinery.corpora.readers.warc import SCHEMA, WarcBatch, add_response
from refinery.corpora.readers.warc_framing import MAX_SPAN, Damaged, Framed, RecordFramer

_MAX_LINE = 1 << 16  # a header line without its newline within this many bytes is no header line
_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*:\S")  # http://, dns:host, filedesc:// (not "Date: ...")
_HTTP_HEAD_END = re.compile(rb"\r?\n\r?\n")
_HTTP_LENGTH = re.compile(rb"^content-length:[ \t]*(\d+)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_FIELDS = {b"1": 5, b"2": 10}  # header fields by the version block's major version


@dataclass(frozen=True)
class ArcHeader:
    """The fields of a record's header line that documents use."""

    url: bytes
    ip: bytes
    date: bytes
    content_type: bytes
    length: int


def parse_header(line: bytes, fields: int = 5) -> ArcHeader | str:
    """The header line's fields, or what is wrong with it (the reason a record is quarantined)."""
    parts = line.rstrip(b"\r\n").rsplit(b" ", fields - 1)
    if len(parts) < fields or not parts[0]:
        return f"{len(parts)} fields where an ARC header line has {fields}"
    length = parts[-1]
    if not length.isdigit():  # bytes.isdigit: ASCII digits only
        return f"Archive-length {length.decode('utf-8', 'replace')!r} is not a number of bytes"
    return ArcHeader(parts[0], parts[1], parts[2], parts[3], int(length))


class ArcFramer(RecordFramer):
    """The WARC framer (buffer, stream damage, resynchronisation, oversized blocks) with ARC's header line."""

    header_name = "an ARC header line"
    length_name = "Archive-length"
    record_end = ()  # an ARC block ends with one newline, as many lines in it do: only the next header tells
    fields = 5  # ARC version 1 until a version block says 2

    def _line_end(self, start: int) -> int | None:
        """Where the line that starts at `start` ends (after its newline, or at the end of the data); None when
        there is no line there or it runs past _MAX_LINE."""
        searched = start
        while True:
            newline = self.buf.find(b"\n", searched, start + _MAX_LINE)
            if newline >= 0:
                return newline + 1
            if len(self.buf) - start >= _MAX_LINE:
                return None
            searched = len(self.buf)
            if not self._fill():
                return len(self.buf) if len(self.buf) > start else None

    def at_header(self, start: int) -> bool:
        """A plausible header line starts at `start`: a URL, the other fields, and digits for the date (a line
        whose length field is wrong is plausible: it is quarantined as a record of its own)."""
        end = self._line_end(start)
        if end is None or _SCHEME.match(self.buf, start) is None:
            return False
        parts = bytes(self.buf[start:end]).rsplit(b" ", self.fields - 1)
        return len(parts) == self.fields and parts[2].isdigit()

    def _ends_cleanly(self, end: int) -> bool:
        # Heritrix writes no newline between records (the block's own last newline is counted in its length).
        return super()._ends_cleanly(end) or self.at_header(end)

    def lenient_end(self, header_end: int, end: int, resync: int) -> int | None:
        """Where the HTTP response in the block ends by its own Content-Length: where that is the declared end and a
        newline follows (both lengths agree: what follows is damage of its own), or where only newlines follow it
        up to the next header (a file whose line endings an editor changed). None when it has no Content-Length,
        fits neither, or the data was cut by stream damage."""
        if self.stream_break is not None or not self.buf.startswith(b"HTTP/", header_end):
            return None
        head = _HTTP_HEAD_END.search(self.buf, header_end, resync)
        length = _HTTP_LENGTH.search(self.buf, header_end, head.start()) if head else None
        if length is None:
            return None
        http_end = head.end() + int(length.group(1))
        if http_end == end and self.buf[end : end + 1] == b"\n":
            return end
        return http_end if http_end <= resync and not self.buf[http_end:resync].strip(b"\r\n") else None

    def next_header(self, start: int) -> int:
        """Where the first plausible header line at or after `start` begins (a line start), or the end of the
        data, or a line end about MAX_SPAN on (damage is kept in pieces)."""
        searched = max(start - 1, 0)
        while True:
            newline = self.buf.find(b"\n", searched)
            if newline < 0:
                if len(self.buf) - start >= MAX_SPAN or not self._fill():
                    return len(self.buf)
                continue
            if newline + 1 - start >= MAX_SPAN or self.at_header(newline + 1):
                return newline + 1
            searched = newline + 1

    def stray_reason(self, raw: bytes) -> str:
        if self.ended and not self.buf and _SCHEME.match(raw):
            return "truncated_record: the data ends inside an ARC header line" + self.cut_off()
        return super().stray_reason(raw)

    def record(self) -> Framed | Damaged:
        position = self.base
        line_end = self._line_end(0) or len(self.buf)  # items() found a header line here
        header = parse_header(bytes(self.buf[:line_end]), self.fields)
        if isinstance(header, str):
            return Damaged(position, f"invalid_header: {header}", self._take(self.next_header(line_end)))
        kind = "filedesc" if header.url.startswith(b"filedesc://") else "response"
        self._available(line_end + 2)
        version = _FIELDS.get(bytes(self.buf[line_end : line_end + 2]).strip()) if kind == "filedesc" else None
        framed = self.frame_block(position, kind, None, line_end, header.length)
        if version and isinstance(framed, Framed):  # a version 2 block: header lines of ten fields follow
            self.fields = version
        return framed


class _ArcBatch(WarcBatch):
    """The WARC reader's batch; while the WARC rules decide a converted record, what they quarantine keeps the
    ARC record's bytes, and a document gets the ARC record's own meta."""

    arc_bytes: bytes | None = None
    arc_meta: dict[str, Any] = {}

    def quarantine(self, position: int, reason: str, raw: bytes | None, record_id: str | None = None) -> None:
        super().quarantine(position, reason, raw if self.arc_bytes is None else self.arc_bytes, record_id)

    def add(self, record: WarcRecord, position: int, text: str, content_type: str, extras: dict) -> None:
        super().add(record, position, text, content_type, {**extras, **self.arc_meta})


def _warc_date(date: bytes) -> bytes:
    """The archive date (YYYYMMDDhhmmss, UTC) as a WARC-Date; as it stands where it is no such date."""
    try:
        return datetime.strptime(date.decode("ascii"), "%Y%m%d%H%M%S").strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    except ValueError:  # also UnicodeDecodeError
        return date


def as_warc(header: ArcHeader, block: bytes) -> bytes:
    """The WARC response record an ARC record stands for."""
    fields = [b"WARC/1.0", b"WARC-Type: response", b"WARC-Target-URI: " + header.url,
              b"WARC-Date: " + _warc_date(header.date), b"WARC-IP-Address: " + header.ip,
              b"WARC-Identified-Payload-Type: " + header.content_type,
              b"Content-Type: application/http; msgtype=response", b"Content-Length: %d" % len(block)]
    return b"\r\n".join(fields) + b"\r\n\r\n" + block


def _add_record(batch: _ArcBatch, framed: Framed, fields: int) -> None:
    line, _, block = framed.data.partition(b"\n")
    header = parse_header(line, fields)
    assert not isinstance(header, str)  # the framer parsed this very line
    if not header.url.lower().startswith((b"http:", b"https:")):
        batch.skipped["not_http"] += 1
    elif not block.strip():  # a fetch that stored nothing
        batch.skipped["empty"] += 1
    else:
        batch.arc_bytes = framed.data
        batch.arc_meta = {} if len(block) == header.length else {"arc_length_declared": header.length}
        add_response(batch, Framed(framed.position, "response", None, as_warc(header, block)))
        batch.arc_bytes, batch.arc_meta = None, {}


@register
class ArcReader(Reader):
    """ARC files (web archives before WARC): HTML responses become documents.

    One task per file (the default plan): gzip members cannot be told apart from the outside and record
    boundaries need a scan.
    """

    name = "arc"
    suffixes = (".arc", ".arc.gz")
    schema = SCHEMA

    def read(self, task: ReadTask, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[ReadBatch]:
        batch = _ArcBatch(task)
        framer = ArcFramer(lambda: decompressed(task.path))
        for item in framer.items():
            if isinstance(item, Damaged):
                batch.quarantine(item.position, item.reason, item.raw, item.record_id)
            elif item.oversized:
                batch.skipped["oversized"] += 1
            elif item.record_type == "filedesc":
                batch.skipped["filedesc"] += 1
            else:
                _add_record(batch, item, framer.fields)
            if len(batch) >= batch_rows:
                yield batch.flush()
        yield batch.flush()

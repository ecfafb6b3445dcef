"""Cut a WARC stream into records and keep the damage: the part of WARC reading no library does.

A WARC record is a `WARC/1.x` line, header lines, a blank line, exactly Content-Length bytes of block, and
blank lines. `frame_records` walks the decompressed stream record by record and checks each boundary: a
block that runs past the data, a block not followed by a blank line and the next header, bytes before a
header, and undecodable gzip become `Damaged` items; reading then goes on at the next `WARC/` line (which
may lie inside the damaged record's claimed block when its Content-Length is too long).

Gzip is inflated member by member here rather than inside the parser: a data error then costs only its
member (reading resumes at the next member that inflates), and a file cut off mid-member is told apart
from one that ends cleanly. WET files gzipped as one stream are read the same way.
"""

from __future__ import annotations

import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

_GZIP_MAGIC = b"\x1f\x8b\x08"
_READ_BYTES = 1 << 18  # compressed bytes per read
_MAX_HEADER = 1 << 16  # a header block without its blank line within this many bytes is damage
MAX_SPAN = 1 << 26  # damage is quarantined in pieces of at most about this many bytes

_HEADER_LINE = re.compile(rb"WARC/\d+\.\d+\r?\n")
_NEXT_HEADER = re.compile(rb"\nWARC/\d+\.\d+\r?\n")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_NEWLINES = re.compile(rb"[\r\n]*")
_CONTENT_LENGTH = re.compile(rb"^content-length:[ \t]*(\d+)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_WARC_TYPE = re.compile(rb"^warc-type:[ \t]*(\S*)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_RECORD_ID = re.compile(rb"^warc-record-id:[ \t]*(\S*)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)


@dataclass
class Framed:
    """A record whose length checks out: where it starts (decompressed offset) and its header and block."""

    position: int
    record_type: str
    record_id: str | None
    data: bytes
    oversized: bool = False  # the block was over MAX_SPAN bytes: streamed past, `data` is the header only


@dataclass
class Damaged:
    """Bytes that do not frame as a record, with the reason ("category: detail")."""

    position: int
    reason: str
    raw: bytes
    record_id: str | None = None


@dataclass
class _GzipBreak:
    """A point after which the decompressed data does not continue the data before it."""

    compressed_offset: int
    error: str | None = None  # None: the file ends inside a gzip member
    skipped: int = 0  # compressed bytes that did not inflate
    raw: bytes = b""  # their first MAX_SPAN bytes


def _inflates(file: BinaryIO, offset: int) -> bool:
    file.seek(offset)
    try:
        zlib.decompressobj(31).decompress(file.read(1 << 14))
    except zlib.error:
        return False
    return True


def _next_member(file: BinaryIO, start: int) -> int:
    """Offset of the first gzip member at or after `start` that inflates, or the file's size."""
    size = file.seek(0, io.SEEK_END)
    for block_start in range(start, size, _READ_BYTES):
        file.seek(block_start)
        block = file.read(_READ_BYTES + len(_GZIP_MAGIC) - 1)  # overlap: a magic number across blocks counts
        found = block.find(_GZIP_MAGIC)
        while found != -1:
            if _inflates(file, block_start + found):
                return block_start + found
            found = block.find(_GZIP_MAGIC, found + 1)
    return size


def _gunzip(file: BinaryIO) -> Iterator[bytes | _GzipBreak]:
    member_start = offset = 0  # compressed offsets: where the current member starts, where `data` starts
    inflater, data = zlib.decompressobj(31), b""
    while True:
        if not data:
            data = file.read(_READ_BYTES)
            if not data:
                break
        try:
            chunk = inflater.decompress(data)
        except zlib.error as err:
            resume = _next_member(file, member_start + 1)
            file.seek(member_start)
            raw = file.read(min(resume - member_start, MAX_SPAN))
            yield _GzipBreak(member_start, str(err), resume - member_start, raw)
            file.seek(resume)
            member_start = offset = resume
            inflater, data = zlib.decompressobj(31), b""
            continue
        if chunk:
            yield chunk
        if inflater.eof:  # the member ended: the next one starts with its unused input
            member_start = offset = offset + len(data) - len(inflater.unused_data)
            inflater, data = zlib.decompressobj(31), inflater.unused_data
        else:
            offset, data = offset + len(data), b""
    if offset > member_start:
        yield _GzipBreak(member_start)


def _inflate(file: BinaryIO) -> Iterator[bytes | _GzipBreak]:
    """The decompressed bytes of a plain or gzip file, with a break wherever the gzip stream is damaged."""
    is_gzip = file.read(2) == _GZIP_MAGIC[:2]
    file.seek(0)
    if is_gzip:
        yield from _gunzip(file)
        return
    while chunk := file.read(_READ_BYTES):
        yield chunk


def _field(pattern: re.Pattern, header: bytes) -> str | None:
    match = pattern.search(header)
    return match.group(1).decode("utf-8", "replace") if match and match.group(1) else None


class _Framer:
    """The decompressed stream as a buffer that always starts at the next unread byte."""

    def __init__(self, chunks: Iterator[bytes | _GzipBreak]):
        self.chunks = chunks
        self.buf = bytearray()
        self.base = 0  # decompressed offset of buf[0]
        self.ended = False  # no data left before the next gzip break or the end of the file
        self.gzip_break: _GzipBreak | None = None

    def _fill(self) -> bool:
        """Append the next decompressed chunk; False at the end of the file or at a gzip break."""
        if self.ended:
            return False
        for item in self.chunks:
            if isinstance(item, _GzipBreak):
                self.gzip_break, self.ended = item, True
                return False
            self.buf += item
            return True
        self.ended = True
        return False

    def _available(self, size: int) -> bool:
        while len(self.buf) < size:
            if not self._fill():
                return False
        return True

    def _take(self, size: int) -> bytes:
        with memoryview(self.buf) as view:
            data = view[:size].tobytes()
        self._drop(size)
        return data

    def _drop(self, size: int) -> None:
        del self.buf[:size]
        self.base += size

    def _skip_newlines(self, start: int) -> int:
        while True:
            end = _NEWLINES.match(self.buf, start).end()
            if end < len(self.buf) or not self._fill():
                return end

    def _at_header(self, start: int) -> bool:
        self._available(start + 32)  # "WARC/1.0\r\n" fits; a shorter tail is no header
        return _HEADER_LINE.match(self.buf, start) is not None

    def _next_header(self, start: int) -> int:
        """Where the first `WARC/` line at or after `start` begins, or the end of the data (or of MAX_SPAN)."""
        searched = max(start - 1, 0)
        while True:
            match = _NEXT_HEADER.search(self.buf, searched)
            if match:
                return match.start() + 1
            searched = max(len(self.buf) - 64, searched)  # a header line may straddle the chunks
            if len(self.buf) - start >= MAX_SPAN or not self._fill():
                return len(self.buf)

    def _header_end(self) -> int | None:
        searched = 0
        while True:
            match = _BLANK_LINE.search(self.buf, searched, _MAX_HEADER)
            if match:
                return match.end()
            searched = max(len(self.buf) - 4, 0)  # a blank line may straddle the chunks
            if len(self.buf) >= _MAX_HEADER or not self._fill():
                return None

    def _ends_cleanly(self, end: int) -> bool:
        """True when the block is followed by blank lines and then a header, or by the end of the data."""
        if not self._available(end + 1):
            return True  # a last record without its closing blank lines
        after = self._skip_newlines(end)
        return after > end and (after == len(self.buf) or self._at_header(after))

    def _cut_off(self) -> str:
        if self.gzip_break is None:
            return ""
        return " (the gzip stream is cut off)" if self.gzip_break.error is None else " (gzip damage follows)"

    def _record(self) -> Framed | Damaged:
        position = self.base
        header_end = self._header_end()
        if header_end is None:
            reason = ("truncated_record: the data ends inside a WARC header" + self._cut_off() if self.ended
                      else f"invalid_header: no blank line within {_MAX_HEADER} bytes of the WARC/ line")
            raw = self._take(self._next_header(1))
            return Damaged(position, reason, raw, _field(_RECORD_ID, raw[:_MAX_HEADER]))
        header = bytes(self.buf[:header_end])
        record_type, record_id = _field(_WARC_TYPE, header) or "unknown", _field(_RECORD_ID, header)
        length = _CONTENT_LENGTH.search(header)
        if length is None:
            reason = f"invalid_header: {record_type} record without a Content-Length"
            return Damaged(position, reason, self._take(self._next_header(header_end)), record_id)
        declared = int(length.group(1))
        end = header_end + declared
        if declared > MAX_SPAN:
            return self._oversized(position, record_type, record_id, header_end, end)
        complete = self._available(end)
        if complete and self._ends_cleanly(end):
            return Framed(position, record_type, record_id, self._take(end))
        # Reading goes on at the next header line, which lies inside the claimed block if it is too long.
        resync = self._next_header(header_end)
        if not complete and resync == len(self.buf):
            have = len(self.buf) - header_end
            reason = f"truncated_record: {record_type} block has {have} of {declared} bytes" + self._cut_off()
        else:
            reason = (f"bad_content_length: the {record_type} record does not end where its Content-Length "
                      f"({declared}) says")
        return Damaged(position, reason, self._take(resync), record_id)

    def _oversized(self, position: int, record_type: str, record_id: str | None, header_end: int,
                   end: int) -> Framed | Damaged:
        """A block too large to be a document (a video, a disk image): streamed past, only its header kept."""
        header = self._take(header_end)
        remaining = end - header_end
        while remaining > len(self.buf):
            remaining -= len(self.buf)
            self._drop(len(self.buf))
            if not self._fill():
                reason = f"truncated_record: {record_type} block of {end - header_end} bytes ends early"
                return Damaged(position, reason + self._cut_off() + " (block not kept)", header, record_id)
        if not self._ends_cleanly(remaining):
            reason = (f"bad_content_length: the {record_type} record does not end where its Content-Length "
                      f"({end - header_end}) says (block not kept)")
            return Damaged(position, reason, header, record_id)
        self._drop(remaining)
        return Framed(position, record_type, record_id, header, oversized=True)

    def items(self) -> Iterator[Framed | Damaged]:
        while True:
            self._drop(self._skip_newlines(0))
            if not self.buf:
                if self.gzip_break is None:
                    return
                damage = self.gzip_break
                self.gzip_break, self.ended = None, False
                if damage.error is not None:
                    reason = (f"corrupt_gzip: {damage.error} in the gzip member at compressed byte "
                              f"{damage.compressed_offset}; {damage.skipped} compressed bytes skipped")
                    yield Damaged(self.base, reason, damage.raw)
            elif self._at_header(0):
                yield self._record()
            else:
                raw = self._take(self._next_header(1))
                yield Damaged(self.base - len(raw), f"not_a_record: {len(raw)} bytes without a WARC header", raw)


def frame_records(path: str) -> Iterator[Framed | Damaged]:
    """Every record of a WARC/WET file (plain or gzip) in order, and every stretch of damage between them."""
    with open(path, "rb") as file:
        yield from _Framer(_inflate(file)).items()

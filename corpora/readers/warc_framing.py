"""Cut a WARC stream into records and keep the damage: the part of WARC reading no library does.

A WARC record is a `WARC/1.x` line, header lines, a blank line, exactly Content-Length bytes of block, and
blank lines. `frame_records` walks the decompressed stream (base.decompressed: gzip member by member, so a data
error costs only its member and a file cut off mid-member is told from one that ends cleanly) record by record
and checks each boundary: a block that runs past the data, a block not followed by a blank line and the next
header, bytes before a header, a damaged or cut gzip stream become `Damaged` items; reading then goes on at the
next `WARC/` line, which may lie inside the damaged record's claimed block when its Content-Length is too long
(also a claim of a gigabyte: the stream is read again from that line). ARC files (corpora.readers.arc) are
framed by the same `RecordFramer` with ARC's header line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from refinery.corpora.readers.base import MAX_RAW, Damaged, StreamBreak, decompressed

_MAX_HEADER = 1 << 16  # a header block without its blank line within this many bytes is damage
MAX_SPAN = MAX_RAW  # damage is quarantined in pieces of at most about this many bytes; larger blocks are skipped
_OVERLAP = 64  # bytes kept when a block is streamed past: a header line may straddle what is dropped

_HEADER_LINE = re.compile(rb"WARC/\d+\.\d+\r?\n")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_NEWLINES = re.compile(rb"[\r\n]*")
_NAMED_FIELD = re.compile(rb"WARC-[A-Za-z-]+:")  # the first line of a header that lost its WARC/1.x line
_CONTENT_LENGTH = re.compile(rb"^content-length:[ \t]*(\S*)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_WARC_TYPE = re.compile(rb"^warc-type:[ \t]*(\S*)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_RECORD_ID = re.compile(rb"^warc-record-id:[ \t]*(\S*)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)

Source = Callable[[], Iterator[bytes | StreamBreak]]  # the decompressed stream from its start, as often as needed


@dataclass
class Framed:
    """A record whose length checks out: where it starts (decompressed offset) and its header and block."""

    position: int
    record_type: str
    record_id: str | None
    data: bytes
    oversized: bool = False  # the block was over MAX_SPAN bytes: streamed past, `data` is the header only


def _field(pattern: re.Pattern, header: bytes) -> str | None:
    match = pattern.search(header)
    return match.group(1).decode("utf-8", "replace") if match and match.group(1) else None


class RecordFramer:
    """The decompressed stream as a buffer that always starts at the next unread byte, cut into records.

    What a record's header is, is told by hooks, which the ARC framer replaces: `at_header(start)` (a header
    starts at buf[start]), `next_header(start)` (where the next one starts), `record()` (frame the record at the
    buffer's start, through `frame_block`) and `stray_reason(raw)` (bytes before a header). The rest is shared:
    filling and taking, stream breaks, blocks too large to keep, and `frame_block`, which checks that a block ends
    where its length says and resynchronises on the next header where it does not.
    """

    header_name = "a WARC header"  # what bytes before a header are without, in not_a_record reasons
    length_name = "Content-Length"
    # What ends a record's block (the WARC standard's CRLF CRLF, or LF LF): a block that ends so is taken as whole
    # even where no header follows. (A wrong length seldom lands just before such a pair; where it does, the rest
    # of its record is quarantined as bytes without a header, not lost.)
    record_end: tuple[bytes, ...] = (b"\r\n\r\n", b"\n\n")

    def __init__(self, source: Source):
        self.source = source
        self.chunks = source()
        self.buf = bytearray()
        self.base = 0  # decompressed offset of buf[0]
        self.ended = False  # no data left before the next stream break or the end of the file
        self.stream_break: StreamBreak | None = None
        self.break_told = False  # a reason already says that the stream is cut off at this break
        self.pending: list[Damaged] = []  # damage found beside a record that was kept, reported after it

    # --- the buffer ---------------------------------------------------------------------------------------

    def _fill(self) -> bool:
        """Append the next decompressed chunk; False at the end of the file or at a stream break."""
        if self.ended:
            return False
        for item in self.chunks:
            if isinstance(item, StreamBreak):
                self.stream_break, self.ended = item, True
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

    def _rewind(self, offset: int) -> None:
        """Read the stream again from decompressed offset `offset` (a block's claimed length proved false after
        the bytes from there were streamed past)."""
        self.chunks, self.buf, self.base = self.source(), bytearray(), 0
        self.ended, self.stream_break, self.break_told = False, None, False
        for item in self.chunks:
            if isinstance(item, bytes):  # breaks before `offset` were reported when they were first met
                if self.base + len(item) > offset:
                    self.buf += item[offset - self.base :]
                    break
                self.base += len(item)
        self.base = offset

    def cut_off(self) -> str:
        """What a reason about data that ends early adds when a stream break ends it."""
        if self.stream_break is None:
            return ""
        if self.stream_break.cut:
            self.break_told = True
            return f" (the {self.stream_break.codec} stream is cut off)"
        return f" ({self.stream_break.codec} damage follows)"

    # --- hooks: WARC's header ----------------------------------------------------------------------------

    def at_header(self, start: int) -> bool:
        self._available(start + 32)  # "WARC/1.0\r\n" fits; a shorter tail is no header
        return _HEADER_LINE.match(self.buf, start) is not None

    def next_header(self, start: int) -> int:
        """Where the first header line at or after `start` begins, or the end of the data, or of MAX_SPAN bytes.
        (Also where no newline comes before it: garbage written just before a record does not hide it.)"""
        searched = start
        while True:
            match = _HEADER_LINE.search(self.buf, searched)
            if match:
                return match.start()
            searched = max(len(self.buf) - 64, searched)  # a header line may straddle the chunks
            if len(self.buf) - start >= MAX_SPAN or not self._fill():
                return len(self.buf)

    def stray_reason(self, raw: bytes) -> str:
        """The reason for bytes that do not start with a header."""
        if _NAMED_FIELD.match(raw):
            return f"invalid_header: {len(raw)} bytes of a WARC header without its WARC/1.x line"
        return f"not_a_record: {len(raw)} bytes without {self.header_name}"

    def record(self) -> Framed | Damaged:
        """Frame the record whose header starts the buffer."""
        position = self.base
        header_end = self._header_end()
        if header_end is None:
            reason = ("truncated_record: the data ends inside a WARC header" + self.cut_off() if self.ended
                      else f"invalid_header: no blank line within {_MAX_HEADER} bytes of the WARC/ line")
            raw = self._take(self.next_header(1))
            return Damaged(position, reason, raw, _field(_RECORD_ID, raw[:_MAX_HEADER]))
        header = bytes(self.buf[:header_end])
        record_type, record_id = _field(_WARC_TYPE, header) or "unknown", _field(_RECORD_ID, header)
        length = _CONTENT_LENGTH.search(header)
        if length is None or not length.group(1).isdigit():
            problem = ("without a Content-Length" if length is None else
                       f"whose Content-Length {length.group(1).decode('utf-8', 'replace')!r} is not a number")
            reason = f"invalid_header: {record_type} record {problem}"
            return Damaged(position, reason, self._take(self.next_header(header_end)), record_id)
        return self.frame_block(position, record_type, record_id, header_end, int(length.group(1)))

    def _header_end(self) -> int | None:
        searched = 0
        while True:
            match = _BLANK_LINE.search(self.buf, searched, _MAX_HEADER)
            if match:
                return match.end()
            searched = max(len(self.buf) - 4, 0)  # a blank line may straddle the chunks
            if len(self.buf) >= _MAX_HEADER or not self._fill():
                return None

    def lenient_end(self, header_end: int, end: int, resync: int) -> int | None:
        """Where a block that does not end cleanly at `end` (its declared end) still ends, by what it holds (ARC),
        given the next header at `resync`; None: nowhere."""
        return None

    # --- framing, shared ---------------------------------------------------------------------------------

    def _ends_cleanly(self, end: int) -> bool:
        """True when the block is followed by blank lines and then a header or the end of the data, or by the
        blank lines that end a record (`record_end`) and then bytes that are no header: those are damage of their
        own (a header without its first line, garbage), and the record before them is whole."""
        if not self._available(end + 1):
            return True  # a last record without its closing blank lines
        after = self._skip_newlines(end)
        if after > end and (after == len(self.buf) or self.at_header(after)):
            return True
        return self.buf.startswith(self.record_end, end)

    def frame_block(self, position: int, kind: str, record_id: str | None, header_end: int,
                    declared: int) -> Framed | Damaged:
        """The record whose header (buf[:header_end]) declares a block of `declared` bytes: framed where the block
        ends cleanly, else damage up to the next header (which lies inside the claimed block if it is too long)."""
        end = header_end + declared
        if declared > MAX_SPAN:
            return self._oversized(position, kind, record_id, header_end, declared)
        complete = self._available(end)
        if complete and self._ends_cleanly(end):
            return Framed(position, kind, record_id, self._take(end))
        if complete and self.at_header(end):  # the next record follows without the blank lines that end this one
            reason = f"missing_record_end: no blank lines between the {kind} record at byte {position} and the next"
            self.pending.append(Damaged(self.base + end, reason, b""))
            return Framed(position, kind, record_id, self._take(end))
        resync = self.next_header(header_end)
        lenient = self.lenient_end(header_end, end, resync)
        if lenient is not None:
            return Framed(position, kind, record_id, self._take(lenient))
        if not complete and resync == len(self.buf):
            have = len(self.buf) - header_end
            reason = f"truncated_record: {kind} block has {have} of {declared} bytes" + self.cut_off()
        else:
            reason = self._bad_length(kind, declared)
        return Damaged(position, reason, self._take(resync), record_id)

    def _bad_length(self, kind: str, declared: int) -> str:
        return f"bad_content_length: the {kind} record does not end where its {self.length_name} ({declared}) says"

    def _oversized(self, position: int, kind: str, record_id: str | None, header_end: int,
                   declared: int) -> Framed | Damaged:
        """A block too large to be a document (a video, a disk image): streamed past, only its header kept.

        The first header line inside the claimed block is remembered on the way: where the block then does not
        end as its length says (the data ends first, or no record follows), the length was false, and reading
        goes back to that line, the bytes before it kept with the header where they fit in MAX_SPAN.
        """
        header = self._take(header_end)
        block, remaining = self.base, declared  # where the block starts; its bytes not yet passed
        candidate: int | None = None  # the first header line in the claimed block
        while remaining > len(self.buf):
            if candidate is None:
                found = self.next_header(1)  # (fills the buffer up to MAX_SPAN bytes at most)
                if found < min(len(self.buf), remaining):
                    candidate = self.base + found
            if remaining <= len(self.buf):
                break
            passed = max(len(self.buf) - _OVERLAP, 0)
            remaining -= passed
            self._drop(passed)
            if remaining > len(self.buf) and not self._fill():
                if candidate is None:
                    reason = f"truncated_record: {kind} block of {declared} bytes ends early" + self.cut_off()
                    return Damaged(position, reason + " (block not kept)", header, record_id)
                return self._resynchronised(position, kind, record_id, header, declared, block, candidate)
        if self._ends_cleanly(remaining):
            self._drop(remaining)
            return Framed(position, kind, record_id, header, oversized=True)
        if candidate is not None:
            return self._resynchronised(position, kind, record_id, header, declared, block, candidate)
        return Damaged(position, self._bad_length(kind, declared) + " (block not kept)", header, record_id)

    def _resynchronised(self, position: int, kind: str, record_id: str | None, header: bytes, declared: int,
                        block: int, candidate: int) -> Damaged:
        """The oversized record as damage, and the stream read again from the header line found in its block."""
        span = candidate - block
        self._rewind(block if span <= MAX_SPAN else candidate)
        kept = span <= MAX_SPAN and self._available(span)
        reason = (self._bad_length(kind, declared) + f"; the next record starts {span} bytes into the block"
                  + ("" if kept else " (block not kept)"))
        return Damaged(position, reason, header + (self._take(span) if kept else b""), record_id)

    def items(self) -> Iterator[Framed | Damaged]:
        """Every record in order, and every stretch of damage between them."""
        while True:
            yield from self.pending
            self.pending.clear()
            self._drop(self._skip_newlines(0))
            if not self.buf:
                if self.stream_break is None:
                    return
                damage, told = self.stream_break, self.break_told
                self.stream_break, self.ended, self.break_told = None, False, False
                if not damage.cut:
                    yield Damaged(self.base, damage.reason, damage.raw)
                elif not told:  # cut between two records, or in the last member's trailer: nothing was cut short
                    reason = (f"truncated_stream: the {damage.codec} stream is cut off after the last whole record"
                              if self.base else damage.reason)
                    yield Damaged(self.base, reason, damage.raw)
            elif self.at_header(0):
                yield self.record()
            else:
                raw = self._take(self.next_header(1))
                yield Damaged(self.base - len(raw), self.stray_reason(raw), raw)


def frame_records(path: str) -> Iterator[Framed | Damaged]:
    """Every record of a WARC/WET file (plain or compressed) in order, and every stretch of damage between them."""
    yield from RecordFramer(lambda: decompressed(path)).items()

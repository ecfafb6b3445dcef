"""The test's own count of the good records in a damaged file, made apart from the readers: the standard library
(json, zlib, bz2; zstandard for .zst, which it lacks), pyarrow for the untouched row groups, a plain WARC header
scan. A count never reads the damaged file through Refinery: it starts from the undamaged pieces the test built
the file from and from where the test put the damage."""

from __future__ import annotations

import bz2
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zstandard


def usable(record: Any, text_field: str = "text") -> bool:
    """A record the JSON readers make a document of: an object with a string text that is valid UTF-8."""
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
        return False
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")  # a lone surrogate from a \\ud800 escape fails
    except UnicodeEncodeError:
        return False
    return True


def json_lines(data: bytes) -> int:
    """Documents among the lines of JSONL bytes (only lines ended by a newline, or the last line when whole)."""
    count = 0
    for line in data.split(b"\n"):
        try:
            count += usable(json.loads(line))
        except ValueError:  # also UnicodeDecodeError; blank lines are no records
            continue
    return count


def unusable_lines(data: bytes) -> int:
    """Lines that are records but no documents (each a quarantine row of its own): garbled text that a corrupt
    member decompressed to before its decompressor noticed (gzip -d gives the same bytes)."""
    return sum(1 for line in data.split(b"\n") if line.strip()) - json_lines(data)


def whole_lines(data: bytes) -> bytes:
    """The lines that end with their newline (what a cut leaves whole)."""
    return data[: data.rfind(b"\n") + 1]


def _new(codec: str) -> Any:
    return {"gzip": lambda: zlib.decompressobj(31), "zstd": lambda: zstandard.ZstdDecompressor().decompressobj(),
            "bz2": bz2.BZ2Decompressor}[codec]()


def inflate_prefix(member: bytes, codec: str) -> bytes:
    """All that one damaged or cut member (gzip member, zstd frame, bz2 stream) decompresses to before it fails,
    fed to a fresh decompressor one byte at a time (a failing call gives no output)."""
    decompressor, out = _new(codec), []
    for i in range(len(member)):
        try:
            out.append(decompressor.decompress(member[i : i + 1]))
        except Exception:  # noqa: BLE001 - zlib.error, ZstdError, OSError: the damage, whatever the codec
            break
        if decompressor.eof:
            break
    return b"".join(out)


# --- WARC ------------------------------------------------------------------------------------------------


@dataclass
class WarcRecord:
    start: int  # offset of its WARC/ line in the decompressed file
    end: int  # after its block and the blank lines that end it
    type: str
    record_id: str
    length_field: tuple[int, int]  # where the Content-Length value lies
    document: bool  # a response with a 2xx HTML payload, or a WET conversion


_WARC_LINE = re.compile(rb"WARC/1\.[01]\r\n")


def warc_records(plain: bytes) -> list[WarcRecord]:
    """The records of an undamaged, decompressed WARC/WET file, found by their header lines and lengths."""
    records, pos = [], 0
    while (match := _WARC_LINE.search(plain, pos)) is not None:
        start = match.start()
        header_end = plain.index(b"\r\n\r\n", start) + 4
        header = plain[start:header_end]
        length = re.search(rb"Content-Length: (\d+)", header)
        kind = re.search(rb"WARC-Type: (\S+)|$", header).group(1) or b"unknown"
        record_id = re.search(rb"WARC-Record-ID: (\S+)|$", header).group(1) or b""
        end = header_end + int(length.group(1))
        block = plain[header_end:end]
        status = re.match(rb"HTTP/1\.[01] (\d{3})", block)
        head = block[: block.find(b"\r\n\r\n")]
        html = re.search(rb"(?im)^content-type:\s*text/html", head) is not None
        document = kind == b"conversion" or (kind == b"response" and bool(status) and status.group(1)[:1] == b"2"
                                              and html)
        records.append(WarcRecord(start, end + 4, kind.decode(), record_id.decode(),
                                  (start + length.start(1), start + length.end(1)), document))
        pos = end
    return records


def gzip_members(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each gzip member of an undamaged file."""
    members, pos = [], 0
    while pos < len(data):
        inflater = zlib.decompressobj(31)
        inflater.decompress(data[pos:])
        end = len(data) - len(inflater.unused_data)
        members.append((pos, end))
        pos = end
    return members


def framed_documents(plain: bytes) -> int:
    """Documents among the records that lie whole in `plain` (what a damaged stream decompressed to, garbled from
    the damage on): a record is whole where its block, as long as its Content-Length says, is followed by the
    blank lines that end a record, by the next header, or by the end of the data."""
    count, pos = 0, 0
    while (match := _WARC_LINE.search(plain, pos)) is not None:
        header_end = plain.find(b"\r\n\r\n", match.start())
        length = re.search(rb"Content-Length: (\d+)\r\n", plain[match.start() : header_end + 2])
        end = header_end + 4 + int(length.group(1)) if header_end > 0 and length else len(plain) + 1
        if end <= len(plain) and (end == len(plain) or plain.startswith((b"\r\n\r\n", b"WARC/1."), end)):
            count += sum(r.document for r in warc_records(plain[match.start() : end]))
            pos = end
        else:
            pos = match.start() + 1
    return count


# --- Wikipedia and instruction sets ------------------------------------------------------------------------


def whole_pages(xml: bytes) -> list[str]:
    """The <id> of every <page>…</page> that lies whole in `xml`, in order."""
    return [re.search(rb"<id>(\d+)</id>", page).group(1).decode()
            for page in re.findall(rb"<page>.*?</page>", xml, re.S)]


def array_elements(text: str, keep: Callable[[Any], bool]) -> int:
    """How many elements of a JSON array (possibly cut short) parse whole and satisfy `keep`."""
    decoder, position, count = json.JSONDecoder(), text.index("[") + 1, 0
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        try:
            element, position = decoder.raw_decode(text, position)
        except ValueError:
            return count
        count += keep(element)

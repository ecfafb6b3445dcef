"""What every reader shares: the task a worker reads, the batch it yields, record conversion, and decompression
that passes over damage and says where it was."""

from __future__ import annotations

import bz2
import io
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, NamedTuple

import pyarrow as pa
import zstandard
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from refinery.corpora.readers.fields import FieldType, column_name
from refinery.corpora.records import DOCUMENT_SCHEMA
from refinery.corpora.storage import InputError as InputError  # re-exported: the readers import it from here
from refinery.corpora.storage import is_remote, open_input, read_prefix

# Documents per yielded batch: big enough for vectorised stages, small enough to stream.
DEFAULT_BATCH_ROWS = 4096


class ReaderOptions(BaseModel):
    """A reader's own options, written beside `path:` in a recipe input; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class IdOptions(ReaderOptions):
    id_field: str = Field("id", description="field holding the record's own id, if any (else its position is)")


class FieldOptions(IdOptions):
    """Options of readers of dict-like records (JSON Lines, Parquet, datasets)."""

    text_field: str = Field("text", description="field holding the document text")
    fields: dict[str, FieldType] = Field(default_factory=dict, description="fields that become typed columns instead "
                                         "of going into `meta`: name → string, int, float, bool, timestamp (ISO "
                                         "8601) or json (see refinery.corpora.readers.fields)")

    @field_validator("fields")
    @classmethod
    def _not_own_columns(cls, fields: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        taken = set(DOCUMENT_SCHEMA.names) | {info.data.get("text_field"), info.data.get("id_field")}
        clashes = sorted(name for name in fields if name in taken or column_name(name) in taken)
        if clashes:
            raise ValueError(f"{', '.join(clashes)} cannot be declared: the document's own columns "
                             f"({', '.join(DOCUMENT_SCHEMA.names)}) and its text and id fields are columns already")
        return fields


@dataclass(frozen=True)
class ReadTask:
    """One unit of reading work: a whole file, or a byte range / row range of a large one."""

    format: str  # the registered name of the reader that reads it
    path: str
    source: str
    start: int = 0
    end: int | None = None  # exclusive; None = to the end
    options: ReaderOptions = field(default_factory=ReaderOptions)  # validated by the reader's Options
    limit: int | None = None  # read only the first `limit` records (documents + quarantined); None = all

    def to_dict(self) -> dict[str, Any]:
        """The task as JSON values (for the run's manifest)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**values, "options": self.options.model_dump()}


@dataclass
class ReadBatch:
    """Documents read from a task, the records quarantined on the way, and how many records were seen."""

    documents: pa.Table
    quarantined: pa.Table
    records: int  # records that should have become documents: documents + quarantined
    # Records that are not documents by design (a WARC request, an image response), counted by reason.
    skipped: dict[str, int] = field(default_factory=dict)


class Reader:
    """The reader contract: one input format, from file names to batches of Documents.

    - `name` is what a recipe input writes as `format:`. `suffixes` are the file-name endings it claims: a
      file whose input names no format is read by the reader with the longest matching suffix (`claims`
      may also take a path whatever its name, e.g. a `datasets` folder).
    - `Options` (a ReaderOptions model) are its recipe options, validated before anything is read, and
      `schema` the Document columns plus the typed columns its documents carry.
    - `plan(path, task_size, options)` cuts one file into tasks: (start, end) ranges in the reader's own
      unit (byte offsets, rows, row groups; (0, None) = the whole file). The tasks of a file never share
      or lose a record, so any worker may read any of them in any order.
    - `read(task, batch_rows)` streams one task. Every record is accounted for: read = documents +
      quarantined (+ skipped, counted by reason, for records that are no documents by design, like a WARC
      request). A malformed record is quarantined with a reason and its raw bytes: it never crashes the
      read nor vanishes, and the good records around it are kept. Only what makes a whole file unreadable
      (or an option that does not fit it) raises InputError.

    A new format is one module in corpora/readers/ whose Reader subclass carries `@register`.
    """

    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type[ReaderOptions]] = ReaderOptions
    schema: ClassVar[pa.Schema] = DOCUMENT_SCHEMA

    @classmethod
    def claims(cls, path: str | Path) -> bool:
        """True when `path` is this reader's input whatever its name says."""
        return False

    def plan(self, path: str, task_size: int, options: ReaderOptions) -> list[tuple[int, int | None]]:
        """The ranges of `path` that are read as separate tasks; by default the whole file is one."""
        return [(0, None)]

    def read(self, task: ReadTask, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[ReadBatch]:
        raise NotImplementedError

    def options_of(self, task: ReadTask) -> Any:
        """The task's options as this reader's Options (its defaults for a task made without options)."""
        if isinstance(task.options, self.Options):
            return task.options
        return self.Options.model_validate(task.options.model_dump())


# --- compressed files: decompressed member by member, damage passed over and reported -------------------------

MAX_RAW = 1 << 26  # damage is quarantined in pieces of at most about this many bytes
_READ_BYTES = 1 << 18  # bytes read from a file at a time (compressed bytes, for a compressed file)
_SALVAGE_STEP = 1 << 14  # compressed bytes per call when a damaged member is decompressed again


@dataclass
class Damaged:
    """Bytes that hold no readable record: where they start (an offset in the decompressed stream), the reason
    ("category: detail"), the bytes themselves (at most about MAX_RAW), and the record's own id where one is known."""

    position: int
    reason: str
    raw: bytes
    record_id: str | None = None


@dataclass(frozen=True)
class StreamBreak:
    """A point where the decompressed data stops continuing the data before it: a member (gzip member, zstd frame,
    bz2 stream) or bytes between members that do not decompress, passed over to the next member that does, or a
    file that ends inside a member. `reason` says which and where ("corrupt_gzip: …", "truncated_stream: …")."""

    codec: str  # gzip, zstd or bz2
    reason: str
    raw: bytes  # the compressed bytes passed over, or those of the member cut off (at most MAX_RAW)
    cut: bool  # the file ends inside a member (else reading went on after the damage)


class _Codec(NamedTuple):
    name: str
    unit: str  # what one independently decompressible piece is called
    suffixes: tuple[str, ...]
    magic: re.Pattern[bytes]
    new: Callable[[], Any]  # a decompressor of one member: .decompress(data), .eof, .unused_data
    error: type[Exception]  # what it raises on data that does not decompress


_CODECS = (
    _Codec("gzip", "member", (".gz",), re.compile(rb"\x1f\x8b\x08"), lambda: zlib.decompressobj(31), zlib.error),
    _Codec("zstd", "frame", (".zst", ".zstd"), re.compile(rb"\x28\xb5\x2f\xfd"),
           lambda: zstandard.ZstdDecompressor().decompressobj(), zstandard.ZstdError),
    _Codec("bz2", "stream", (".bz2",), re.compile(rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)"), bz2.BZ2Decompressor, OSError),
)
COMPRESSED_SUFFIXES = tuple(suffix for codec in _CODECS for suffix in codec.suffixes)


def _codec_of(path: str | Path, head: bytes) -> _Codec | None:
    """The codec the file's name says, else the one its first bytes say (a `.warc` that is gzip); None: plain."""
    name = str(path).lower()
    return next((c for c in _CODECS if name.endswith(c.suffixes)), None) or next(
        (c for c in _CODECS if c.magic.match(head)), None)


def is_compressed(path: str | Path) -> bool:
    """True for a file read through a decompressor (one task: a compressed stream cannot be entered mid-way)."""
    # The name first: a remote file's first bytes cost a request.
    return _codec_of(path, b"") is not None or _codec_of(path, read_prefix(path, 16)) is not None


def _next_member(file: BinaryIO, start: int, codec: _Codec) -> int:
    """Offset of the first member at or after `start` whose beginning decompresses, or the file's size."""
    size = file.seek(0, io.SEEK_END)
    for block_start in range(start, size, _READ_BYTES):
        file.seek(block_start)
        block = file.read(_READ_BYTES + 15)  # overlap: a magic number across blocks counts
        for found in codec.magic.finditer(block):
            if found.start() >= _READ_BYTES:
                break
            file.seek(block_start + found.start())
            try:
                codec.new().decompress(file.read(1 << 14))
            except codec.error:
                continue
            return block_start + found.start()
    return size


def _feed(file: BinaryIO, codec: _Codec, start: int, stop: int, fine_from: int, done: int) -> tuple[bytes, int]:
    """Decompress file[start:stop] as one member, in pieces of _SALVAGE_STEP bytes before `fine_from` and of one
    byte after it, up to the first error: (the output past its first `done` bytes, where the error came or stop)."""
    decompressor, at, produced, kept = codec.new(), start, 0, []
    file.seek(start)
    while at < stop:
        piece = file.read(min(fine_from - at if at < fine_from else 1, _SALVAGE_STEP, stop - at))
        try:
            out = decompressor.decompress(piece)
        except codec.error:
            break
        if produced + len(out) > done:
            kept.append(out[max(done - produced, 0):])
        produced, at = produced + len(out), at + len(piece)
        if decompressor.eof:
            break
    return b"".join(kept), at


def _salvage(file: BinaryIO, codec: _Codec, start: int, stop: int, done: int) -> bytes:
    """What a damaged member decompresses to before its damage, past the `done` bytes already yielded: a failing
    call gives no output at all, so the member is decompressed again in small pieces, the failing one by bytes."""
    failing = _feed(file, codec, start, stop, stop, done)[1]
    return _feed(file, codec, start, stop, failing, done)[0]


def _members(file: BinaryIO, codec: _Codec) -> Iterator[bytes | StreamBreak]:
    """The decompressed bytes of a compressed file, member after member, with a StreamBreak at each damage."""
    start = offset = 0  # compressed offsets: where the current member starts, where `data` starts
    done = 0  # decompressed bytes of the current member yielded
    decompressor, data = codec.new(), file.read(_READ_BYTES)
    if not data:
        yield StreamBreak(codec.name, f"truncated_stream: the file is empty (0 bytes; a {codec.name} file holds at "
                          f"least one {codec.unit})", b"", cut=True)
        return
    while True:
        if not data:
            data = file.read(_READ_BYTES)
            if not data:
                break
        try:
            chunk = decompressor.decompress(data)
        except codec.error as err:  # the member costs only what follows its damage: reading resumes at the next
            if salvaged := _salvage(file, codec, start, offset + len(data), done):
                yield salvaged
            resume = _next_member(file, start + 1, codec)
            file.seek(start)
            raw = file.read(min(resume - start, MAX_RAW))
            # gzip files may be padded with zeros (tape blocks), which gzip itself passes over silently.
            if codec.name != "gzip" or raw.strip(b"\0") or resume - start > MAX_RAW:
                where = (f"in the {codec.name} {codec.unit} at compressed byte {start}" if codec.magic.match(raw)
                         else f"in bytes at compressed byte {start} that are no {codec.name} {codec.unit}")
                yield StreamBreak(codec.name, f"corrupt_{codec.name}: {err} {where}; {resume - start} compressed "
                                  "bytes skipped", raw, cut=False)
            file.seek(resume)
            start = offset = resume
            decompressor, data, done = codec.new(), b"", 0
            continue
        if chunk:
            done += len(chunk)
            yield chunk
        if decompressor.eof:  # the member ended: the next one starts with its unused input
            start = offset = offset + len(data) - len(decompressor.unused_data)
            decompressor, data, done = codec.new(), decompressor.unused_data, 0
        else:
            offset, data = offset + len(data), b""
    if offset > start:  # the file ends inside a member (in its data or its trailer)
        file.seek(start)
        yield StreamBreak(codec.name, f"truncated_stream: the {codec.name} stream is cut off {offset - start} bytes "
                          f"into the {codec.unit} at compressed byte {start}", file.read(MAX_RAW), cut=True)


def decompressed(path: str | Path, start: int = 0) -> Iterator[bytes | StreamBreak]:
    """The bytes of a file, decompressed (gzip, zstd, bz2) as its name or else its first bytes say, in chunks, with
    a StreamBreak wherever a compressed stream is damaged (reading goes on after it where it can). A plain file
    may be read from byte `start` on; a compressed one is always read from its beginning."""
    with open_input(path) as file:  # a plain path is opened by `open`, a URL through fsspec (corpora.storage)
        # Read from byte `start` on, a remote file's head is asked for apart: a read-ahead block from 0 would be wasted.
        codec = _codec_of(path, read_prefix(path, 16) if start and is_remote(path) else file.read(16))
        if codec is not None:
            if start:
                raise ValueError(f"{path} is {codec.name}-compressed: it is read from its start, as one task")
            file.seek(0)
            yield from _members(file, codec)
            return
        file.seek(start)
        while chunk := file.read(_READ_BYTES):
            yield chunk

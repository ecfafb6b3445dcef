"""What every reader shares: the task a worker reads, the batch it yields, and record conversion."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from refinery.corpora.records import DOCUMENT_SCHEMA, document_table, position_id, quarantine_table

# Documents per yielded batch: big enough for vectorised stages, small enough to stream.
DEFAULT_BATCH_ROWS = 4096
COMPRESSED_SUFFIXES = (".gz", ".zst", ".zstd", ".bz2")


def _meta_encoder() -> Callable[[dict], str]:
    """The serialisation of corpora.records.encode_meta, built once instead of once per record.

    json.dumps(extras, ensure_ascii=False, sort_keys=True, default=str) sets up a new encoder on every
    call, which costs more than encoding a small `meta` object. The C encoder that json.dumps itself uses
    is built here once, without the circular-reference bookkeeping (parsed records cannot be circular);
    where this Python has no such encoder, or it does not agree with json.dumps, json's own encoder is used.
    """
    reference = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str)
    try:
        encode = json.encoder.c_make_encoder(None, str, json.encoder.encode_basestring, None, ": ", ", ",
                                             True, False, True)

        def fast(extras: dict) -> str:
            return "".join(encode(extras, 0))

        sample = {"z": [1, -0.0, 2.5e300, float("nan"), True, None, "é \u2028 \" \\"], "a": {"y": {}, "b": b"x"}}
        if fast(sample) == reference.encode(sample):
            return fast
    except Exception:  # any trouble with the private encoder means: use the public one
        pass
    return reference.encode


_encode_meta = _meta_encoder()


class InputError(ValueError):
    """An input cannot be read at all (not one bad record: the whole file or its configuration)."""


class ReaderOptions(BaseModel):
    """A reader's own options, written beside `path:` in a recipe input; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class IdOptions(ReaderOptions):
    id_field: str = Field("id", description="field holding the record's own id, if any (else its position is)")


class FieldOptions(IdOptions):
    """Options of readers of dict-like records (JSON Lines, Parquet, datasets)."""

    text_field: str = Field("text", description="field holding the document text")


@dataclass(frozen=True)
class ReadTask:
    """One unit of reading work: a whole file, or a byte range / row range of a large one."""

    format: str  # the registered name of the reader that reads it
    path: str
    source: str
    start: int = 0
    end: int | None = None  # exclusive; None = to the end
    options: ReaderOptions = field(default_factory=ReaderOptions)  # validated by the reader's Options

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


def is_compressed(path: str | Path) -> bool:
    return str(path).lower().endswith(COMPRESSED_SUFFIXES)


def open_binary(path: str | Path) -> IO[bytes]:
    """Open a file for reading bytes, decompressing .gz, .zst and .bz2 transparently."""
    name = str(path).lower()
    # gzip and bz2 streams buffer on their own; another buffer on top would lose what was already
    # decompressed when a damaged file fails part-way.
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith((".zst", ".zstd")):
        import zstandard

        raw = open(path, "rb")  # noqa: SIM115 - closed with the stream reader
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), 1 << 20)
    if name.endswith(".bz2"):
        import bz2

        return bz2.open(path, "rb")
    return open(path, "rb")  # noqa: SIM115 - the caller closes it


def byte_ranges(size: int, task_size: int) -> list[tuple[int, int | None]]:
    """Split [0, size) into ranges of about task_size bytes; the last one runs to the end."""
    if size <= task_size:
        return [(0, None)]
    starts = list(range(0, size, task_size))
    return [(s, e) for s, e in zip(starts, starts[1:] + [None])]


class DamagedStream(Exception):
    """A compressed file ends or breaks part-way: every complete line before `position` was yielded."""

    def __init__(self, position: int, partial: bytes, detail: str):
        super().__init__(detail)
        self.position, self.partial, self.detail = position, partial, detail


def read_whole(path: str | Path, block: int = 1 << 22) -> tuple[bytes, DamagedStream | None]:
    """All the bytes of a (possibly compressed) file, and the damage that ended it early, if any."""
    chunks: list[bytes] = []
    with open_binary(path) as stream:
        while True:
            try:
                data = stream.read1(block)  # one decompressed chunk at a time: damage loses little
            except (EOFError, OSError, ValueError) as err:
                size = sum(map(len, chunks))
                return b"".join(chunks), DamagedStream(size, b"", f"{type(err).__name__}: {err}")
            if not data:
                return b"".join(chunks), None
            chunks.append(data)


def iter_lines(path: str, start: int = 0, end: int | None = None, block: int = 1 << 22) -> Iterator[tuple[int, bytes]]:
    """Yield (byte offset, line without its newline) for every line that *starts* in [start, end).

    A line that straddles `start` belongs to the previous range, so ranges never share or lose a line.
    Offsets are positions in the uncompressed stream, which makes them stable record positions.
    """
    with open_binary(path) as stream:
        pos = start
        if start > 0:
            stream.seek(start - 1)
            if stream.read(1) != b"\n":
                pos += len(stream.readline())
        buffer = b""
        while end is None or pos < end:
            try:
                data = stream.read1(block)  # one decompressed chunk at a time: damage loses little
            except (EOFError, OSError, ValueError) as err:  # truncated or corrupt compressed stream
                complete, _, buffer = buffer.rpartition(b"\n")
                for line in complete.split(b"\n") if complete else []:
                    yield pos, line
                    pos += len(line) + 1
                raise DamagedStream(pos, buffer, f"{type(err).__name__}: {err}") from None
            if not data:
                break
            # Lines are sliced out of the block where they lie; only a line cut by the block's edge is joined.
            i = 0
            if buffer:
                nl = data.find(b"\n")
                if nl < 0:
                    buffer += data
                    continue
                line = buffer + data[:nl]
                yield pos, line
                pos += len(line) + 1
                i = nl + 1
            find = data.find
            while end is None or pos < end:
                nl = find(b"\n", i)
                if nl < 0:
                    break
                yield pos, data[i:nl]
                pos += nl + 1 - i
                i = nl + 1
            else:
                return
            buffer = data[i:]
        if buffer and (end is None or pos < end):
            yield pos, buffer


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
        self._reset()

    def _reset(self) -> None:
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.urls: list[str | None] = []
        self.metas: list[str | None] = []
        self.positions: list[int] = []
        self.bad: list[tuple[str, str, str, int, str, bytes | None]] = []
        self.records = 0

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
        self.metas.append(_encode_meta(extras) if extras else None)

    def add_text(self, text: str, position: int) -> None:
        """Add a plain-text record (no fields): position id, no url, no meta."""
        self.records += 1
        self.positions.append(position)
        self.ids.append(position_id(self.file_name, position))
        self.texts.append(text)
        self.urls.append(None)
        self.metas.append(None)

    def flush(self) -> ReadBatch:
        """Return what was collected as tables and start afresh."""
        try:
            docs = document_table(self.ids, self.texts, self.task.source, self.urls, self.metas)
        except (pa.ArrowInvalid, UnicodeEncodeError):
            docs = self._table_without_unencodable()
        batch = ReadBatch(docs, quarantine_table(self.bad), self.records)
        self._reset()
        return batch

    def _table_without_unencodable(self) -> pa.Table:
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
                raw = text.encode("utf-8", "surrogatepass")
                pid = position_id(self.file_name, position)
                reason = "invalid_unicode: lone surrogate"
                self.bad.append((pid, self.task.source, self.task.path, position, reason, raw))
        return document_table(
            [self.ids[i] for i in keep],
            [self.texts[i] for i in keep],
            self.task.source,
            [self.urls[i] for i in keep],
            [self.metas[i] for i in keep],
        )


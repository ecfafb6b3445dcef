"""Instruction datasets (Alpaca, Dolly, ShareGPT, OpenAI messages, OASST trees, Self-Instruct, Q&A) as conversations.

A file is a JSON array (`[{...}, ...]`: one task per file, parsed one element at a time) or JSON Lines (split
into byte ranges like any JSONL, except flat OASST message exports, whose trees need the whole file). The
container is told by the file's first character, never by its name (BELLE ships JSON Lines as `.json`). The
instruction format is detected from the file's first record, or named in the recipe (`format: sharegpt`);
a record that does not fit the file's format is quarantined with the reason.

Every conversation is a Document row: `text` is a readable transcript (until a chat template replaces it),
and typed columns hold `messages`, `prompt` (the first user turn), `turns` (user turns) and `format`.
Positions are byte offsets (JSON Lines) or element numbers (JSON arrays).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import pyarrow as pa

from refinery.corpora import storage
from refinery.corpora.conversations import (
    NORMALISERS,
    NotAConversation,
    count_turns,
    detect_format,
    first_prompt,
    is_flat_oasst_message,
    nest_messages,
    transcript,
)
from refinery.corpora.readers import jsonl, register
from refinery.corpora.readers.base import (
    DEFAULT_BATCH_ROWS,
    IdOptions,
    InputError,
    ReadBatch,
    Reader,
    ReadTask,
    decompressed,
    is_compressed,
)
from refinery.corpora.readers.builder import RecordBuilder
from refinery.corpora.readers.lines import byte_ranges, iter_lines, read_head, read_whole
from refinery.corpora.records import (
    DOCUMENT_SCHEMA,
    MESSAGE_TYPE,
    document_table,
    encode_meta,
    position_id,
    quarantine_table,
)

AUTO = "instructions"
CONVERSATION_FIELDS = [
    pa.field("messages", pa.list_(MESSAGE_TYPE)),
    pa.field("prompt", pa.string()),
    pa.field("turns", pa.int32()),
    pa.field("format", pa.string()),
]
SCHEMA = pa.schema(list(DOCUMENT_SCHEMA) + CONVERSATION_FIELDS)
_PEEK_BYTES = 1 << 16
_PEEK_LINES = 100


def _is_json_array(path: str) -> bool:
    return read_head(path, _PEEK_BYTES).lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"["


class _BrokenArray(Exception):
    """A JSON array stops being valid JSON at `offset` (a character index), in element number `index`; `at_end`:
    because the text ends there (a file cut short), not because of what it holds."""

    def __init__(self, index: int, offset: int, reason: str, at_end: bool = False):
        super().__init__(reason)
        self.index, self.offset, self.reason, self.at_end = index, offset, reason, at_end


def _iter_array(text: str) -> Iterator[tuple[int, Any, str]]:
    """(element number, parsed element, its source text) for each element of a JSON array, one at a time;
    _BrokenArray where the array breaks, after every element before it."""
    decoder = json.JSONDecoder()
    position, index, length = text.index("[") + 1, 0, len(text)

    def skip_space(at: int) -> int:
        while at < length and text[at] in " \t\r\n":
            at += 1
        return at

    def closes(at: int) -> bool:
        """True at the array's closing bracket, which nothing but whitespace may follow."""
        if at >= length or text[at] != "]":
            return False
        rest = skip_space(at + 1)
        if rest < length:
            raise _BrokenArray(index, rest, f"malformed_json: {length - rest} characters after the closing ']'")
        return True

    position = skip_space(position)
    if closes(position):
        return
    while True:
        try:
            element, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            # A string without its closing quote runs to the end: the error names where the string starts.
            at_end = err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated string")
            raise _BrokenArray(index, position, f"malformed_json: {err.msg} in element {index}", at_end) from None
        except RecursionError:
            reason = f"malformed_json: nested too deeply to parse in element {index}"
            raise _BrokenArray(index, position, reason) from None
        yield index, element, text[position:end]
        index += 1
        position = skip_space(end)
        if closes(position):
            return
        if position >= length or text[position] != ",":
            reason = f"malformed_json: expected ',' or ']' after element {index - 1}"
            raise _BrokenArray(index, position, reason, position >= length)
        position = skip_space(position + 1)


def _first_records(path: str) -> Iterator[Any]:
    """The first records of a file, for detection (a JSON array is read only as far as its first element)."""
    if _is_json_array(path):
        pieces: list[bytes] = []
        have = tried = 0
        for chunk in itertools.chain(decompressed(path), [None]):  # None: the end, where a last try is due
            if isinstance(chunk, bytes):
                pieces.append(chunk)
                have += len(chunk)
                if have < 2 * tried:  # the head is parsed again only once it has doubled
                    continue
            head = b"".join(pieces)
            pieces, tried = [head], have
            elements = []  # the whole elements in the head, so that one damaged element does not decide alone
            try:
                for _, element, _ in itertools.islice(_iter_array(head.decode("utf-8", "ignore")), _PEEK_LINES):
                    elements.append(element)
            except _BrokenArray:
                pass
            if elements or not isinstance(chunk, bytes):  # or the end of the data, or damage: no whole element
                yield from elements
                return
        return
    for count, item in enumerate(iter_lines(path)):
        if count >= _PEEK_LINES:
            return
        if isinstance(item, tuple) and item[1].strip():
            try:
                yield json.loads(item[1])
            except (ValueError, RecursionError):
                continue


@lru_cache(maxsize=256)
def detect(path: str) -> str | None:
    """The instruction format of a file, from its first record that fits one; None for a file without records.

    Raises InputError, naming the file, when records exist but none of the first ones fits a known format.
    """
    seen = None
    for record in _first_records(path):
        found = detect_format(record)
        if found:
            return found
        seen = seen or record
    if seen is None:
        return None
    fields = ", ".join(sorted(seen)) if isinstance(seen, dict) else type(seen).__name__
    raise InputError(
        f"cannot tell the instruction format of {path}: its first record has fields {fields}; expected Alpaca "
        "(instruction/input/output), Dolly (instruction/context/response), ShareGPT (conversations), OpenAI "
        "(messages), OASST (message_tree_id/prompt or message_id/role), Self-Instruct (instruction/instances) "
        "or Q&A (question/answer). Name the format in the recipe if it is one of these "
        f"(format: {' | '.join(NORMALISERS)}); use format: jsonl for plain documents"
    )


def _is_flat_export(path: str, format_name: str | None) -> bool:
    """A flat OASST export (messages linked by `parent_id`): its trees need the whole file in one task."""
    return bool(format_name and format_name.startswith("oasst")) and any(
        is_flat_oasst_message(record) for record in itertools.islice(_first_records(path), 1))


class ConversationBuilder(RecordBuilder):
    """RecordBuilder's conventions (own id over position id, extras in `meta`, quarantine with raw bytes) for
    conversations; a record may give several (an OASST tree's threads), each counted as a record."""

    def __init__(self, task: ReadTask, format_name: str):
        super().__init__(task)
        self.format_name = format_name
        self.normalise = NORMALISERS[format_name]

    def _reset(self) -> None:
        super()._reset()
        self.messages: list[list[dict[str, str]]] = []

    def add(self, record: Any, position: int, raw: bytes | None = None) -> None:
        if not isinstance(record, dict):
            self.quarantine(position, f"not_an_object: got {type(record).__name__}", raw)
            return
        try:
            conversations = self.normalise(record, self.id_field)
        except NotAConversation as err:
            self.quarantine(position, str(err), raw)
            return
        for conversation in conversations:
            base = conversation.own_id or position_id(self.file_name, position)
            doc_id = base if conversation.part is None else f"{base}/{conversation.part}"
            text = transcript(conversation.messages)
            meta = encode_meta(conversation.extras)
            try:  # JSON escapes can produce lone surrogates, which are not valid UTF-8
                (text + (meta or "") + doc_id).encode("utf-8")
            except UnicodeEncodeError:
                self.quarantine(position, "invalid_unicode: lone surrogate", raw)
                continue
            self.records += 1
            self.positions.append(position)
            self.ids.append(doc_id)
            self.texts.append(text)
            self.urls.append(None)
            self.metas.append(meta)
            self.messages.append(conversation.messages)

    def flush(self) -> ReadBatch:
        docs = document_table(self.ids, self.texts, self.task.source, self.urls, self.metas)
        columns = [
            pa.array(self.messages, CONVERSATION_FIELDS[0].type),
            pa.array([first_prompt(m) for m in self.messages], pa.string()),
            pa.array([count_turns(m) for m in self.messages], pa.int32()),
            pa.array([self.format_name] * len(self.messages), pa.string()),
        ]
        for spec, column in zip(CONVERSATION_FIELDS, columns):
            docs = docs.append_column(spec, column)
        batch = ReadBatch(docs, quarantine_table(self.bad), self.records)
        self._reset()
        return batch


def _read_array(builder: ConversationBuilder, path: str, batch_rows: int) -> Iterator[ReadBatch]:
    data, damage = read_whole(path)
    # Undecodable bytes become lone surrogates: only the elements holding them are quarantined.
    text = data.decode("utf-8", "surrogateescape")
    try:
        for index, record, source in _iter_array(text):
            raw = source.encode("utf-8", "surrogateescape")
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                builder.quarantine(index, f"invalid_utf8: byte {err.start} of the element", raw)
            else:
                builder.add(record, index, raw)
            if len(builder) >= batch_rows:
                yield builder.flush()
    except _BrokenArray as broken:  # every element before the break is kept; the rest is one quarantined record
        rest = text[broken.offset:].encode("utf-8", "surrogateescape")
        if damage is not None:
            reason = damage.reason
        elif broken.at_end:  # the array never closes: the file is cut short
            detail = broken.reason.partition(": ")[2]
            reason = f"truncated_stream: the file ends before the JSON array's closing ']' ({detail})"
        else:
            reason = broken.reason
        builder.quarantine(broken.index, reason, rest or (damage.raw if damage else b""))
    yield builder.flush()


def _read_lines(builder: ConversationBuilder, task: ReadTask, batch_rows: int, flat: bool) -> Iterator[ReadBatch]:
    flat_records: list[tuple[int, dict]] = []
    flat_lines: dict[int, bytes] = {}
    for offset, line, record in jsonl.parsed_lines(task, builder.quarantine):  # the JSONL reader's rules
        if flat and is_flat_oasst_message(record):
            flat_records.append((offset, record))
            flat_lines[offset] = line
        else:
            builder.add(record, offset, line)
        if len(builder) >= batch_rows:
            yield builder.flush()
    if flat_records:
        roots, orphans = nest_messages(flat_records)
        for position, root in roots:
            builder.add(root, position, flat_lines[position])
        for position, _record, reason in orphans:
            builder.quarantine(position, reason, flat_lines[position])
    yield builder.flush()


@register
class InstructionsReader(Reader):
    """An instruction set whose format is detected from its first record (`format: instructions`, `.json`)."""

    name = AUTO
    # A whole-file JSON array is an instruction set (Alpaca, ShareGPT, ...); documents come as JSON Lines.
    suffixes = (".json",)
    Options = IdOptions
    schema = SCHEMA

    def format_of(self, path: str) -> str | None:
        """The instruction format a file is read as: detected for `instructions`, else the reader's name."""
        return detect(path) if self.name == AUTO else self.name

    def plan(self, path: str, task_size: int, options: IdOptions) -> list[tuple[int, int | None]]:
        # Detection runs now, so a file of no known format fails at planning, naming the file, not in a worker.
        format_name = self.format_of(path)
        if _is_flat_export(path, format_name) or is_compressed(path) or _is_json_array(path):
            return [(0, None)]
        return byte_ranges(storage.size(path), task_size)

    def read(self, task: ReadTask, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[ReadBatch]:
        format_name = self.format_of(task.path)
        if format_name is None:  # a file without records
            yield ReadBatch(SCHEMA.empty_table(), quarantine_table([]), 0)
            return
        builder = ConversationBuilder(task, format_name)
        if _is_json_array(task.path):
            yield from _read_array(builder, task.path, batch_rows)
        else:
            yield from _read_lines(builder, task, batch_rows, _is_flat_export(task.path, format_name))


# A recipe that names the instruction format (`format: sharegpt`) gets a reader without detection. They claim
# no suffix: a file's name cannot tell these formats apart.
for _format_name in NORMALISERS:
    register(type(f"{_format_name.title().replace('_', '')}Reader", (InstructionsReader,),
                  {"name": _format_name, "suffixes": (), "__doc__": f"Instruction sets in the {_format_name} format."}))

"""The reader registry: recipe inputs name readers by these keys (`format:`), or their file names do.

Every module in this package is imported once, so a new input format is one new file whose Reader subclass
carries `@register`; nothing else needs editing. `plan_input` expands one recipe input into ReadTasks and
`read_task` streams one task, both through the registry.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from refinery.corpora.readers.base import (
    COMPRESSED_SUFFIXES,
    DEFAULT_BATCH_ROWS,
    InputError,
    ReadBatch,
    Reader,
    ReaderOptions,
    ReadTask,
)
from refinery.corpora.readers.fields import declared_schema
from refinery.corpora.storage import expand

READERS: dict[str, type[Reader]] = {}


def register(cls: type[Reader]) -> type[Reader]:
    """Class decorator: make a reader available to recipes as `format: <name>` and by its suffixes."""
    if cls.name in READERS and READERS[cls.name] is not cls:
        raise ValueError(f"two readers are named '{cls.name}'")
    claimed = {s: name for name, r in READERS.items() if r is not cls for s in r.suffixes}
    for suffix in cls.suffixes:
        if suffix in claimed:
            raise ValueError(f"readers '{claimed[suffix]}' and '{cls.name}' both claim the suffix '{suffix}'")
    READERS[cls.name] = cls
    return cls


def format_names() -> str:
    """The registered formats, for messages that ask the user to choose one."""
    return ", ".join(sorted(READERS))


def format_from_name(name: str | Path) -> str | None:
    """The format a file name (or a glob's) tells by its ending: the reader with the longest matching suffix."""
    lowered = str(name).lower()
    matches = [(len(s), fmt) for fmt, r in READERS.items() for s in r.suffixes if lowered.endswith(s.lower())]
    return max(matches)[1] if matches else None


def infer_format(path: str | Path) -> str:
    """The reader format of a file (or a `save_to_disk` folder), from what it is or else its name."""
    fmt = next((name for name, r in READERS.items() if r.claims(path)), None) or format_from_name(path)
    if fmt is None:
        raise InputError(f"cannot tell the format of {path} from its name; add `format:` to this input "
                         f"(one of: {format_names()})")
    return fmt


def option_formats(option: str) -> list[str]:
    """The formats whose readers take an option of this name."""
    return sorted(name for name, r in READERS.items() if option in r.Options.model_fields)


def option_problems(fmt: str, options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(option, what is wrong with it) for each option the reader of `fmt` refuses; empty when all fit."""
    known = READERS[fmt].Options.model_fields
    problems = []
    for key in options:
        if key in known:
            continue
        takers = option_formats(key)
        if takers:
            formats = ", ".join(takers)
            problems.append((key, f"option '{key}' is not for format {fmt} (formats that take it: {formats})"))
        else:
            valid = ", ".join(known) or "none"
            problems.append((key, f"unknown option '{key}' for format {fmt} (its options: {valid})"))
    if problems:
        return problems
    try:
        READERS[fmt].Options.model_validate(dict(options))
    except ValidationError as err:
        problems = [(".".join(map(str, e["loc"])), e["msg"]) for e in err.errors()]
        return [(key, f"option '{key}' of format {fmt}: {message}") for key, message in problems]
    return []


def reader_options(fmt: str, options: Mapping[str, Any], path: str | Path = "") -> ReaderOptions:
    """`options` validated by the reader of `fmt`; InputError naming each option that does not fit."""
    if fmt not in READERS:
        raise InputError(f"unknown format '{fmt}'{f' for {path}' if path else ''}: use one of {format_names()}")
    problems = option_problems(fmt, options)
    if problems:
        where = f"{path}: " if path else ""
        raise InputError(where + "; ".join(message for _, message in problems))
    return READERS[fmt].Options.model_validate(dict(options))


def document_schema(formats: Iterable[str], declared: Iterable[Mapping[str, str]] = ()) -> pa.Schema:
    """The Document columns plus every typed column the formats' readers add (e.g. WARC's crawl_date) and the
    inputs declare (`fields:`); InputError where two of them give one name two types."""
    schemas = [Reader.schema] + [READERS[f].schema for f in sorted(set(formats))]
    schemas += [pa.schema(declared_schema(dict(fields))) for fields in declared if fields]
    try:
        return pa.unify_schemas(schemas)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise InputError(f"the inputs' columns disagree on a type ({err}); give each column one type in `fields:` "
                         "(a field may not take the name of a reader's own column with another type)") from None


def tasks_schema(tasks: Sequence[ReadTask]) -> pa.Schema:
    """document_schema of the formats and declared fields of these read tasks."""
    return document_schema((task.format for task in tasks), (getattr(task.options, "fields", {}) for task in tasks))


def default_source(path: str | Path) -> str:
    """A source label from a file name: the name without its format and compression suffixes."""
    endings = {part for r in READERS.values() for s in r.suffixes for part in s.lower().split(".")[1:]}
    endings |= {s.lstrip(".") for s in COMPRESSED_SUFFIXES}
    name = Path(path).name
    while True:  # 'x.warc.wet.gz' → 'x'
        stem, dot, ending = name.rpartition(".")
        if not dot or not stem or ending.lower() not in endings:
            return name
        name = stem


def expand_paths(pattern: str, base_dir: Path) -> list[str]:
    """The files a path, URL or glob names (a plain path relative to base_dir), sorted so task order is stable;
    a folder counts where a reader claims it (a `datasets` folder)."""
    return expand(pattern, base_dir, lambda path: any(r.claims(path) for r in READERS.values()))


def plan_input(
    pattern: str,
    base_dir: Path,
    task_size: int,
    format: str | None = None,
    source: str | None = None,
    options: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> list[ReadTask]:
    """Expand one input into read tasks, each file read by its reader (`format`, else inferred per file)
    with `options` validated by that reader, large files split into ranges by the reader's `plan`.

    With a `limit`, each file is one task that reads only the file's first `limit` records: the first records of
    a file are those of its first range, so a split would only add tasks that read nothing."""
    tasks = []
    for path in expand_paths(pattern, base_dir):
        fmt = format or infer_format(path)
        validated = reader_options(fmt, options or {}, path)
        label = source or default_source(path)
        ranges = [(0, None)] if limit is not None else READERS[fmt]().plan(path, task_size, validated)
        tasks.extend(ReadTask(fmt, path, label, start, end, validated, limit) for start, end in ranges)
    return tasks


def read_task(task: ReadTask, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[ReadBatch]:
    """Stream the Document batches of one task (quarantined records ride along in each batch); a task with a
    `limit` stops after that many records."""
    reader = READERS[task.format]()
    if task.limit is None:
        yield from reader.read(task, batch_rows)
    else:
        yield from _first_records(reader, task, batch_rows, task.limit)


def _first_records(reader: Reader, task: ReadTask, batch_rows: int, limit: int) -> Iterator[ReadBatch]:
    """The task's first `limit` records (documents and quarantined ones; skipped ones do not count), exactly.

    Batches of at most `limit` rows end where the limit does for readers that put one row per record in a batch.
    A batch that holds records past the limit is cut: its documents alone keep their order, so one that also holds
    quarantined or skipped records is read again, one record at a time, from the record after the last one taken.
    """
    taken = 0
    for batch in reader.read(task, min(batch_rows, limit)):
        if taken + batch.records > limit:
            break
        yield batch
        taken += batch.records
        if taken == limit:
            return
    else:
        return  # the file has no more records than the limit
    if not batch.quarantined.num_rows and not batch.skipped:
        yield _records_of(batch, 0, limit - taken)
        return
    seen = 0
    for single in reader.read(task, 1):
        if seen + single.records > taken:
            skip = max(0, taken - seen)
            yield _records_of(single, skip, min(single.records - skip, limit - max(seen, taken)))
        seen += single.records
        if seen >= limit:
            return


def _records_of(batch: ReadBatch, skip: int, count: int) -> ReadBatch:
    """`count` records of a batch after its first `skip`: documents first, then quarantined ones (a batch does not
    keep their order between the two; only a reader that reads several records at once has more than one)."""
    if skip == 0 and count == batch.records:
        return batch
    docs = batch.documents.slice(skip, count)
    quarantined_skip = max(0, skip - batch.documents.num_rows)
    quarantined = batch.quarantined.slice(quarantined_skip, count - docs.num_rows)
    return ReadBatch(docs, quarantined, docs.num_rows + quarantined.num_rows)


# Modules that hold only helpers (base, lines, rows, warc_framing) register nothing; importing them is harmless.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.ispkg):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["READERS", "InputError", "ReadBatch", "ReadTask", "Reader", "ReaderOptions", "default_source",
           "document_schema", "tasks_schema", "expand_paths", "format_from_name", "infer_format", "option_formats",
           "option_problems", "plan_input", "read_task", "reader_options", "register"]

"""Readers turn input files into Document batches. Each format module has `plan` and `read`.

`plan_input` expands one recipe input (a path or glob) into ReadTasks; `read_task` streams one task.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from refinery.corpora.readers import hf, instructions, jsonl, parquet, text, warc, wikipedia
from refinery.corpora.readers.base import DEFAULT_BATCH_ROWS, InputError, ReadBatch, ReadTask
from refinery.corpora.records import DOCUMENT_SCHEMA

FORMATS = {"jsonl": jsonl, "parquet": parquet, "text": text, "hf": hf, "wikipedia": wikipedia, "warc": warc,
           "instructions": instructions, **instructions.NAMED_READERS}

_SUFFIX_FORMATS = [
    ((".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".jsonl.zst", ".jsonl.zstd", ".json.gz"), "jsonl"),
    ((".parquet",), "parquet"),
    ((".txt", ".txt.gz", ".txt.zst", ".txt.bz2", ".text"), "text"),
    ((".arrow",), "hf"),
    ((".xml.bz2", ".xml", ".xml.gz"), "wikipedia"),
    # WAT (.warc.wat.gz) holds metadata records only: read as WARC, every record is counted as skipped.
    ((".warc", ".warc.gz", ".wet", ".wet.gz", ".wat", ".wat.gz"), "warc"),
    # A whole-file JSON array is an instruction set (Alpaca, ShareGPT, ...); documents come as JSON Lines.
    ((".json",), "instructions"),
]

__all__ = ["FORMATS", "InputError", "ReadBatch", "ReadTask", "document_schema", "infer_format", "plan_input",
           "read_task"]


def document_schema(formats: Iterable[str]) -> pa.Schema:
    """The Document columns plus every typed column the given formats' readers add (e.g. WARC's url date)."""
    schemas = [DOCUMENT_SCHEMA] + [getattr(FORMATS[f], "SCHEMA", DOCUMENT_SCHEMA) for f in sorted(set(formats))]
    return pa.unify_schemas(schemas)


def infer_format(path: str | Path) -> str:
    """The reader format implied by a file name (or a `save_to_disk` folder)."""
    if hf.is_dataset_folder(path):
        return "hf"
    name = str(path).lower()
    for suffixes, fmt in _SUFFIX_FORMATS:
        if name.endswith(suffixes):
            return fmt
    raise InputError(
        f"cannot tell the format of {path} from its name; add `format:` to this input "
        f"(one of: {', '.join(FORMATS)})"
    )


_SOURCE_SUFFIXES = (".gz", ".zst", ".zstd", ".bz2", ".jsonl", ".ndjson", ".json", ".parquet", ".txt", ".arrow",
                    ".xml", ".warc", ".wet", ".wat")


def default_source(path: str | Path) -> str:
    """A source label from a file name: the name without its format suffixes."""
    name = Path(path).name
    while True:  # 'x.warc.wet.gz' → 'x'
        suffix = next((s for s in _SOURCE_SUFFIXES if name.lower().endswith(s) and len(name) > len(s)), None)
        if suffix is None:
            return name
        name = name[: -len(suffix)]


def expand_paths(pattern: str, base_dir: Path) -> list[str]:
    """The files a path or glob names (relative to base_dir), sorted so task order is stable."""
    full = pattern if os.path.isabs(pattern) else str(base_dir / pattern)
    if glob.has_magic(full):
        matches = sorted(p for p in glob.glob(full, recursive=True) if os.path.isfile(p) or hf.is_dataset_folder(p))
        if not matches:
            raise InputError(f"no file matches '{pattern}' (looked in {base_dir})")
        return matches
    if not os.path.exists(full):
        raise InputError(f"input '{pattern}' does not exist (looked for {full})")
    return [full]


def plan_input(
    pattern: str,
    base_dir: Path,
    task_size: int,
    format: str | None = None,
    source: str | None = None,
    options: dict[str, Any] | None = None,
) -> list[ReadTask]:
    """Expand one recipe input into read tasks, splitting large files into byte or row ranges."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    tasks = []
    for path in expand_paths(pattern, base_dir):
        fmt = format or infer_format(path)
        if fmt not in FORMATS:
            raise InputError(f"unknown format '{fmt}' for {path}: use one of {', '.join(FORMATS)}")
        if fmt == "text":
            ranges = text.plan(path, task_size, options.get("unit", "file"))
        elif fmt == "hf":
            ranges = hf.plan(path, task_size, options.get("split"))
        else:
            ranges = FORMATS[fmt].plan(path, task_size)
        label = source or default_source(path)
        tasks.extend(ReadTask(fmt, path, label, start, end, options) for start, end in ranges)
    return tasks


def read_task(task: ReadTask, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[ReadBatch]:
    """Stream the Document batches of one task (quarantined records ride along in each batch)."""
    yield from FORMATS[task.format].read(task, batch_rows)

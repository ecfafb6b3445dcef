"""Record schemas shared by every reader and stage.

A Document table always starts with these columns; stages append typed columns after them.
A Conversation table is the one shape every instruction format normalises into.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa

DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        # Reader-specific extras that no stage uses, as one JSON object (null when there are none).
        pa.field("meta", pa.string()),
    ]
)

MESSAGE_TYPE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])

# A record the reader could not turn into a document: kept byte for byte with the reason.
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("position", pa.int64(), nullable=False),  # byte offset or row number
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.binary()),
    ]
)


def position_id(file_name: str, position: int) -> str:
    """Stable id for a record without its own: the file's name and the record's byte offset or row."""
    return f"{file_name}:{position}"


def encode_meta(extras: dict) -> str | None:
    """Serialise reader extras deterministically (sorted keys), or None when there are none."""
    if not extras:
        return None
    return json.dumps(extras, ensure_ascii=False, sort_keys=True, default=str)


def document_table(
    ids: Sequence[str],
    texts: Sequence[str],
    sources: Sequence[str] | str,
    urls: Sequence[str | None] | None = None,
    metas: Sequence[str | None] | None = None,
) -> pa.Table:
    """Build a Document table from Python columns (a single `sources` string applies to every row)."""
    n = len(ids)
    if isinstance(sources, str):
        source_array = pa.array([sources] * n, pa.string())
    else:
        source_array = pa.array(sources, pa.string())
    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array(texts, pa.string()),
            source_array,
            pa.array(urls if urls is not None else [None] * n, pa.string()),
            pa.array(metas if metas is not None else [None] * n, pa.string()),
        ],
        schema=DOCUMENT_SCHEMA,
    )


def quarantine_table(rows: Sequence[tuple[str, str, str, int, str, bytes | None]]) -> pa.Table:
    """Build a quarantine table from (id, source, file, position, reason, raw) tuples."""
    columns = list(zip(*rows)) if rows else [[] for _ in QUARANTINE_SCHEMA]
    return pa.Table.from_arrays(
        [pa.array(col, field.type) for col, field in zip(columns, QUARANTINE_SCHEMA)],
        schema=QUARANTINE_SCHEMA,
    )

"""Record schemas shared by every reader and stage.

A Document table always starts with these columns; stages append typed columns after them.
A Conversation table is the one shape every instruction format normalises into.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

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


def _meta_encoder() -> Callable[[dict], str]:
    """`json.dumps(extras, ensure_ascii=False, sort_keys=True, default=str)`, built once instead of once per record.

    json.dumps sets up a new encoder on every call, which costs more than encoding a small `meta` object. The C
    encoder that json.dumps itself uses is built here once, without the circular-reference bookkeeping (parsed
    records cannot be circular); where this Python has no such encoder, or it does not agree with json.dumps,
    json's own encoder is used.
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


_encode = _meta_encoder()


def encode_meta(extras: dict) -> str | None:
    """Serialise reader extras deterministically (sorted keys), or None when there are none."""
    return _encode(extras) if extras else None


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

"""Typed columns from a record's own fields: `fields:` on a JSON Lines, JSON, Parquet or datasets input.

    - path: c4/*.jsonl.gz
      fields: {timestamp: timestamp}          # C4's crawl time, as a timestamp column
    - path: ccnet/*.jsonl.gz
      fields: {created: timestamp, metadata.language_score: float, metadata.nlines: int}

Every field a record has besides its text, id and url goes into `meta`, one JSON object per row, because JSON
records carry no schema: a type guessed from the first records could be wrong on a later one, hours into a run,
and two workers reading different files would guess differently (the output must not depend on that). A field
the recipe declares has a type that does not depend on the data: it becomes a column of that type (null where a
record lacks it), and leaves `meta`. A value that is not of the declared type (a string where an `int` was
declared) makes that row's column null, and the value stays in `meta` under its own name, with the field named in
`meta.fields_invalid`: nothing is lost, and `SELECT ... WHERE meta LIKE '%fields_invalid%'` finds them.
A dotted name reaches into a nested object (`metadata.nlines`, as Dolma's records nest theirs); its column is
named with underscores (`metadata_nlines`).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Literal

import pyarrow as pa

FieldType = Literal["string", "int", "float", "bool", "timestamp", "json"]
ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),  # ISO 8601 text; without a zone it is taken as UTC
    "json": pa.string(),  # any value, as its JSON text: a nested field kept apart from the rest of `meta`
}
INVALID_KEY = "fields_invalid"


def column_name(field: str) -> str:
    """The column of a declared field: its name, a nested one's path joined by underscores."""
    return field.replace(".", "_")


def declared_schema(fields: dict[str, str]) -> list[pa.Field]:
    """The columns a `fields:` option adds, in the order written."""
    return [pa.field(column_name(name), ARROW_TYPES[kind]) for name, kind in fields.items()]


def _pop(record: dict[str, Any], path: str) -> Any:
    """Remove and return the value at a dotted path (None where there is none); an object left empty goes too."""
    head, _, rest = path.partition(".")
    if not rest:
        return record.pop(head, None)
    inner = record.get(head)
    if not isinstance(inner, dict):
        return None
    value = _pop(inner, rest)
    if not inner:
        del record[head]
    return value


def _put(record: dict[str, Any], path: str, value: Any) -> None:
    head, _, rest = path.partition(".")
    if rest:
        _put(record.setdefault(head, {}), rest, value)
    else:
        record[head] = value


def convert(value: Any, kind: str) -> Any:
    """`value` as a `kind` column holds it; ValueError where it is not of that kind (never a silent cast)."""
    if kind == "json":
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        if -(1 << 63) <= value < (1 << 63):
            return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "timestamp" and isinstance(value, str):
        parsed = datetime.fromisoformat(value.strip())  # ValueError where it is not ISO 8601
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    raise ValueError(f"not {kind}")


class TypedFields:
    """The declared fields' columns of one batch, taken out of each record's extras as records are added."""

    def __init__(self, declared: dict[str, str]):
        self.declared = declared
        self.columns: dict[str, list[Any]] = {name: [] for name in declared}

    def take(self, extras: dict[str, Any] | None) -> dict[str, Any] | None:
        """Move each declared field of `extras` into its column; return what is left for `meta` (None: nothing)."""
        if not self.declared:
            return extras
        invalid = []
        for name, kind in self.declared.items():
            value = _pop(extras, name) if extras else None
            if value is not None:
                try:
                    value = convert(value, kind)
                except ValueError:
                    _put(extras, name, value)  # kept as it was, in meta
                    invalid.append(name)
                    value = None
            self.columns[name].append(value)
        if invalid:
            extras[INVALID_KEY] = invalid
        return extras or None

    def arrays(self, rows: list[int] | None = None) -> list[pa.Array]:
        """The columns as Arrow arrays (only `rows` of them, where given), then start afresh."""
        arrays = [pa.array(values if rows is None else [values[i] for i in rows], ARROW_TYPES[self.declared[name]])
                  for name, values in self.columns.items()]
        self.columns = {name: [] for name in self.declared}
        return arrays

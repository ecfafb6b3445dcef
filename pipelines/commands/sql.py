"""`refinery sql`: read-only DuckDB views over a run folder."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import TextIO

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from refinery.corpora.records import DOCUMENT_SCHEMA, QUARANTINE_SCHEMA

FORMATS = ("table", "csv", "json", "parquet")
# Statements that only read. Anything else (COPY, CREATE, INSERT, ATTACH, SET, ...) is refused.
_READ_ONLY = {"SELECT", "EXPLAIN", "PRAGMA", "RELATION", "LOGICAL_PLAN"}
_VIEW_HELP = {
    "docs": "kept documents (data/*.parquet)",
    "removed": "removed documents with `stage` and `reason` (removed/*/*.parquet)",
    "quarantine": "input records that could not be read, with `reason` and raw bytes (quarantine/*.parquet)",
    "stats": "one row per stage: docs_in, kept, removed, quarantined, reasons, counts (stage tallies), bytes, "
             "seconds (stats/*.json)",
    "tokens": "one row per tokenized document: split, doc_id, source, shard, offset, length (tokens/*/index.parquet)",
}


class SqlError(ValueError):
    """A query that cannot run here, with what to do instead."""


def _quoted(path: Path) -> str:
    """A path as an SQL string literal (views cannot take parameters)."""
    return "'" + str(path).replace("'", "''") + "'"


def _has(folder: Path, pattern: str) -> bool:
    return folder.exists() and any(folder.glob(pattern))


def connect(run_dir: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the run's views."""
    root = Path(run_dir)
    if not (root / "manifest.json").exists():
        raise SqlError(f"{root} is not a Refinery run folder (no manifest.json); give the `output:` of a recipe")
    con = duckdb.connect()
    removed_empty = DOCUMENT_SCHEMA.empty_table().append_column("reason", pa.array([], pa.string()))
    views = [
        ("docs", "data", "*.parquet", "read_parquet({}, union_by_name=true)", DOCUMENT_SCHEMA.empty_table()),
        ("removed", "removed", "*/*.parquet", "read_parquet({}, union_by_name=true)",
         removed_empty.append_column("stage", pa.array([], pa.string()))),
        ("quarantine", "quarantine", "*.parquet", "read_parquet({})", QUARANTINE_SCHEMA.empty_table()),
        ("stats", "stats", "*.json", "read_json({}, union_by_name=true) ORDER BY position", None),
        ("tokens", "tokens", "*/index.parquet", None, None),
    ]
    for name, folder, pattern, reader, empty in views:
        if _has(root / folder, pattern):
            source = _quoted(root / folder / pattern)
            if name == "tokens":  # the split is the folder name
                select = ("regexp_extract(filename, '([^/]+)/index.parquet$', 1) AS split, * EXCLUDE (filename) "
                          f"FROM read_parquet({source}, filename=true)")
            else:
                select = f"* FROM {reader.format(source)}"
            con.execute(f"CREATE VIEW {name} AS SELECT {select}")
        elif empty is not None:
            con.register(name, empty)
    return con


def check_read_only(query: str) -> None:
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as err:
        raise SqlError(f"cannot parse the query: {err}") from None
    for statement in statements:
        kind = statement.type.name
        if kind not in _READ_ONLY:
            raise SqlError(f"refinery sql is read-only: {kind} statements are not allowed; use SELECT")


def as_arrow(result: duckdb.DuckDBPyRelation) -> pa.Table:
    """The result as an Arrow table (DuckDB 2 renamed fetch_arrow_table to to_arrow_table)."""
    fetch = getattr(result, "to_arrow_table", None) or result.fetch_arrow_table
    return fetch()


def query(run_dir: str | Path, sql: str) -> pa.Table:
    """Run a read-only query over a run and return the result as an Arrow table."""
    check_read_only(sql)
    con = connect(run_dir)
    try:
        return as_arrow(con.sql(sql))
    except duckdb.Error as err:
        raise SqlError(f"{err}\n(views: {', '.join(_VIEW_HELP)}; `refinery sql RUN_DIR` lists their columns)") from None


def render(table: pa.Table, fmt: str, out: TextIO, output: str | None = None, max_rows: int = 50) -> None:
    if fmt == "parquet":
        if not output:
            raise SqlError("--format parquet writes a file: add --output FILE.parquet")
        pq.write_table(table, output)
        print(f"wrote {table.num_rows:,} rows to {output}", file=out)
        return
    if fmt == "csv":
        buffer = io.BytesIO()
        pacsv.write_csv(_printable(table), buffer)
        text = buffer.getvalue().decode("utf-8")
    elif fmt == "json":
        text = json.dumps(table.to_pylist(), ensure_ascii=False, indent=1, default=_json_default) + "\n"
    else:
        con = duckdb.connect()
        con.register("result", table)
        text = con.sql("SELECT * FROM result").__str__() if table.num_rows <= max_rows else (
            con.sql(f"SELECT * FROM result LIMIT {max_rows}").__str__()
            + f"({table.num_rows:,} rows; showing {max_rows}. Use --format csv for all)\n"
        )
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        out.write(text)


def _json_default(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


def _printable(table: pa.Table) -> pa.Table:
    """CSV has no nested or binary types: show them as JSON or hex text."""
    columns = []
    for column in table.columns:
        if pa.types.is_nested(column.type) or pa.types.is_binary(column.type):
            values = [None if v is None else json.dumps(v, default=_json_default) if not isinstance(v, bytes)
                      else v.hex() for v in column.to_pylist()]
            column = pa.array(values, pa.string())
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def describe_views(run_dir: str | Path) -> str:
    con = connect(run_dir)
    lines = [f"Views over {run_dir}:"]
    for name, help_text in _VIEW_HELP.items():
        try:
            columns = con.execute(f"DESCRIBE {name}").fetchall()
        except duckdb.Error:
            continue
        lines.append(f"\n  {name}: {help_text}")
        lines.append("    " + ", ".join(f"{c[0]} {c[1]}" for c in columns))
    lines.append("\nTry: refinery sql RUN_DIR \"SELECT stage, reason, count(*) FROM removed GROUP BY ALL\"")
    return "\n".join(lines)


def interactive(run_dir: str | Path, fmt: str) -> None:
    """A small prompt: one query per line, until an empty line, 'exit' or end of input."""
    print(describe_views(run_dir))
    while True:
        try:
            line = input("refinery> ").strip()
        except EOFError:
            print()
            return
        if line.lower() in ("", "exit", "quit", ".quit"):
            return
        try:
            render(query(run_dir, line), fmt, sys.stdout)
        except SqlError as err:
            print(f"error: {err}", file=sys.stderr)

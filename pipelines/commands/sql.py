"""`refinery sql`: read-only DuckDB views over a run folder."""

from __future__ import annotations

import io
import json
from fnmatch import fnmatch
from pathlib import Path
from typing import TextIO

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from refinery.corpora.records import DOCUMENT_SCHEMA, QUARANTINE_SCHEMA

# A friendly early refusal by statement type. The guarantee is _LOCKDOWN below, not this list.
_READ_ONLY = {"SELECT", "EXPLAIN", "PRAGMA", "RELATION", "LOGICAL_PLAN"}
_EXPORT_HINT = "use SELECT; to save a result: --format csv|json|parquet --output FILE"
_EXAMPLE = "SELECT stage, reason, count(*) FROM removed GROUP BY ALL"
_VIEW_HELP = {
    "docs": "kept documents (data/*.parquet)",
    "removed": "removed documents with `stage` and `reason` (removed/*/*.parquet)",
    "quarantine": "input records that could not be read, with `reason` and raw bytes (quarantine/*.parquet)",
    "stats": "one row per stage: docs_in, kept, removed, quarantined, reasons, counts (stage tallies), bytes, "
             "seconds (stats/*.json)",
    "tokens": "one row per tokenized document: split, doc_id, source, shard, offset, length (tokens/*/index.parquet)",
}
# Read-only by construction. DuckDB's allowed_directories lets a query WRITE inside the allowed folder too
# (COPY TO would overwrite a run's own part), so DuckDB is given no file system at all: the Parquet views are
# pyarrow datasets that Python opened for reading, and the small stats JSON is loaded before this lockdown.
# With external access off and no allowed paths, DuckDB cannot open any file (no COPY, read_*, glob, ATTACH of a
# file, EXPORT, INSTALL, secrets); temp_directory '' removes the spill folder DuckDB would otherwise allow writes
# to; extensions cannot be fetched or auto-loaded; and lock_configuration (last) refuses every SET/RESET/PRAGMA
# that would undo any of it. The cost: Arrow scans lack DuckDB's late materialization (ORDER BY ... LIMIT reads
# every column), which an inspection tool can afford; scans and aggregates run about as fast.
_LOCKDOWN = (
    ("temp_directory", "''"),
    ("autoinstall_known_extensions", "false"),
    ("autoload_known_extensions", "false"),
    ("allow_community_extensions", "false"),
    ("python_enable_replacements", "false"),
    ("enable_external_access", "false"),
    ("lock_configuration", "true"),
)


class SqlError(ValueError):
    """A query that cannot run here, with what to do instead."""


def _quoted(path: Path) -> str:
    """A path as an SQL string literal (views cannot take parameters)."""
    return "'" + str(path).replace("'", "''") + "'"


class _RunFiles:
    """The files of a run folder on this machine, by pattern."""

    filesystem = None  # pyarrow's local file system

    def __init__(self, run_dir: str | Path):
        # Resolved, so a symlinked run folder or one named with `..` reads the run's real files and nothing else.
        self.root = Path(run_dir).resolve()
        if not (self.root / "manifest.json").is_file():
            raise SqlError(f"{run_dir} is not a Refinery run folder (no manifest.json); give the `output:` of a "
                           "recipe")
        self.stats = self.root / "stats"

    def files(self, pattern: str) -> list[str]:
        return [str(path) for path in sorted(self.root.glob(pattern)) if path.is_file()]

    def path(self, relative: str) -> str:
        return str(self.root / relative)


class _PublishedRunFiles(_RunFiles):
    """The files a run published on object storage lists in its index (nothing else under its prefix), read in
    place by pyarrow through fsspec; only the small stats files are downloaded (to the staging folder)."""

    def __init__(self, url: str):
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        from refinery.corpora.remote_folder import RemoteFolder, published_files, stage_published

        folder = RemoteFolder(url)
        self.listed = [entry["path"] for entry in published_files(url)]
        self.filesystem = PyFileSystem(FSSpecHandler(folder.fs))
        self.inner = folder.inner
        self.stats = stage_published(url, say=lambda text: None, of_run="stats") / "stats"

    def files(self, pattern: str) -> list[str]:
        depth = pattern.count("/")
        return [self.path(name) for name in self.listed if name.count("/") == depth and fnmatch(name, pattern)]

    def path(self, relative: str) -> str:
        return f"{self.inner}/{relative}"


def _dataset(run: _RunFiles, files: list[str], partitioning: ds.Partitioning | None = None, base: str | None = None,
             first: pa.Field | None = None) -> ds.Dataset:
    """Parquet parts as one lazily read dataset whose schema unites every part (as union_by_name did)."""
    try:
        schema = pa.unify_schemas([pq.read_schema(path, filesystem=run.filesystem) for path in files],
                                  promote_options="permissive")
    except (pa.ArrowException, OSError) as err:  # a damaged part, or parts that disagree on a column's type
        raise SqlError(f"cannot read {files[0].rsplit('/', 1)[0]}: {err}") from None
    if first is not None:  # a partition column, shown first
        schema = pa.schema([first, *schema])
    return ds.dataset(files, schema=schema, format="parquet", partitioning=partitioning, partition_base_dir=base,
                      filesystem=run.filesystem)


def connect(run_dir: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the run's views, locked so that no statement can touch a file. The run
    is a folder here or a run published on object storage (s3://…: its Parquet files are read in place)."""
    from refinery.corpora.storage import is_remote

    run = _PublishedRunFiles(str(run_dir)) if is_remote(run_dir) else _RunFiles(run_dir)
    con = duckdb.connect(":memory:")
    removed_empty = DOCUMENT_SCHEMA.empty_table().append_column("reason", pa.array([], pa.string()))
    empties = {"docs": DOCUMENT_SCHEMA.empty_table(), "quarantine": QUARANTINE_SCHEMA.empty_table(),
               "removed": removed_empty.append_column("stage", pa.array([], pa.string()))}
    for name, pattern in (("docs", "data/*.parquet"), ("removed", "removed/*/*.parquet"),
                          ("quarantine", "quarantine/*.parquet")):
        files = run.files(pattern)
        con.register(name, _dataset(run, files) if files else empties[name])
    if tokens := run.files("tokens/*/index.parquet"):  # the split is the folder name
        split = pa.field("split", pa.string())
        con.register("tokens", _dataset(run, tokens, ds.partitioning(pa.schema([split])), run.path("tokens"), split))
    if sorted(run.stats.glob("*.json")):  # a few small files: read now, while DuckDB may still open files
        source = _quoted(run.stats / "*.json")
        # The counts a newcomer looks for first; the rest in the files' order.
        first = "stage, docs_in, kept, removed, quarantined"
        con.execute(f"CREATE TABLE stats AS SELECT {first}, * EXCLUDE ({first}) FROM read_json({source}, "
                    "union_by_name=true) ORDER BY position")
    for setting, value in _LOCKDOWN:
        con.execute(f"SET {setting} = {value}")
    return con


def _words(statement: str) -> list[int]:
    """Where each token of a statement starts, comments left out."""
    return [offset for offset, kind in duckdb.tokenize(statement) if kind.name != "comment"]


def _inner_statement(statement: str) -> str:
    """The statement that EXPLAIN [ANALYZE | (options)] wraps (EXPLAIN ANALYZE runs it)."""
    tokens = _words(statement)[1:]
    if tokens and statement[tokens[0]] == "(":  # EXPLAIN (FORMAT json, ANALYZE) ...: skip the option list
        depth = 0
        for index, offset in enumerate(tokens):
            depth += {"(": 1, ")": -1}.get(statement[offset], 0)
            if depth == 0:
                tokens = tokens[index + 1:]
                break
    elif tokens and statement[tokens[0]:tokens[0] + 7].upper() == "ANALYZE":
        tokens = tokens[1:]
    return statement[tokens[0]:] if tokens else ""


def check_read_only(query: str) -> None:
    """Refuse writes early with a clear message (the lockdown in connect() refuses them anyway)."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as err:
        raise SqlError(f"cannot parse the query: {err}") from None
    for statement in statements:
        kind = statement.type.name
        if kind not in _READ_ONLY:
            first = _words(statement.query)  # the user's own word: INSTALL is a LOAD statement to DuckDB
            word = statement.query[first[0]:(first + [None])[1]].strip().upper() if first else kind
            raise SqlError(f"refinery sql is read-only: {word} is not allowed; {_EXPORT_HINT}")
        if kind == "EXPLAIN":
            check_read_only(_inner_statement(statement.query))


def as_arrow(result: duckdb.DuckDBPyRelation) -> pa.Table:
    """The result as an Arrow table (DuckDB 2 renamed fetch_arrow_table to to_arrow_table)."""
    fetch = getattr(result, "to_arrow_table", None) or result.fetch_arrow_table
    return fetch()


def _explained(err: duckdb.Error) -> str:
    """DuckDB's error, with what it means here."""
    if isinstance(err, duckdb.PermissionException):
        return (f"refinery sql is read-only and opens no files itself: query the views instead of paths; "
                f"{_EXPORT_HINT}\n({err})")
    if "configuration has been locked" in str(err):
        return f"refinery sql is read-only: its settings are locked; {_EXPORT_HINT}\n({err})"
    return f"{err}\n(views: {', '.join(_VIEW_HELP)}; `refinery sql RUN_DIR` lists their columns)"


def query(run_dir: str | Path, sql: str) -> pa.Table:
    """Run a read-only query over a run and return the result as an Arrow table."""
    check_read_only(sql)  # before the views are opened: a refused statement costs nothing
    con = connect(run_dir)
    try:
        return execute(con, sql)
    finally:
        con.close()


def execute(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """A read-only query on a connection from connect() (a prompt keeps one open), as an Arrow table."""
    check_read_only(sql)
    try:
        result = con.sql(sql)
        if result is None:  # a statement with no result (none pass check_read_only today)
            raise SqlError(f"refinery sql is read-only and this query returns no rows; {_EXPORT_HINT}")
        return as_arrow(result)
    except duckdb.Error as err:
        raise SqlError(_explained(err)) from None


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


def views(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """The run's views: name → (what it holds, its (column, type) pairs); a run without tokens has no `tokens`."""
    found = {}
    for name, help_text in _VIEW_HELP.items():
        try:
            columns = con.execute(f"DESCRIBE {name}").fetchall()
        except duckdb.Error:
            continue
        found[name] = (help_text, [(c[0], c[1]) for c in columns])
    return found


def describe_views(run_dir: str | Path, con: duckdb.DuckDBPyConnection | None = None, prompt: bool = False) -> str:
    """Each view of the run, what it holds and its columns (on `con` when one is open), and a query to try: as a
    command, or as a `prompt` takes it."""
    lines = [f"Views over {run_dir}:"]
    for name, (help_text, columns) in views(con or connect(run_dir)).items():
        lines.append(f"\n  {name}: {help_text}")
        lines.append("    " + ", ".join(f"{column} {kind}" for column, kind in columns))
    lines.append(f"\nTry: {_EXAMPLE};" if prompt else f'\nTry: refinery sql RUN_DIR "{_EXAMPLE}"')
    return "\n".join(lines)

"""`refinery sql` is read-only by construction: no statement writes, installs, or reads outside the run's views."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from refinery.pipelines.commands import sql
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import run_recipe

# {run}: the run folder, {part}: one of its own Parquet parts, {out}: a folder beside it with files of its own.
PROBES = {
    "explain_analyze_copy_outside": "EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{out}/x.csv'",
    "explain_analyze_copy_own_part": "EXPLAIN ANALYZE COPY (SELECT * FROM docs LIMIT 1) TO '{part}' (FORMAT parquet)",
    "explain_options_copy_own_part": "EXPLAIN (FORMAT json, ANALYZE) COPY (SELECT 1 AS a) TO '{part}'",
    "copy_own_part": "COPY (SELECT * FROM docs LIMIT 1) TO '{part}' (FORMAT parquet)",
    "copy_into_run": "COPY docs TO '{run}/docs.csv'",
    "copy_outside": "COPY (SELECT 1) TO '{out}/x.csv'",
    "copy_relative": "COPY (SELECT 1) TO 'relative.csv'",
    "copy_default_temp_dir": "COPY (SELECT 1) TO '.tmp/x.csv'",  # DuckDB allows writes to its spill folder
    "copy_from": "COPY docs FROM '{out}/secret.csv'",
    "explain_analyze_create": "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
    "create_table": "CREATE TABLE t AS SELECT 1",
    "insert": "INSERT INTO docs (id) VALUES ('x')",
    "attach_file": "ATTACH '{run}/db.duckdb' AS d",
    "attach_memory": "ATTACH ':memory:' AS m",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "load_path": "LOAD '{out}/evil.duckdb_extension'",
    "explain_analyze_install": "EXPLAIN ANALYZE INSTALL httpfs",
    "set_external_access": "SET enable_external_access = true",
    "set_unlock": "SET lock_configuration = false",
    "set_temp_directory": "SET temp_directory = '{out}'",
    "reset_unlock": "RESET lock_configuration",
    "reset_external_access": "RESET enable_external_access",
    "pragma_memory_limit": "PRAGMA memory_limit = '1GB'",
    "pragma_profiling_output": "PRAGMA profiling_output = '{out}/profile.json'",
    "call": "CALL enable_logging()",
    "call_settings": "CALL duckdb_settings()",
    "read_text_passwd": "SELECT * FROM read_text('/etc/passwd')",
    "read_text": "SELECT * FROM read_text('{out}/secret.txt')",
    "read_csv": "SELECT * FROM read_csv('{out}/secret.csv')",
    "read_blob": "SELECT * FROM read_blob('{out}/secret.txt')",
    "read_stdin": "SELECT * FROM read_csv('/dev/stdin')",
    "replacement_scan": "SELECT * FROM '{out}/secret.csv'",
    "glob_outside": "SELECT * FROM glob('{out}/*')",
    "glob_root": "SELECT * FROM glob('/root/**')",
    "glob_run": "SELECT * FROM glob('{run}/**')",
    "read_parquet_outside": "SELECT * FROM read_parquet('{out}/outside.parquet')",
    "read_parquet_dotdot": "SELECT * FROM read_parquet('{run}/../outside/outside.parquet')",
    "parquet_metadata": "SELECT * FROM parquet_metadata('{out}/outside.parquet')",
    "read_json_url": "SELECT * FROM read_json('https://example.com/x.json')",
    "multi_statement": "SELECT 1; COPY (SELECT 1) TO '{out}/x.csv'",
    "block_comment": "/* x */ COPY (SELECT 1) TO '{out}/x.csv'",
    "line_comment": "-- x\nCOPY (SELECT 1) TO '{out}/x.csv'",
    "export_database": "EXPORT DATABASE '{out}/export'",
    "import_database": "IMPORT DATABASE '{out}'",
    "dot_read": ".read {out}/x.sql",
    "getenv": "SELECT getenv('HOME')",
    "create_secret": "CREATE SECRET (TYPE s3)",
    "query_function": "SELECT * FROM query('COPY (SELECT 1) TO ''{out}/q.csv''')",
}
# These touch only the connection's own in-memory catalog, which dies with it: the statement check refuses them.
IN_MEMORY_ONLY = {"explain_analyze_create", "create_table", "attach_memory", "call_settings"}
# Refused for a reason other than read-only (a parse or name error), which the message says instead.
OTHER_ERRORS = {"dot_read", "getenv", "query_function"}


@pytest.fixture(scope="module")
def base(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run (run/) of C4 lines through dedup and tokenize, and a folder beside it (outside/)."""
    folder = tmp_path_factory.mktemp("readonly")
    tokenizer = data_dir / "tokenizers/gpt-neo-test-tokenizer.json"
    recipe = {"name": "readonly", "inputs": [{"path": str(data_dir / "text/c4_demo.jsonl")}],
              "stages": [{"length_filter": {"min_words": 50}}, {"exact_dedup": {}},
                         {"tokenize": {"tokenizer": str(tokenizer), "validation_fraction": 0.1}}],
              "output": "run"}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    run_recipe(load_recipe(folder / "recipe.yaml"), workers=1, progress=False)
    outside = folder / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    (outside / "secret.csv").write_text("a,b\n1,2\n")
    (outside / ".tmp").mkdir()  # DuckDB's default temp_directory, relative to the working folder
    pq.write_table(pa.table({"a": [1]}), outside / "outside.parquet")
    (folder / "home").mkdir()  # HOME: where INSTALL would put an extension
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under the folder, by relative path (so a new file shows too)."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def probe_sql(name: str, base: Path) -> str:
    run = base / "run"
    part = sorted((run / "data").glob("part-*.parquet"))[0]
    return PROBES[name].format(run=run, part=part, out=base / "outside")


@pytest.fixture
def inside(base: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Relative paths land in the watched folder, and HOME is watched too."""
    monkeypatch.chdir(base / "outside")
    monkeypatch.setenv("HOME", str(base / "home"))
    return base


@pytest.mark.parametrize("name", list(PROBES))
def test_probe_is_refused_and_changes_no_file(name: str, inside: Path) -> None:
    before = snapshot(inside)
    with pytest.raises(sql.SqlError) as refused:
        sql.query(inside / "run", probe_sql(name, inside))
    if name not in OTHER_ERRORS:
        assert "refinery sql is read-only" in str(refused.value)
    assert snapshot(inside) == before


@pytest.mark.parametrize("name", [name for name in PROBES if name not in IN_MEMORY_ONLY])
def test_lockdown_alone_refuses_without_the_statement_check(name: str, inside: Path) -> None:
    """The guarantee is DuckDB's settings: the raw connection refuses these too."""
    before = snapshot(inside)
    con = sql.connect(inside / "run")
    with pytest.raises(duckdb.Error):
        con.sql(probe_sql(name, inside))
    con.close()
    assert snapshot(inside) == before


def test_connection_is_locked_down(base: Path) -> None:
    con = sql.connect(base / "run")
    row = con.execute("SELECT current_setting('enable_external_access'), current_setting('lock_configuration'), "
                  "current_setting('temp_directory'), current_setting('autoinstall_known_extensions'), "
                  "current_setting('autoload_known_extensions')").fetchone()
    assert row == (False, True, "", False, False)
    con.close()


@pytest.mark.parametrize("how", ["plain", "symlink", "dotdot"])
def test_every_view_works_after_lockdown(base: Path, tmp_path: Path, how: str) -> None:
    run = base / "run"
    if how == "symlink":
        (tmp_path / "link").symlink_to(run, target_is_directory=True)
        run = tmp_path / "link"
    elif how == "dotdot":
        run = base / "outside" / ".." / "run"
    kept = pq.ParquetDataset(base / "run/data").read().num_rows
    assert sql.query(run, "SELECT count(*) AS n FROM docs").column("n")[0].as_py() == kept > 0
    removed = sql.query(run, "SELECT stage, reason, count(*) AS n FROM removed GROUP BY ALL").to_pylist()
    assert removed and all(row["stage"] == "length_filter" and row["reason"] for row in removed)
    assert sql.query(run, "SELECT count(*) AS n FROM quarantine").column("n")[0].as_py() == 0
    stats = sql.query(run, "SELECT stage, docs_in, kept FROM stats").to_pylist()
    assert [s["stage"] for s in stats] == ["read", "length_filter", "exact_dedup", "tokenize"]
    assert stats[0]["docs_in"] == 300 and stats[-1]["kept"] == kept
    splits = sql.query(run, "SELECT split, count(*) AS n FROM tokens GROUP BY split ORDER BY split").to_pylist()
    assert [s["split"] for s in splits] == ["train", "validation"] and sum(s["n"] for s in splits) == kept
    assert sql.query(run, "SELECT * FROM tokens LIMIT 1").column_names[0] == "split"
    joined = sql.query(run, "SELECT count(*) AS n FROM docs JOIN tokens ON docs.id = tokens.doc_id WHERE "
                            "length(docs.text) > 0")
    assert joined.column("n")[0].as_py() == kept
    assert sql.query(run, "EXPLAIN ANALYZE SELECT count(*) FROM docs").num_rows == 1
    assert "tokens: one row per tokenized document" in sql.describe_views(run)


def cli(*args: str, base: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(base / "home")}
    return subprocess.run([sys.executable, "-m", "refinery.pipelines", "sql", *args], capture_output=True, text=True,
                          cwd=base / "outside", env=env)


@pytest.mark.parametrize("name", ["explain_analyze_copy_own_part", "copy_relative", "read_text", "set_unlock",
                                  "explain_analyze_install", "multi_statement"])
def test_cli_refuses_with_a_message_and_exit_code(name: str, base: Path) -> None:
    before = snapshot(base)
    result = cli(str(base / "run"), probe_sql(name, base), base=base)
    assert result.returncode == 2, result.stderr
    assert "refinery sql is read-only" in result.stderr and "Traceback" not in result.stderr
    assert "--format csv|json|parquet --output FILE" in result.stderr  # what to do instead
    assert snapshot(base) == before


def test_cli_still_exports_through_its_own_output(base: Path, tmp_path: Path) -> None:
    result = cli(str(base / "run"), "SELECT split, count(*) AS n FROM tokens GROUP BY ALL", "-f", "json", base=base)
    assert result.returncode == 0, result.stderr
    assert {row["split"] for row in json.loads(result.stdout)} == {"train", "validation"}
    target = tmp_path / "removed.parquet"
    written = cli(str(base / "run"), "SELECT * FROM removed", "-f", "parquet", "-o", str(target), base=base)
    assert written.returncode == 0 and pq.read_table(target).num_rows > 0

"""The `refinery` command as a user meets it: demo, sql, schema, and errors with non-zero exits."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from refinery.pipelines.commands.cli import main


def refinery(*args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refinery.pipelines", *args], capture_output=True, text=True,
                          cwd=cwd, input=stdin)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The demo as a user runs it, default training included: what it promises is what this module checks."""
    out = tmp_path_factory.mktemp("demo") / "run"
    return out, refinery("demo", "--output", str(out), "--workers", "2")


def test_demo_runs_and_says_what_to_try(demo_run):
    out, result = demo_run
    assert result.returncode == 0, result.stderr
    assert "refinery sql" in result.stdout and str(out) in result.stdout
    assert any((out / "data").glob("part-*.parquet"))
    assert (out / "stats/read.json").exists() and (out / "manifest.json").exists()
    for stage in ("pretrained", "instruction-tuned"):  # both models learned from their shards, clearly
        trained = re.search(stage + r": validation loss ([\d.]+) nats/token against ([\d.]+)", result.stdout)
        assert trained and float(trained.group(1)) < float(trained.group(2)) - 0.4, result.stdout[-2000:]
    assert (out / "sft/tokens/train/shard-00000.mask.bin").exists()
    table = {row[0]: [float(v.replace(",", "")) for v in row[1:]] for row in re.findall(
        r"^  (uniform guess|unigram baseline|pretrained|instruction-tuned) +([\d,]+) +([\d,]+)$", result.stdout, re.M)}
    assert len(table) == 4, result.stdout[-3000:]
    assert table["pretrained"][0] < table["unigram baseline"][0] < table["uniform guess"][0] == 2000
    assert table["instruction-tuned"][1] < table["pretrained"][1]  # tuning helped on its own kind of text
    for words in ("e to the loss", "has learned from context"):  # what the numbers mean, for a newcomer
        assert words in result.stdout
    # A newcomer must not think it is broken: a short sentence, ended by the model itself at <|end|>.
    answer = re.search(r"answers: '(.*)' \(it ended its reply with <\|end\|> after (\d+) tokens", result.stdout)
    assert answer, result.stdout[-2000:]
    assert int(answer.group(2)) <= 30 and re.fullmatch(r"[A-Z][^\\]{5,}[.!?]", answer.group(1)), answer.group(0)
    assert re.search(r"^the demo took \d+ s: the recipes \d+ s, pretraining \d+ s", result.stdout, re.M)
    for command in ("refinery generate", "refinery eval", "refinery export"):  # what to do with the models
        assert f"  {command} {out}" in result.stdout


def test_sql_formats(demo_run, tmp_path):
    out, _ = demo_run
    table = refinery("sql", str(out), "SELECT stage, kept FROM stats ORDER BY position")
    assert table.returncode == 0 and "gopher_quality" in table.stdout and "minhash_dedup" in table.stdout
    csv = refinery("sql", str(out), "SELECT stage, kept FROM stats ORDER BY position", "--format", "csv")
    assert csv.stdout.splitlines()[0] == '"stage","kept"'
    assert csv.stdout.splitlines()[1].startswith('"read",')
    rows = json.loads(refinery("sql", str(out), "SELECT count(*) AS n FROM docs", "-f", "json").stdout)
    assert rows[0]["n"] == pq.ParquetDataset(out / "data").read().num_rows
    target = tmp_path / "removed.parquet"
    written = refinery("sql", str(out), "SELECT * FROM removed", "-f", "parquet", "-o", str(target))
    assert written.returncode == 0 and pq.read_table(target).num_rows > 0
    nested = refinery("sql", str(out), "SELECT reasons FROM stats", "-f", "csv")
    assert nested.returncode == 0 and "gopher_too_few_words" in nested.stdout and "near_duplicate" in nested.stdout


def test_sql_without_query_lists_views(demo_run):
    out, _ = demo_run
    listing = refinery("sql", str(out), stdin="")
    assert listing.returncode == 0
    for view in ("docs", "removed", "quarantine", "stats"):
        assert f"  {view}:" in listing.stdout


def test_sql_is_read_only_and_errors_are_readable(demo_run, tmp_path):
    out, _ = demo_run
    copy = refinery("sql", str(out), f"COPY (SELECT 1) TO '{tmp_path}/x.csv'")
    assert copy.returncode == 2 and "read-only" in copy.stderr and not (tmp_path / "x.csv").exists()
    typo = refinery("sql", str(out), "SELECT * FROM dcos")
    assert typo.returncode == 2 and "views: docs" in typo.stderr
    not_a_run = refinery("sql", str(tmp_path), "SELECT 1")
    assert not_a_run.returncode == 2 and "not a Refinery run" in not_a_run.stderr


def test_recipe_typo_and_missing_input_exit_non_zero(tmp_path, data_dir):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: t\ninputs:\n  - path: {data_dir}/text/c4_demo.jsonl\nstages:\n"
                      "  - lenght_filter: {min_words: 3}\noutput: out\n")
    typo = refinery("run", str(recipe))
    assert typo.returncode == 2
    assert f"{recipe}:5" in typo.stderr and "did you mean 'length_filter'" in typo.stderr
    recipe.write_text("name: t\ninputs:\n  - path: c4_demo.jsonl\n  - path: missing/*.jsonl\noutput: out\n")
    (tmp_path / "c4_demo.jsonl").write_bytes((data_dir / "text/c4_demo.jsonl").read_bytes())
    missing = refinery("run", str(recipe))
    assert missing.returncode == 2
    assert f"{recipe}:4" in missing.stderr and "no file matches 'missing/*.jsonl'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_empty_input_file_is_a_clean_run(tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\ninputs:\n  - path: empty.jsonl\nstages:\n  - exact_dedup:\noutput: out\n")
    assert main(["run", str(recipe), "--quiet"]) == 0
    assert "read 0 records" in capsys.readouterr().out
    assert main(["sql", str(tmp_path / "out"), "SELECT count(*) AS n FROM docs", "-f", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["n"] == 0


def test_help_and_schema():
    help_text = refinery("--help").stdout
    for command in ("run", "sql", "schema", "demo", "fetch", "tokens"):
        assert command in help_text
    assert "resumes" in refinery("run", "--help").stdout
    assert "--checksums" in refinery("fetch", "--help").stdout
    schema = json.loads(refinery("schema").stdout)
    assert "stages" in schema["properties"]


def test_the_classifier_help_example_runs_as_written(data_dir, tmp_path):
    """The example in `refinery classifier train --help`, pasted into a shell where ../shared is (its globs
    quoted, so Refinery expands them), trains a model; only the output goes to a folder of the test's."""
    from refinery.pipelines.commands.classifier import EXAMPLE

    command = EXAMPLE.split("\n", 1)[1].split("\n(quote globs")[0].replace("\\\n", " ")
    command = command.replace("refinery ", f"{sys.executable} -m refinery.pipelines ", 1)
    command = command.replace("--output quality.bin", f"--output {tmp_path / 'quality.bin'}")
    done = subprocess.run(["bash", "-c", command], cwd=data_dir.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "quality.bin").is_file() and (tmp_path / "quality.json").is_file()


def test_every_command_explains_itself():
    from refinery.pipelines.commands.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in commands.choices.items():
        assert parser.description, f"`refinery {name} --help` has no description"


def test_a_run_says_no_jargon_unless_asked_and_stats_lead_with_the_counts(data_dir, write_recipe):
    recipe = write_recipe([{"path": str(data_dir / "text/c4_demo.jsonl")}], [{"minhash_dedup": {}}])
    quiet = refinery("run", str(recipe), "-q", "--no-report")
    assert quiet.returncode == 0 and "P(candidate)" not in quiet.stdout + quiet.stderr
    assert quiet.stdout.startswith("read 300 records")
    verbose = refinery("run", str(recipe), "-q", "-v", "--no-report", "--force")
    assert "minhash_dedup: 16 bands × 6 rows; P(candidate)" in verbose.stderr
    header = refinery("sql", str(recipe.parent / "out"), "SELECT * FROM stats", "--format", "csv").stdout
    assert header.splitlines()[0].startswith('"stage","docs_in","kept","removed","quarantined",')

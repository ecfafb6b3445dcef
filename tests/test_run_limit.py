"""`refinery run --limit N`: the first N records of each input file, exactly, and a run folder that remembers it."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from refinery.pipelines.commands.cli import main

# Real files, in the order a recipe lists them, with their records: (documents, quarantined) when read whole.
FILES = {
    "text/c4_demo.jsonl": (300, 0),
    "warc/wget-crawl-0000.warc.gz": (22, 0),
    "warc/wget-crawl-0001.warc.gz": (15, 0),
    # 15 documents, then a damaged member: its 16th record is quarantined.
    "warc/bad/appended_zip_fragment_unexpected_eof.wet.gz": (15, 1),
}


@pytest.fixture
def recipe(data_dir, write_recipe) -> Path:
    # Tiny tasks and batches: without a limit the JSONL file is split into many tasks, and a batch of 4 rows cuts
    # the limits below mid-batch (the WARC batches carry skipped and quarantined records, which are read again).
    inputs = [{"path": str(data_dir / name)} for name in FILES]
    return write_recipe(inputs, [], task_size="1KiB", batch_rows=4)


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["run", *args, "--quiet", "--no-report"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _ids_by_file(run: Path) -> dict[str, list[str]]:
    """The kept documents' ids per input file (its `source`), in reading order: parts are in task order."""
    table = pq.read_table(sorted((run / "data").glob("part-*.parquet")), columns=["id", "source"])
    ids: dict[str, list[str]] = {}
    for doc_id, source in zip(table.column("id").to_pylist(), table.column("source").to_pylist()):
        ids.setdefault(source, []).append(doc_id)
    return ids


@pytest.mark.parametrize("limit", [15, 16])
def test_limit_reads_exactly_the_first_records_of_each_file(recipe, capsys, limit):
    code, out, _ = _run(capsys, str(recipe), "--limit", str(limit), "--output", str(recipe.parent / "limited"))
    assert code == 0
    expected = [(min(docs, limit), min(quarantined, limit - min(docs, limit))) for docs, quarantined in FILES.values()]
    read = sum(docs + quarantined for docs, quarantined in expected)
    quarantined = sum(q for _, q in expected)
    assert out.startswith(f"read {read} records → kept {read - quarantined}, removed 0, quarantined {quarantined}\n")
    assert f"limited to the first {limit} records of each input" in out
    manifest = json.loads((recipe.parent / "limited/manifest.json").read_text())
    assert manifest["recipe"]["limit"] == limit
    assert [task["limit"] for task in manifest["tasks"]] == [limit] * len(FILES)  # one task per file, not split

    code, _, _ = _run(capsys, str(recipe), "--output", str(recipe.parent / "whole"))
    assert code == 0
    whole, limited = _ids_by_file(recipe.parent / "whole"), _ids_by_file(recipe.parent / "limited")
    assert len(whole["c4_demo"]) == 300  # the whole run split the file into tasks: their order is the file's
    assert {source: ids[:limit] for source, ids in whole.items()} == limited


def test_a_limited_run_is_not_resumed_as_a_whole_one(recipe, capsys):
    assert _run(capsys, str(recipe), "--limit", "5")[0] == 0
    code, _, err = _run(capsys, str(recipe))
    assert code == 2
    assert "it read the first 5 records of each input file; this run reads every record" in err
    assert "--force" in err
    code, _, err = _run(capsys, str(recipe), "--limit", "6")
    assert code == 2 and "it read the first 5 records" in err and "this run reads the first 6 records" in err
    code, out, _ = _run(capsys, str(recipe), "--force")
    assert code == 0 and out.startswith("read 353 records") and "limited to" not in out


def test_dry_run_names_the_limit(recipe, capsys):
    assert main(["run", str(recipe), "--limit", "7", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "inputs  4 read tasks, one per file, each reading its first 7 records (--limit)" in out
    assert "would read the first 7 records of each file (--limit)" in out
    assert not (recipe.parent / "out").exists()

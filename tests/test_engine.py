"""The engine on real data: counts reconcile, outputs are deterministic, resumable, and readable anywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from refinery.pipelines.commands import sql
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import RunError, run_recipe

STAGES = [{"length_filter": {"min_words": 5, "max_chars": 20000}}, {"exact_dedup": {}}]


@pytest.fixture(scope="module")
def inputs(data_dir, tmp_path_factory) -> list[dict]:
    """The acceptance inputs, plus real C4 lines with a malformed JSON line and an invalid UTF-8 line."""
    lines = (data_dir / "text/c4_demo.jsonl").read_bytes().splitlines()[-20:]
    broken = tmp_path_factory.mktemp("broken") / "broken.jsonl"
    broken.write_bytes(b"\n".join(lines[:10] + [b'{"text": "cut off', b'{"text": "\xff\xfe"}'] + lines[10:]) + b"\n")
    return [
        {"path": str(data_dir / "text/c4_demo.jsonl")},
        {"path": str(data_dir / "text/cc_en_head-*.jsonl.gz")},
        {"path": str(data_dir / "text/redpajama-pile-samples/*.jsonl")},
        {"path": str(broken), "source": "broken"},
    ]


def output_bytes(run_dir: Path) -> dict[str, bytes]:
    """Every final artifact (kept, removed, quarantined) by relative path."""
    files = {}
    for folder in ("data", "removed", "quarantine"):
        for path in sorted((run_dir / folder).rglob("*.parquet")):
            files[str(path.relative_to(run_dir))] = path.read_bytes()
    return files


@pytest.fixture(scope="module")
def acceptance_run(inputs, tmp_path_factory):
    """The issue's acceptance recipe, run once with 2 workers."""
    folder = tmp_path_factory.mktemp("acceptance")
    recipe = folder / "r.yaml"
    recipe.write_text(json.dumps({"name": "acc", "inputs": inputs, "stages": STAGES, "output": "out",
                                  "task_size": "64KB"}))
    summary = run_recipe(load_recipe(recipe), workers=2, progress=False)
    return summary, folder / "out"


def test_counts_reconcile_and_sql_shows_reasons(acceptance_run):
    summary, run_dir = acceptance_run
    stats = {row["stage"]: row for row in sql.query(run_dir, "SELECT * FROM stats").to_pylist()}
    read = stats["read"]
    removed = stats["length_filter"]["removed"] + stats["exact_dedup"]["removed"]
    kept = sql.query(run_dir, "SELECT count(*) AS n FROM docs").column("n")[0].as_py()
    assert read["docs_in"] == kept + removed + read["quarantined"]
    assert (summary.read, summary.kept, summary.removed, summary.quarantined) == (
        read["docs_in"], kept, removed, read["quarantined"])
    assert read["docs_in"] == 300 + 2 * 10 + 11 + 14 + 5 * 10 + 22  # every line of every input file
    assert read["quarantined"] == 2
    quarantined = sql.query(run_dir, "SELECT source, reason FROM quarantine ORDER BY position").to_pylist()
    assert [(q["source"], q["reason"].split(":")[0]) for q in quarantined] == [
        ("broken", "malformed_json"), ("broken", "invalid_utf8")]
    assert (duplicates := stats["exact_dedup"]["removed"]) > 0
    assert read["docs_in"] == summary.kept + stats["length_filter"]["removed"] + duplicates + 2
    by_reason = sql.query(run_dir, "SELECT stage, reason, count(*) AS n FROM removed GROUP BY ALL").to_pylist()
    reasons = {(r["stage"], r["reason"]): r["n"] for r in by_reason}
    assert reasons[("exact_dedup", "exact_duplicate")] == stats["exact_dedup"]["removed"] > 0
    assert reasons[("length_filter", "too_few_words")] > 0
    assert stats["exact_dedup"]["docs_in"] == stats["length_filter"]["kept"]


def test_exact_dedup_keeps_first_in_input_order(acceptance_run):
    _, run_dir = acceptance_run
    rows = sql.query(run_dir, "SELECT id, duplicate_of FROM removed WHERE stage = 'exact_dedup'").to_pylist()
    # demo-dataset-deduplication.jsonl repeats the sentence at byte 345 at byte 29430 of the same file.
    name = "demo-dataset-deduplication.jsonl"
    assert {"id": f"{name}:29430", "duplicate_of": f"{name}:345"} in rows
    kept_ids = set(sql.query(run_dir, "SELECT id FROM docs").column("id").to_pylist())
    assert all(r["duplicate_of"] in kept_ids for r in rows)
    texts = sql.query(run_dir, "SELECT text FROM docs").column("text").to_pylist()
    normalised = [" ".join(t.lower().split()) for t in texts]
    assert len(set(normalised)) == len(normalised)


def test_output_loads_without_refinery(acceptance_run):
    summary, run_dir = acceptance_run
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset("parquet", data_files=str(run_dir / "data/*.parquet"), split="train")
    assert loaded.num_rows == summary.kept
    assert {"id", "text", "source", "url", "meta"} <= set(loaded.column_names)
    count = duckdb.sql(f"SELECT count(*) FROM read_parquet('{run_dir}/data/*.parquet')").fetchall()[0][0]
    assert count == summary.kept


def test_workers_do_not_change_the_output(acceptance_run, inputs, write_recipe):
    _, two_workers = acceptance_run
    recipe = write_recipe(inputs, STAGES, task_size="64KB")
    one = run_recipe(load_recipe(recipe), workers=1, progress=False).run_dir
    assert output_bytes(one) == output_bytes(two_workers)
    assert len(output_bytes(one)) > 5


def test_rerun_of_a_finished_run_changes_nothing(acceptance_run):
    summary, run_dir = acceptance_run
    before = output_bytes(run_dir)
    again = run_recipe(load_recipe(run_dir.parent / "r.yaml"), workers=2, progress=False)
    assert again.resumed_tasks == 0 and again.kept == summary.kept
    assert output_bytes(run_dir) == before


def test_changed_recipe_refuses_the_old_run_folder(acceptance_run):
    _, run_dir = acceptance_run
    recipe = json.loads((run_dir.parent / "r.yaml").read_text())
    recipe["stages"] = STAGES[:1]
    changed = run_dir.parent / "changed.yaml"
    changed.write_text(json.dumps(recipe))
    with pytest.raises(RunError, match="--force"):
        run_recipe(load_recipe(changed), workers=1, progress=False)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_identical_bytes(acceptance_run, inputs, write_recipe, tmp_path):
    _, clean = acceptance_run
    recipe = write_recipe(inputs, STAGES, task_size="64KB")
    run_dir = tmp_path / "out"
    done = run_dir / "work/segment-0/done"
    command = [sys.executable, "-m", "refinery.pipelines", "run", str(recipe), "--workers", "2", "--quiet"]
    process = subprocess.Popen(command, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (done.exists() and any(done.glob("task-*.json"))):
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "running", "the run finished before it could be killed"
    finished_before_kill = len(list(done.glob("task-*.json")))
    assert finished_before_kill < len(manifest["tasks"])

    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "tasks already done" in resumed.stdout
    assert output_bytes(run_dir) == output_bytes(clean)


def test_stage_files_are_checked_first_and_fingerprinted(data_dir, write_recipe, tmp_path):
    blocklist = tmp_path / "blocked.txt"
    recipe = write_recipe([{"path": str(data_dir / "text/c4_demo.jsonl")}],
                          [{"url_filter": {"block_domains": ["blocked.txt"]}}])
    with pytest.raises(RunError, match=r"test.yaml:\d+: url_filter: block_domains file .*blocked.txt' not found"):
        run_recipe(load_recipe(recipe), workers=1, progress=False)
    assert not (tmp_path / "out").exists()  # nothing started
    blocklist.write_text("example.com\n")
    run_recipe(load_recipe(recipe), workers=1, progress=False)
    blocklist.write_text("example.com\nexample.org\n")  # a changed list must not resume the old results
    with pytest.raises(RunError, match="--force"):
        run_recipe(load_recipe(recipe), workers=1, progress=False)


def test_stage_counts_are_summed_over_batches_and_tasks(data_dir):
    """A stage's own tallies (StageResult.counts) add up across batches and across tasks' done-markers."""
    from refinery.pipelines.engine.stats import StageCounter, merge
    from refinery.pipelines.stages.base import StageResult

    lines = (data_dir / "text" / "tinyshakespeare.txt").read_text(encoding="utf-8").splitlines()[:6]
    docs = pa.table({"text": lines})
    per_task = []
    for task in range(2):
        counter = StageCounter()
        for batch in (docs.slice(0, 3), docs.slice(3)):
            counter.add(batch, StageResult(batch, batch.slice(0, 0), {"email": task + 1, "ipv4": 2}), 0.0)
        per_task.append(counter.to_dict())
    assert per_task[0]["counts"] == {"email": 2, "ipv4": 4}
    assert merge(per_task)["counts"] == {"email": 6, "ipv4": 8}
    assert merge(per_task)["docs_in"] == 12


def test_a_memory_budget_is_outside_the_fingerprint(data_dir, write_recipe):
    """minhash_dedup's memory_limit never changes the output, so changing it resumes the run; ngram does not."""
    inputs = [{"path": str(data_dir / "text/redpajama-pile-samples/demo-dataset-deduplication.jsonl")}]
    first = write_recipe(inputs, [{"minhash_dedup": {"memory_limit": "64MB"}}], name="budget")
    summary = run_recipe(load_recipe(first), workers=1, progress=False)
    roomier = write_recipe(inputs, [{"minhash_dedup": {"memory_limit": "512MB"}}], name="budget")
    again = run_recipe(load_recipe(roomier), workers=1, progress=False)
    assert again.resumed_tasks == 0 and again.kept == summary.kept and summary.removed > 0
    other = write_recipe(inputs, [{"minhash_dedup": {"ngram": 3}}], name="budget")
    with pytest.raises(RunError, match="--force"):
        run_recipe(load_recipe(other), workers=1, progress=False)


def test_an_option_added_later_leaves_older_runs_resumable_at_its_default():
    """extract's `engine` came after runs were made with trafilatura: at its default it is not in the fingerprint
    (the stage's parameters are what they were before it existed), and another engine is."""
    from refinery.pipelines.stages.extract import ExtractConfig

    default, chosen = ExtractConfig(), ExtractConfig(engine="trafilatura")
    assert "engine" not in default.fingerprinted() and default.fingerprinted() == chosen.fingerprinted()
    assert default.fingerprinted() == default.model_dump(exclude={"engine"} | set(default.outside_fingerprint))
    assert ExtractConfig(engine="resiliparse").fingerprinted()["engine"] == "resiliparse"

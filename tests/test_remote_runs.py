"""Run folders on object storage, against a real S3 server (moto's, started by the `s3` fixture): a recipe whose
inputs and output are s3:// URLs publishes what the same recipe writes to a local folder, byte for byte, with an
index listing every file; reruns upload nothing new; --force replaces only what the old index listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from s3_server import BUCKET

from refinery.corpora.atomic import read_json
from refinery.corpora.remote_folder import published_files
from refinery.pipelines.commands.cli import main
from refinery.pipelines.engine.layout import RunLayout
from refinery.pipelines.engine.publish import delivered_files, publish_run
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import RunError, run_recipe

COMPARED = ("data/", "removed/", "quarantine/", "tokens/")


def dedup_recipe(root: str, output: str, task_size: str = "64KB") -> dict:
    """Exact + MinHash dedup and a trained tokenizer over real text (C4 and CCNet samples)."""
    return {"name": "dedup", "inputs": [{"path": f"{root}/text/c4_demo.jsonl"},
                                        {"path": f"{root}/text/cc_en_head-*.jsonl.gz"}],
            "stages": [{"length_filter": {"min_words": 50}}, {"exact_dedup": {}}, {"minhash_dedup": {}},
                       {"tokenize": {"tokenizer": "train", "vocab_size": 1000}}],
            "output": output, "task_size": task_size}


def write(folder: Path, recipe: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return folder / "recipe.yaml"


def objects(client, prefix: str) -> dict[str, bytes]:
    """Every object under a prefix, by the path relative to it."""
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            for o in page.get("Contents", [])]
    return {key[len(prefix):]: client.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}


@pytest.fixture
def staging(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("REFINERY_STAGING", str(tmp_path / "staging"))
    return tmp_path / "staging"


@pytest.fixture(scope="module")
def local_run(s3, data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("local")
    summary = run_recipe(load_recipe(write(folder, dedup_recipe(str(data_dir), str(folder / "out")))), workers=2,
                         progress=False)
    files = delivered_files(RunLayout(summary.run_dir))
    return summary, {name: (summary.run_dir / name).read_bytes() for name in files}


def test_a_run_with_inputs_and_output_on_s3_publishes_what_a_local_run_writes(s3, local_run, staging, tmp_path):
    local, local_files = local_run
    url = f"s3://{BUCKET}/runs/dedup"
    recipe = load_recipe(write(tmp_path, dedup_recipe(f"s3://{BUCKET}", url)))
    summary = run_recipe(recipe, workers=2, progress=False)
    assert summary.published_to == url and summary.run_dir.is_relative_to(staging)
    assert (summary.read, summary.kept, summary.removed, summary.quarantined) == (
        local.read, local.kept, local.removed, local.quarantined)
    assert summary.read == summary.kept + summary.removed + summary.quarantined
    published = objects(s3["client"], "runs/dedup/")
    compared = {name: body for name, body in published.items() if name.startswith(COMPARED)}
    assert compared == {name: body for name, body in local_files.items() if name.startswith(COMPARED)}
    assert any(name.startswith("tokens/train/") for name in compared)
    assert any(name.startswith("removed/") for name in compared)
    # The index, written last, lists exactly the other objects with their sizes; working files stay in staging.
    index = published_files(url)
    assert sorted(entry["path"] for entry in index) == sorted(set(published) - {"manifest.json"})
    assert all(entry["bytes"] == len(published[entry["path"]]) for entry in index)
    assert not any(name.startswith("work/") for name in published)
    # The tasks uploaded what they delivered themselves (the driver only what the finishes and stats wrote).
    by_tasks = set().union(*(read_json(p) for p in (summary.run_dir / "work/published").glob("*.json")))
    assert {name for name in published if name.startswith(("data/", "removed/"))} <= by_tasks
    assert not any(name.startswith(("tokens/", "stats/")) for name in by_tasks)
    # A rerun finds the finished run in staging and publishes nothing new.
    rerun = run_recipe(recipe, workers=2, progress=False)
    assert rerun.run_dir == summary.run_dir and rerun.kept == summary.kept
    assert publish_run(RunLayout(rerun.run_dir), url, progress=False) == 0
    assert objects(s3["client"], "runs/dedup/") == published


def test_the_cli_publishes_the_report_and_card_too_and_says_where(s3, data_dir, staging, tmp_path, capsys):
    url = f"s3://{BUCKET}/runs/cli"
    one_input = {"inputs": [{"path": f"s3://{BUCKET}/text/c4_demo.jsonl"}]}
    recipe = write(tmp_path, dedup_recipe(f"s3://{BUCKET}", url) | one_input)
    assert main(["run", str(recipe), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"output: {url}" in out and f"refinery sql {url}" in out and f"built in {staging}" in out
    listed = {entry["path"] for entry in published_files(url)}
    assert {"report.html", "README.md", "stats/read.json", "data/part-00000.parquet"} <= listed


def test_force_replaces_only_what_the_old_index_listed(s3, data_dir, staging, tmp_path):
    client, url = s3["client"], f"s3://{BUCKET}/runs/replaced"
    first = run_recipe(load_recipe(write(tmp_path / "a", dedup_recipe(f"s3://{BUCKET}", url, "64KB"))), progress=False)
    first_print = read_json(first.run_dir / "manifest.json")["fingerprint"]
    client.put_object(Bucket=BUCKET, Key="runs/replaced/notes.txt", Body=b"my own notes")
    before = set(objects(client, "runs/replaced/"))
    other = load_recipe(write(tmp_path / "b", dedup_recipe(f"s3://{BUCKET}", url, "1MB")))  # fewer, larger tasks
    with pytest.raises(RunError, match="different recipe.*--force"):
        run_recipe(other, progress=False)
    second = run_recipe(other, force=True, progress=False)
    after = objects(client, "runs/replaced/")
    assert after["notes.txt"] == b"my own notes"  # a user's object beside the run stays
    listed = {entry["path"] for entry in published_files(url)}
    assert set(after) == listed | {"manifest.json", "notes.txt"}
    assert before - set(after)  # parts of the first run that the second does not have are gone
    published_index = json.loads(after["manifest.json"])
    assert published_index["fingerprint"] == read_json(second.run_dir / "manifest.json")["fingerprint"] != first_print


def test_a_prefix_holding_other_objects_is_refused(s3, data_dir, staging, tmp_path):
    s3["client"].put_object(Bucket=BUCKET, Key="someone/else/file.csv", Body=b"a,b\n")
    recipe = load_recipe(write(tmp_path, dedup_recipe(f"s3://{BUCKET}", f"s3://{BUCKET}/someone/else")))
    with pytest.raises(RunError, match=r"not a Refinery run \(file.csv"):
        run_recipe(recipe, progress=False)
    assert objects(s3["client"], "someone/else/") == {"file.csv": b"a,b\n"}


def test_train_stages_the_shards_of_a_published_run_and_says_so(s3, local_run, staging, tmp_path, capsys):
    url = f"s3://{BUCKET}/runs/for-training"
    summary = run_recipe(load_recipe(write(tmp_path, dedup_recipe(f"s3://{BUCKET}", url))), progress=False)
    args = ["--size", "tiny", "--max-steps", "2", "--batch-size", "2", "--seq-len", "32", "--device", "cpu", "-q"]
    assert main(["train", "--data", f"{url}/tokens", "--out", str(tmp_path / "model"), *args]) == 0
    said = capsys.readouterr().out
    assert f"of {url}/tokens to {staging}" in said and (tmp_path / "model/latest/config.json").exists()
    staged = next((staging / "downloads").iterdir())
    tokens = sorted(str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file())
    assert tokens and all(name.startswith("tokens/") for name in tokens)  # only the folder asked for
    assert all((staged / n).read_bytes() == (summary.run_dir / n).read_bytes() for n in tokens)
    # A second training finds the shards staged and downloads nothing.
    assert main(["train", "--data", url, "--out", str(tmp_path / "again"), *args]) == 0
    assert "downloading" not in capsys.readouterr().out
    assert main(["train", "--data", f"s3://{BUCKET}/runs/none", "--out", str(tmp_path / "x"), *args]) == 2
    assert "not part of a published Refinery run" in capsys.readouterr().err


def test_sql_reads_a_published_run_in_place_and_only_the_files_its_index_lists(s3, local_run, staging, tmp_path):
    from refinery.pipelines.commands import sql

    local, _ = local_run
    url = f"s3://{BUCKET}/runs/for-sql"
    run_recipe(load_recipe(write(tmp_path, dedup_recipe(f"s3://{BUCKET}", url))), progress=False)
    # An object under the prefix that the index does not list (a part of an interrupted publication): ignored.
    stray = (local.run_dir / "data/part-00000.parquet").read_bytes()
    s3["client"].put_object(Bucket=BUCKET, Key="runs/for-sql/data/part-99999.parquet", Body=stray)
    statements = ["SELECT count(*), sum(length(text)) FROM docs", "SELECT stage, reason, count(*) FROM removed "
                  "GROUP BY ALL ORDER BY ALL", "SELECT stage, docs_in, kept FROM stats ORDER BY stage",
                  "SELECT split, count(*), sum(length) FROM tokens GROUP BY ALL ORDER BY ALL"]
    for statement in statements:
        assert sql.query(url, statement).equals(sql.query(local.run_dir, statement)), statement
    with pytest.raises(sql.SqlError):  # as read-only as a local run: DuckDB itself reaches no file
        sql.query(url, f"COPY (SELECT 1) TO '{tmp_path / 'written.csv'}'")
    assert not (tmp_path / "written.csv").exists()

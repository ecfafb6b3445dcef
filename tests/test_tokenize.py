"""Token shards on real text: lossless round trip, deterministic, and impossible to misread."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from stop_in_step import StopInStep

from refinery.corpora.atomic import read_json, write_json
from refinery.pipelines.commands import sql
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.tokenization.builder import SplitPlan, encoded_schema, write_token_splits
from refinery.tokenization.reader import ShardError, TokenShards
from refinery.tokenization.shards import dtype_for
from refinery.tokenization.tokenizer import fingerprint, load_tokenizer, special_ids

TOKENIZE = {"tokenize": {"vocab_size": 1000, "shard_tokens": 40_000, "validation_fraction": 0.1,
                         "weights": {"cc_en_head-0091": 2.5, "wiki_demo": 0.5}}}


@pytest.fixture(scope="module")
def inputs(data_dir) -> list[dict]:
    return [
        {"path": str(data_dir / "text/c4_demo.jsonl")},
        {"path": str(data_dir / "text/cc_en_head-*.jsonl.gz")},
        {"path": str(data_dir / "text/wiki_demo.txt"), "unit": "line"},
        {"path": str(data_dir / "text/redpajama-pile-samples/demo-dataset-deduplication.jsonl")},  # has Chinese
    ]


@pytest.fixture(scope="module")
def tokenized(inputs, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tok")
    (folder / "r.yaml").write_text(json.dumps({"name": "tok", "inputs": inputs, "stages": [TOKENIZE],
                                               "output": "out", "task_size": "100KB"}))
    return run_recipe(load_recipe(folder / "r.yaml"), workers=2, progress=False).run_dir


def shard_bytes(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted((run_dir / "tokens").rglob("*")) if p.is_file()}


def test_every_document_decodes_back_to_its_text(tokenized):
    tokenizer = load_tokenizer(tokenized / "tokens/tokenizer.json")
    eos = special_ids(tokenizer)["eos"]
    texts = {r["id"]: r["text"] for r in sql.query(tokenized, "SELECT id, text FROM docs").to_pylist()}
    seen = set()
    for split in ("train", "validation"):
        shards = TokenShards(tokenized / "tokens" / split, fingerprint(tokenizer))
        index = pq.read_table(tokenized / "tokens" / split / "index.parquet").to_pylist()
        for row in index:
            start = int(shards.offsets[row["shard"]]) + row["offset"]
            tokens = shards.span(start, start + row["length"])
            assert tokens[-1] == eos
            doc_id = row["doc_id"].split("#copy")[0]
            assert tokenizer.decode(tokens[:-1].tolist()) == texts[doc_id]
            seen.add(doc_id)
    # Every kept document is in the shards, except the wiki_demo articles its weight of 0.5 sampled out.
    left_out = set(texts) - seen
    assert left_out and all(d.startswith("wiki_demo.txt:") for d in left_out)
    assert 0.25 < len(left_out) / sum(d.startswith("wiki_demo.txt:") for d in texts) < 0.75
    assert any("你好" in texts[d] for d in seen)


def test_meta_describes_the_set(tokenized):
    train = read_json(tokenized / "tokens/train/meta.json")
    assert train["dtype"] == "uint16" and train["format_version"] == 1
    assert train["vocab_size"] == 1000 and train["special_ids"]["eos"] == 1
    assert 1.5 < train["effective_epochs"]["cc_en_head-0091"] < 2.5  # weight 2.5, less the held-out share
    assert train["effective_epochs"]["wiki_demo"] < 0.8
    assert sum(s["tokens"] for s in train["shards"]) == train["tokens"]
    assert len(train["shards"]) > 3
    rows = sql.query(tokenized, "SELECT split, count(*) AS n FROM tokens GROUP BY split").to_pylist()
    assert {r["split"]: r["n"] for r in rows}["train"] == train["documents"]


def test_same_output_with_one_worker_and_after_a_resumed_finish(tokenized, inputs, write_recipe):
    recipe = write_recipe(inputs, [TOKENIZE], task_size="100KB")
    one = run_recipe(load_recipe(recipe), workers=1, progress=False).run_dir
    assert shard_bytes(one) == shard_bytes(tokenized)


@pytest.mark.parametrize("step", ["flatten", "write", "index"])
def test_a_finish_stopped_in_a_step_resumes_there_with_identical_shards(tokenized, inputs, write_recipe, step):
    # Small shards, so the write step has many parts; stopped once the first part of `step` is done.
    small = {"tokenize": {**TOKENIZE["tokenize"], "shard_tokens": 4096}}
    recipe = write_recipe(inputs, [small], task_size="100KB", name="small")
    clean = run_recipe(load_recipe(recipe), workers=2, progress=False).run_dir
    expected = shard_bytes(clean)
    shutil.rmtree(clean)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(load_recipe(recipe), progress=False, executor=StopInStep(step))
    done_before = set(os.listdir(clean / "work/tokenize/finished"))
    rerun = StopInStep()
    run_recipe(load_recipe(recipe), progress=False, executor=rerun)
    assert shard_bytes(clean) == expected and len([n for n in expected if n.endswith(".bin")]) > 4
    assert not {f"{s}-{p:05d}.json" for s, p in rerun.given} & done_before  # nothing done is done again


def test_reader_refuses_what_it_cannot_trust(tokenized, tmp_path):
    good = tokenized / "tokens/train"
    with pytest.raises(ShardError, match="different tokenizer"):
        TokenShards(good, expected_fingerprint="0" * 64)

    def broken(edit) -> Path:
        folder = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        shutil.copytree(good, folder)
        edit(folder)
        return folder

    def set_meta(key, value):
        def edit(folder):
            meta = read_json(folder / "meta.json")
            meta[key] = value
            write_json(folder / "meta.json", meta)
        return edit

    with pytest.raises(ShardError, match="version 99"):
        TokenShards(broken(set_meta("format_version", 99)))
    with pytest.raises(ShardError, match="meta.json promises"):
        TokenShards(broken(set_meta("dtype", "uint32")))
    with pytest.raises(ShardError, match="unsupported dtype"):
        TokenShards(broken(set_meta("dtype", "int8")))

    def truncate(folder):
        shard = folder / "shard-00001.bin"
        shard.write_bytes(shard.read_bytes()[:-100])

    with pytest.raises(ShardError, match="truncated"):
        TokenShards(broken(truncate))
    with pytest.raises(ShardError, match="no meta.json"):
        TokenShards(broken(lambda f: (f / "meta.json").unlink()))


def test_empty_run_gives_a_clear_error(tmp_path, write_recipe, data_dir):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    tokenizer = str(data_dir / "tokenizers/gpt-neo-test-tokenizer.json")
    recipe = write_recipe([{"path": "empty.jsonl"}], [{"tokenize": {"tokenizer": tokenizer}}])
    run_dir = run_recipe(load_recipe(recipe), workers=1, progress=False).run_dir
    with pytest.raises(ShardError, match="holds no tokens"):
        TokenShards(run_dir / "tokens/train")


def test_existing_tokenizer_and_windows(data_dir, tmp_path, write_recipe, inputs):
    path = data_dir / "tokenizers/gpt-neo-test-tokenizer.json"
    recipe = write_recipe(inputs[:1], [{"tokenize": {"tokenizer": str(path), "validation_fraction": 0}}])
    run_dir = run_recipe(load_recipe(recipe), workers=1, progress=False).run_dir
    tokenizer = load_tokenizer(path)
    shards = TokenShards(run_dir / "tokens/train", fingerprint(tokenizer))
    assert shards.meta["special_ids"]["eos"] == tokenizer.token_to_id("<|endoftext|>") == 50279
    assert shards.dtype == np.dtype("<u2")  # 50,280 ids fit in uint16
    rng = np.random.default_rng(0)
    x, y, mask = shards.random_windows(4, 64, rng)
    assert x.shape == y.shape == (4, 64) and mask is None
    assert (x[:, 1:] == y[:, :-1]).all()
    starts = set(shards.document_starts().tolist())
    x, _, _ = shards.document_windows(8, 32, rng)
    first_tokens = {int(shards.span(s, s + 1)[0]) for s in starts}
    assert set(x[:, 0].tolist()) <= first_tokens
    low0, high0 = shards.rank_range(0, 2)
    low1, high1 = shards.rank_range(1, 2)
    assert high0 <= low1 and high1 <= shards.tokens


def test_uint32_when_the_vocabulary_needs_it(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    assert dtype_for(65536) == np.dtype("<u2") and dtype_for(65537) == np.dtype("<u4")
    tokenizer = Tokenizer(WordLevel({"<|endoftext|>": 0, **{f"w{i}": i for i in range(1, 100_000)}}, unk_token="w1"))
    encoded = pa.table({"doc_id": ["a", "b"], "source": ["s", "s"], "tokens": [[70_000, 5, 99_999], [1, 2]]},
                       schema=encoded_schema(100_000))
    pq.write_table(encoded, tmp_path / "encoded.parquet")
    write_token_splits([tmp_path / "encoded.parquet"], tmp_path / "tokens", tokenizer,
                       SplitPlan(validation_fraction=0.0, shuffle=False, shard_tokens=10), None, tmp_path / "work")
    shards = TokenShards(tmp_path / "tokens/train")
    assert shards.span(0, 5).tolist() == [70_000, 5, 99_999, 1, 2]
    assert np.fromfile(tmp_path / "tokens/train/shard-00000.bin", dtype="<u4").tolist() == [70_000, 5, 99_999, 1, 2]


def test_tokens_inspect_command(tokenized, capsys):
    from refinery.pipelines.commands.cli import main

    assert main(["tokens", "inspect", str(tokenized / "tokens")]) == 0
    out = capsys.readouterr().out
    assert "tokens/train" in out and "tokens/validation" in out and "dtype uint16" in out and "sample: " in out
    assert main(["tokens", "inspect", str(tokenized / "data")]) == 2
    assert "holds no token shards" in capsys.readouterr().err

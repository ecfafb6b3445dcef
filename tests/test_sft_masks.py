"""SFT masks on real conversations: the tokens that count in the loss decode to the assistant's words."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.corpora.records import document_table
from refinery.tokenization.builder import SplitPlan, encode_documents, write_token_splits
from refinery.tokenization.chat import END, LOSS_SPANS_TYPE, render_chat
from refinery.tokenization.reader import TokenShards
from refinery.tokenization.tokenizer import special_ids, train_bpe


def conversations(data_dir) -> list[list[dict]]:
    english = json.loads((data_dir / "instructions/alpaca_en_demo.json").read_text())[:150]
    belle = (data_dir / "instructions/belle_dev1k_zh.json").read_text(encoding="utf-8").splitlines()
    chinese = [json.loads(line) for line in belle[:150]]  # BELLE ships one JSON object per line
    result = []
    for row in english + chinese:
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        result.append([{"role": "system", "content": "You are helpful."}, {"role": "user", "content": prompt},
                       {"role": "assistant", "content": row["output"]}])
    return result


@pytest.fixture(scope="module")
def sft_shards(data_dir, tmp_path_factory):
    chats = conversations(data_dir)
    rendered = [render_chat(c) for c in chats]
    tokenizer = train_bpe((text for text, _ in rendered), 1500)
    docs = document_table([f"chat:{i}" for i in range(len(chats))], [t for t, _ in rendered], "sft")
    spans = [[{"start": s, "end": e} for s, e in sp] for _, sp in rendered]
    docs = docs.append_column("loss_spans", pa.array(spans, LOSS_SPANS_TYPE))
    folder = tmp_path_factory.mktemp("sft")
    pq.write_table(encode_documents(tokenizer, docs, special_ids(tokenizer)["eos"]), folder / "part-00000.parquet")
    plan = SplitPlan(validation_fraction=0.0, shuffle=True, seed=1, shard_tokens=20_000)
    write_token_splits([folder / "part-00000.parquet"], folder / "tokens", tokenizer, plan, None, folder / "flat")
    return TokenShards(folder / "tokens/train"), tokenizer, chats


def test_masks_decode_to_exactly_the_assistant_content(sft_shards):
    shards, tokenizer, chats = sft_shards
    assert shards.masks is not None and len(shards.meta["shards"]) > 1
    index = pq.read_table(shards.folder / "index.parquet").to_pylist()
    assert len(index) == len(chats)
    for row in index:
        start = int(shards.offsets[row["shard"]]) + row["offset"]
        tokens = shards.span(start, start + row["length"])
        mask = shards.span(start, start + row["length"], mask=True)
        chat = chats[int(row["doc_id"].split(":")[1])]
        counted = tokenizer.decode(tokens[mask == 1].tolist(), skip_special_tokens=False)
        assert counted == chat[-1]["content"] + END
        assert mask[-1] == 0  # the closing EOS is not trained on
        assert tokenizer.decode(tokens[mask == 0].tolist(), skip_special_tokens=True).strip().startswith(
            "You are helpful.")


def test_windows_carry_the_mask_of_their_targets(sft_shards):
    shards, _, _ = sft_shards
    x, y, mask = shards.random_windows(6, 128, np.random.default_rng(3))
    assert mask.shape == y.shape and set(np.unique(mask)) <= {0, 1}
    assert 0 < mask.mean() < 1

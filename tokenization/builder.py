"""Building token shards: encode documents per task, then split, mix, shuffle and write the shard sets.

Encoding runs per task in parallel and keeps its tokens in a Parquet list column (one file per task).
`write_token_splits` then reads those files once into flat memory-mapped arrays, decides every
document's split, copies and position from hashes of its id (so the result never depends on task
boundaries or worker count), and writes the documents into shards in that order (shard_steps.py: the steps,
which the tokenize stage runs as parallel tasks).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from refinery.corpora.atomic import atomic_path, commit, temp_name, write_json
from refinery.tokenization.chat import loss_mask
from refinery.tokenization.shard_steps import STEPS, ShardJob, parts, run_part, starts_new_shard
from refinery.tokenization.shards import INDEX_SCHEMA, TokenLayout, dtype_for, shard_name, split_meta, unit_hash


def encoded_schema(vocab_size: int, with_mask: bool = False) -> pa.Schema:
    token_type = pa.uint16() if dtype_for(vocab_size).itemsize == 2 else pa.uint32()
    fields = [("doc_id", pa.string()), ("source", pa.string()), ("tokens", pa.list_(token_type))]
    return pa.schema(fields + ([("mask", pa.list_(pa.uint8()))] if with_mask else []))


def encode_documents(tokenizer: Tokenizer, docs: pa.Table, eos_id: int) -> pa.Table:
    """Encode a batch of documents (no special tokens added by the tokenizer) and end each with EOS.

    Documents with a `loss_spans` column (rendered conversations) also get a loss mask from the
    tokens' character offsets: 1 inside a span, 0 elsewhere and on the closing EOS.
    """
    with_mask = "loss_spans" in docs.column_names
    schema = encoded_schema(tokenizer.get_vocab_size(), with_mask)
    texts = docs.column("text").to_pylist()
    encode = tokenizer.encode_batch if with_mask else tokenizer.encode_batch_fast  # only the former has offsets
    encodings = encode(texts, add_special_tokens=False) if texts else []
    ids = [encoding.ids for encoding in encodings]
    for doc in ids:
        doc.append(eos_id)
    # Arrow converts the nested lists in C++: much faster than filling numpy slices document by document.
    columns = [docs.column("id"), docs.column("source"), pa.array(ids, schema.field("tokens").type)]
    if with_mask:
        spans = docs.column("loss_spans").to_pylist()
        masks = [np.append(loss_mask(e.offsets, [(s["start"], s["end"]) for s in doc_spans or []]), 0)
                 for e, doc_spans in zip(encodings, spans)]  # the closing EOS is never trained on
        offsets = np.concatenate([[0], np.cumsum([len(m) for m in masks])]).astype(np.int32)
        values = np.concatenate(masks) if masks else np.zeros(0, np.uint8)
        columns.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.uint8())))
    return pa.table(columns, schema=schema)


@dataclass
class SplitPlan:
    """How documents become shard sets: held-out fraction, per-source weights, shuffle seed, shard size."""

    validation_fraction: float = 0.01
    weights: dict[str, float] = field(default_factory=dict)
    shuffle: bool = True
    seed: int = 0
    shard_tokens: int = 50_000_000

    def copies(self, doc_id: str, source: str) -> int:
        """How many times a document appears: weight 2.5 gives 2 copies, plus a third for half the documents."""
        weight = self.weights.get(source, 1.0)
        whole = int(weight)
        return whole + (1 if unit_hash("mix", self.seed, doc_id) < weight - whole else 0)

    def split(self, doc_id: str) -> str:
        return "validation" if unit_hash("split", doc_id) < self.validation_fraction else "train"


def write_token_splits(
    encoded_files: list[Path], tokens_dir: Path, tokenizer: Tokenizer, plan: SplitPlan, eos_token: str | None,
    workdir: Path,
) -> dict[str, Any]:
    """Write tokens/<split>/ shard sets from the per-task encoded files, every step of shard_steps in turn in this
    process (the tokenize stage runs the same steps' parts as parallel tasks); return a summary per split."""
    job = ShardJob(list(encoded_files), tokens_dir, workdir, plan, eos_token)
    summary: dict[str, Any] = {}
    for step in STEPS:
        for part in range(parts(step, job)):
            summary = run_part(step, part, job, tokenizer) or summary
    return summary


class ShardWriter:
    """Appends documents to shards of at most `shard_tokens` tokens (a longer document gets its own shard).

    Files are written under temporary names and renamed by `close`, so a crash leaves no shard that
    looks whole.
    """

    def __init__(self, folder: Path, vocab_size: int, shard_tokens: int, with_mask: bool = False):
        self.folder = folder
        self.dtype = dtype_for(vocab_size)
        self.shard_tokens = shard_tokens
        self.with_mask = with_mask
        folder.mkdir(parents=True, exist_ok=True)
        self.shards: list[int] = []  # tokens per finished or open shard
        self.rows: dict[str, list] = {name: [] for name in INDEX_SCHEMA.names}
        self.tokens_per_source: Counter[str] = Counter()
        self._files: list[Any] = []

    def _open_shard(self) -> None:
        self._close_files()
        index = len(self.shards)
        self.shards.append(0)
        names = [shard_name(index)] + ([shard_name(index, mask=True)] if self.with_mask else [])
        self._files = [(open(temp_name(self.folder / name), "wb"), name) for name in names]  # noqa: SIM115

    def add(self, doc_id: str, source: str, tokens: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Append one document's tokens (EOS included by the caller) and, for SFT, its loss mask."""
        length = len(tokens)
        if starts_new_shard(self.shards[-1] if self.shards else None, length, self.shard_tokens):
            self._open_shard()
        self._files[0][0].write(np.asarray(tokens, dtype=self.dtype).tobytes())
        if self.with_mask:
            if mask is None or len(mask) != length:
                raise ValueError(f"document {doc_id}: the loss mask must have one entry per token")
            self._files[1][0].write(np.asarray(mask, dtype=np.uint8).tobytes())
        for key, value in zip(INDEX_SCHEMA.names, (doc_id, source, len(self.shards) - 1, self.shards[-1], length)):
            self.rows[key].append(value)
        self.shards[-1] += length
        self.tokens_per_source[source] += length

    def _close_files(self) -> None:
        for handle, name in self._files:
            handle.close()
            commit(temp_name(self.folder / name), self.folder / name)
        self._files = []

    def close(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Finish the last shard, write index.parquet and meta.json (last, so it marks the set complete)."""
        self._close_files()
        index = pa.table(self.rows, schema=INDEX_SCHEMA)
        with atomic_path(TokenLayout.index(self.folder)) as tmp:
            pq.write_table(index, tmp, compression="zstd")
        meta = split_meta(meta, self.dtype, self.with_mask, index.num_rows, self.shards, self.tokens_per_source)
        write_json(TokenLayout.meta(self.folder), meta)
        return meta

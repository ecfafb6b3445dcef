"""Building token shards: encode documents per task, then split, mix, shuffle and write the shard sets.

Encoding runs per task in parallel (`encode_documents`, the tokenize stage's collect) and keeps its tokens in a
Parquet list column (one file per task). The shard sets are then written in steps whose parts are independent,
so the tokenize stage's finish runs them as parallel tasks on the engine's executor (a part per group of
encoded files, per shard) instead of in one process:

  flatten  (a part per FILES_PER_PART encoded files) each task's tokens (and masks) as flat arrays on disk, and a
           row per document locating it (rows-NNNNN.parquet)
  plan     every document's split, copies and position from hashes of its id (so the result never depends on
           task boundaries or worker count), in shard order: which shard and offset each copy gets
           (plan-<split>.parquet), each shard's size (plan.json); the tokenizer saved
  write    (a part per shard) one shard's tokens gathered from the flat arrays, written whole under its name
  index    each split's index.parquet and meta.json (last: it marks the split complete); the flat arrays removed

`write_token_splits` runs the same steps in turn, in one process: the bytes are the same either way.
"""

from __future__ import annotations

import math
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from refinery.corpora.atomic import atomic_path, read_json, write_json
from refinery.tokenization.chat import loss_mask
from refinery.tokenization.shards import (
    INDEX_SCHEMA,
    SPLITS,
    TokenLayout,
    dtype_for,
    shard_name,
    split_meta,
    unit_hash,
)
from refinery.tokenization.tokenizer import fingerprint, special_ids


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


STEPS = ("flatten", "plan", "write", "index")
FILES_PER_PART = 16  # encoded files (one per read task) flattened by one part
_ROWS_SCHEMA = pa.schema([("doc_id", pa.string()), ("source", pa.string()), ("start", pa.int64()),
                          ("length", pa.int64())])
_PLAN_SCHEMA = pa.schema([("doc_id", pa.string()), ("source", pa.string()), ("file", pa.int32()),
                          ("start", pa.int64()), ("length", pa.int64()), ("shard", pa.int32()), ("offset", pa.int64())])


@dataclass(frozen=True)
class ShardJob:
    """What every step of one shard-set build reads and where it writes (picklable: steps run in tasks)."""

    encoded_files: list[Path]
    tokens_dir: Path
    workdir: Path  # the flat arrays and plans, removed by the last step
    plan: SplitPlan
    eos_token: str | None


def starts_new_shard(shard_tokens_so_far: int | None, length: int, shard_tokens: int) -> bool:
    """The packing rule: a document opens a new shard unless it fits the open one (a longer document than
    `shard_tokens` gets a shard of its own). None: no shard is open yet."""
    return shard_tokens_so_far is None or (shard_tokens_so_far > 0 and shard_tokens_so_far + length > shard_tokens)


def parts(step: str, job: ShardJob) -> int:
    """How many parts `step` has, once the steps before it are done."""
    if step == "flatten":
        return max(1, math.ceil(len(job.encoded_files) / FILES_PER_PART))
    if step == "write":
        planned = job.workdir / "plan.json"
        if planned.exists():
            return max(1, sum(len(split["shards"]) for split in read_json(planned)["splits"].values()))
        # The build is over (its last step removed the plan): as many as the shards the splits' meta lists.
        layout = TokenLayout(job.tokens_dir)
        return max(1, sum(len(read_json(TokenLayout.meta(layout.split(split)))["shards"]) for split in SPLITS))
    return 1


def run_part(step: str, part: int, job: ShardJob, tokenizer: Tokenizer) -> dict[str, Any] | None:
    """Run one part of one step (safe to run again); the index step returns the summary per split."""
    job.workdir.mkdir(parents=True, exist_ok=True)
    if step == "flatten":
        for index in range(part * FILES_PER_PART, min(len(job.encoded_files), (part + 1) * FILES_PER_PART)):
            _flatten(job, index)
    elif step == "plan":
        _plan(job, tokenizer)
    elif step == "write":
        _write(job, part)
    else:
        return _index(job, tokenizer)
    return None


def _flat(job: ShardJob, index: int, mask: bool = False) -> Path:
    return job.workdir / f"flat-{index:05d}{'.mask' if mask else ''}.bin"


def _flatten(job: ShardJob, index: int) -> None:
    table = pq.read_table(job.encoded_files[index])
    tokens = table.column("tokens").combine_chunks()
    columns = [("tokens", tokens)] + ([("mask", table.column("mask").combine_chunks())]
                                      if "mask" in table.column_names else [])
    for name, values in columns:
        with atomic_path(_flat(job, index, mask=name == "mask")) as tmp:
            values.values.to_numpy(zero_copy_only=False).tofile(tmp)
    offsets = tokens.offsets.to_numpy().astype(np.int64)
    rows = pa.table([table.column("doc_id"), table.column("source"), offsets[:-1], offsets[1:] - offsets[:-1]],
                    schema=_ROWS_SCHEMA)
    with atomic_path(job.workdir / f"rows-{index:05d}.parquet") as tmp:
        pq.write_table(rows, tmp)


def _plan(job: ShardJob, tokenizer: Tokenizer) -> None:
    plan = job.plan
    files = [pq.read_table(job.workdir / f"rows-{i:05d}.parquet") for i in range(len(job.encoded_files))]
    rows = [(doc_id, source, file, start, length) for file, table in enumerate(files)
            for doc_id, source, start, length in zip(*(table.column(c).to_pylist() for c in _ROWS_SCHEMA.names))]
    order: dict[str, list[tuple]] = {split: [] for split in SPLITS}
    tokens_in: Counter[str] = Counter()
    for position, (doc_id, source, _, _, length) in enumerate(rows):
        tokens_in[source] += length
        for copy in range(plan.copies(doc_id, source)):
            key = unit_hash("shuffle", plan.seed, doc_id, copy) if plan.shuffle else position
            order[plan.split(doc_id)].append((key, position, copy))
    layout = TokenLayout(job.tokens_dir)
    with atomic_path(layout.tokenizer) as tmp:
        tokenizer.save(str(tmp))
    splits = {}
    for split, items in order.items():
        items.sort()
        shards: list[int] = []
        columns: dict[str, list] = {name: [] for name in _PLAN_SCHEMA.names}
        tokens_out: Counter[str] = Counter()
        for _key, position, copy in items:
            doc_id, source, file, start, length = rows[position]
            if starts_new_shard(shards[-1] if shards else None, length, plan.shard_tokens):
                shards.append(0)
            values = (doc_id if copy == 0 else f"{doc_id}#copy{copy}", source, file, start, length, len(shards) - 1,
                      shards[-1])
            for name, value in zip(_PLAN_SCHEMA.names, values):
                columns[name].append(value)
            shards[-1] += length
            tokens_out[source] += length
        with atomic_path(job.workdir / f"plan-{split}.parquet") as tmp:
            pq.write_table(pa.table(columns, schema=_PLAN_SCHEMA), tmp)
        # Tokens this split takes from a source per token the source has: 2.0 = seen twice per pass over the split.
        epochs = {source: round(n / tokens_in[source], 4) for source, n in sorted(tokens_out.items())}
        splits[split] = {"shards": shards, "effective_epochs": epochs}
        shutil.rmtree(layout.split(split), ignore_errors=True)  # a redone build starts the split afresh
    with_mask = any(_flat(job, i, mask=True).exists() for i in range(len(job.encoded_files)))
    write_json(job.workdir / "plan.json", {"splits": splits, "with_mask": with_mask,
                                           "vocab_size": tokenizer.get_vocab_size()})


def _write(job: ShardJob, part: int) -> None:
    planned = read_json(job.workdir / "plan.json")
    shards = [(split, shard) for split in SPLITS for shard in range(len(planned["splits"][split]["shards"]))]
    if not shards:
        return
    split, shard = shards[part]
    dtype = dtype_for(planned["vocab_size"])
    rows = pq.read_table(job.workdir / f"plan-{split}.parquet", filters=[("shard", "==", shard)])
    folder = TokenLayout(job.tokens_dir).split(split)
    folder.mkdir(parents=True, exist_ok=True)
    kinds = [(False, dtype)] + ([(True, np.dtype(np.uint8))] if planned["with_mask"] else [])
    for mask, kind in kinds:
        flats: dict[int, np.ndarray] = {}
        with atomic_path(folder / shard_name(shard, mask=mask)) as tmp, open(tmp, "wb") as out:
            for file, start, length in zip(*(rows.column(c).to_pylist() for c in ("file", "start", "length"))):
                if file not in flats:
                    flats[file] = np.memmap(_flat(job, file, mask), dtype=kind, mode="r")
                out.write(np.asarray(flats[file][start:start + length], dtype=kind).tobytes())


def _index(job: ShardJob, tokenizer: Tokenizer) -> dict[str, Any]:
    planned = read_json(job.workdir / "plan.json")
    plan, layout = job.plan, TokenLayout(job.tokens_dir)
    base = {"vocab_size": tokenizer.get_vocab_size(), "special_ids": special_ids(tokenizer, job.eos_token),
            "tokenizer_fingerprint": fingerprint(tokenizer), "tokenizer": TokenLayout.TOKENIZER_FROM_SPLIT,
            "seed": plan.seed, "shuffle": plan.shuffle, "weights": plan.weights,
            "validation_fraction": plan.validation_fraction}
    summary = {}
    for split in SPLITS:
        folder = layout.split(split)
        folder.mkdir(parents=True, exist_ok=True)
        rows = pq.read_table(job.workdir / f"plan-{split}.parquet")
        index = rows.select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA)
        with atomic_path(TokenLayout.index(folder)) as tmp:
            pq.write_table(index, tmp, compression="zstd")
        tokens_per_source: Counter[str] = Counter()
        for source, length in zip(rows.column("source").to_pylist(), rows.column("length").to_pylist()):
            tokens_per_source[source] += length
        shards, epochs = planned["splits"][split]["shards"], planned["splits"][split]["effective_epochs"]
        meta = split_meta({**base, "split": split, "effective_epochs": epochs}, dtype_for(base["vocab_size"]),
                          planned["with_mask"], index.num_rows, shards, tokens_per_source)
        write_json(TokenLayout.meta(folder), meta)
        summary[split] = {"documents": meta["documents"], "tokens": meta["tokens"], "shards": len(meta["shards"]),
                          "effective_epochs": epochs}
    shutil.rmtree(job.workdir, ignore_errors=True)
    return summary


def write_token_splits(
    encoded_files: list[Path], tokens_dir: Path, tokenizer: Tokenizer, plan: SplitPlan, eos_token: str | None,
    workdir: Path,
) -> dict[str, Any]:
    """Write tokens/<split>/ shard sets from the per-task encoded files, every step in turn in this
    process (the tokenize stage runs the same steps' parts as parallel tasks); return a summary per split."""
    job = ShardJob(list(encoded_files), tokens_dir, workdir, plan, eos_token)
    summary: dict[str, Any] = {}
    for step in STEPS:
        for part in range(parts(step, job)):
            summary = run_part(step, part, job, tokenizer) or summary
    return summary

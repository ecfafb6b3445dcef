"""Building token shards: encode documents per task, then split, mix, shuffle and write the shard sets.

Encoding runs per task in parallel and keeps its tokens in a Parquet list column (one file per task).
`write_token_splits` then reads those files once into flat memory-mapped arrays, decides every
document's split, copies and position from hashes of its id (so the result never depends on task
boundaries or worker count), and streams the documents into shards in that order.
"""

from __future__ import annotations

import hashlib
import shutil
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
from refinery.tokenization.shards import FORMAT_VERSION, INDEX_SCHEMA, SPLITS, TokenLayout, dtype_for, shard_name
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


def unit_hash(*parts: object) -> float:
    """A uniform number in [0, 1) from the parts, the same on every machine (BLAKE2b)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


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


def _to_disk(values: np.ndarray, path: Path) -> np.ndarray:
    """Write a flat array and map it back, so the finish never holds a whole corpus of tokens in memory."""
    values.tofile(path)
    return np.memmap(path, dtype=values.dtype, mode="r") if len(values) else values


def _flatten(encoded_files: list[Path], workdir: Path) -> tuple[list[np.ndarray], list[np.ndarray] | None, list]:
    """Each task's tokens (and masks) as flat arrays on disk, and one row per document locating it."""
    flats, masks, rows = [], [], []
    workdir.mkdir(parents=True, exist_ok=True)
    for file_index, path in enumerate(encoded_files):
        table = pq.read_table(path)
        tokens = table.column("tokens").combine_chunks()
        flats.append(_to_disk(tokens.values.to_numpy(zero_copy_only=False), workdir / f"flat-{file_index:05d}.bin"))
        if "mask" in table.column_names:
            mask_values = table.column("mask").combine_chunks().values.to_numpy(zero_copy_only=False)
            masks.append(_to_disk(mask_values, workdir / f"flat-{file_index:05d}.mask.bin"))
        offsets = tokens.offsets.to_numpy()
        for doc_id, source, start, end in zip(table.column("doc_id").to_pylist(), table.column("source").to_pylist(),
                                              offsets[:-1].tolist(), offsets[1:].tolist()):
            rows.append({"doc_id": doc_id, "source": source, "file": file_index, "start": start, "length": end - start})
    return flats, (masks if masks else None), rows


def write_token_splits(
    encoded_files: list[Path], tokens_dir: Path, tokenizer: Tokenizer, plan: SplitPlan, eos_token: str | None,
    workdir: Path,
) -> dict[str, Any]:
    """Write tokens/<split>/ shard sets from the per-task encoded files; return a summary per split."""
    flats, masks, rows = _flatten(encoded_files, workdir)
    ids = special_ids(tokenizer, eos_token)
    base_meta = {"vocab_size": tokenizer.get_vocab_size(), "special_ids": ids,
                 "tokenizer_fingerprint": fingerprint(tokenizer), "tokenizer": TokenLayout.TOKENIZER_FROM_SPLIT,
                 "seed": plan.seed, "shuffle": plan.shuffle, "weights": plan.weights,
                 "validation_fraction": plan.validation_fraction}
    order: dict[str, list[tuple]] = {split: [] for split in SPLITS}
    tokens_in: Counter[str] = Counter()
    for position, row in enumerate(rows):
        tokens_in[row["source"]] += row["length"]
        for copy in range(plan.copies(row["doc_id"], row["source"])):
            key = unit_hash("shuffle", plan.seed, row["doc_id"], copy) if plan.shuffle else position
            order[plan.split(row["doc_id"])].append((key, position, copy))
    layout = TokenLayout(tokens_dir)
    with atomic_path(layout.tokenizer) as tmp:
        tokenizer.save(str(tmp))
    summary = {}
    for split, items in order.items():
        items.sort()
        tokens_out: Counter[str] = Counter()
        for _key, position, _copy in items:
            tokens_out[rows[position]["source"]] += rows[position]["length"]
        # Tokens this split takes from a source per token the source has: 2.0 = seen twice per pass over the split.
        epochs = {source: round(n / tokens_in[source], 4) for source, n in sorted(tokens_out.items())}
        shutil.rmtree(layout.split(split), ignore_errors=True)  # a resumed finish starts the split afresh
        writer = ShardWriter(layout.split(split), tokenizer.get_vocab_size(), plan.shard_tokens, masks is not None)
        for _key, position, copy in items:
            row = rows[position]
            doc_id = row["doc_id"] if copy == 0 else f"{row['doc_id']}#copy{copy}"
            span = slice(row["start"], row["start"] + row["length"])
            writer.add(doc_id, row["source"], flats[row["file"]][span], masks[row["file"]][span] if masks else None)
        meta = writer.close({**base_meta, "split": split, "effective_epochs": epochs})
        summary[split] = {"documents": meta["documents"], "tokens": meta["tokens"], "shards": len(meta["shards"]),
                          "effective_epochs": epochs}
    shutil.rmtree(workdir, ignore_errors=True)
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
        if not self.shards or (self.shards[-1] and self.shards[-1] + length > self.shard_tokens):
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
        meta = {
            **meta,
            "format_version": FORMAT_VERSION,
            "dtype": self.dtype.name,
            "byteorder": "little",
            "has_mask": self.with_mask,
            "documents": index.num_rows,
            "tokens": int(sum(self.shards)),
            "shards": [{"name": shard_name(i), "tokens": n} for i, n in enumerate(self.shards)],
            "tokens_per_source": dict(sorted(self.tokens_per_source.items())),
        }
        write_json(TokenLayout.meta(self.folder), meta)
        return meta

"""The data side of `refinery ablate`: one shared tokenizer trained on an equal share of every recipe's kept
documents, each run's kept documents tokenized with it, and the clean held-out text.

A document's split comes from a hash of its id (tokenization's SplitPlan), so recipes that read the same inputs
put a document in the same split: no model trains on a document that another recipe holds out for validation,
and the tokenizer is trained on training documents only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from tokenizers import Tokenizer

from refinery.corpora.atomic import remove_path, write_parquet, write_text
from refinery.pipelines.engine.layout import RunLayout
from refinery.tokenization.builder import SplitPlan, encode_documents, write_token_splits
from refinery.tokenization.shards import TokenLayout, unit_hash
from refinery.tokenization.tokenizer import special_ids, train_bpe

TOKENIZER_CHARS = 20_000_000  # at most this many characters of each recipe train the shared tokenizer
SHARD_TOKENS = 50_000_000


class AblationError(ValueError):
    """An ablation that cannot go on; the message says why and what to do."""


def setting_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Each setting that differs, as `key old → new` (JSON values), for a refusal that names them."""
    return [f"{key} {json.dumps(old.get(key))} → {json.dumps(new.get(key))}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def kept_parts(run_dir: Path) -> list[Path]:
    parts = sorted(RunLayout(run_dir).data.glob("part-*.parquet"))
    if not parts or not any(pq.ParquetFile(p).metadata.num_rows for p in parts):
        raise AblationError(f"{run_dir} kept no documents: nothing to train on. See what removed them with "
                            f"refinery sql {run_dir} \"SELECT stage, reason, count(*) FROM removed GROUP BY ALL\"")
    return parts


def training_texts(run_dir: Path, plan: SplitPlan) -> list[str]:
    """The run's training-split texts in a fixed order (by a hash of the id), whatever its task boundaries."""
    rows = []
    for part in kept_parts(run_dir):
        table = pq.read_table(part, columns=["id", "text"])
        rows += [(unit_hash("tokenizer", doc_id), text)
                 for doc_id, text in zip(table.column("id").to_pylist(), table.column("text").to_pylist())
                 if plan.split(doc_id) == "train"]
    return [text for _, text in sorted(rows)]


def train_shared_tokenizer(runs: dict[str, Path], vocab_size: int, validation_fraction: float,
                           max_chars: int = TOKENIZER_CHARS) -> tuple[Tokenizer, dict[str, int]]:
    """A byte-level BPE trained on the same number of characters from every run (the smallest run's training
    text, at most max_chars), so no recipe's text gets a better vocabulary by being larger; the chars used."""
    plan = SplitPlan(validation_fraction)
    texts = {name: training_texts(run_dir, plan) for name, run_dir in runs.items()}
    budget = min(max_chars, *(sum(map(len, docs)) for docs in texts.values()))
    sample, used = [], {}
    for name, docs in texts.items():
        left = budget
        for text in docs:
            if left <= 0:
                break
            sample.append(text[:left])
            left -= len(sample[-1])
        used[name] = budget - left
    return train_bpe(sample, vocab_size), used


def tokens_ready(tokens_dir: Path) -> bool:
    """Whether both splits were written whole (write_token_splits writes validation's meta.json last)."""
    return TokenLayout.meta(TokenLayout(tokens_dir).split("validation")).exists()


def tokenize_run(run_dir: Path, tokens_dir: Path, tokenizer: Tokenizer, validation_fraction: float) -> dict:
    """The run's kept documents as train and validation shard sets in tokens_dir, encoded with `tokenizer`;
    deterministic (splits and order by hashes of the ids). Returns write_token_splits' summary."""
    work = tokens_dir.with_name(f".{tokens_dir.name}.work")
    remove_path(work)
    remove_path(tokens_dir)
    eos = special_ids(tokenizer)["eos"]
    encoded = []
    for part in kept_parts(run_dir):
        docs = pq.read_table(part, columns=["id", "source", "text"])
        encoded.append(work / "encoded" / part.name)
        write_parquet(encoded[-1], encode_documents(tokenizer, docs, eos))
    plan = SplitPlan(validation_fraction, shard_tokens=SHARD_TOKENS)
    summary = write_token_splits(encoded, tokens_dir, tokenizer, plan, None, work / "flat")
    remove_path(work)
    return summary


_GUTENBERG_BODY = re.compile(r"\*\*\* ?START OF [^\n]*\*\*\*\n(.*?)\n\*\*\* ?END OF ", re.S)


def clean_text_slice(source: Path, target: Path) -> Path:
    """The held-out clean text as plain prose: a Project Gutenberg book's body without its licence header and
    footer, Windows line ends and hard line wraps (paragraphs become one line each, as web text has them)."""
    text = source.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    body = _GUTENBERG_BODY.search(text)
    text = body.group(1) if body else text
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    write_text(target, "\n\n".join(p for p in paragraphs if p) + "\n")
    return target

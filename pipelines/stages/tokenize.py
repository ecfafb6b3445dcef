"""Tokenization stages (global): train a tokenizer on the run's documents, and write token shards.

`tokenize: {tokenizer: train, vocab_size: 8000}` puts a `train_tokenizer` stage before `tokenize`
(see `prerequisites`), so a recipe trains and tokenizes in one run. Both keep every document.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field
from tokenizers import Tokenizer

from refinery.corpora.atomic import atomic_path
from refinery.pipelines.stages import register
from refinery.pipelines.stages.base import ProducerStage, StageConfig
from refinery.pipelines.stages.dedup import hash64
from refinery.tokenization import builder
from refinery.tokenization.builder import SplitPlan, encode_documents
from refinery.tokenization.tokenizer import load_tokenizer, special_ids, train_bpe

SAMPLE_SCHEMA = pa.schema([("hash", pa.int64()), ("ord", pa.int64()), ("text", pa.string())])


class TrainTokenizerConfig(StageConfig):
    vocab_size: int = Field(32000, ge=263, le=1 << 20, description="tokens in the vocabulary, specials included")
    sample_fraction: float = Field(1.0, gt=0, le=1, description="share of documents (by id hash) to train on")
    max_documents: int = Field(200_000, ge=1, description="at most this many sampled documents (lowest hashes)")
    min_frequency: int = Field(2, ge=1, description="a merge needs a pair seen this often")


@register
class TrainTokenizer(ProducerStage):
    """Train a byte-level BPE on a deterministic sample of the documents; writes tokens/tokenizer.json."""

    name = "train_tokenizer"
    collect_does = "sample text for the tokenizer"
    Config = TrainTokenizerConfig
    config: TrainTokenizerConfig

    def collect(self, docs: pa.Table, ordinals: pa.Array) -> pa.Table:
        hashes = hash64(docs.column("id"))
        threshold = int((self.config.sample_fraction * 2 - 1) * 2**63) if self.config.sample_fraction < 1 else None
        table = pa.table([hashes, ordinals, docs.column("text")], schema=SAMPLE_SCHEMA)
        return table if threshold is None else table.filter(pc.less(hashes, threshold))

    def finish(self, collected_files: list[Path], workdir: Path) -> None:
        import duckdb

        con = duckdb.connect()
        files = [str(f) for f in collected_files]
        query = "SELECT text FROM read_parquet(?) ORDER BY hash, ord LIMIT ?"
        texts = con.execute(query, [files, self.config.max_documents]).fetchall() if files else []
        tokenizer = train_bpe((t for (t,) in texts), self.config.vocab_size, self.config.min_frequency)
        with atomic_path(self.context.tokens.tokenizer) as tmp:
            tokenizer.save(str(tmp))


class TokenizeConfig(StageConfig):
    tokenizer: str = Field("train", description="'train' (train one on this run: see vocab_size) or a tokenizer.json")
    vocab_size: int = Field(32000, ge=263, description="with tokenizer: train, the vocabulary size")
    train_sample_fraction: float = Field(1.0, gt=0, le=1, description="with tokenizer: train, the document sample")
    train_max_documents: int = Field(200_000, ge=1, description="with tokenizer: train, at most this many documents")
    eos_token: str | None = Field(None, description="end-of-text token (default: found by its usual names)")
    shard_tokens: int = Field(50_000_000, ge=1024, description="tokens per shard (a document is never split)")
    validation_fraction: float = Field(0.01, ge=0, lt=1, description="share of documents (by id hash) held out")
    weights: dict[str, float] = Field(default_factory=dict, description="per-source sampling weight (default 1)")
    shuffle: bool = Field(True, description="shuffle documents across shards (deterministic, by seed)")
    seed: int = Field(0, description="shuffle and mixing seed")


@register
class Tokenize(ProducerStage):
    """Encode documents per task in parallel, then write tokens/train and tokens/validation shard sets."""

    name = "tokenize"
    collect_does = "tokenize"
    Config = TokenizeConfig
    config: TokenizeConfig

    @classmethod
    def prerequisites(cls, config: TokenizeConfig) -> list[tuple[str, StageConfig]]:
        if config.tokenizer != "train":
            return []
        return [("train_tokenizer", TrainTokenizerConfig(
            vocab_size=config.vocab_size, sample_fraction=config.train_sample_fraction,
            max_documents=config.train_max_documents))]

    def _tokenizer(self) -> Tokenizer:
        """Loaded once per worker process, on first use."""
        if not hasattr(self, "_loaded"):
            trained = self.config.tokenizer == "train"
            path = self.context.tokens.tokenizer if trained else self.context.resolve(self.config.tokenizer)
            self._loaded = load_tokenizer(path)
            self._eos = special_ids(self._loaded, self.config.eos_token)["eos"]
        return self._loaded

    def collect(self, docs: pa.Table, ordinals: pa.Array) -> pa.Table:
        tokenizer = self._tokenizer()
        return encode_documents(tokenizer, docs, self._eos)

    # The shard sets are written in steps whose parts (a group of encoded files, a shard) are executor tasks.
    def _shard_job(self, collected_files: list[Path], workdir: Path) -> builder.ShardJob:
        plan = SplitPlan(self.config.validation_fraction, dict(self.config.weights), self.config.shuffle,
                         self.config.seed, self.config.shard_tokens)
        return builder.ShardJob(list(collected_files), self.context.tokens.root, workdir / "flat", plan,
                                    self.config.eos_token)

    def finish_steps(self) -> tuple[str, ...]:
        return builder.STEPS

    def step_parts(self, step: str, collected_files: list[Path], workdir: Path) -> int:
        return builder.parts(step, self._shard_job(collected_files, workdir))

    def run_step(self, step: str, part: int, collected_files: list[Path], workdir: Path) -> None:
        builder.run_part(step, part, self._shard_job(collected_files, workdir), self._tokenizer())

    def finish(self, collected_files: list[Path], workdir: Path) -> None:
        self.finish_in_steps(collected_files, workdir)

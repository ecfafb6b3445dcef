"""Training data: token-shard folders found from what the user gives, mixed by weight, sampled reproducibly.

The batch of step k, micro-batch m, on rank r is drawn from a generator seeded with (seed, r, k, m), so
it never depends on what ran before: a resumed run sees exactly the batches an uninterrupted one does.
Each rank draws its windows from its own disjoint token range of every shard set (`rank_range`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refinery.tokenization.reader import EmptySplitError, ShardError, TokenShards
from refinery.tokenization.shards import SPLITS, TokenLayout, find_split
from refinery.tokenization.tokenizer import fingerprint, load_tokenizer

Batch = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # inputs, targets, loss mask of the targets
VALIDATION_STREAM = 1 << 30  # keeps validation generators apart from the step generators
ENTROPY_SAMPLE_TOKENS = 50_000_000  # per source; beyond this the unigram counts come from evenly spread spans


def split_folder(path: str | Path, split: str = "train") -> Path:
    """The `split` folder of a run (RUN), its tokens (RUN/tokens) or the split folder itself."""
    found = find_split(path, split)
    if found is not None:
        return found
    raise ShardError(f"{path} holds no token shards (no meta.json in it, in {split}/ or in tokens/{split}/); give a "
                     "run folder, RUN/tokens or RUN/tokens/train from a recipe with a `tokenize` stage")


@dataclass
class Source:
    """One shard set in the mix, with its validation split when the run wrote one (else why there is none)."""

    name: str
    weight: float
    train: TokenShards
    validation: TokenShards | None
    no_validation: str | None = None


class TrainingData:
    """Every data folder of the run, checked to share one tokenizer, and the batches drawn from them."""

    def __init__(self, folders: list[str], weights: list[float], seq_len: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        self.seq_len, self.seed, self.rank, self.world_size = seq_len, seed, rank, world_size
        first = split_folder(folders[0])
        meta = json.loads((first / "meta.json").read_text(encoding="utf-8"))
        self.tokenizer_path = (first / meta.get("tokenizer", TokenLayout.TOKENIZER_FROM_SPLIT)).resolve()
        if not self.tokenizer_path.exists():
            raise ShardError(f"{first}: the tokenizer the shards were made with is missing ({self.tokenizer_path}); "
                             "training needs the tokenizer.json that the tokenize stage writes beside the splits")
        self.fingerprint = fingerprint(load_tokenizer(self.tokenizer_path))  # every source must match it
        self.sources = [self._open(folder, weight) for folder, weight in zip(folders, weights)]
        self.vocab_size = self.sources[0].train.vocab_size
        self.special_ids: dict = self.sources[0].train.meta["special_ids"]
        self.has_mask = any(s.train.masks is not None for s in self.sources)
        for source in self.sources:
            low, high = source.train.rank_range(rank, world_size)
            if high - low < seq_len + 1:
                raise ShardError(f"{source.name} has {source.train.tokens:,} training tokens: too few for "
                                 f"{world_size} process(es) with windows of seq_len {seq_len}; shorten seq_len")

    def _open(self, folder: str, weight: float) -> Source:
        train_folder = split_folder(folder)
        train = TokenShards(train_folder, expected_fingerprint=self.fingerprint)
        validation_folder = train_folder.parent / SPLITS[1]
        if not (validation_folder / "meta.json").exists():
            return Source(str(folder), weight, train, None, f"there is no validation split beside {train_folder}")
        try:
            validation = TokenShards(validation_folder, expected_fingerprint=self.fingerprint)
        except EmptySplitError as err:
            return Source(str(folder), weight, train, None, str(err))
        if validation.tokens <= self.seq_len:
            return Source(str(folder), weight, train, None, (
                f"the validation split {validation_folder} has {validation.tokens:,} tokens, fewer than one window "
                f"of seq_len + 1 = {self.seq_len + 1}; use a shorter seq_len or a larger validation_fraction in the "
                "recipe's tokenize stage"))
        return Source(str(folder), weight, train, validation)

    def batch(self, batch_size: int, step: int, micro: int = 0) -> Batch:
        """Inputs, targets and loss mask (None when no source has masks) of one micro-batch."""
        rng = np.random.default_rng([self.seed, self.rank, step, micro])
        return self._draw(batch_size, rng, [s.train for s in self.sources], self.rank, self.world_size)

    def validation_batch(self, source: Source, batch_size: int, index: int) -> Batch:
        """Fixed validation windows (the same at every evaluation), different on every rank."""
        rng = np.random.default_rng([self.seed, VALIDATION_STREAM, self.rank, index])
        return self._draw(batch_size, rng, [source.validation], 0, 1)

    def _draw(self, batch_size: int, rng: np.random.Generator, sets: list[TokenShards], rank: int,
              world_size: int) -> Batch:
        weights = [s.weight for s in self.sources] if len(sets) > 1 else [1.0]
        counts = np.bincount(rng.choice(len(sets), size=batch_size, p=weights), minlength=len(sets))
        xs, ys, masks = [], [], []
        for shards, count in zip(sets, counts):
            if not count:
                continue
            x, y, mask = shards.random_windows(int(count), self.seq_len, rng, rank, world_size)
            xs.append(x)
            ys.append(y)
            masks.append(np.ones_like(y, dtype=np.uint8) if mask is None else mask)
        mask = np.concatenate(masks) if self.has_mask else None
        return np.concatenate(xs), np.concatenate(ys), mask

    def unigram_entropy(self) -> float:
        """Entropy in nats of the training tokens (the counted ones, with masks), mixed by weight: the loss of
        the best model that ignores context."""
        mixed = np.zeros(self.vocab_size, dtype=np.float64)
        for source in self.sources:
            counts = token_counts(source.train, self.vocab_size)
            mixed += source.weight * counts / max(counts.sum(), 1)
        p = mixed[mixed > 0] / mixed.sum()
        return float(-(p * np.log(p)).sum())


def token_counts(shards: TokenShards, vocab_size: int, sample_tokens: int = ENTROPY_SAMPLE_TOKENS) -> np.ndarray:
    """How often each token id occurs (as a target counted by the mask, when there is one)."""
    spans = 1000 if shards.tokens > sample_tokens else 1
    length = sample_tokens // spans if spans > 1 else shards.tokens
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in np.linspace(0, shards.tokens - length, spans).astype(np.int64):
        tokens = shards.span(int(start), int(start) + length)
        if shards.masks is not None:
            tokens = tokens[shards.span(int(start), int(start) + length, mask=True) == 1]
        counts += np.bincount(tokens, minlength=vocab_size)[:vocab_size]
    return counts

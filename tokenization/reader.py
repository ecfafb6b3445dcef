"""Reading token shards for training: verified on open, memory-mapped, sampled by window or by document.

Everything a trainer can get wrong is checked when the set is opened: format version, dtype, the
tokenizer fingerprint, and that every shard holds exactly the tokens meta.json promises.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from refinery.tokenization.shards import FORMAT_VERSION, SPLITS, shard_name


class ShardError(ValueError):
    """A shard set that cannot be trained on; the message says what to do."""


class EmptySplitError(ShardError):
    """A finished shard set with no tokens: normal for the validation split of a small run."""


# Validation fractions to suggest, smallest first: the first that holds out about VALIDATION_DOCUMENTS is advised.
FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
VALIDATION_DOCUMENTS = 5


def suggested_fraction(documents: int) -> float:
    """A validation_fraction that holds out about VALIDATION_DOCUMENTS of `documents` (the hash rarely picks none)."""
    return next((f for f in FRACTIONS if f * documents >= VALIDATION_DOCUMENTS), FRACTIONS[-1])


def empty_split_reason(folder: Path, meta: dict) -> str:
    """Why a finished split holds no tokens, and what to do: the message of EmptySplitError."""
    fraction = meta.get("validation_fraction")
    train, validation = SPLITS
    other = folder.parent / (train if meta.get("split") == validation else validation) / "meta.json"
    other_documents = json.loads(other.read_text(encoding="utf-8"))["documents"] if other.exists() else 0
    rerun = "rerun the recipe with `refinery run RECIPE --force`"  # the tokenize options are in the run's fingerprint
    if meta.get("split") == validation:
        if not fraction:
            why = "the tokenize stage ran with validation_fraction 0, so it held out no documents"
        else:
            why = (f"validation_fraction {fraction} of the run's {other_documents:,} documents held out none "
                   f"(documents are picked by a hash of their id: about {fraction * other_documents:.1f} expected)")
        return (f"the validation split {folder} is empty: {why}. For a validation loss, set validation_fraction: "
                f"{suggested_fraction(other_documents)} in the recipe's tokenize stage and {rerun}; training without "
                "one works too (it evaluates nothing)")
    if other_documents:
        return (f"{folder} holds no tokens: all {other_documents:,} documents went to the validation split "
                f"(validation_fraction {fraction}); lower validation_fraction in the recipe's tokenize stage and "
                f"{rerun}")
    return (f"{folder} holds no tokens: the run kept no documents; see what removed them with "
            f"`refinery sql RUN \"SELECT stage, reason, count(*) FROM removed GROUP BY ALL\"`")


class TokenShards:
    def __init__(self, folder: str | Path, expected_fingerprint: str | None = None):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            raise ShardError(f"{self.folder} has no meta.json: not a finished token-shard folder "
                             "(rerun the recipe with a `tokenize` stage to finish it)")
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        version = self.meta.get("format_version")
        if version != FORMAT_VERSION:
            raise ShardError(f"{self.folder}: shard format version {version}, this Refinery reads version "
                             f"{FORMAT_VERSION}; re-tokenize with this version or install the matching one")
        self.dtype = np.dtype(self.meta["dtype"]).newbyteorder("<")
        if self.dtype not in (np.dtype("<u2"), np.dtype("<u4")):
            raise ShardError(f"{self.folder}: unsupported dtype {self.meta['dtype']} (expected uint16 or uint32)")
        if self.meta["vocab_size"] > np.iinfo(self.dtype).max + 1:
            raise ShardError(f"{self.folder}: vocab size {self.meta['vocab_size']} does not fit {self.dtype.name}")
        if expected_fingerprint is not None and self.meta["tokenizer_fingerprint"] != expected_fingerprint:
            raise ShardError(
                f"{self.folder} was tokenized with a different tokenizer (fingerprint "
                f"{self.meta['tokenizer_fingerprint'][:12]}…, the model's is {expected_fingerprint[:12]}…); "
                "train with the tokenizer.json stored beside the shards, or re-tokenize"
            )
        if not self.meta["shards"] or self.meta["tokens"] == 0:
            raise EmptySplitError(empty_split_reason(self.folder, self.meta))
        self.shards = [self._open(entry, mask=False) for entry in self.meta["shards"]]
        self.masks = (
            [self._open(entry, mask=True) for entry in self.meta["shards"]] if self.meta.get("has_mask") else None
        )
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])

    def _open(self, entry: dict, mask: bool) -> np.memmap:
        index = int(entry["name"].split("-")[1].split(".")[0])
        path = self.folder / shard_name(index, mask)
        dtype = np.dtype(np.uint8) if mask else self.dtype
        expected = entry["tokens"] * dtype.itemsize
        size = path.stat().st_size if path.exists() else -1
        if size != expected:
            state = "is missing" if size < 0 else f"has {size:,} bytes, meta.json promises {expected:,}"
            raise ShardError(f"{path} {state} (truncated or overwritten); re-run the tokenize stage")
        return np.memmap(path, dtype=dtype, mode="r")

    @property
    def tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def span(self, start: int, end: int, mask: bool = False) -> np.ndarray:
        """Tokens [start, end) of the whole set, read across shard boundaries."""
        arrays = self.masks if mask else self.shards
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        pieces = []
        while start < end:
            local = start - self.offsets[first]
            take = min(end - start, len(arrays[first]) - local)
            pieces.append(arrays[first][local : local + take])
            start += take
            first += 1
        return np.concatenate(pieces) if len(pieces) > 1 else np.asarray(pieces[0])

    def rank_range(self, rank: int = 0, world_size: int = 1) -> tuple[int, int]:
        """The contiguous token range rank `rank` of `world_size` reads from (disjoint across ranks)."""
        per_rank = self.tokens // world_size
        return rank * per_rank, (rank + 1) * per_rank

    def random_windows(
        self, batch_size: int, seq_len: int, rng: np.random.Generator, rank: int = 0, world_size: int = 1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """`batch_size` random windows of seq_len + 1 tokens: inputs x, targets y (shifted), and the mask of y."""
        low, high = self.rank_range(rank, world_size)
        if high - low < seq_len + 1:
            raise ShardError(f"{self.folder}: rank {rank} has {high - low} tokens, fewer than seq_len + 1 "
                             f"= {seq_len + 1}; use a shorter seq_len or fewer ranks")
        starts = rng.integers(low, high - seq_len, size=batch_size)
        return self._windows(starts, seq_len)

    def document_windows(
        self, batch_size: int, seq_len: int, rng: np.random.Generator, rank: int = 0, world_size: int = 1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Windows that start at a document's first token (BOS-aligned sampling)."""
        starts_all = self.document_starts()
        low, high = self.rank_range(rank, world_size)
        eligible = starts_all[(starts_all >= low) & (starts_all <= high - seq_len - 1)]
        if not len(eligible):
            raise ShardError(f"{self.folder}: no document starts far enough from the end for seq_len {seq_len}")
        return self._windows(rng.choice(eligible, size=batch_size), seq_len)

    def document_starts(self) -> np.ndarray:
        index = pq.read_table(self.folder / "index.parquet", columns=["shard", "offset"])
        shard = index.column("shard").to_numpy()
        return self.offsets[shard] + index.column("offset").to_numpy()

    def _windows(self, starts: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        rows = np.stack([self.span(int(s), int(s) + seq_len + 1).astype(np.int64) for s in starts])
        mask = None
        if self.masks is not None:
            mask = np.stack([self.span(int(s) + 1, int(s) + seq_len + 1, mask=True) for s in starts])
        return rows[:, :-1], rows[:, 1:], mask

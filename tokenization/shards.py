"""The token-shard format: the contract between data and trainer.

    RUN/tokens/tokenizer.json      the tokenizer every split was encoded with
    <split>/shard-00000.bin        raw little-endian uint16 (vocab ≤ 65,536) or uint32 token ids;
                                   documents concatenated, each followed by EOS; never split across shards
    <split>/shard-00000.mask.bin   SFT only: uint8 per token, 1 = the token counts in the loss
    <split>/index.parquet          one row per document: doc_id, source, shard, offset, length
    <split>/meta.json              format version, dtype, vocab size, special ids, tokenizer fingerprint,
                                   per-shard token counts, tokens per source

Open a shard with `numpy.memmap(path, dtype=meta["dtype"], mode="r")` and nothing else. The writer is
tokenization/builder.py (its steps run in turn by write_token_splits, or as parallel tasks by the tokenize
stage); TokenShards in tokenization/reader.py reads and verifies a set.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

FORMAT_VERSION = 1
SPLITS = ("train", "validation")
INDEX_SCHEMA = pa.schema(
    [("doc_id", pa.string()), ("source", pa.string()), ("shard", pa.int32()), ("offset", pa.int64()),
     ("length", pa.int64())]
)


def dtype_for(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype that holds every token id, little-endian."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def shard_name(index: int, mask: bool = False) -> str:
    return f"shard-{index:05d}{'.mask' if mask else ''}.bin"


def unit_hash(*parts: object) -> float:
    """A uniform number in [0, 1) from the parts, the same on every machine (BLAKE2b)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def split_meta(meta: dict[str, Any], dtype: np.dtype, with_mask: bool, documents: int, shards: list[int],
               tokens_per_source: Counter[str]) -> dict[str, Any]:
    """A split's meta.json: `meta` (tokenizer, split, mixing) and what its shards hold."""
    return {
        **meta,
        "format_version": FORMAT_VERSION,
        "dtype": dtype.name,
        "byteorder": "little",
        "has_mask": with_mask,
        "documents": documents,
        "tokens": int(sum(shards)),
        "shards": [{"name": shard_name(i), "tokens": n} for i, n in enumerate(shards)],
        "tokens_per_source": dict(sorted(tokens_per_source.items())),
    }


class TokenLayout:
    """Paths of a token folder: RUN/tokens/ with tokenizer.json and one folder per split. The run folder's
    layout (pipelines' RunLayout) hands its `tokens` to this class, so that training, which never imports
    pipelines, finds shards by the same rules."""

    RUN_FOLDER = "tokens"  # where a run keeps its token folder

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def of_run(cls, run_dir: str | Path) -> TokenLayout:
        return cls(Path(run_dir) / cls.RUN_FOLDER)

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.json"

    def split(self, name: str) -> Path:
        return self.root / name

    @staticmethod
    def index(split_folder: Path) -> Path:
        return split_folder / "index.parquet"

    @staticmethod
    def meta(split_folder: Path) -> Path:
        return split_folder / "meta.json"

    # The tokenizer as a split's meta.json names it: relative, so a tokens/ folder can be moved whole.
    TOKENIZER_FROM_SPLIT = "../tokenizer.json"


def find_split(path: str | Path, split: str = "train") -> Path | None:
    """The `split` folder given a run (RUN), its tokens (RUN/tokens) or the split folder itself; None if none."""
    path = Path(path)
    for candidate in (path, path / split, TokenLayout.of_run(path).split(split)):
        if TokenLayout.meta(candidate).exists():
            return candidate
    return None


def split_folders(path: str | Path) -> list[Path]:
    """A split folder itself, or every split folder under a tokens/ folder (or a run's)."""
    path = Path(path)
    if TokenLayout.meta(path).exists():
        return [path]
    for root in (path, TokenLayout.of_run(path).root):
        folders = sorted(p.parent for p in root.glob("*/meta.json"))
        if folders:
            return folders
    return []

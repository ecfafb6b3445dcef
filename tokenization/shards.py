"""The token-shard format: the contract between data and trainer.

    RUN/tokens/tokenizer.json      the tokenizer every split was encoded with
    <split>/shard-00000.bin        raw little-endian uint16 (vocab ≤ 65,536) or uint32 token ids;
                                   documents concatenated, each followed by EOS; never split across shards
    <split>/shard-00000.mask.bin   SFT only: uint8 per token, 1 = the token counts in the loss
    <split>/index.parquet          one row per document: doc_id, source, shard, offset, length
    <split>/meta.json              format version, dtype, vocab size, special ids, tokenizer fingerprint,
                                   per-shard token counts, tokens per source

Open a shard with `numpy.memmap(path, dtype=meta["dtype"], mode="r")` and nothing else.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.corpora.atomic import atomic_path, commit, temp_name, write_json

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

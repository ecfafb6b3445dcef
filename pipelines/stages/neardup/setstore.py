"""The shingle sets the resolve step compares, copied out of the signature files into blocks of bounded size.

Only documents in some candidate pair are copied, in ordinal order, into Parquet files (`ord`, `shingles`) of at
most `block_bytes` each, so a phase holds one or two blocks at a time, never every set. (DuckDB could join the
sets to the pairs, but its joins and sorts of list columns go well past its memory limit.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.corpora.atomic import atomic_path

READ_ROWS = 2048  # signature rows read at a time while copying


class Sets(NamedTuple):
    """Sorted, distinct uint32 sets of documents sorted by ordinal: document i owns values[offsets[i]:offsets[i+1]]."""

    ords: np.ndarray  # int64
    offsets: np.ndarray  # int64, len(ords) + 1
    values: np.ndarray  # uint32

    @classmethod
    def from_table(cls, table: pa.Table) -> Sets:
        sets = table.column("shingles").combine_chunks()
        offsets = sets.offsets.to_numpy().astype(np.int64)
        values = sets.values.to_numpy()[offsets[0]:offsets[-1]]
        return cls(table.column("ord").to_numpy(), offsets - offsets[0], values)

    def rows(self, ords: np.ndarray) -> np.ndarray:
        """Row of each ordinal (every one must be present)."""
        return np.searchsorted(self.ords, ords)

    def sizes(self, rows: np.ndarray) -> np.ndarray:
        return self.offsets[rows + 1] - self.offsets[rows]

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values of the given rows' sets laid end to end, size of each)."""
        sizes = self.sizes(rows)
        within = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return self.values[np.repeat(self.offsets[rows], sizes) + within], sizes

    def one(self, row: int) -> np.ndarray:
        return self.values[self.offsets[row]:self.offsets[row + 1]]


def pair_jaccard(left: tuple[np.ndarray, np.ndarray], right: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Exact Jaccard of pair i = (left set i, right set i), each side given as (values end to end, sizes), in one
    sort: a value present in both sets of a pair appears twice among the (pair, value) keys."""
    n = len(left[1])
    keys = np.empty(len(left[0]) + len(right[0]), np.uint64)  # filled in place: ~20 bytes per value at the peak
    start = 0
    for values, sizes in (left, right):
        part = keys[start:start + len(values)]
        part[:] = np.repeat(np.arange(n, dtype=np.uint64), sizes)
        part <<= np.uint64(32)
        part |= values
        start += len(values)
    keys.sort()
    both = keys[1:][keys[1:] == keys[:-1]]
    shared = np.bincount((both >> np.uint64(32)).astype(np.int64), minlength=n)
    union = left[1] + right[1] - shared
    return np.where(union > 0, shared / np.maximum(union, 1), 0.0)


def jaccard(x: np.ndarray, y: np.ndarray) -> float:
    """Exact Jaccard of two sorted, distinct, non-empty arrays."""
    at = np.minimum(np.searchsorted(y, x), len(y) - 1)
    shared = int(np.count_nonzero(y[at] == x))
    return shared / (len(x) + len(y) - shared)


def read_sets(path: Path) -> pa.Table:
    # One thread: Arrow's reader threads each keep memory they have used, which only adds to a phase's peak.
    return pq.read_table(path, use_threads=False)


def _write(table: pa.Table, target: Path) -> None:
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="none")  # random hashes do not compress; the blocks are read often


def selected_rows(signature_files: list[Path], wanted: np.ndarray, columns: list[str]) -> Iterator[pa.Table]:
    """The signature rows whose ordinal is in `wanted` (sorted), a few thousand at a time, in ordinal order
    (each task's file is in ordinal order, and the files are in task order)."""
    for path in signature_files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS, columns=["ord", *columns],
                                                       use_threads=False):
            ords = batch.column(0).to_numpy()
            at = np.minimum(np.searchsorted(wanted, ords), max(len(wanted) - 1, 0))
            hit = np.flatnonzero(wanted[at] == ords) if len(wanted) else np.zeros(0, np.int64)
            if len(hit):
                yield pa.Table.from_batches([batch]).take(pa.array(hit))


class SetStore:
    """Blocks `block-NNNNN.parquet` in a folder, each a run of ordinals."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.paths = sorted(folder.glob("block-*.parquet"))
        firsts = [pq.read_table(p, columns=["ord"]).column(0)[0].as_py() for p in self.paths]
        self.firsts = np.array(firsts, np.int64)

    @staticmethod
    def write(signature_files: list[Path], wanted: np.ndarray, folder: Path, block_bytes: int) -> int:
        """Copy the sets of the `wanted` ordinals into blocks of about `block_bytes`; return how many blocks."""
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("block-*.parquet"):  # a copy interrupted earlier starts over
            old.unlink()
        pending: list[pa.Table] = []
        size = blocks = 0
        for rows in selected_rows(signature_files, wanted, ["shingles"]):
            pending.append(rows)
            size += rows.nbytes
            if size >= block_bytes:
                _write(pa.concat_tables(pending), folder / f"block-{blocks:05d}.parquet")
                pending, size, blocks = [], 0, blocks + 1
        if pending:
            _write(pa.concat_tables(pending), folder / f"block-{blocks:05d}.parquet")
            blocks += 1
        return blocks

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, block: int) -> Sets:
        return Sets.from_table(read_sets(self.paths[block]))

    def block_of(self, ords: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.firsts, ords, side="right") - 1

    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.paths)

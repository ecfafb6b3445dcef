"""Where `quality_top_fraction` cuts: the keep-th document in (score descending, nulls last, ordinal) order, found
without sorting every score on one node.

Two steps of the stage's finish (see GlobalStage.finish_steps):
  histogram  (a part per group of collected files) how many scores fall in each of 65,536 bins of the float64
             order (the top 16 bits of an order-preserving integer key), and how many are null
  cut        the bins summed, the bin holding the keep-th document found from the top, and only that bin's rows
             (or the null rows) sorted: a corpus of billions holds one bin at a time, not every score

The cut is exactly the one a sort of every (score, ord) would give: a score's bin is a monotone function of the
score, so the documents above the bin are all before the cut and those below all after it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from refinery.corpora.atomic import atomic_path, write_json

BINS = 1 << 16
FILES_PER_PART = 64  # collected files (one per read task) per histogram part
_SHIFT = 48  # a key's top 16 bits are its bin


def _keys(scores: np.ndarray) -> np.ndarray:
    """int64 keys ordered as the float64 scores are (-0.0 taken as 0.0, as SQL compares them)."""
    bits = (scores + 0.0).view(np.int64)
    return bits ^ ((bits >> 63) & np.int64(0x7FFFFFFFFFFFFFFF))


def _score_of(key: int) -> float:
    """The float64 whose key this is (the inverse of _keys)."""
    bits = np.array([key], np.int64)
    return float((bits ^ ((bits >> 63) & np.int64(0x7FFFFFFFFFFFFFFF))).view(np.float64)[0])


def histogram_parts(collected_files: list[Path]) -> int:
    return max(1, math.ceil(len(collected_files) / FILES_PER_PART))


def _histogram_file(workdir: Path, part: int) -> Path:
    return workdir / "histogram" / f"part-{part:05d}.npy"


def histogram(collected_files: list[Path], workdir: Path, part: int) -> None:
    """Count the scores of every histogram_parts()-th collected file from `part` by bin; the last cell: nulls."""
    counts = np.zeros(BINS + 1, np.int64)
    for path in collected_files[part::histogram_parts(collected_files)]:
        for batch in pq.ParquetFile(path).iter_batches(columns=["score"], batch_size=1 << 20):
            scores = batch.column(0)
            counts[BINS] += scores.null_count
            values = scores.drop_null().to_numpy(zero_copy_only=False)
            counts[:BINS] += np.bincount((_keys(values) >> _SHIFT) + BINS // 2, minlength=BINS)
    with atomic_path(_histogram_file(workdir, part)) as tmp, open(tmp, "wb") as out:
        np.save(out, counts)


def cut(collected_files: list[Path], workdir: Path, fraction: float, target: Path) -> None:
    """Write the cut: documents, keep, and the (score, ord) of the last kept document."""
    result: dict[str, Any] = {"documents": 0, "keep": 0, "score": None, "ord": None}
    if collected_files:
        counts = sum(np.load(_histogram_file(workdir, p)) for p in range(histogram_parts(collected_files)))
        documents = int(counts.sum())
        # round half up; the epsilon keeps 0.29 × 100 (28.999...) from rounding to 28.5's side.
        keep = math.floor(fraction * documents + 0.5 + 1e-9)
        result.update(documents=documents, keep=keep)
        if keep:
            result["score"], result["ord"] = _kth(collected_files, counts, keep)
    write_json(target, result)


def _kth(collected_files: list[Path], counts: np.ndarray, keep: int) -> tuple[float | None, int]:
    """(score, ord) of the keep-th document from the top, sorting only the rows of the bin that holds it."""
    import duckdb  # only the barrier needs it

    files = [str(f) for f in collected_files]
    con = duckdb.connect()
    try:
        above = np.cumsum(counts[:BINS][::-1])  # documents in this bin and every higher one, top bin first
        if keep > above[-1]:  # among the nulls, which follow every number in ordinal order
            query = "SELECT NULL, ord FROM read_parquet(?) WHERE score IS NULL ORDER BY ord LIMIT 1 OFFSET ?"
            return con.execute(query, [files, keep - int(above[-1]) - 1]).fetchone()
        top = int(np.searchsorted(above, keep))  # the bin, counted from the top
        before = int(above[top - 1]) if top else 0
        bin_key = (BINS - 1 - top) - BINS // 2
        low, high = _score_of(bin_key << _SHIFT), _score_of(((bin_key + 1) << _SHIFT) - 1)
        # The outermost bins also hold NaN's bit patterns; no score is NaN, so infinity bounds them exactly.
        low, high = (-math.inf if math.isnan(low) else low), (math.inf if math.isnan(high) else high)
        query = ("SELECT score, ord FROM read_parquet(?) WHERE score BETWEEN ? AND ? "
                 "ORDER BY score DESC, ord LIMIT 1 OFFSET ?")
        return con.execute(query, [files, low, high, keep - before - 1]).fetchone()
    finally:
        con.close()

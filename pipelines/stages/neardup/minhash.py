"""MinHash signatures and LSH band keys, vectorised with numpy.

Permutation i maps a 32-bit shingle hash x to (a_i·x + b_i) mod 2^64 (a_i odd): the multiply-add-shift family
of Dietzfelbinger, whose high 32 bits are 2-independent. Taking the minimum of the full 64-bit value orders the
shingles by those high bits, so the signature value is min >> 32. It needs no modulo, which is what makes the
[num_perm × shingles] matrix cheap. The a_i, b_i come from xxh3 of (seed, i), so they are the same on every
machine and numpy version.
"""

from __future__ import annotations

import numpy as np
import xxhash

from refinery.pipelines.stages.neardup.shingles import ShingleSets, fmix64

# Elements of the [num_perm × shingles] work matrix per chunk (8 bytes each): 4 MiB stays in cache.
CHUNK_ELEMENTS = 1 << 19


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) coefficients of `num_perm` hash permutations, as uint64 column vectors."""
    a = np.array([xxhash.xxh3_64_intdigest(f"a:{seed}:{i}".encode()) | 1 for i in range(num_perm)], np.uint64)
    b = np.array([xxhash.xxh3_64_intdigest(f"b:{seed}:{i}".encode()) for i in range(num_perm)], np.uint64)
    return a[:, None], b[:, None]


def signatures(sets: ShingleSets, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[docs × num_perm] uint32 MinHash values; rows of documents without shingles are all 0xFFFFFFFF."""
    num_perm = a.shape[0]
    docs = len(sets.offsets) - 1
    values = sets.values.astype(np.uint64)
    total = len(values)
    out = np.full((docs, num_perm), np.uint64(0xFFFFFFFFFFFFFFFF), np.uint64)
    if total == 0:
        return (out >> np.uint64(32)).astype(np.uint32)
    width = max(1, CHUNK_ELEMENTS // num_perm)
    buffer = np.empty((num_perm, width), np.uint64)
    nonempty = np.flatnonzero(np.diff(sets.offsets) > 0)
    doc_starts = sets.offsets[nonempty]
    for lo in range(0, total, width):
        hi = min(total, lo + width)
        chunk = buffer[:, : hi - lo]
        np.multiply(a, values[None, lo:hi], out=chunk)
        chunk += b
        # Segments inside this chunk: document starts that fall in it, plus the chunk's own start.
        first = np.searchsorted(doc_starts, lo, side="right") - 1
        last = np.searchsorted(doc_starts, hi, side="left")
        owners = nonempty[max(first, 0):last]
        cuts = np.maximum(sets.offsets[owners], lo) - lo
        partial = np.minimum.reduceat(chunk, cuts, axis=1)
        out[owners] = np.minimum(out[owners], partial.T)
    return (out >> np.uint64(32)).astype(np.uint32)


def band_keys(signature: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """[docs × bands] int64: one 64-bit key per band of `rows` signature values (equal bands, equal keys)."""
    docs = signature.shape[0]
    keys = np.zeros((docs, bands), np.uint64)
    for r in range(rows):
        keys *= np.uint64(0x100000001B3)
        keys += signature[:, r : bands * rows : rows].astype(np.uint64)
    # Band index in the key too, so equal values in different bands never share a bucket by accident.
    keys += np.arange(bands, dtype=np.uint64)[None, :] << np.uint64(40)
    return fmix64(keys).view(np.int64)

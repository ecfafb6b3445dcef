"""Word n-grams of a batch for Gopher's repetition rules: the most frequent n-gram's share and the share of
repeated n-grams, computed with numpy over every document of the batch at once."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from refinery.pipelines.stages.text.textstats import Pieces, to_numpy


class NGrams:
    """Word n-grams of a batch, each identified by a 64-bit polynomial hash of its words' ids (within a row, a
    collision needs ~2^32 distinct n-grams), built up one word at a time for n = 1, 2, 3..."""

    _MULTIPLIER = np.uint64(0x100000001B3)
    _ROW_MIX = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self, words: Pieces):
        self.words = words
        self.total = len(words.rows)
        ids = to_numpy(pc.dictionary_encode(words.values).indices, np.int64) if self.total else np.zeros(0, np.int64)
        self.ids = ids.astype(np.uint64) + np.uint64(1)
        counts = np.bincount(words.rows, minlength=words.n_rows)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        self.position = np.arange(self.total) - offsets[words.rows] if self.total else np.zeros(0, np.int64)
        self.remaining = counts[words.rows] - self.position  # words from this one to the row's end
        self.char_sums = np.concatenate([[0], np.cumsum(words.lengths())])
        self.n = 1
        self.hashes = self.ids.copy()

    def grow(self, n: int) -> None:
        with np.errstate(over="ignore"):
            while self.n < n:
                self.hashes = self.hashes[:-1] * self._MULTIPLIER + self.ids[self.n:]
                self.n += 1

    def windows(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start positions, keys unique per row and n-gram, characters of the n-gram's words)."""
        self.grow(n)
        starts = np.flatnonzero(self.remaining[: len(self.hashes)] >= n)
        return starts, self._keys(starts), self.char_sums[starts + n] - self.char_sums[starts]

    def top_chars(self, n: int) -> np.ndarray:
        """Per row: characters of the most frequent n-gram (words joined by spaces) times its count, the n-gram
        chosen as collections.Counter.most_common(1) does (first seen among the most frequent)."""
        starts, keys, chars = self.windows(n)
        result = np.zeros(self.words.n_rows)
        if not len(starts):
            return result
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        count = counts[inverse]
        rows = self.words.rows[starts]
        best = np.zeros(self.words.n_rows, np.int64)
        np.maximum.at(best, rows, count)
        top = np.flatnonzero(count == best[rows])
        first = top[np.concatenate([[True], rows[top][1:] != rows[top][:-1]])]
        result[rows[first]] = count[first] * (chars[first] + n - 1)
        return result

    def repeated(self, n: int, among: np.ndarray | None = None) -> np.ndarray:
        """Start positions of n-grams that occur at least twice in their row. `among`: the positions returned for
        n - 1, as only they can start a repeated n-gram."""
        if among is None:
            starts, keys, _ = self.windows(n)
        else:
            self.grow(n)
            starts = among[self.remaining[among] >= n]
            keys = self._keys(starts)
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        return starts[counts[inverse] > 1]

    def duplicate_chars(self, n: int, repeated: np.ndarray) -> np.ndarray:
        """Per row: characters of the n-grams that repeat an earlier one, scanning as datatrove's
        find_all_duplicate does (a repeat skips its n words; words joined without spaces). `repeated`: from
        `repeated(n)`; n-grams seen once cannot repeat, so only these positions are scanned."""
        self.grow(n)
        keys = self._keys(repeated).tolist()
        chosen: list[int] = []
        seen: set[int] = set()
        allowed = 0  # the scan jumps over the n words of a repeat; a row's n-grams end before the next row starts
        for index, (position, key) in enumerate(zip(repeated.tolist(), keys)):
            if position < allowed:
                continue
            if key in seen:
                chosen.append(index)
                allowed = position + n
            else:
                seen.add(key)
        picked = repeated[np.array(chosen, np.int64)]
        chars = self.char_sums[picked + n] - self.char_sums[picked]
        return np.bincount(self.words.rows[picked], weights=chars, minlength=self.words.n_rows)

    def _keys(self, starts: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return self.hashes[starts] ^ (self.words.rows[starts].astype(np.uint64) * self._ROW_MIX)

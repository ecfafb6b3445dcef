"""An exact n-gram index of evaluation items, and the lookup of a batch of documents in it (decontamination).

Text is cut into tokens after normalisation (lowercase, every run of characters that are not letters, marks or
digits is a space); each Han, Hiragana or Katakana character is a token of its own, since those scripts do not
put spaces between words. Tokens become ids through the vocabulary of the evaluation items: a document's token
that is not in it can be part of no match, so its id is 0 and windows over it are skipped.

A window's hash is a polynomial over its ids modulo 2^64, taken from prefix sums so that every window length
costs the same few vector operations; a hash hit is then checked token by token against the item, so a match
is exact, never a hash collision.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from refinery.corpora.evalsets import EvalItem

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd, so it has an inverse modulo 2^64
_INVERSE = np.uint64(pow(int(_MULTIPLIER), -1, 1 << 64))
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}"  # a character class's inside
_BITMAP_BITS = 26  # a prefilter of 2^26 bits (8 MiB): ~3% set for the whole gauntlet, so most windows stop there
_CJK_GAP = re.compile(r"(?<=[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]) (?=[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff])")


def tokens(texts: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """Per text, its normalised tokens (null texts give null lists)."""
    # dedup.normalise_text's lowercasing; its whitespace pass is left out, the punctuation fold below does it.
    spaced = pc.replace_substring_regex(pc.utf8_lower(texts), f"([{_CJK}])", r" \1 ")
    folded = pc.replace_substring_regex(spaced, r"[^\p{L}\p{M}\p{N}]+", " ")
    lists = pc.utf8_split_whitespace(pc.utf8_trim(folded, " "))  # else an end space gives an empty token
    return lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists


class _Windows:
    """Hashes of the windows of an id sequence, any length, from one pass of prefix sums."""

    def __init__(self, ids: np.ndarray):
        with np.errstate(over="ignore"):
            powers = np.cumprod(np.full(len(ids), _MULTIPLIER, np.uint64))  # M^1 .. M^n
            self.prefix = np.concatenate([[np.uint64(0)], np.cumsum(ids.astype(np.uint64) * powers, dtype=np.uint64)])
            self.inverse = np.cumprod(np.full(len(ids), _INVERSE, np.uint64))  # M^-1 .. M^-n

    def of_length(self, length: int) -> np.ndarray:
        """The hash of every window of `length` ids (len(ids) - length + 1 of them, at least 0)."""
        count = max(len(self.prefix) - length, 0)
        with np.errstate(over="ignore"):
            return (self.prefix[length:length + count] - self.prefix[:count]) * self.inverse[:count]


@dataclass
class _Group:
    """The indexed n-grams of one length, sorted by hash."""

    hashes: np.ndarray  # uint64
    items: np.ndarray  # int32: position in EvalIndex.items
    starts: np.ndarray  # int64: where the n-gram's ids start in EvalIndex.ids


class ItemRef(NamedTuple):
    """What a match names: the item's benchmark and its position in its file."""

    benchmark: str
    index: int


@dataclass
class EvalIndex:
    items: list[ItemRef]
    vocabulary: pa.Array  # token strings; a token's id is its position + 1
    ids: np.ndarray  # the ids of every item passage, concatenated
    groups: dict[int, _Group] = field(default_factory=dict)
    ngrams_per_benchmark: dict[str, int] = field(default_factory=dict)
    template_ngrams: int = 0  # n-grams left out because too many items of one benchmark share them
    bitmap: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))  # the top bits of every hash

    @classmethod
    def build(cls, items: list[EvalItem], ngram: int, cjk_ngram: int, min_ngram: int,
              template_items: int) -> EvalIndex:
        passages = [(n, text) for n, item in enumerate(items) for text in item.passages]
        lists = tokens(pa.array([text for _, text in passages], pa.string()))
        words = pc.list_flatten(lists)
        vocabulary = pc.unique(words)
        ids = pc.index_in(words, value_set=vocabulary).to_numpy().astype(np.int64) + 1
        offsets = lists.offsets.to_numpy()
        cjk = pc.match_substring_regex(words, f"^[{_CJK}]$").to_numpy(zero_copy_only=False)
        sizes = np.diff(offsets)
        owners = np.repeat(np.array([item for item, _ in passages], np.int32), sizes)
        cjk_share = np.bincount(np.repeat(np.arange(len(sizes)), sizes), cjk, len(sizes)) / np.maximum(sizes, 1)
        wanted = np.where(cjk_share > 0.5, cjk_ngram, ngram)
        # A passage gives every full window; a short one (at least min_ngram tokens) is one n-gram, whole.
        length = np.where(sizes >= wanted, wanted, sizes)
        windows = np.where(sizes >= wanted, sizes - wanted + 1, (sizes >= min_ngram).astype(np.int64))
        first_window = np.repeat(np.cumsum(windows) - windows, windows)
        start = np.repeat(offsets[:-1], windows) + np.arange(windows.sum()) - first_window
        owner, length = owners[start] if len(start) else owners[:0], np.repeat(length, windows)
        index = cls([ItemRef(item.benchmark, item.index) for item in items], vocabulary, ids)
        windows = _Windows(ids)
        numbers: dict[str, int] = {}
        benchmark_of = np.array([numbers.setdefault(item.benchmark, len(numbers)) for item in items], np.int64)
        for size in np.unique(length):
            chosen = length == size
            hashes = windows.of_length(int(size))[start[chosen]]
            index.groups[int(size)] = index._group(hashes, owner[chosen], start[chosen], benchmark_of, template_items)
        counts = sum(np.bincount(benchmark_of[g.items], minlength=len(numbers)) for g in index.groups.values())
        index.ngrams_per_benchmark = dict(zip(numbers, np.asarray(counts).tolist())) if index.groups else {}
        index.bitmap = np.zeros(1 << (_BITMAP_BITS - 3), np.uint8)
        for group in index.groups.values():
            slots = group.hashes >> np.uint64(64 - _BITMAP_BITS)
            bits = np.left_shift(1, slots & np.uint64(7)).astype(np.uint8)
            np.bitwise_or.at(index.bitmap, slots >> np.uint64(3), bits)
        return index

    def save(self, folder: Path) -> None:
        """Write the index into an empty `folder`: an .npy file per array (no pickle), the vocabulary (Arrow IPC)
        and the rest (JSON)."""
        arrays = {"ids": self.ids, "bitmap": self.bitmap}
        for size, group in self.groups.items():
            arrays |= {f"{size}.hashes": group.hashes, f"{size}.items": group.items, f"{size}.starts": group.starts}
        for name, array in arrays.items():
            np.save(folder / f"{name}.npy", array, allow_pickle=False)
        with pa.OSFile(str(folder / "vocabulary.arrow"), "wb") as sink, \
                pa.ipc.new_file(sink, pa.schema([("token", self.vocabulary.type)])) as writer:
            writer.write_table(pa.table({"token": self.vocabulary}))
        (folder / "index.json").write_text(json.dumps({
            "items": self.items, "groups": list(self.groups), "ngrams_per_benchmark": self.ngrams_per_benchmark,
            "template_ngrams": self.template_ngrams}), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> EvalIndex:
        """The index `save` wrote, its arrays memory-mapped: the worker processes of a machine share one copy."""
        meta = json.loads((folder / "index.json").read_text(encoding="utf-8"))

        def array(name: str) -> np.ndarray:
            return np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)

        with pa.OSFile(str(folder / "vocabulary.arrow"), "rb") as source:
            vocabulary = pa.ipc.open_file(source).read_all().column("token").combine_chunks()
        groups = {size: _Group(array(f"{size}.hashes"), array(f"{size}.items"), array(f"{size}.starts"))
                  for size in meta["groups"]}
        return cls([ItemRef(*item) for item in meta["items"]], vocabulary, array("ids"), groups,
                   meta["ngrams_per_benchmark"], meta["template_ngrams"], array("bitmap"))

    def _group(self, hashes: np.ndarray, owners: np.ndarray, starts: np.ndarray, benchmark_of: np.ndarray,
               template_items: int) -> _Group:
        # Distinct items per (benchmark, n-gram): a prompt template repeats in every item and says nothing.
        order = np.lexsort((starts, owners, hashes))
        hashes, owners, starts = hashes[order], owners[order], starts[order]
        new_hash = np.r_[True, hashes[1:] != hashes[:-1]]
        new_pair = new_hash | np.r_[True, owners[1:] != owners[:-1]]
        benchmarks = benchmark_of[owners]
        run = np.cumsum(new_hash | np.r_[True, benchmarks[1:] != benchmarks[:-1]]) - 1  # (n-gram, benchmark) runs
        items_in_run = np.bincount(run, new_pair)
        template = np.zeros(len(hashes), bool)
        template[np.isin(hashes, hashes[items_in_run[run] >= template_items])] = True
        self.template_ngrams += int((new_hash & template).sum())
        # One entry per n-gram: the first item (in file order) that has it.
        chosen = new_hash & ~template
        return _Group(hashes[chosen], owners[chosen], starts[chosen])

    def lookup(self, texts: pa.Array | pa.ChunkedArray) -> list[list[tuple[int, int, int, int]]]:
        """Per text, its exact matches in document order: (token position, item, start and length of the
        n-gram in `ids`)."""
        lists = tokens(texts)
        offsets = lists.offsets.to_numpy() - lists.offsets[0].as_py()
        words = pc.list_flatten(lists)
        ids = pc.fill_null(pc.index_in(words, value_set=self.vocabulary), -1).to_numpy().astype(np.int64) + 1
        doc_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        unknown = np.concatenate([[0], np.cumsum(ids == 0)])
        found: list[tuple[np.ndarray, ...]] = []
        windows = _Windows(ids)
        for size, group in self.groups.items():
            if not len(group.hashes):
                continue
            hashes = windows.of_length(size)
            positions = np.flatnonzero((unknown[size:] == unknown[:-size]) & (doc_of[:len(hashes)] ==
                                                                               doc_of[size - 1:]))
            slots = hashes[positions] >> np.uint64(64 - _BITMAP_BITS)
            maybe = (self.bitmap[slots >> np.uint64(3)] >> (slots & np.uint64(7)).astype(np.uint8)) & 1
            positions = positions[maybe.astype(bool)]
            slots = np.minimum(np.searchsorted(group.hashes, hashes[positions]), len(group.hashes) - 1)
            hit = group.hashes[slots] == hashes[positions]
            positions, slots = positions[hit], slots[hit]
            span = np.arange(size)
            exact = (ids[positions[:, None] + span] == self.ids[group.starts[slots][:, None] + span]).all(axis=1)
            found.append((positions[exact], group.items[slots[exact]], group.starts[slots[exact]],
                          np.full(exact.sum(), size)))
        matches: list[list[tuple[int, int, int, int]]] = [[] for _ in range(len(offsets) - 1)]
        if found:
            positions, items, starts, sizes = (np.concatenate(parts) for parts in zip(*found))
            for at in np.lexsort((sizes, positions)):
                doc = int(doc_of[positions[at]])
                matches[doc].append((int(positions[at] - offsets[doc]), int(items[at]), int(starts[at]),
                                     int(sizes[at])))
        return matches

    def ngram_text(self, start: int, size: int) -> str:
        """The n-gram's tokens, space-separated (but for Han, Hiragana and Katakana characters)."""
        text = " ".join(self.vocabulary.take(pa.array(self.ids[start:start + size] - 1)).to_pylist())
        return _CJK_GAP.sub("", text)

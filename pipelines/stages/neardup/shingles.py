"""Text → sets of shingle hashes, vectorised over a batch with Arrow and numpy (no Python work per shingle).

A document becomes tokens after normalisation (lowercase; punctuation and symbols → space; every digit → 0;
whitespace collapsed): words for most scripts, single characters for CJK text, which has no spaces between words.
A shingle is `n` consecutive tokens; a document with fewer than `n` tokens is one shingle of all its tokens.
Tokens are hashed once each (a word by xxh3-64 of its UTF-8 bytes, a CJK character by mixing its bytes), so the
hashes are the same on every machine and run (unlike Python's `hash`). The hash of an n-gram is a polynomial of its
tokens' hashes mod 2^64 finished by a mixer, so n-grams cost numpy arithmetic only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

# Languages shingled by characters, as the langid stage labels them: lid.176 (zh, ja, ko, wuu, yue) or GlotLID
# (cmn_Hani, jpn_Jpan, kor_Hang: the part before `_` or `-` is looked up).
CJK_LANGS = ("cdo", "cmn", "gan", "hak", "ja", "jpn", "ko", "kor", "lzh", "nan", "wuu", "yue", "zh", "zho")
# Without a `lang`, a document is CJK when this share of its non-space characters are CJK: U+3000–U+9FFF (CJK
# punctuation, kana, Han; UTF-8 lead bytes E3–E9) or U+AC00–U+D7FF (Hangul; EA B0 to ED). Between them lie Yi,
# Vai, Bamum and others, written with spaces between words.
CJK_SCRIPT_SHARE = 0.3

_POLY = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial base of the n-gram hash
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)

# ASCII bytes: letters stay, digits fold to '0', everything else becomes a space; bytes ≥ 0x80 stay as they are.
_ASCII_FOLD = np.arange(256, dtype=np.uint8)
_ASCII_FOLD[:128] = ord(" ")
for _c in b"abcdefghijklmnopqrstuvwxyz":
    _ASCII_FOLD[_c] = _c
_ASCII_KEEP_DIGITS = _ASCII_FOLD.copy()
_ASCII_KEEP_DIGITS[ord("0"):ord("9") + 1] = np.arange(ord("0"), ord("9") + 1, dtype=np.uint8)
_ASCII_FOLD[ord("0"):ord("9") + 1] = ord("0")
# Non-ASCII characters that are not letters, numbers or marks (punctuation, symbols, spaces, controls).
_NON_ASCII_SEPARATORS = r"[^\p{L}\p{N}\p{M}\x00-\x7f]+"


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place: spreads every input bit over every output bit."""
    h ^= h >> _S33
    h *= _M1
    h ^= h >> _S33
    h *= _M2
    h ^= h >> _S33
    return h


def _parts(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes, offsets into them as int64 from 0) of a string array without nulls."""
    offsets = np.frombuffer(strings.buffers()[1], np.int32 if strings.type == pa.string() else np.int64)
    offsets = offsets[strings.offset: strings.offset + len(strings) + 1].astype(np.int64)
    data = np.frombuffer(strings.buffers()[2], np.uint8)[offsets[0]: offsets[-1]] if len(strings) else \
        np.zeros(0, np.uint8)
    return data, offsets - offsets[0]


def normalise(text: pa.Array | pa.ChunkedArray, fold_digits: bool = True) -> pa.Array:
    """Lowercase; punctuation, symbols and whitespace → one space each; digits → 0 unless `fold_digits` is
    False (nulls become "").

    ASCII is folded by a byte table and only non-ASCII separators go through a regex: replacing every
    space and comma with a regex costs ~4x more on English text."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    lowered = pc.fill_null(pc.utf8_lower(text.cast(pa.string())), "")
    data, offsets = _parts(lowered)
    table = _ASCII_FOLD if fold_digits else _ASCII_KEEP_DIGITS
    folded = pa.Array.from_buffers(pa.string(), len(lowered), [None, pa.py_buffer(offsets.astype(np.int32)),
                                                                pa.py_buffer(table[data])])
    if fold_digits:
        folded = pc.replace_substring_regex(folded, r"\p{Nd}", "0")
    return pc.replace_substring_regex(folded, _NON_ASCII_SEPARATORS, " ")


def _per_doc(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """How many True bytes each document's byte range holds (reduceat: no integer array as long as the text)."""
    if not len(mask):
        return np.zeros(len(offsets) - 1, np.int64)
    sums = np.add.reduceat(mask, np.minimum(offsets[:-1], len(mask) - 1), dtype=np.int64)
    return np.where(np.diff(offsets) > 0, sums, 0)


def cjk_mask(normalised: pa.Array, lang: pa.Array | None = None) -> np.ndarray:
    """Which documents are shingled by characters: by `lang` where it is set, else by their share of CJK script."""
    data, offsets = _parts(normalised)
    chars = _per_doc(((data & 0xC0) != 0x80) & (data != 0x20), offsets)
    following = np.concatenate((data[1:], np.zeros(1, np.uint8)))
    cjk = _per_doc(((data >= 0xE3) & (data <= 0xE9)) | ((data >= 0xEB) & (data <= 0xED))
                   | ((data == 0xEA) & (following >= 0xB0)), offsets)
    by_script = cjk > CJK_SCRIPT_SHARE * chars
    if lang is None:
        return by_script
    lang = pc.replace_substring_regex(pc.utf8_lower(lang.cast(pa.string())), r"[_-].*", "")
    has_lang = pc.fill_null(pc.not_equal(lang, ""), False).to_numpy(zero_copy_only=False)
    by_lang = pc.fill_null(pc.is_in(lang, pa.array(CJK_LANGS)), False).to_numpy(zero_copy_only=False)
    return np.where(has_lang, by_lang, by_script)


class Tokens(NamedTuple):
    """Token hashes of a batch: document i owns hashes[starts[i]:starts[i+1]]."""

    hashes: np.ndarray  # uint64
    starts: np.ndarray  # int64, length docs + 1


def word_tokens(normalised: pa.Array) -> Tokens:
    """Words split at spaces, each hashed with xxh3-64 (each distinct word of the batch is hashed once)."""
    words = pc.utf8_split_whitespace(normalised)
    starts = words.offsets.to_numpy().astype(np.int64)
    flat = words.flatten()
    # Leading and trailing spaces (and an empty text) split into empty strings: they are not words.
    _, bounds = _parts(flat)
    real = np.diff(bounds) > 0
    encoded = pc.dictionary_encode(flat)
    distinct = encoded.dictionary.cast(pa.binary()).to_pylist()
    table = np.fromiter((xxhash.xxh3_64_intdigest(w) for w in distinct), np.uint64, len(distinct))
    kept_before = np.concatenate(([0], np.cumsum(real, dtype=np.int64)))
    return Tokens(table[encoded.indices.to_numpy(zero_copy_only=False)][real], kept_before[starts - starts[0]])


# Bytes in a UTF-8 character, by its lead byte (continuation bytes count 0).
_CHAR_BYTES = np.array([1] * 128 + [0] * 64 + [2] * 32 + [3] * 16 + [4] * 8 + [1] * 8, np.uint8)


def char_tokens(normalised: pa.Array) -> Tokens:
    """Every character but spaces is a token, hashed by mixing its UTF-8 bytes (no strings are built)."""
    data, offsets = _parts(normalised)
    width = _CHAR_BYTES[data]
    lead = np.flatnonzero((width > 0) & (data != 0x20))
    padded = np.concatenate((data, np.zeros(3, np.uint8))).astype(np.uint64)
    value = np.zeros(len(lead), np.uint64)
    for k in range(4):
        byte = padded[lead + k]
        value |= np.where(width[lead] > k, byte, 0).astype(np.uint64) << np.uint64(8 * (3 - k))
    starts = np.searchsorted(lead, offsets).astype(np.int64)
    return Tokens(fmix64(value + np.uint64(0x5851F42D4C957F2D)), starts)


class ShingleSets(NamedTuple):
    """Sorted, distinct 32-bit shingle hashes of each document: document i owns values[offsets[i]:offsets[i+1]]."""

    values: np.ndarray  # uint32
    offsets: np.ndarray  # int64, length docs + 1

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)


def shingle_sets(tokens: Tokens, n: int) -> ShingleSets:
    """The set of n-gram hashes of every document (documents without tokens get empty sets)."""
    words, starts = tokens
    docs, total = len(starts) - 1, len(words)
    lengths = np.diff(starts)
    doc_of = np.repeat(np.arange(docs, dtype=np.int64), lengths)
    # Shingles start at every position with n tokens of its own document ahead, plus the first position of a
    # document shorter than n (one shingle of all its tokens).
    position = np.arange(total, dtype=np.int64)
    end_of_doc = starts[1:][doc_of]
    first = np.flatnonzero((position + n <= end_of_doc) | ((lengths[doc_of] < n) & (position == starts[:-1][doc_of])))
    h = np.zeros(len(first), np.uint64)
    limit = end_of_doc[first]
    for k in range(n):
        at = first + k
        h *= _POLY
        inside = at < limit
        h[inside] += words[at[inside]]
    h = fmix64(h) >> np.uint64(32)
    # Sort by (document, hash) and drop repeats: a set per document, in an order that does not depend on the text.
    keys = np.sort((doc_of[first].astype(np.uint64) << np.uint64(32)) | h)
    if len(keys):
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    owner = (keys >> np.uint64(32)).astype(np.int64)
    offsets = np.searchsorted(owner, np.arange(docs + 1, dtype=np.int64)).astype(np.int64)
    return ShingleSets((keys & np.uint64(0xFFFFFFFF)).astype(np.uint32), offsets)


def document_shingles(text: pa.Array | pa.ChunkedArray, lang: pa.Array | None, word_ngram: int,
                      char_ngram: int, fold_digits: bool = True) -> tuple[ShingleSets, np.ndarray]:
    """Shingle sets of a batch (word n-grams, or character n-grams for CJK documents) and the CJK mask."""
    normalised = normalise(text, fold_digits)
    cjk = cjk_mask(normalised, lang)
    if not cjk.any():
        return shingle_sets(word_tokens(normalised), word_ngram), cjk
    if cjk.all():
        return shingle_sets(char_tokens(normalised), char_ngram), cjk
    parts = {}
    for flag, tokenise, n in ((False, word_tokens, word_ngram), (True, char_tokens, char_ngram)):
        rows = np.flatnonzero(cjk == flag)
        parts[flag] = (rows, shingle_sets(tokenise(normalised.take(pa.array(rows))), n))
    return merge_sets(parts.values(), len(cjk)), cjk


def merge_sets(parts: Iterable[tuple[np.ndarray, ShingleSets]], docs: int) -> ShingleSets:
    """Interleave the shingle sets of disjoint row subsets back into row order."""
    sizes = np.zeros(docs, np.int64)
    for rows, sets in parts:
        sizes[rows] = sets.sizes()
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    values = np.empty(offsets[-1], np.uint32)
    for rows, sets in parts:
        target = np.repeat(offsets[rows], sets.sizes()) + (np.arange(len(sets.values)) -
                                                            np.repeat(sets.offsets[:-1], sets.sizes()))
        values[target] = sets.values
    return ShingleSets(values, offsets)

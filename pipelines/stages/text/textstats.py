"""Text statistics for the heuristic quality filters, computed for a whole batch at once.

Texts are cut into *pieces* (words, lines, paragraphs) with pyarrow's RE2 kernels; a piece array is flat, with
the row each piece came from, so per-document sums and duplicate counts are numpy reductions rather than Python
loops over documents. Definitions follow datatrove's filters (the reference the Gopher/C4/FineWeb rules are
usually run with): its words are spaCy's English tokens, which `WORD_TOKEN` approximates (punctuation split off,
"n't"/"'s" clitics, URLs, numbers and common abbreviations kept whole); Chinese rows can be cut by jieba, and
Han/kana characters are words of their own for every other row, so a page without spaces is not "one word".
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Python's str.isspace characters (str.split(), str.strip()); RE2's \s is ASCII only.
WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
NON_SPACE = f"[^{WHITESPACE}]"
# str.splitlines() boundaries.
LINE_BREAK = r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\x{2028}\x{2029}]"
# datatrove's punctuation (utils/text.py PUNCTUATION) and the Unicode sentence terminators (its
# TERMINAL_PUNCTUATION), as RE2 classes: a word made only of these is a symbol, a line ending in a terminator is
# punctuated.
PUNCTUATION_CLASS = (
    r"\x{0}-\x{8}\x{b}-\x{1f}\x{21}-\x{2f}\x{3a}-\x{40}\x{5b}-\x{60}\x{7b}-\x{9f}\x{ab}\x{b4}\x{bb}\x{2013}-\x{2014}"
    r"\x{2019}\x{201c}-\x{201e}\x{2026}\x{2236}\x{2501}\x{25ba}\x{3001}-\x{3002}\x{3008}-\x{300d}\x{3010}-\x{3011}"
    r"\x{ff01}\x{ff05}\x{ff08}-\x{ff09}\x{ff0c}\x{ff0e}\x{ff11}\x{ff1a}-\x{ff1b}\x{ff1f}\x{ff5e}"
)
TERMINAL_CLASS = (
    r"\x{21}\x{2e}\x{3f}\x{589}\x{61d}-\x{61f}\x{6d4}\x{700}-\x{702}\x{7f9}\x{837}\x{839}\x{83d}-\x{83e}\x{964}-\x{965}"
    r"\x{104a}-\x{104b}\x{1362}\x{1367}-\x{1368}\x{166e}\x{1735}-\x{1736}\x{17d4}-\x{17d6}\x{17d9}-\x{17da}\x{1803}"
    r"\x{1809}\x{1944}-\x{1945}\x{1aa8}-\x{1aab}\x{1b5a}-\x{1b5b}\x{1b5e}-\x{1b5f}\x{1b7d}-\x{1b7e}\x{1c3b}-\x{1c3c}"
    r"\x{1c7e}-\x{1c7f}\x{203c}-\x{203d}\x{2047}-\x{2049}\x{2e2e}\x{2e3c}\x{2e53}-\x{2e54}\x{3002}\x{a4ff}"
    r"\x{a60e}-\x{a60f}\x{a6f3}\x{a6f7}\x{a876}-\x{a877}\x{a8ce}-\x{a8cf}\x{a92f}\x{a9c8}-\x{a9c9}\x{aa5d}-\x{aa5f}"
    r"\x{aaf0}-\x{aaf1}\x{abeb}\x{fe52}\x{fe56}-\x{fe57}\x{ff01}\x{ff0e}\x{ff1f}\x{ff61}\x{10a56}-\x{10a57}"
    r"\x{10f55}-\x{10f59}\x{10f86}-\x{10f89}\x{11047}-\x{11048}\x{110be}-\x{110c1}\x{11141}-\x{11143}\x{111c5}-\x{111c6}"
    r"\x{111cd}\x{111de}-\x{111df}\x{11238}-\x{11239}\x{1123b}-\x{1123c}\x{112a9}\x{1144b}-\x{1144c}\x{115c2}-\x{115c3}"
    r"\x{115c9}-\x{115d7}\x{11641}-\x{11642}\x{1173c}-\x{1173e}\x{11944}\x{11946}\x{11a42}-\x{11a43}\x{11a9b}-\x{11a9c}"
    r"\x{11c41}-\x{11c42}\x{11ef7}-\x{11ef8}\x{11f43}-\x{11f44}\x{16a6e}-\x{16a6f}\x{16af5}\x{16b37}-\x{16b38}\x{16b44}"
    r"\x{16e98}\x{1bc9f}\x{1da88}"
)
_W = r"[\pL\pM\pN_\x{200c}\x{200d}]"
_EDGE = r"[-~\\/@^|・＊]"
# Abbreviations spaCy's English tokenizer keeps with their period (its tokenizer exceptions), so that their
# period neither counts as a punctuation token nor ends a sentence.
_ABBREVIATIONS = (
    "Adm|Apr|Ariz|Ark|Aug|Bros|Calif|Colo|Conn|Corp|Co|Dec|Del|Dr|Feb|Fla|Gen|Gov|Ill|Inc|Ind|Jan|Jr|Jul|Jun|Kans|"
    "Kan|Ky|Ltd|Mar|Mass|Md|Messrs|Mich|Minn|Miss|Mont|Mo|Mrs|Mr|Ms|Mt|Nebr|Neb|Nev|Nov|Oct|Okla|Ore|Pa|Prof|Rep|"
    "Rev|Sen|Sept|Sep|St|Tenn|Va|Wash|Wis|vs|co"
)
# Passes that put a space where spaCy's infix rules split a run of non-spaces, so that the token pattern needs no
# look-around. The infix pass runs twice: a match consumes the letter after it ("a-b-c").
_INFIX = r"([\pL\pN])(--|[-–—~:<>=])(\pL)|(\pL)(,)(\pL)|(\pN)([-+*^])(\pN)"
_PRE_PASSES = (
    (r"(\p{Ll})\.(\p{Lu})", r"\1 . \2"),  # "end.Next" is two sentences run together
    (r"\.{2,}|…", r" \0 "),  # an ellipsis is a token wherever it is
    (_INFIX, r"\1\4\7 \2\5\8 \3\6\9"),
    (_INFIX, r"\1\4\7 \2\5\8 \3\6\9"),
    (rf"({_W})(['’][sS])\b", r"\1 \2"),  # it's -> it 's (spaCy splits every 's; other clitics: _CONTRACTIONS)
    (r"[\p{Han}\p{Hiragana}]|[\p{Katakana}\x{30FC}]+", r" \0 "),  # a Han or hiragana character, a katakana run
)
WORD_TOKEN = "|".join((
    r"@[-.,]@",  # WikiText's @-@
    rf"(?:{_ABBREVIATIONS})\.|(?:\pL\.){{2,}}|[a-zäöü\p{{Lu}}\p{{Lo}}]\.(?:[{WHITESPACE}]|$)",  # Mr. e.g. A.
    r"['’][sS]\b",
    # A word: from a letter or digit to the last letter or digit of its run of non-spaces (spaCy splits only
    # prefixes, suffixes and the infixes above: "H2O(l", "1,000.00", "example.com/a", "don't" stay whole), with
    # the characters spaCy takes for neither prefix nor suffix kept at its edges ("\\rm", "~t~", "mouths--").
    rf"{_EDGE}*{_W}{NON_SPACE}*{_EDGE}(?:[{WHITESPACE}]|$)",
    rf"{_EDGE}*{_W}(?:{NON_SPACE}*{_W})?",
    rf"\+\pN(?:{NON_SPACE}*{_W})?",  # +34: a plus before a digit is no prefix
    rf"\.{{2,}}|-{{2,}}|{NON_SPACE}",  # "..." and "--" are one token; any other character is its own
))
# Words spaCy's English tokenizer splits by its exception table (the two-token ones; 's is split everywhere).
_AUXILIARIES = "ai are ca could dare did do does had has have is may might must need ought sha should was were wo would"
_WH = "how there these they those we what when where who why you"
_CLITIC_STEMS = {
    "n't": _AUXILIARIES, "'d": "he i it that this " + _WH, "'ll": "he i it she that this " + _WH,
    "'re": _WH, "'ve": "could i might must not should would " + _WH, "'m": "i",
}
_RUN_TOGETHER = (  # the same contractions written without an apostrophe
    "aint arent cannot cant couldnt couldve darent didnt doesnt dont gonna gotta hadnt hasnt havent hed hes howd "
    "howll howre hows howve id im isnt itd itll ive maynt mightnt mightve mustnt mustve neednt notve oughtnt shant "
    "shes shouldnt shouldve thatd thatll thats thered therell therere theres thereve thesed thesell thesere theseve "
    "theyd theyll theyre theyve thisd thisll thiss thosed thosell thosere thoseve wasnt wed werent weve whatd whatll "
    "whatre whats whatve whend whenll whenre whens whenve whered wherell wherere wheres whereve whod wholl whos whove "
    "whyd whyll whyre whys whyve wont wouldnt wouldve yall youd youll youre youve"
)


def _contractions() -> dict[str, tuple[str, str]]:
    table: dict[str, tuple[str, str]] = {}
    for clitic, stems in _CLITIC_STEMS.items():
        for stem in stems.split():
            for form in {stem, stem.capitalize()}:
                for apostrophe in "'’":
                    ending = clitic.replace("'", apostrophe)
                    table[form + ending] = (form, ending)
    for word in _RUN_TOGETHER.split():
        cut = next(len(word) - len(end) for end in ("not", "na", "ta", "all", "nt", "ll", "re", "ve", "d", "s", "m")
                   if word.endswith(end))
        for form in (word, word.capitalize()):
            table[form] = (form[:cut], form[cut:])
    return table


CONTRACTIONS = _contractions()


@functools.cache
def _contraction_keys() -> pa.Array:
    # Built on first use: pa.array at import time pulls in pandas (~0.25 s on every `refinery` command).
    return pa.array(sorted(CONTRACTIONS), pa.string())


class Pieces(NamedTuple):
    """Flat pieces of a batch's texts: `values[i]` came from row `rows[i]` (rows ascending)."""

    values: pa.Array
    rows: np.ndarray
    n_rows: int

    def count(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Pieces per row (only those where `mask` is true)."""
        rows = self.rows if mask is None else self.rows[mask]
        return np.bincount(rows, minlength=self.n_rows)

    def total(self, weights: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Sum of `weights` per row."""
        if mask is not None:
            return np.bincount(self.rows[mask], weights=weights[mask], minlength=self.n_rows)
        return np.bincount(self.rows, weights=weights, minlength=self.n_rows)

    def lengths(self) -> np.ndarray:
        """Characters in each piece."""
        return to_numpy(pc.utf8_length(self.values), np.int64)

    def matches(self, pattern: str) -> np.ndarray:
        """Whether each piece matches an RE2 pattern."""
        return to_numpy(pc.match_substring_regex(self.values, pattern), bool)


def to_numpy(values: pa.Array | pa.ChunkedArray, dtype: type) -> np.ndarray:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    return values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def explode(lists: pa.Array | pa.ChunkedArray, n_rows: int) -> Pieces:
    """Flatten a list<string> array into pieces (null lists give none)."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks() if lists.num_chunks != 1 else lists.chunk(0)
    rows = to_numpy(pc.list_parent_indices(lists), np.int64)
    return Pieces(pc.list_flatten(lists), rows, n_rows)


def keep(pieces: Pieces, mask: np.ndarray) -> Pieces:
    return Pieces(pieces.values.filter(pa.array(mask, pa.bool_())), pieces.rows[mask], pieces.n_rows)


def split_lines(text: pa.Array | pa.ChunkedArray) -> Pieces:
    """Lines as str.splitlines() gives them (no empty last line after a final break; none for "")."""
    lists = pc.split_pattern_regex(text, LINE_BREAK)
    pieces = explode(lists, len(text))
    last = np.ones(len(pieces.rows), bool)
    last[:-1] = pieces.rows[1:] != pieces.rows[:-1]
    return keep(pieces, ~(last & (pieces.lengths() == 0)))


def split_on(text: pa.Array | pa.ChunkedArray, pattern: str) -> Pieces:
    """Pieces as re.split(pattern, text) gives them (empty pieces included)."""
    return explode(pc.split_pattern_regex(text, pattern), len(text))


@functools.lru_cache(maxsize=1)
def _jieba():
    import jieba  # imported on first use: only Chinese rows need it, and its dictionary takes ~0.7 s to load

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def _rule_words(text: pa.Array) -> Pieces:
    for pattern, replacement in _PRE_PASSES:
        text = pc.replace_substring_regex(text, pattern, replacement)
    # A space after every token, then a split at whitespace (pyarrow's whitespace is str.isspace()'s).
    pieces = explode(pc.utf8_split_whitespace(pc.replace_substring_regex(text, WORD_TOKEN, r"\0 ")), len(text))
    return _split_contractions(keep(pieces, pieces.lengths() > 0))


def _split_contractions(pieces: Pieces) -> Pieces:
    hits = np.flatnonzero(to_numpy(pc.is_in(pieces.values, value_set=_contraction_keys()), bool))
    if not len(hits):
        return pieces
    # Each hit becomes its two parts: the first replaces the word, the second is inserted after it.
    size = len(pieces.rows)
    widths = np.ones(size, np.int64)
    widths[hits] = 2
    source = np.repeat(np.arange(size), widths)
    first_out = np.cumsum(widths) - widths
    parts = [CONTRACTIONS[word] for word in pieces.values.take(pa.array(hits)).to_pylist()]
    source[first_out[hits]] = size + 2 * np.arange(len(hits))
    source[first_out[hits] + 1] = size + 2 * np.arange(len(hits)) + 1
    extra = pa.array([part for pair in parts for part in pair], pa.string())
    values = pa.concat_arrays([pieces.values.cast(pa.string()), extra]).take(pa.array(source))
    return Pieces(values, np.repeat(pieces.rows, widths), pieces.n_rows)


def _jieba_words(texts: list[str | None], rows: np.ndarray, n_rows: int, hmm: bool) -> Pieces:
    jieba = _jieba()
    values: list[str] = []
    owners: list[int] = []
    for row, text in zip(rows.tolist(), texts):
        words = [w for w in (piece.strip() for piece in jieba.cut(text or "", HMM=hmm)) if w]
        values.extend(words)
        owners.extend([row] * len(words))
    return Pieces(pa.array(values, pa.string()), np.array(owners, np.int64), n_rows)


def split_words(text: pa.Array | pa.ChunkedArray, jieba_rows: np.ndarray | None = None,
                hmm_rows: np.ndarray | None = None, reuse: bool = False) -> Pieces:
    """Words of each text: spaCy-like tokens (punctuation tokens included, as datatrove counts them), or jieba's
    words for the rows in `jieba_rows` (a boolean mask), with its HMM for unknown words in `hmm_rows` (as spaCy's
    Chinese tokenizer; 2.3x slower: ~80k against ~190k characters/s).

    `reuse`: take the words from the previous call with `reuse` when it saw every one of these texts (the filters
    of a recipe run one after the other on the rows the previous one kept; the words are the same)."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks() if text.num_chunks != 1 else text.chunk(0)
    jieba_rows = np.zeros(len(text), bool) if jieba_rows is None else jieba_rows
    hmm_rows = np.zeros(len(text), bool) if hmm_rows is None else hmm_rows
    if not reuse:
        return _split_words(text, jieba_rows, hmm_rows)
    segmenter = jieba_rows.astype(np.int8) + hmm_rows
    strings = text.to_pylist()
    words = _LAST_WORDS.take(strings, segmenter)
    if words is None:
        words = _split_words(text, jieba_rows, hmm_rows)
        _LAST_WORDS.keep(strings, segmenter, words)
    return words


class _WordCache:
    """The words of the last batch split with `reuse` (one batch: the filters of a chain see it in turn)."""

    def __init__(self) -> None:
        self.rows: dict[str | None, int] = {}

    def keep(self, strings: list[str | None], segmenter: np.ndarray, words: Pieces) -> None:
        self.rows = {s: row for row, s in enumerate(strings)}
        self.segmenter, self.words = segmenter, words
        self.counts = np.bincount(words.rows, minlength=words.n_rows)
        self.starts = np.cumsum(self.counts) - self.counts

    def take(self, strings: list[str | None], segmenter: np.ndarray) -> Pieces | None:
        rows = np.fromiter((self.rows.get(s, -1) for s in strings), np.int64, len(strings))
        if not self.rows or (rows < 0).any() or (self.segmenter[rows] != segmenter).any():
            return None
        counts = self.counts[rows]
        owner = np.repeat(np.arange(len(rows)), counts)
        first = np.cumsum(counts) - counts
        source = np.arange(int(counts.sum())) - first[owner] + self.starts[rows][owner]
        return Pieces(self.words.values.take(pa.array(source)), owner, len(rows))


_LAST_WORDS = _WordCache()


def _split_words(text: pa.Array, jieba_rows: np.ndarray, hmm_rows: np.ndarray) -> Pieces:
    if not jieba_rows.any():
        return _rule_words(text)
    ruled = _rule_words(pc.if_else(pa.array(jieba_rows), pa.scalar(None, pa.string()), text))
    pieces = [ruled]
    for hmm in (False, True):
        chosen = np.flatnonzero(jieba_rows & (hmm_rows == hmm))
        if len(chosen):
            pieces.append(_jieba_words(text.take(pa.array(chosen)).to_pylist(), chosen, len(text), hmm))
    rows = np.concatenate([p.rows for p in pieces])
    order = np.argsort(rows, kind="stable")
    values = pa.concat_arrays([p.values.cast(pa.string()) for p in pieces]).take(pa.array(order))
    return Pieces(values, rows[order], len(text))


def duplicates(pieces: Pieces) -> tuple[np.ndarray, np.ndarray]:
    """Per row: pieces equal to an earlier piece of the same row, and their characters (datatrove's
    find_duplicates)."""
    if not len(pieces.rows):
        return np.zeros(pieces.n_rows, np.int64), np.zeros(pieces.n_rows)
    ids = to_numpy(pc.dictionary_encode(pieces.values).indices, np.int64)
    first = np.unique(pieces.rows * (int(ids.max()) + 1) + ids, return_index=True)[1]
    repeated = np.ones(len(ids), bool)
    repeated[first] = False
    return pieces.count(repeated), pieces.total(pieces.lengths().astype(np.float64), repeated)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1e-300), np.nan)


def script_languages(text: pa.Array | pa.ChunkedArray) -> list[str | None]:
    """"ja" for texts with kana, "zh" for texts whose letters are mostly Han, else None."""
    kana = to_numpy(pc.count_substring_regex(text, r"[\p{Hiragana}\p{Katakana}]"), np.int64)
    han = to_numpy(pc.count_substring_regex(text, r"\p{Han}"), np.int64)
    letters = to_numpy(pc.count_substring_regex(text, r"\pL"), np.int64)
    cjk = (han + kana) * 2 > letters
    return ["ja" if c and k else "zh" if c and h else None for c, k, h in zip(cjk, kana > 0, han > 0)]


def row_languages(langs: Sequence[str | None] | None, text: pa.Array | pa.ChunkedArray,
                  by_script: bool) -> list[str | None]:
    """Each row's language: its `lang` label, else (with `by_script`) the script's guess for Chinese/Japanese."""
    labelled = list(langs) if langs is not None else [None] * len(text)
    if by_script and any(lang is None for lang in labelled):
        guessed = script_languages(text)
        labelled = [lang if lang is not None else guess for lang, guess in zip(labelled, guessed)]
    return labelled


"""Gopher's quality and repetition rules (Rae et al. 2021, "Scaling Language Models", appendix A1), as datatrove's
GopherQualityFilter and GopherRepetitionFilter define them, with their signals as columns (map stages)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from refinery.pipelines.stages import register
from refinery.pipelines.stages.signals import Languages, Measured, SignalFilter, SignalFilterConfig, above, below
from refinery.pipelines.stages.text import textstats
from refinery.pipelines.stages.text.ngrams import NGrams

GOPHER_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]
# The most frequent function words of each language, in Gopher's spirit (a real text has at least two of them).
STOP_WORDS = {
    "de": ["der", "die", "und", "in", "den", "von", "zu", "das", "mit", "ist"],
    "es": ["de", "la", "que", "el", "en", "y", "los", "del", "se", "las"],
    "fr": ["de", "la", "le", "et", "les", "des", "en", "un", "du", "une"],
    "it": ["di", "e", "il", "la", "che", "in", "per", "un", "del", "non"],
    "nl": ["de", "van", "het", "een", "en", "in", "is", "dat", "op", "te"],
    "pt": ["de", "a", "o", "que", "e", "do", "da", "em", "um", "para"],
    "ru": ["и", "в", "не", "на", "что", "с", "по", "как", "это", "к"],
    "zh": ["的", "了", "是", "在", "和", "有", "我", "不", "这", "也", "就", "都", "他", "人"],
    "ja": ["の", "に", "は", "を", "た", "が", "で", "て", "と", "し", "れ", "な"],
}
# Chinese words (jieba) and Japanese words (one Han/kana character each) are short, and their punctuation marks,
# which count as words without a letter, are more frequent: on the 197 BELLE answers of 300+ characters
# (instructions/belle_eval_set_zh.json) mean word length spans 1.6-2.9 and the letter-word fraction has a median
# of 0.83 and a 10th percentile of 0.68, against English's 0.8 threshold.
CJK_DEFAULTS = {"min_mean_word_length": 1.0, "max_mean_word_length": 6.0, "min_alpha_words_frac": 0.65}


class GopherQualityConfig(SignalFilterConfig):
    min_words: int | None = Field(50, ge=0, description="remove documents with fewer words (symbols not counted)")
    max_words: int | None = Field(100_000, ge=0, description="remove documents with more words")
    min_mean_word_length: float | None = Field(3, ge=0, description="remove documents whose words are shorter "
                                               "on average (characters)")
    max_mean_word_length: float | None = Field(10, ge=0, description="remove documents whose words are longer "
                                               "on average")
    max_symbol_word_ratio: float | None = Field(0.1, ge=0, description="remove documents with more `#`, or more "
                                                "ellipses (`...`, `…`), per word")
    max_bullet_lines_frac: float | None = Field(0.9, ge=0, le=1, description="remove documents with a larger "
                                                "fraction of lines starting with a bullet (`•`, `-`)")
    max_ellipsis_lines_frac: float | None = Field(0.3, ge=0, le=1, description="remove documents with a larger "
                                                  "fraction of lines ending with an ellipsis")
    min_alpha_words_frac: float | None = Field(0.8, ge=0, le=1, description="remove documents where a smaller "
                                               "fraction of words (symbols included) has a letter")
    min_stop_words: int | None = Field(2, ge=0, description="remove documents with fewer distinct stop words")
    stop_words: list[str] = Field(GOPHER_STOP_WORDS, description="the stop words (case-sensitive); built-in "
                                  "lists for de es fr it ja nl pt ru zh apply to those languages")

    language_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        **{lang: {"stop_words": words} for lang, words in STOP_WORDS.items()},
        "zh": {"stop_words": STOP_WORDS["zh"], **CJK_DEFAULTS},
        "ja": {"stop_words": STOP_WORDS["ja"], **CJK_DEFAULTS},
    }


SYMBOL_WORD = f"^[{textstats.PUNCTUATION_CLASS}{textstats.TERMINAL_CLASS}]+$"
BULLET_LINE = rf"^[{textstats.WHITESPACE}]*[•\-]"
ELLIPSIS_LINE = rf"(?:\.\.\.|…)[{textstats.WHITESPACE}]*$"


@register
class GopherQuality(SignalFilter):
    """Gopher's quality rules. Words are spaCy-like tokens (jieba's for Chinese); "symbols" are words made only of
    punctuation. Removes a row for the first rule it fails, in this order:

    gopher_no_text (null or blank), gopher_too_few_words, gopher_too_many_words, gopher_short_words (mean word
    length), gopher_long_words, gopher_hash_ratio (`#` per word), gopher_ellipsis_ratio (`...`/`…` per word),
    gopher_bullet_lines, gopher_ellipsis_lines, gopher_alpha_words, gopher_stop_words.

    Columns (every row): gopher_words, gopher_mean_word_length, gopher_hash_ratio, gopher_ellipsis_ratio,
    gopher_bullet_lines_frac, gopher_ellipsis_lines_frac, gopher_alpha_words_frac, gopher_stop_words.
    """

    name = "gopher_quality"
    Config = GopherQualityConfig
    config: GopherQualityConfig
    prefix = "gopher"
    signal_types = {
        "gopher_words": pa.int32(), "gopher_mean_word_length": pa.float32(), "gopher_hash_ratio": pa.float32(),
        "gopher_ellipsis_ratio": pa.float32(), "gopher_bullet_lines_frac": pa.float32(),
        "gopher_ellipsis_lines_frac": pa.float32(), "gopher_alpha_words_frac": pa.float32(),
        "gopher_stop_words": pa.int32(),
    }

    def measure(self, text: pa.Array, langs: Languages) -> Measured:
        words = langs.words(text)
        tokens = words.count()  # symbols included: datatrove's denominator for the ratios
        content = ~words.matches(SYMBOL_WORD)
        n_words = words.count(content)
        mean_length = textstats.ratio(words.total(words.lengths().astype(np.float64), content), n_words)
        hashes = textstats.to_numpy(pc.count_substring(text, "#"), np.int64)
        ellipses = sum(textstats.to_numpy(pc.count_substring(text, e), np.int64) for e in ("...", "…"))
        lines = textstats.split_lines(text)
        n_lines = lines.count()
        ratio = textstats.ratio
        signals = {
            "gopher_words": n_words.astype(np.float64),
            "gopher_mean_word_length": mean_length,
            "gopher_hash_ratio": ratio(hashes, tokens),
            "gopher_ellipsis_ratio": ratio(ellipses, tokens),
            "gopher_bullet_lines_frac": ratio(lines.count(lines.matches(BULLET_LINE)), n_lines),
            "gopher_ellipsis_lines_frac": ratio(lines.count(lines.matches(ELLIPSIS_LINE)), n_lines),
            "gopher_alpha_words_frac": ratio(words.count(words.matches(r"\pL")), tokens),
            "gopher_stop_words": self._stop_words(words, langs),
        }
        p = langs.param
        symbol_limit = p("max_symbol_word_ratio")
        checks = [
            (below(n_words, p("min_words")), "gopher_too_few_words"),
            (above(n_words, p("max_words")), "gopher_too_many_words"),
            (below(mean_length, p("min_mean_word_length")), "gopher_short_words"),
            (above(mean_length, p("max_mean_word_length")), "gopher_long_words"),
            (above(signals["gopher_hash_ratio"], symbol_limit), "gopher_hash_ratio"),
            (above(signals["gopher_ellipsis_ratio"], symbol_limit), "gopher_ellipsis_ratio"),
            (above(signals["gopher_bullet_lines_frac"], p("max_bullet_lines_frac")), "gopher_bullet_lines"),
            (above(signals["gopher_ellipsis_lines_frac"], p("max_ellipsis_lines_frac")), "gopher_ellipsis_lines"),
            (below(signals["gopher_alpha_words_frac"], p("min_alpha_words_frac")), "gopher_alpha_words"),
            (below(signals["gopher_stop_words"], p("min_stop_words")), "gopher_stop_words"),
        ]
        return Measured(signals, checks)

    @staticmethod
    def _stop_words(words: textstats.Pieces, langs: Languages) -> np.ndarray:
        """Distinct stop words per row, each row against its language's list."""
        found = np.zeros(words.n_rows)
        if not len(words.rows):
            return found
        ids = textstats.to_numpy(pc.dictionary_encode(words.values).indices, np.int64)
        for stop_words, rows in langs.rows_where("stop_words"):
            hit = textstats.to_numpy(pc.is_in(words.values, value_set=pa.array(stop_words, pa.string())), bool)
            hit &= rows[words.rows]
            pairs = np.unique(words.rows[hit] * (int(ids.max()) + 1) + ids[hit])
            found += np.bincount(pairs // (int(ids.max()) + 1), minlength=words.n_rows)
        return found


TOP_NGRAMS = (2, 3, 4)
DUPLICATE_NGRAMS = (5, 6, 7, 8, 9, 10)


def _ngram_limits(value: dict[int, float | None], allowed: tuple[int, ...], what: str) -> dict[int, float | None]:
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ValueError(f"{what} n-gram sizes must be among {list(allowed)} (got {unknown})")
    return value


class GopherRepetitionConfig(SignalFilterConfig):
    max_dup_line_frac: float | None = Field(0.3, ge=0, le=1, description="remove documents where a larger "
                                            "fraction of lines repeat an earlier line")
    max_dup_para_frac: float | None = Field(0.3, ge=0, le=1, description="... of paragraphs (split at blank lines)")
    max_dup_line_char_frac: float | None = Field(0.2, ge=0, le=1, description="remove documents where repeated "
                                                 "lines hold a larger fraction of the characters")
    max_dup_para_char_frac: float | None = Field(0.2, ge=0, le=1, description="... repeated paragraphs")
    max_top_ngram_frac: dict[int, float | None] = Field(
        {2: 0.2, 3: 0.18, 4: 0.16},
        description="for n in 2-4: remove documents whose most frequent word n-gram covers a larger fraction of "
        "the characters (null turns one off)",
    )
    max_dup_ngram_frac: dict[int, float | None] = Field(
        {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="for n in 5-10: remove documents where word n-grams repeating an earlier one cover a larger "
        "fraction of the characters",
    )

    @field_validator("max_top_ngram_frac")
    @classmethod
    def _top_sizes(cls, value: dict[int, float | None]) -> dict[int, float | None]:
        return _ngram_limits(value, TOP_NGRAMS, "max_top_ngram_frac")

    @field_validator("max_dup_ngram_frac")
    @classmethod
    def _dup_sizes(cls, value: dict[int, float | None]) -> dict[int, float | None]:
        return _ngram_limits(value, DUPLICATE_NGRAMS, "max_dup_ngram_frac")


@register
class GopherRepetition(SignalFilter):
    """Gopher's repetition rules: repeated lines and paragraphs (by count and by characters), the most frequent
    2-4-gram's share of the characters, and the share of characters in repeated 5-10-grams. Removes a row for the
    first rule it fails, in this order:

    gopher_rep_no_text, gopher_rep_dup_para_frac, gopher_rep_dup_para_chars, gopher_rep_dup_line_frac,
    gopher_rep_dup_line_chars, gopher_rep_top_2gram .. gopher_rep_top_4gram, gopher_rep_dup_5gram ..
    gopher_rep_dup_10gram.

    Columns (every row; fractions of the text's characters unless named _frac of lines/paragraphs):
    gopher_rep_dup_para_frac, gopher_rep_dup_para_chars, gopher_rep_dup_line_frac, gopher_rep_dup_line_chars,
    gopher_rep_top_{2,3,4}gram, gopher_rep_dup_{5..10}gram.
    """

    name = "gopher_repetition"
    Config = GopherRepetitionConfig
    config: GopherRepetitionConfig
    prefix = "gopher_rep"
    signal_types = {
        **{f"gopher_rep_{name}": pa.float32() for name in ("dup_para_frac", "dup_para_chars", "dup_line_frac",
                                                            "dup_line_chars")},
        **{f"gopher_rep_top_{n}gram": pa.float32() for n in TOP_NGRAMS},
        **{f"gopher_rep_dup_{n}gram": pa.float32() for n in DUPLICATE_NGRAMS},
    }

    def measure(self, text: pa.Array, langs: Languages) -> Measured:
        chars = textstats.to_numpy(pc.utf8_length(text), np.int64)
        ratio = textstats.ratio
        signals = {}
        for unit, pieces in (("para", textstats.split_on(pc.utf8_trim_whitespace(text), r"\n{2,}")),
                             ("line", textstats.split_on(text, r"\n+"))):
            repeated, repeated_chars = textstats.duplicates(pieces)
            signals[f"gopher_rep_dup_{unit}_frac"] = ratio(repeated, pieces.count())
            signals[f"gopher_rep_dup_{unit}_chars"] = ratio(repeated_chars, chars)
        grams = NGrams(langs.words(text))
        for n in TOP_NGRAMS:
            signals[f"gopher_rep_top_{n}gram"] = ratio(grams.top_chars(n), chars)
        repeated = None
        for n in DUPLICATE_NGRAMS:
            repeated = grams.repeated(n, repeated)
            signals[f"gopher_rep_dup_{n}gram"] = ratio(grams.duplicate_chars(n, repeated), chars)
        p = langs.param
        checks = [
            (above(signals["gopher_rep_dup_para_frac"], p("max_dup_para_frac")), "gopher_rep_dup_para_frac"),
            (above(signals["gopher_rep_dup_para_chars"], p("max_dup_para_char_frac")), "gopher_rep_dup_para_chars"),
            (above(signals["gopher_rep_dup_line_frac"], p("max_dup_line_frac")), "gopher_rep_dup_line_frac"),
            (above(signals["gopher_rep_dup_line_chars"], p("max_dup_line_char_frac")), "gopher_rep_dup_line_chars"),
        ]
        for n in TOP_NGRAMS:
            limit = p("max_top_ngram_frac", n)
            checks.append((above(signals[f"gopher_rep_top_{n}gram"], limit), f"gopher_rep_top_{n}gram"))
        for n in DUPLICATE_NGRAMS:
            limit = p("max_dup_ngram_frac", n)
            checks.append((above(signals[f"gopher_rep_dup_{n}gram"], limit), f"gopher_rep_dup_{n}gram"))
        return Measured(signals, checks)

"""C4's line rules (Raffel et al. 2020, section 2.2), as datatrove's C4QualityFilter defines them (map stage)."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from refinery.pipelines.stages import register
from refinery.pipelines.stages.signals import Languages, Measured, SignalFilter, SignalFilterConfig, above, below
from refinery.pipelines.stages.text import textstats

CITATION = r"\[[0-9]*\]|\[edit\]|\[citation needed\]"
POLICY_PHRASES = ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"]
END_PUNCTUATION = [".", "?", "!", '"', "'"]
CJK_END_PUNCTUATION = END_PUNCTUATION + ["。", "！", "？", "”", "」", "』", "）"]
LINE_RULES = ("long_word", "no_terminal_punct", "too_few_words", "javascript", "policy")


class C4QualityConfig(SignalFilterConfig):
    drop_lines: bool = Field(True, description="rewrite the text without the lines that fail a line rule, as C4 "
                             "does; false leaves the text as it is (the line rules then only count, for "
                             "min_sentences and max_dropped_lines_frac)")
    max_dropped_lines_frac: float | None = Field(None, ge=0, le=1, description="remove documents where a larger "
                                                 "fraction of lines fails a line rule (not in C4)")
    remove_citations: bool = Field(True, description="delete Wikipedia-style citation marks ([1], [edit], "
                                   "[citation needed]) from lines before the rules")
    terminal_punctuation: list[str] | None = Field(END_PUNCTUATION, description="drop lines not ending with one "
                                                   "of these (or ending with `...`); null turns the rule off")
    min_words_per_line: int | None = Field(3, ge=0, description="drop lines with fewer words (Chinese and "
                                           "Japanese lines: segmenter words)")
    max_word_length: int | None = Field(1000, ge=1, description="drop lines with a longer word")
    javascript: bool = Field(True, description="drop lines mentioning javascript")
    policy_phrases: list[str] = Field(POLICY_PHRASES, description="drop lines containing one of these (any case); "
                                      "[] turns the rule off")
    lorem_ipsum: bool = Field(True, description="remove documents with `lorem ipsum` in a kept line")
    curly_bracket: bool = Field(True, description="remove documents with `{` in a kept line")
    min_sentences: int | None = Field(5, ge=0, description="remove documents with fewer sentences in the kept "
                                      "lines")

    language_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "zh": {"terminal_punctuation": CJK_END_PUNCTUATION}, "ja": {"terminal_punctuation": CJK_END_PUNCTUATION},
    }


def _any_of(phrases: list[str]) -> str:
    return "|".join(re.escape(p) for p in phrases)


@register
class C4Quality(SignalFilter):
    """C4's rules. A line (stripped) is dropped by the first line rule it fails: a word over max_word_length,
    no terminal punctuation (after citation marks are deleted), fewer than min_words_per_line words, `javascript`,
    a policy/cookie phrase. Removes a row for the first rule it fails:

    c4_no_text (null or blank), c4_lorem_ipsum / c4_curly_bracket (whichever kept line comes first),
    c4_too_few_sentences, c4_dropped_lines (only with max_dropped_lines_frac).

    With drop_lines (the default) the kept rows' text is their kept lines joined by newlines; removed rows keep
    their text. Columns (every row): c4_lines, c4_kept_lines, c4_sentences (in kept lines), one count of dropped
    lines per rule (c4_lines_long_word, c4_lines_no_terminal_punct, c4_lines_too_few_words, c4_lines_javascript,
    c4_lines_policy), c4_dropped_lines_frac.
    """

    name = "c4_quality"
    Config = C4QualityConfig
    config: C4QualityConfig
    prefix = "c4"
    signal_types = {
        "c4_lines": pa.int32(), "c4_kept_lines": pa.int32(), "c4_sentences": pa.int32(),
        **{f"c4_lines_{rule}": pa.int32() for rule in LINE_RULES},
        "c4_dropped_lines_frac": pa.float32(),
    }

    def measure(self, text: pa.Array, langs: Languages) -> Measured:
        lines = textstats.split_lines(text)
        stripped = pc.utf8_trim_whitespace(lines.values)
        clean = pc.replace_substring_regex(stripped, CITATION, "")
        clean = pc.if_else(pa.array(langs.param("remove_citations")[lines.rows] > 0), clean, stripped)
        on = {name: langs.param(name)[lines.rows] for name in ("javascript", "lorem_ipsum", "curly_bracket")}
        n_words, longest = self._line_words(stripped, lines.rows, langs)
        failed = {  # each line rule alone; a line is dropped by the first it fails
            "long_word": above(longest, langs.param("max_word_length")[lines.rows]),
            "no_terminal_punct": self._unpunctuated(clean, lines.rows, langs),
            "too_few_words": below(n_words, langs.param("min_words_per_line")[lines.rows]),
        }
        reached = ~(failed["long_word"] | failed["no_terminal_punct"] | failed["too_few_words"])
        lorem = reached & (on["lorem_ipsum"] > 0) & self._contains(clean, "lorem ipsum")
        failed["javascript"] = (on["javascript"] > 0) & self._contains(clean, "javascript")
        reached_curly = reached & ~lorem & ~failed["javascript"]
        curly = reached_curly & (on["curly_bracket"] > 0) & self._contains(clean, "{")
        failed["policy"] = np.zeros(len(lines.rows), bool)
        for phrases, rows in langs.rows_where("policy_phrases"):
            if phrases:
                failed["policy"] |= rows[lines.rows] & self._contains(clean, _any_of(phrases), regex=True)
        kept = reached_curly & ~curly & ~failed["policy"]

        dropped = {  # each line counted under the rule that dropped it (the first it fails, in datatrove's order)
            "long_word": failed["long_word"],
            "no_terminal_punct": ~failed["long_word"] & failed["no_terminal_punct"],
            "too_few_words": ~failed["long_word"] & ~failed["no_terminal_punct"] & failed["too_few_words"],
            "javascript": reached & ~lorem & failed["javascript"],
            "policy": reached_curly & ~curly & failed["policy"],
        }
        n_lines = lines.count()
        kept_lines = lines.count(kept)
        first_lorem, first_curly = self._first_line(lines, lorem), self._first_line(lines, curly)
        sentences = lines.total(self._sentences(clean, kept, lines.rows, langs).astype(np.float64), kept)
        dropped_frac = textstats.ratio(n_lines - kept_lines, n_lines)
        signals = {"c4_lines": n_lines, "c4_kept_lines": kept_lines, "c4_sentences": sentences,
                   **{f"c4_lines_{rule}": lines.count(mask) for rule, mask in dropped.items()},
                   "c4_dropped_lines_frac": dropped_frac}
        checks = [
            (first_lorem < first_curly, "c4_lorem_ipsum"),
            (first_curly < first_lorem, "c4_curly_bracket"),
            (below(sentences, langs.param("min_sentences")), "c4_too_few_sentences"),
            (above(dropped_frac, langs.param("max_dropped_lines_frac")), "c4_dropped_lines"),
        ]
        rewritten = None
        drop = langs.param("drop_lines") > 0
        if drop.any():
            rewritten = pc.if_else(pa.array(drop), self._join(clean, kept, lines.rows, len(text)), text)
        return Measured({k: np.asarray(v, np.float64) for k, v in signals.items()}, checks, rewritten)

    @staticmethod
    def _contains(lines: pa.Array, pattern: str, regex: bool = False) -> np.ndarray:
        match = pc.match_substring_regex if regex else pc.match_substring
        return textstats.to_numpy(match(lines, pattern, ignore_case=True), bool)

    @staticmethod
    def _first_line(lines: textstats.Pieces, mask: np.ndarray) -> np.ndarray:
        """Index of each row's first line where `mask` holds (infinity where none does)."""
        first = np.full(lines.n_rows, np.inf)
        hits = np.flatnonzero(mask)
        np.minimum.at(first, lines.rows[hits], hits.astype(np.float64))
        return first

    @staticmethod
    def _line_words(lines: pa.Array, rows: np.ndarray, langs: Languages) -> tuple[np.ndarray, np.ndarray]:
        """Words per line and the longest word's length: whitespace-separated words (as C4), or the segmenter's
        words for Chinese/Japanese rows, whose lines have no spaces."""
        words = textstats.split_on(lines, f"[{textstats.WHITESPACE}]+")
        words = textstats.keep(words, words.lengths() > 0)
        cjk = langs.cjk_rows[rows]
        if cjk.any():
            segmented = langs.words(pc.if_else(pa.array(cjk), lines, pa.scalar(None, pa.string())), rows)
            spaced = textstats.keep(words, ~cjk[words.rows])
            words = textstats.Pieces(pa.concat_arrays([spaced.values, segmented.values.cast(pa.string())]),
                                     np.concatenate([spaced.rows, segmented.rows]), len(lines))
        longest = np.zeros(len(lines))
        np.maximum.at(longest, words.rows, words.lengths().astype(np.float64))
        return words.count(), longest

    @staticmethod
    def _unpunctuated(lines: pa.Array, rows: np.ndarray, langs: Languages) -> np.ndarray:
        failed = np.zeros(len(lines), bool)
        ellipsis = textstats.to_numpy(pc.ends_with(lines, "..."), bool)
        for endings, group in langs.rows_where("terminal_punctuation"):
            if endings is not None:
                ends = textstats.to_numpy(pc.match_substring_regex(lines, f"(?:{_any_of(endings)})$"), bool)
                failed |= group[rows] & (~ends | ellipsis)
        return failed

    @staticmethod
    def _sentences(lines: pa.Array, kept: np.ndarray, rows: np.ndarray, langs: Languages) -> np.ndarray:
        """Sentences per line as spaCy's sentencizer counts them (datatrove's split_into_sentences): a sentence
        starts at the first non-punctuation token after a sentence-final punctuation token."""
        counts = np.zeros(len(lines))
        chosen = np.flatnonzero(kept)
        if not len(chosen):
            return counts
        tokens = langs.words(lines.take(pa.array(chosen)), rows[chosen])
        final = tokens.matches(f"^[{textstats.TERMINAL_CLASS}]$")
        finals_before = np.concatenate([[0], np.cumsum(final)])  # sentence-final tokens before each position
        word = np.flatnonzero(~tokens.matches(r"^\pP+$"))
        line = tokens.rows[word]
        # Sentence-final tokens between a word and the line's previous word (or the line's start).
        same_line = np.concatenate([[False], line[1:] == line[:-1]])
        since = np.where(same_line, np.concatenate([[0], word[:-1] + 1]), np.searchsorted(tokens.rows, line))
        starts = np.bincount(line, weights=finals_before[word] > finals_before[since], minlength=len(chosen))
        counts[chosen] = 1 + starts
        return counts

    @staticmethod
    def _join(lines: pa.Array, kept: np.ndarray, rows: np.ndarray, n_rows: int) -> pa.Array:
        """Each row's kept lines joined by newlines, stripped."""
        values = lines.filter(pa.array(kept))
        offsets = np.concatenate([[0], np.cumsum(np.bincount(rows[kept], minlength=n_rows))]).astype(np.int32)
        joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), values), "\n")
        return pc.utf8_trim_whitespace(joined)

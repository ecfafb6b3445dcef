"""FineWeb's own quality rules (Penedo et al. 2024), as datatrove's FineWebQualityFilter defines them (map stage)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from refinery.pipelines.stages import register
from refinery.pipelines.stages.signals import Languages, Measured, SignalFilter, SignalFilterConfig, above, below
from refinery.pipelines.stages.text import textstats


class FineWebQualityConfig(SignalFilterConfig):
    min_line_punct_frac: float | None = Field(0.12, ge=0, le=1, description="remove documents where a smaller "
                                              "fraction of (non-blank) lines ends with sentence-final punctuation "
                                              "(any script's: . ! ? 。 ।...)")
    line_punct_exclude_zero: bool = Field(False, description="keep documents with no punctuated line at all "
                                          "(lists of titles, poems) rather than removing them for min_line_punct_frac")
    max_short_line_frac: float | None = Field(0.67, ge=0, le=1, description="remove documents where a larger "
                                              "fraction of lines is short")
    short_line_length: int = Field(30, ge=0, description="a line of at most this many characters is short")
    max_char_dup_frac: float | None = Field(0.01, ge=0, le=1, description="remove documents where lines repeating "
                                            "an earlier line hold a larger fraction of the characters")
    max_newline_word_ratio: float | None = Field(0.3, ge=0, description="remove documents with more newlines per "
                                                 "word (lists)")


PUNCTUATED_LINE = f"[{textstats.TERMINAL_CLASS}]$"


@register
class FineWebQuality(SignalFilter):
    """FineWeb's rules on lines (split at newlines, blank ones ignored). Removes a row for the first rule it fails:

    fineweb_no_text (null or blank), fineweb_line_punct, fineweb_short_lines, fineweb_char_dup, fineweb_list_ratio.

    Columns (every row): fineweb_line_punct_frac, fineweb_short_line_frac, fineweb_char_dup_frac,
    fineweb_newline_word_ratio.
    """

    name = "fineweb_quality"
    Config = FineWebQualityConfig
    config: FineWebQualityConfig
    prefix = "fineweb"
    signal_types = {"fineweb_line_punct_frac": pa.float32(), "fineweb_short_line_frac": pa.float32(),
                    "fineweb_char_dup_frac": pa.float32(), "fineweb_newline_word_ratio": pa.float32()}

    def measure(self, text: pa.Array, langs: Languages) -> Measured:
        lines = textstats.split_on(text, "\n")
        lines = textstats.keep(lines, textstats.to_numpy(pc.utf8_length(pc.utf8_trim_whitespace(lines.values)),
                                                         np.int64) > 0)
        n_lines = lines.count()
        lengths = lines.lengths()
        short = lengths <= langs.param("short_line_length")[lines.rows]
        newlines = textstats.to_numpy(pc.count_substring(text, "\n"), np.int64)
        chars = textstats.to_numpy(pc.utf8_length(text), np.int64) - newlines
        words = langs.words(text).count()
        signals = {
            "fineweb_line_punct_frac": textstats.ratio(lines.count(lines.matches(PUNCTUATED_LINE)), n_lines),
            "fineweb_short_line_frac": textstats.ratio(lines.count(short), n_lines),
            "fineweb_char_dup_frac": textstats.ratio(textstats.duplicates(lines)[1], chars),
            "fineweb_newline_word_ratio": textstats.ratio(newlines, words),
        }
        punct = signals["fineweb_line_punct_frac"]
        excused = (langs.param("line_punct_exclude_zero") > 0) & (punct == 0)
        checks = [
            (below(punct, langs.param("min_line_punct_frac")) & ~excused, "fineweb_line_punct"),
            (above(signals["fineweb_short_line_frac"], langs.param("max_short_line_frac")), "fineweb_short_lines"),
            (above(signals["fineweb_char_dup_frac"], langs.param("max_char_dup_frac")), "fineweb_char_dup"),
            (above(signals["fineweb_newline_word_ratio"], langs.param("max_newline_word_ratio")),
             "fineweb_list_ratio"),
        ]
        return Measured(signals, checks)

"""Simple per-document filters (map stages)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from refinery.pipelines.stages import register
from refinery.pipelines.stages.base import FilterStage, StageConfig


def first_reason(checks: list[tuple[pa.Array, str]], length: int) -> pa.Array:
    """For each row, the reason of the first check that fails (mask True), or null if none does."""
    reasons = pa.nulls(length, pa.string())
    for failed, reason in reversed(checks):
        reasons = pc.if_else(failed, pa.scalar(reason), reasons)
    return reasons


class LengthFilterConfig(StageConfig):
    min_chars: int | None = Field(None, ge=0, description="remove documents with fewer characters")
    max_chars: int | None = Field(None, ge=0, description="remove documents with more characters")
    min_words: int | None = Field(None, ge=0, description="remove documents with fewer words")
    max_words: int | None = Field(None, ge=0, description="remove documents with more words")

    @model_validator(mode="after")
    def _bounds_ordered(self) -> LengthFilterConfig:
        for low, high in (("min_chars", "max_chars"), ("min_words", "max_words")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} ({lo}) is larger than {high} ({hi})")
        return self


@register
class LengthFilter(FilterStage):
    """Remove documents outside character and word bounds (words: runs of non-whitespace)."""

    name = "length_filter"
    does = "filter by length"
    Config = LengthFilterConfig
    config: LengthFilterConfig

    def reasons(self, docs: pa.Table) -> pa.Array:
        text = docs.column("text")
        cfg = self.config
        checks: list[tuple[pa.Array, str]] = []
        if cfg.min_chars is not None or cfg.max_chars is not None:
            chars = pc.utf8_length(text)
            if cfg.min_chars is not None:
                checks.append((pc.less(chars, cfg.min_chars), "too_few_chars"))
            if cfg.max_chars is not None:
                checks.append((pc.greater(chars, cfg.max_chars), "too_many_chars"))
        if cfg.min_words is not None or cfg.max_words is not None:
            words = pc.count_substring_regex(text, r"\S+")
            if cfg.min_words is not None:
                checks.append((pc.less(words, cfg.min_words), "too_few_words"))
            if cfg.max_words is not None:
                checks.append((pc.greater(words, cfg.max_words), "too_many_words"))
        return first_reason(checks, docs.num_rows)

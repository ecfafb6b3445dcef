"""Shared machinery of the heuristic quality filters (gopher_quality, gopher_repetition, c4_quality,
fineweb_quality): each measures typed signal columns on every row, kept or removed, so that SQL can re-tune a
threshold without rerunning, and removes a row for the first rule it fails.

Rules are language-aware: a row's language is its `lang` label (from langid), or, for unlabelled rows, the script
(mostly Han: zh, with kana: ja). Chinese rows are cut into words by jieba, other rows by spaCy-like rules in which
every Han/kana character is a word; `overrides` changes any threshold for one language.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, ValidationError, ValidationInfo, model_validator

from refinery.pipelines.stages.base import MapStage, StageConfig, StageResult, split_by_reason
from refinery.pipelines.stages.filters import first_reason
from refinery.pipelines.stages.text import textstats

UNSPACED = {"zh", "ja", "wuu", "yue", "lzh"}
Signal = np.ndarray  # one value per row; NaN where undefined (written as null)
Check = tuple[np.ndarray, str]  # rows failing a rule, and the rule's reason


class Measured(NamedTuple):
    signals: dict[str, Signal]  # every column of the stage's `signal_types`
    checks: list[Check]  # in the order the rules apply
    text: pa.Array | None = None  # the rewritten text, for filters that edit it


class SignalFilterConfig(StageConfig):
    """Parameters common to the heuristic filters; each filter adds its thresholds."""

    column: str = Field("text", description="the string column measured (and, for c4_quality, rewritten)")
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per-language parameters over the defaults, keyed by `lang` label, e.g. "
        "{zh: {min_words: 30}}; built-in per-language defaults (see the stage reference) apply first",
    )
    segmenters: dict[str, Literal["jieba", "jieba_hmm", "rules"]] = Field(
        default_factory=lambda: {"zh": "jieba"},
        description="word segmenter per `lang`: jieba (Chinese words from its dictionary, ~190k characters/s), "
        "jieba_hmm (also guesses unknown words with its HMM, as spaCy's Chinese tokenizer; ~80k characters/s), or "
        "rules (spaCy-like English tokens, each Han/kana character a word); languages not named use rules",
    )
    by_script: bool = Field(True, description="rows without a `lang` label count as zh (letters mostly Han) or ja "
                            "(with kana) for `overrides` and `segmenters`")

    # Per-language defaults that apply before `overrides` (e.g. Chinese words are short).
    language_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    @model_validator(mode="after")
    def _overrides_valid(self, info: ValidationInfo) -> SignalFilterConfig:
        if not (info.context or {}).get("derived"):  # a derived config was checked with its parent
            for lang in sorted({*self.overrides, *self.language_defaults}):
                self.for_language(lang)
        return self

    def for_language(self, lang: str) -> SignalFilterConfig:
        """This config with the built-in defaults and the `overrides` for `lang` applied."""
        changes = {**self.language_defaults.get(lang, {}), **self.overrides.get(lang, {})}
        if not changes:
            return self
        shared = {"column", "overrides", "segmenters", "by_script"} & set(changes)
        if shared:
            raise ValueError(f"overrides for '{lang}' cannot set {', '.join(sorted(shared))}: it applies to "
                             "every language")
        try:
            return type(self).model_validate({**self.model_dump(exclude={"overrides"}), **changes},
                                             context={"derived": True})
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise ValueError(f"overrides for '{lang}': {problems}") from None


class Languages:
    """Each row's language and the parameters that apply to it."""

    def __init__(self, config: SignalFilterConfig, docs: pa.Table, text: pa.Array):
        labels = docs.column("lang").to_pylist() if "lang" in docs.column_names else None
        self.labels = textstats.row_languages(labels, text, config.by_script)
        self.configs: list[SignalFilterConfig] = [config]
        self.group = np.zeros(len(self.labels), np.int64)
        seen: dict[str, int] = {}
        for row, lang in enumerate(self.labels):
            if lang is None:
                continue
            if lang not in seen:
                specific = config.for_language(lang)
                seen[lang] = len(self.configs) if specific is not config else 0
                if specific is not config:
                    self.configs.append(specific)
            self.group[row] = seen[lang]
        segmenter = [config.segmenters.get(lang or "", "rules") for lang in self.labels]
        self.jieba_rows = np.array([s.startswith("jieba") for s in segmenter], bool)
        self.hmm_rows = np.array([s == "jieba_hmm" for s in segmenter], bool)
        # Languages written without spaces between words: their "words" come from the segmenter even where a rule
        # (C4's words per line) counts whitespace-separated words elsewhere.
        self.cjk_rows = self.jieba_rows | np.array([lang in UNSPACED for lang in self.labels], bool)

    def words(self, text: pa.Array, rows: np.ndarray | None = None) -> textstats.Pieces:
        """Words of each entry of `text`, cut by the segmenter of its row (entry i belongs to row `rows[i]`;
        default: entry i is row i)."""
        if rows is None:  # a batch's documents: the next filter of the chain reuses their words
            return textstats.split_words(text, self.jieba_rows, self.hmm_rows, reuse=True)
        return textstats.split_words(text, self.jieba_rows[rows], self.hmm_rows[rows])

    def param(self, name: str, key: Any = None) -> np.ndarray:
        """A numeric parameter (or one entry of a dict parameter) per row; NaN where it is None: the rule is off."""
        values = [getattr(c, name) if key is None else getattr(c, name).get(key) for c in self.configs]
        return np.array([np.nan if v is None else float(v) for v in values])[self.group]

    def rows_where(self, name: str) -> list[tuple[Any, np.ndarray]]:
        """(value, rows) for each distinct value of a parameter of any type (e.g. a stop-word list)."""
        groups: list[tuple[Any, np.ndarray]] = []
        for index, config in enumerate(self.configs):
            rows = self.group == index
            if rows.any():
                groups.append((getattr(config, name), rows))
        return groups


def above(value: Signal, limit: np.ndarray) -> np.ndarray:
    """value > limit; false where either is NaN (an undefined signal or a rule switched off)."""
    with np.errstate(invalid="ignore"):
        return np.greater(value, limit)


def below(value: Signal, limit: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.less(value, limit)


def signal_array(values: Signal, kind: pa.DataType) -> pa.Array:
    """A signal as an Arrow column: NaN becomes null, counts become integers."""
    values = np.asarray(values, np.float64)
    missing = np.isnan(values)
    if pa.types.is_integer(kind):
        return pa.array(np.where(missing, 0, values).astype(np.int64), pa.int64(), mask=missing).cast(kind)
    if pa.types.is_boolean(kind):
        return pa.array(values > 0, pa.bool_(), mask=missing)
    return pa.array(values, pa.float64(), mask=missing).cast(kind)


class SignalFilter(MapStage):
    """A map stage that writes `signals` columns on every row and removes rows by `checks`."""

    config: SignalFilterConfig
    does = "filter by quality"
    prefix: ClassVar[str]  # of its reasons and columns
    signal_types: ClassVar[dict[str, pa.DataType]]  # column name -> type, in output order

    def measure(self, text: pa.Array, langs: Languages) -> Measured:
        """The batch's signals and rule outcomes (`text` has nulls as empty strings)."""
        raise NotImplementedError

    def process(self, docs: pa.Table) -> StageResult:
        column = self.config.column
        if column not in docs.column_names:
            raise ValueError(f"{self.name}: no column '{column}' to measure (columns: "
                             f"{', '.join(docs.column_names)}); set `column:` to the text column")
        raw = docs.column(column)
        text = pc.fill_null(raw.combine_chunks() if raw.num_chunks != 1 else raw.chunk(0), "")
        measured = self.measure(text, Languages(self.config, docs, text))
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0)
        checks = [(blank, f"{self.prefix}_no_text")] + [(pa.array(fails), why) for fails, why in measured.checks]
        reasons = first_reason(checks, docs.num_rows)
        if measured.text is not None:  # removed rows keep their text as it was, to show what was removed
            index = docs.column_names.index(column)
            edited = pc.if_else(pc.is_valid(reasons), raw, measured.text.cast(raw.type))
            docs = docs.set_column(index, column, edited)
        for name, kind in self.signal_types.items():
            values = signal_array(measured.signals[name], kind)
            if name in docs.column_names:  # measured again (the stage twice in a recipe): the latest values
                docs = docs.set_column(docs.column_names.index(name), name, values)
            else:
                docs = docs.append_column(name, values)
        return split_by_reason(docs, reasons)

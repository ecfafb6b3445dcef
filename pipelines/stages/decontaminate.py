"""Decontamination (map): remove or flag documents that contain text of an evaluation set's item.

A map stage, not a global one, although issue 5 planned it global: the heavy part is the index of the
evaluation items' n-grams, and it builds from the files alone, never from the corpus. Building it takes
3–5 s for the whole llm-foundry gauntlet plus HellaSwag (43,799 items, 2.1M n-grams; see
docs/performance.md), so it is built once and kept in the user's cache (`eval-index/`, keyed by the files'
paths, sizes and modification times, the n-gram parameters and the code that builds it), where every worker
process loads it in ~0.1 s on its first batch and keeps it; the stage then fuses into the
streaming pass like any filter, with no barrier and no intermediate copy of the corpus. The files are
fingerprinted with `require_file`, so a changed evaluation set reruns the stage.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import Field

from refinery.corpora.evalsets import (
    EVAL_FORMATS,
    EvalSetError,
    benchmark_name,
    detect_format,
    eval_files,
    load_eval_set,
)
from refinery.pipelines.stages import register
from refinery.pipelines.stages.base import (
    DEFAULT_CONTEXT,
    MapStage,
    RunContext,
    StageConfig,
    StageResult,
    split_by_reason,
)
from refinery.pipelines.stages.text.eval_cache import cached_index
from refinery.pipelines.stages.text.ngram_index import EvalIndex

_INDEXES: dict[tuple, EvalIndex] = {}  # one per process and evaluation setup


class EvalSetConfig(StageConfig):
    path: str = Field(description="an evaluation file, a folder (every .jsonl, .txt and .txt.bz2 under it) or a "
                      "glob; relative to the recipe's folder")
    name: str | None = Field(None, description="the benchmark's name in reports (one file only); default: the "
                             "file name without suffixes and a split suffix (`hellaswag_val_full.txt.bz2` → "
                             "`hellaswag`)")
    format: Literal[EVAL_FORMATS] = Field("auto", description="foundry (llm-foundry eval JSONL), hellaswag (6 lines "
                                     "an item), fields (JSON/JSONL records, text in `fields`); auto: by suffix")
    fields: list[str] | None = Field(None, description="format `fields`: the record fields that hold the item's "
                                     "text, each one passage (e.g. [question, std_answer])")


class DecontaminateConfig(StageConfig):
    evals: list[str | EvalSetConfig] = Field(min_length=1, description="evaluation sets: paths (file, folder or "
                                             "glob) or {path, name, format, fields}")
    ngram: int = Field(13, ge=1, description="n-gram length in words (GPT-3's 13)")
    cjk_ngram: int = Field(20, ge=1, description="n-gram length in characters for items mostly in Han, Hiragana "
                           "or Katakana (each such character is a token)")
    min_ngram: int = Field(8, ge=1, description="a passage shorter than its n-gram length but with at least this "
                           "many tokens is one n-gram, whole; shorter passages are not indexed")
    template_items: int = Field(10, ge=2, description="an n-gram shared by at least this many items of one "
                                "benchmark is its prompt template (\"Output T for true and F for false\"): not indexed")
    action: Literal["remove", "flag"] = Field("remove", description="remove contaminated documents (reason "
                                              "`contaminated`) or keep every document and add the columns")
    column: str = Field("text", description="the string column searched, e.g. `prompt` for conversations; null "
                        "is never contaminated")


@register
class Decontaminate(MapStage):
    """Find documents that contain an evaluation item's text: an exact match of a normalised n-gram (13 words,
    20 CJK characters) of the item's passages. Columns: `contaminated_by` (benchmark), `contaminated_item` (the
    item's 0-based position in its file), `contaminated_ngram` (the first matching n-gram of that item, as
    normalised text), `contamination_hits` (matching n-grams in the document, all items). Where several items
    match, the one with most hits is named (ties: the first in the document). `counts`: documents per benchmark.
    """

    name = "decontaminate"
    does = "remove benchmark text"
    Config = DecontaminateConfig
    config: DecontaminateConfig

    def __init__(self, config: DecontaminateConfig, context: RunContext = DEFAULT_CONTEXT):
        super().__init__(config, context)
        self.sets: list[tuple[Path, str, str, list[str] | None]] = []
        for spec in config.evals:
            spec = EvalSetConfig(path=spec) if isinstance(spec, str) else spec
            files = eval_files(context.resolve(spec.path))
            if not files:
                raise ValueError(f"decontaminate: no evaluation files at {str(context.resolve(spec.path))!r} "
                                 "(relative paths start at the recipe's folder)")
            if spec.name and len(files) > 1:
                raise ValueError(f"decontaminate: `name: {spec.name}` given for {len(files)} files under "
                                 f"{spec.path!r}: name one file, or let each file's name name its benchmark")
            for file in files:
                try:
                    fmt = spec.format if spec.format != "auto" else detect_format(file, spec.fields)
                except EvalSetError as err:
                    raise ValueError(f"decontaminate: {err}") from None
                self.sets.append((self.require_file(file, "evals"), spec.name or benchmark_name(file), fmt,
                                  spec.fields))

    @property
    def index(self) -> EvalIndex:
        cfg = self.config
        key = (tuple((str(p), os.stat(p).st_size, os.stat(p).st_mtime_ns, name, fmt, tuple(fields or ()))
                     for p, name, fmt, fields in self.sets),
               cfg.ngram, cfg.cjk_ngram, cfg.min_ngram, cfg.template_items)
        if key not in _INDEXES:
            _INDEXES[key] = cached_index(key, lambda: EvalIndex.build(
                [item for path, name, fmt, fields in self.sets for item in load_eval_set(path, name, fmt, fields)],
                cfg.ngram, cfg.cjk_ngram, cfg.min_ngram, cfg.template_items))
        return _INDEXES[key]

    def process(self, docs: pa.Table) -> StageResult:
        if self.config.column not in docs.column_names:
            raise ValueError(f"decontaminate: no column '{self.config.column}' to search (columns: "
                             f"{', '.join(docs.column_names)})")
        index = self.index
        benchmarks: list[str | None] = []
        items: list[int | None] = []
        ngrams: list[str | None] = []
        hits: list[int] = []
        for matches in index.lookup(docs.column(self.config.column)) if docs.num_rows else []:
            hits.append(len(matches))
            if not matches:
                benchmarks.append(None), items.append(None), ngrams.append(None)
                continue
            per_item = Counter(item for _, item, _, _ in matches)
            best = max(per_item, key=per_item.__getitem__)  # Counter keeps first-seen order: ties go to the first
            _, _, start, size = next(m for m in matches if m[1] == best)
            benchmarks.append(index.items[best].benchmark)
            items.append(index.items[best].index)
            ngrams.append(index.ngram_text(start, size))
        columns = {"contaminated_by": pa.array(benchmarks, pa.string()),
                   "contaminated_item": pa.array(items, pa.int64()),
                   "contaminated_ngram": pa.array(ngrams, pa.string()),
                   "contamination_hits": pa.array(hits, pa.int32())}
        counts = dict(Counter(b for b in benchmarks if b is not None))
        if self.config.action == "flag":
            for name, values in columns.items():
                docs = docs.append_column(name, values)
            removed = docs.slice(0, 0).append_column("reason", pa.array([], pa.string()))
            return StageResult(docs, removed, counts)
        reasons = pa.array(["contaminated" if b is not None else None for b in benchmarks], pa.string())
        return StageResult(*split_by_reason(docs, reasons, **columns)[:2], counts)

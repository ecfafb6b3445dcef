"""Near-duplicate removal with MinHash LSH (global stage `minhash_dedup`).

signatures (per task) → resolve (buckets → candidates → pairs → clusters → decisions, each phase resumable, in
pipelines/neardup/resolve.py) → apply (per task). The machinery lives in pipelines/neardup/.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, field_validator, model_validator

from refinery.pipelines.stages import register
from refinery.pipelines.stages.base import (
    DEFAULT_CONTEXT,
    GlobalStage,
    RunContext,
    StageConfig,
    StageResult,
    split_by_reason,
)
from refinery.pipelines.stages.neardup import lsh, minhash, resolve
from refinery.pipelines.stages.neardup.shingles import document_shingles


class MinhashDedupConfig(StageConfig):
    outside_fingerprint = frozenset({"memory_limit", "block_bytes"})  # the same decisions at any budget (measured)

    column: str = Field("text", description="the string column compared, e.g. `prompt` for conversations; "
                        "rows where it is null (or has no letters or digits) are never duplicates")
    ngram: int = Field(5, ge=1, le=64, description="words per shingle (word n-grams of the normalised text: "
                       "lowercase, punctuation and symbols removed, digits folded to 0, whitespace collapsed)")
    cjk_ngram: int = Field(3, ge=1, le=64, description="characters per shingle for Chinese, Japanese and Korean "
                           "documents (chosen per document by a `lang` column where set, else by script: more than "
                           "30% CJK characters); 3 characters, about two words, is measured in docs/recipes.md")
    fold_digits: bool = Field(True, description="fold every digit to 0 (web text: dates and counters don't make "
                              "pages different); false for instruction prompts, where `Calculate 50% of 300` and "
                              "`Calculate 15% of 500` are different questions")
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard similarity of shingle sets from which two "
                             "documents are duplicates; bands × rows are chosen from it unless given")
    num_perm: int = Field(128, ge=2, le=1024, description="MinHash permutations available to the bands (only "
                          "bands × rows of them are computed)")
    bands: int | None = Field(None, ge=1, description="LSH bands (give with `rows`; default: chosen from "
                              "`threshold`, see `candidate_probability`)")
    rows: int | None = Field(None, ge=1, description="MinHash values per band (give with `bands`)")
    candidate_probability: float = Field(0.99, gt=0.0, lt=1.0, description="with `verify`, bands × rows are the "
                                         "scheme with the fewest false candidates that still makes a pair at "
                                         "`threshold` a candidate with this probability; without `verify`, "
                                         "datasketch's choice (least false-positive + false-negative area)")
    seed: int = Field(1, ge=0, description="seed of the MinHash permutations (the same seed gives the same "
                      "signatures on every machine)")
    verify: bool = Field(True, description="compute the exact Jaccard of every candidate pair's shingle sets, drop "
                         "pairs below `threshold`, and remove a document only if its Jaccard to the kept document it "
                         "names is at least `threshold`")
    keep: str = Field("first", description="which document of a cluster stays: `first` (earliest in input order) "
                      "or the name of a numeric column (highest value stays; ties and nulls by input order)")
    memory_limit: int | str = Field("1GB", validate_default=True, description="memory each part of the resolve "
                                    "step may use (DuckDB spills to the run folder beyond it; parts run in parallel, "
                                    "one per worker), e.g. '256MB'")
    block_bytes: int | None = Field(None, ge=1024, description="bytes of shingle sets per block of the resolve's "
                                    "`sets` step (default: memory_limit / 16): smaller blocks, more parts in "
                                    "parallel; the decisions are the same")

    @field_validator("memory_limit")
    @classmethod
    def _size(cls, value: int | str) -> int:
        from refinery.pipelines.engine.recipe import parse_size  # imported here: the recipe module imports the stages

        size = parse_size(value)
        if size < 64 * 10**6:  # DuckDB's joins of shingle lists need a few dozen MB to stream at all
            raise ValueError("memory_limit must be at least 64MB")
        return size

    @model_validator(mode="after")
    def _banding(self) -> MinhashDedupConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both `bands` and `rows`, or neither (then they are chosen from `threshold`)")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands × rows = {self.bands * self.rows} is more than num_perm = {self.num_perm}")
        return self

    def banding(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        return lsh.choose_bands(self.threshold, self.num_perm, self.candidate_probability if self.verify else None)


@register
class MinhashDedup(GlobalStage):
    """Remove near-duplicates: documents whose shingle sets have Jaccard similarity ≥ `threshold` with a kept
    document (MinHash LSH finds the candidates; `verify` checks them exactly). Removed rows say `near_duplicate`
    and name the kept document in `duplicate_of`; every row gets `dup_cluster_id` (the kept document's id, null
    for a document without duplicates) and `dup_cluster_size`."""

    name = "minhash_dedup"
    collect_does = "find near-duplicates"
    does = "drop near-duplicates"
    Config = MinhashDedupConfig
    config: MinhashDedupConfig

    def __init__(self, config: MinhashDedupConfig, context: RunContext = DEFAULT_CONTEXT):
        super().__init__(config, context)
        self.bands, self.rows = config.banding()
        self._permutations: tuple[np.ndarray, np.ndarray] | None = None

    def _column(self, docs: pa.Table, name: str, what: str) -> pa.ChunkedArray:
        if name not in docs.column_names:
            raise ValueError(f"minhash_dedup: no column '{name}' {what} (columns: {', '.join(docs.column_names)})")
        return docs.column(name)

    def collect(self, docs: pa.Table, ordinals: pa.Array) -> pa.Table:
        text = self._column(docs, self.config.column, "to compare")
        if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
            raise ValueError(f"minhash_dedup: column '{self.config.column}' holds {text.type}, not text")
        score = None
        if self.config.keep != "first":
            score = self._column(docs, self.config.keep, "for `keep` (use `first`, or a numeric column)")
            if not (pa.types.is_integer(score.type) or pa.types.is_floating(score.type)):
                raise ValueError(f"minhash_dedup: keep column '{self.config.keep}' holds {score.type}; it must be "
                                 "numeric (the highest value stays)")
        lang = docs.column("lang").combine_chunks() if "lang" in docs.column_names else None
        sets, _ = document_shingles(text, lang, self.config.ngram, self.config.cjk_ngram, self.config.fold_digits)
        if self._permutations is None:
            self._permutations = minhash.permutations(self.bands * self.rows, self.config.seed)
        keys = minhash.band_keys(minhash.signatures(sets, *self._permutations), self.bands, self.rows)
        rows = pa.array(np.flatnonzero(sets.sizes() > 0))  # null or empty text: no shingles, never a duplicate
        columns = {"ord": ordinals.take(rows), "id": docs.column("id").take(rows)}
        if score is not None:
            columns["score"] = pc.cast(score, pa.float64()).take(rows)
        if self.config.verify:
            shingles = pa.ListArray.from_arrays(pa.array(sets.offsets.astype(np.int32)), pa.array(sets.values))
            columns["shingles"] = shingles.take(rows)
        for band in range(self.bands):
            columns[resolve.band_column(band)] = pa.array(keys[:, band]).take(rows)
        return pa.table(columns)

    @property
    def settings(self) -> resolve.Settings:
        return resolve.Settings(bands=self.bands, rows=self.rows, threshold=self.config.threshold,
                                verify=self.config.verify, by_score=self.config.keep != "first",
                                memory_limit=self.config.memory_limit, block_bytes=self.config.block_bytes)

    # The resolve runs in steps whose parts (a band, a block of sets, a bucket of clusters) are executor tasks.
    def finish_steps(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in resolve.STEPS)

    def step_parts(self, step: str, collected_files: list[Path], workdir: Path) -> int:
        if step == resolve.STEPS[0][0]:  # detail for who asks (`refinery run -v`); lsh.json and the report keep it
            logging.getLogger("refinery").info(lsh.describe(self.bands, self.rows, self.config.threshold))
        return resolve.parts(collected_files, workdir, self.settings, step)

    def run_step(self, step: str, part: int, collected_files: list[Path], workdir: Path) -> None:
        resolve.run_part(collected_files, workdir, self.settings, step, part)

    def finish(self, collected_files: list[Path], workdir: Path) -> None:
        self.finish_in_steps(collected_files, workdir)

    def load_decisions(self, workdir: Path, first_ordinal: int, last_ordinal: int) -> dict[int, tuple[Any, ...]]:
        table = pq.read_table(resolve.decisions_path(workdir),
                              filters=[("ord", ">=", first_ordinal), ("ord", "<=", last_ordinal)])
        return dict(zip(table.column("ord").to_pylist(),
                        zip(*(table.column(c).to_pylist() for c in ("duplicate_of", "cluster_id", "cluster_size")))))

    def apply(self, docs: pa.Table, ordinals: pa.Array, decisions: dict[int, tuple[Any, ...]]) -> StageResult:
        found = [decisions.get(o, (None, None, 1)) for o in ordinals.to_pylist()]
        duplicate_of, cluster_id, cluster_size = (list(c) for c in zip(*found)) if found else ([], [], [])
        docs = docs.append_column("dup_cluster_id", pa.array(cluster_id, pa.string()))
        docs = docs.append_column("dup_cluster_size", pa.array(cluster_size, pa.int64()))
        duplicate_of = pa.array(duplicate_of, pa.string())
        reasons = pc.if_else(pc.is_valid(duplicate_of), pa.scalar("near_duplicate"), pa.scalar(None, pa.string()))
        return split_by_reason(docs, reasons, duplicate_of=duplicate_of)

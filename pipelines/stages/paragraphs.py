"""Paragraph deduplication (global): CCNet-style removal of lines or paragraphs repeated across documents.

Navigation, cookie banners and footers repeat, word for word, on every page of a site; article text does not.
Every unit (a line, or a paragraph between blank lines) is hashed after normalisation; a unit found in at
least `min_repeats` documents is removed from all of them (CCNet keeps no copy: boilerplate has no original).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from refinery.pipelines.stages import register
from refinery.pipelines.stages.base import StageResult, split_by_reason
from refinery.pipelines.stages.dedup import (
    HashPartitionedFinish,
    PartitionedFinishConfig,
    duckdb_to_parquet,
    hash64,
    normalise_text,
)

SIGNATURE_SCHEMA = pa.schema([("hash", pa.int64()), ("ord", pa.int64()), ("unit", pa.int32())])
DECISION_SCHEMA = pa.schema([("ord", pa.int64()), ("unit", pa.int32())])
# What separates units; captured, so that the text is rebuilt with the separators it had.
_SEPARATORS = {"line": re.compile(r"(\r?\n)"), "paragraph": re.compile(r"(\r?\n[ \t\r\f\v]*\n\s*)")}


class ParagraphDedupConfig(PartitionedFinishConfig):
    unit: Literal["line", "paragraph"] = Field("line", description="line: split at every newline (CCNet's "
                                               "paragraphs; extracted web text has one paragraph a line); "
                                               "paragraph: split at blank lines")
    min_repeats: int = Field(3, ge=2, description="remove a unit found in at least this many documents")
    min_chars: int = Field(10, ge=1, description="units shorter than this (normalised) are never counted nor "
                           "removed: blank lines, list numbers, one-word lines such as `Yes.`")
    keep_first: bool = Field(False, description="keep the unit in the first document (stable input order) that "
                             "has it; CCNet keeps none")
    min_chars_left: int = Field(1, ge=0, description="a document that lost units and has fewer characters left "
                                "(after trimming) is removed as `boilerplate_only`")
    min_words_left: int = Field(0, ge=0, description="likewise, by words left (runs of non-whitespace)")


def _pieces(text: str, unit: str) -> list[str]:
    """[unit, separator, unit, separator, ..., unit]: the units are the even positions."""
    return _SEPARATORS[unit].split(text)


def rewrite(text: str, unit: str, drop: set[int]) -> str:
    """The text without the units at positions `drop`, every other unit and separator as it was."""
    pieces = _pieces(text, unit)
    units, separators = pieces[0::2], pieces[1::2] + [""]
    kept = [[u, s] for n, (u, s) in enumerate(zip(units, separators)) if n not in drop]
    if kept and len(units) - 1 in drop:  # the last unit is gone: the text ends as it ended before
        kept[-1][1] = separators[-1]
    return "".join(u + s for u, s in kept)


@register
class ParagraphDedup(HashPartitionedFinish):
    """Remove every line (or paragraph) found in at least `min_repeats` documents of the corpus. Documents that
    lose units get their `text` rewritten; the `repeats_removed` column counts the units each document lost.
    A document left with fewer than `min_chars_left` characters or `min_words_left` words is removed with reason
    `boilerplate_only` (its original text kept in the removed row). `counts`: units_removed, chars_removed,
    docs_changed."""

    name = "paragraph_dedup"
    collect_does = "find repeated lines"
    does = "drop repeated lines"
    Config = ParagraphDedupConfig
    config: ParagraphDedupConfig

    def collect(self, docs: pa.Table, ordinals: pa.Array) -> pa.Table:
        units: list[str] = []
        ords: list[int] = []
        positions: list[int] = []
        for text, ordinal in zip(docs.column("text").to_pylist(), ordinals.to_pylist()):
            if text is not None:
                found = _pieces(text, self.config.unit)[0::2]
                units += found
                ords += [ordinal] * len(found)
                positions += range(len(found))
        keys = normalise_text(pa.array(units, pa.string()))
        counted = pc.greater_equal(pc.utf8_length(keys), self.config.min_chars)
        return pa.table([hash64(keys.filter(counted)), pa.array(ords, pa.int64()).filter(counted),
                         pa.array(positions, pa.int32()).filter(counted)], schema=SIGNATURE_SCHEMA)

    def finish_partition(self, collected_files: list[Path], workdir: Path, partition: int) -> None:
        # A unit's copies share its hash, so they all lie in one partition.
        keep_first = "AND s.ord <> r.first_ord" if self.config.keep_first else ""
        query = f"""
            WITH s AS (SELECT * FROM read_parquet($files) WHERE partition = $partition),
                 r AS (SELECT hash, min(ord) AS first_ord FROM s GROUP BY hash HAVING count(DISTINCT ord) >= $repeats)
            SELECT s.ord, s.unit FROM s JOIN r ON s.hash = r.hash {keep_first} ORDER BY s.ord, s.unit
        """
        duckdb_to_parquet(query, collected_files, self.decisions_part(workdir, partition), DECISION_SCHEMA,
                          repeats=self.config.min_repeats, partition=partition)

    def load_decisions(self, workdir: Path, first_ordinal: int, last_ordinal: int) -> dict[int, set[int]]:
        table = self.read_decisions(workdir, first_ordinal, last_ordinal)
        drops: dict[int, set[int]] = {}
        for ordinal, unit in zip(table.column("ord").to_pylist(), table.column("unit").to_pylist()):
            drops.setdefault(ordinal, set()).add(unit)
        return drops

    def apply(self, docs: pa.Table, ordinals: pa.Array, decisions: dict[int, set[int]]) -> StageResult:
        cfg = self.config
        texts = docs.column("text").to_pylist()
        rewritten, removed_units, reasons = list(texts), [0] * len(texts), [None] * len(texts)
        chars_removed = 0
        for row, ordinal in enumerate(ordinals.to_pylist()):
            drop = decisions.get(ordinal)
            if not drop:
                continue
            rewritten[row] = rewrite(texts[row], cfg.unit, drop)
            removed_units[row] = len(drop)
            chars_removed += len(texts[row]) - len(rewritten[row])
            left = rewritten[row].strip()
            if len(left) < cfg.min_chars_left or len(left.split()) < cfg.min_words_left:
                reasons[row] = "boilerplate_only"
        column = pa.array(removed_units, pa.int32())
        docs = docs.append_column("repeats_removed", column)
        reasons = pa.array(reasons, pa.string())
        result = split_by_reason(docs, reasons)
        # Kept rows carry the rewritten text; removed rows keep their original text, to show what was there.
        kept_text = pa.array(rewritten, pa.string()).filter(pc.is_null(reasons))
        kept = result.kept.set_column(docs.schema.get_field_index("text"), docs.schema.field("text"), kept_text)
        counts = {"units_removed": int(sum(removed_units)), "chars_removed": chars_removed,
                  "docs_changed": sum(1 for n in removed_units if n)}
        return StageResult(kept, result.removed, counts)

"""Deduplication stages (global)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from refinery.corpora.atomic import atomic_path
from refinery.pipelines.stages import register
from refinery.pipelines.stages.base import GlobalStage, StageConfig, StageResult, split_by_reason

SIGNATURE_SCHEMA = pa.schema([("hash", pa.int64()), ("ord", pa.int64()), ("id", pa.string())])
DECISION_SCHEMA = pa.schema([("ord", pa.int64()), ("kept_id", pa.string())])


def normalise_text(text: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Lowercase, trim, and collapse every whitespace run to one space."""
    folded = pc.utf8_lower(text)
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(folded, r"\s+", " "))


def hash64(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A stable signed 64-bit hash per string (BLAKE2b, so it is the same on every machine and run)."""
    return pa.array(
        [int.from_bytes(hashlib.blake2b(v.encode("utf-8"), digest_size=8).digest(), "little", signed=True)
         for v in values.to_pylist()],
        pa.int64(),
    )


def duckdb_to_parquet(query: str, signature_files: list[Path], target: Path, empty: pa.Schema,
                      **params: object) -> None:
    """Write a DuckDB query over the signature files (`$files`; other `$name`s from params) to `target`,
    atomically; no files give an empty table of schema `empty`. DuckDB spills to disk past its memory limit
    (into the target's folder), so this scales beyond RAM."""
    with atomic_path(target) as tmp:
        if not signature_files:
            pq.write_table(empty.empty_table(), tmp)
            return
        import duckdb  # only the barriers need it

        con = duckdb.connect()
        con.execute(f"SET temp_directory = '{target.parent / 'duckdb-tmp'}'")
        con.execute(f"COPY ({query}) TO $target (FORMAT parquet, ROW_GROUP_SIZE 65536)",
                    {"files": [str(f) for f in signature_files], "target": str(tmp), **params})
        con.close()


class PartitionedFinishConfig(StageConfig):
    """The parameter of a stage whose finish is cut by hash into partitions (see HashPartitionedFinish)."""

    partitions: int = Field(8, ge=1, le=65536, description="hash partitions of the finish, each a task on the "
                            "executor's workers (more for larger corpora; the result is the same)")
    outside_fingerprint: ClassVar[frozenset[str]] = frozenset({"partitions"})


class HashPartitionedFinish(GlobalStage):
    """A global stage whose collected rows carry a `hash` and whose decisions never join two hashes: its finish
    runs per hash partition (`finish_partition`), each writing `<workdir>/decisions/part-NNNNN.parquet`."""

    partition_column = "hash"
    config: PartitionedFinishConfig

    @property
    def partitions(self) -> int:
        return self.config.partitions

    @staticmethod
    def decisions_part(workdir: Path, partition: int) -> Path:
        return workdir / "decisions" / f"part-{partition:05d}.parquet"

    @staticmethod
    def read_decisions(workdir: Path, first_ordinal: int, last_ordinal: int) -> pa.Table:
        """Every partition's decisions for one task's ordinal range."""
        return pq.read_table(workdir / "decisions", filters=[("ord", ">=", first_ordinal), ("ord", "<=", last_ordinal)])


class ExactDedupConfig(PartitionedFinishConfig):
    normalize: bool = Field(True, description="compare lowercased text with whitespace runs collapsed")
    column: str = Field("text", description="the string column compared, e.g. `prompt` for conversations; "
                        "rows where it is null are never duplicates")


@register
class ExactDedup(HashPartitionedFinish):
    """Keep the first document (in stable input order) of every group with identical (normalised) text,
    or identical values of another string column (`column: prompt`)."""

    name = "exact_dedup"
    collect_does = "find duplicates"
    does = "drop duplicates"
    Config = ExactDedupConfig
    config: ExactDedupConfig

    def collect(self, docs: pa.Table, ordinals: pa.Array) -> pa.Table:
        if self.config.column not in docs.column_names:
            raise ValueError(f"exact_dedup: no column '{self.config.column}' to compare (columns: "
                             f"{', '.join(docs.column_names)})")
        text = docs.column(self.config.column)
        present = pc.is_valid(text)
        if text.null_count:
            text, ordinals, ids = text.filter(present), ordinals.filter(present), docs.column("id").filter(present)
        else:
            ids = docs.column("id")
        keys = normalise_text(text) if self.config.normalize else text
        return pa.table([hash64(keys), ordinals, ids], schema=SIGNATURE_SCHEMA)

    def finish_partition(self, collected_files: list[Path], workdir: Path, partition: int) -> None:
        # Equal texts have equal hashes, so each group of duplicates lies whole in one partition.
        query = """
            SELECT ord, kept_id FROM (
                SELECT ord,
                       first_value(id) OVER (PARTITION BY hash ORDER BY ord) AS kept_id,
                       row_number() OVER (PARTITION BY hash ORDER BY ord) AS rank
                FROM read_parquet($files) WHERE partition = $partition
            ) WHERE rank > 1 ORDER BY ord
        """
        duckdb_to_parquet(query, collected_files, self.decisions_part(workdir, partition), DECISION_SCHEMA,
                          partition=partition)

    def load_decisions(self, workdir: Path, first_ordinal: int, last_ordinal: int) -> dict[int, str]:
        table = self.read_decisions(workdir, first_ordinal, last_ordinal)
        return dict(zip(table.column("ord").to_pylist(), table.column("kept_id").to_pylist()))

    def apply(self, docs: pa.Table, ordinals: pa.Array, decisions: dict[int, str]) -> StageResult:
        kept_ids = [decisions.get(o) for o in ordinals.to_pylist()]
        duplicate_of = pa.array(kept_ids, pa.string())
        reasons = pc.if_else(pc.is_valid(duplicate_of), pa.scalar("exact_duplicate"), pa.scalar(None, pa.string()))
        return split_by_reason(docs, reasons, duplicate_of=duplicate_of)

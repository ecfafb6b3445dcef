"""The resolve step of `minhash_dedup`: phases over files in the stage's work folder, each written atomically and
followed by a done-marker (`<phase>.done`, JSON with its counts), so a run killed mid-resolve resumes at the phase
it was in. No phase holds all signatures in memory: DuckDB sorts and joins them out of core under `memory_limit`
(spilling to work/<stage>/duckdb-tmp), and Python only sees bounded streams of pairs and cluster members.

  buckets     one sorted file per band: (key, ord) of the band keys shared by two or more documents
  candidates  candidate pairs merged from all bands: each bucket member paired with the bucket's best document
  pairs       every candidate pair with the exact Jaccard of its shingle sets (`verify`), else as they are
  clusters    connected components (union-find) of the pairs at or above the threshold
  decisions   per clustered document: the kept document it duplicates (null if kept), its cluster's id and size
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.neardup import lsh
from pipelines.neardup.unionfind import components
from pipelines.storage import AtomicParquetWriter, read_json, temp_name, write_json

DECISION_SCHEMA = pa.schema([("ord", pa.int64()), ("duplicate_of", pa.string()), ("cluster_id", pa.string()),
                             ("cluster_size", pa.int64())])
PAIR_SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64()), ("jaccard", pa.float64())])
_GROUP_SCHEMA = pa.schema([("ord", pa.int64()), ("kept_ord", pa.int64()), ("kept_id", pa.string()),
                           ("removed", pa.bool_())])


@dataclass(frozen=True)
class Settings:
    bands: int
    rows: int
    threshold: float
    verify: bool
    by_score: bool  # keep the highest `score`, else the earliest ordinal
    memory_limit: int  # bytes


def band_column(band: int) -> str:
    return f"band_{band:03d}"


def decisions_path(workdir: Path) -> Path:
    return workdir / "decisions.parquet"


def _sql_files(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


@dataclass
class _Job:
    signatures: list[Path]
    workdir: Path
    settings: Settings
    _con: Any = field(default=None, repr=False)

    @property
    def con(self) -> Any:
        """A DuckDB connection that spills to the work folder beyond the memory budget (the batches Python reads
        are a small fraction of it, see stream_rows)."""
        if self._con is None:
            import duckdb  # only the barrier needs it

            self._con = duckdb.connect()
            self._con.execute(f"SET memory_limit = '{self.settings.memory_limit // 1024}KiB'")
            self._con.execute(f"SET temp_directory = '{self.workdir / 'duckdb-tmp'}'")
            # Every output is sorted with ORDER BY; other results need not keep their order, which saves memory.
            self._con.execute("SET preserve_insertion_order = false")
        return self._con

    @property
    def sigs(self) -> str:
        return f"read_parquet({_sql_files(self.signatures)})"

    @property
    def priority(self) -> str:
        return "score DESC NULLS LAST, ord" if self.settings.by_score else "ord"

    @property
    def stream_rows(self) -> int:
        """Rows per batch Python reads from a stream of shingle sets (~1.5 KB each): 1/32 of the budget."""
        return int(np.clip(self.settings.memory_limit // 32 // 1536, 256, 65536))

    def stream(self, query: str) -> pa.RecordBatchReader:
        """The query's rows in batches of `stream_rows` (DuckDB ≥ 1.4 names the call to_arrow_reader)."""
        relation = self.con.sql(query)
        read = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch
        return read(self.stream_rows)

    def copy(self, query: str, target: Path) -> int:
        """Run `query` into a Parquet file atomically; return its row count."""
        tmp = temp_name(target)
        self.con.execute(f"COPY ({query}) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 65536)")
        os.replace(tmp, target)
        return pq.ParquetFile(target).metadata.num_rows


def _band_files(job: _Job) -> list[Path]:
    return [job.workdir / "buckets" / f"band-{band:03d}.parquet" for band in range(job.settings.bands)]


def _buckets(job: _Job) -> dict[str, int]:
    (job.workdir / "buckets").mkdir(exist_ok=True)
    extra = ", score" if job.settings.by_score else ""
    rows = 0
    for band, target in enumerate(_band_files(job)):
        if target.exists():  # written whole by an earlier, interrupted attempt
            rows += pq.ParquetFile(target).metadata.num_rows
            continue
        key = band_column(band)
        rows += job.copy(f"SELECT {key} AS key, ord{extra} FROM {job.sigs} WHERE {key} IN "
                         f"(SELECT {key} FROM {job.sigs} GROUP BY {key} HAVING count(*) > 1) ORDER BY key, ord",
                         target)
    return {"bucket_rows": rows}


def _candidates(job: _Job) -> dict[str, int]:
    # A star per bucket (each member with the bucket's best document) links a bucket with k members by k - 1
    # pairs instead of k(k-1)/2; union-find over all bands still joins everything the buckets join.
    query = f"""SELECT DISTINCT center AS a, ord AS b FROM (
                    SELECT ord, first_value(ord) OVER (PARTITION BY filename, key ORDER BY {job.priority}) AS center
                    FROM read_parquet({_sql_files(_band_files(job))}, filename = true)
                ) WHERE ord <> center ORDER BY a, b"""
    return {"candidate_pairs": job.copy(query, job.workdir / "candidates.parquet")}


def pair_jaccard(left: pa.ListArray, right: pa.ListArray) -> np.ndarray:
    """Exact Jaccard of each pair of sorted, distinct uint32 sets (row i of `left` with row i of `right`), in one
    sort: a value present in both sets of a pair appears twice among the (pair, value) keys."""
    n = len(left)
    sizes = [np.diff(side.offsets.to_numpy()).astype(np.int64) for side in (left, right)]
    keys = np.concatenate([
        (np.repeat(np.arange(n, dtype=np.uint64), size) << np.uint64(32))
        | side.flatten().to_numpy().astype(np.uint64)
        for side, size in zip((left, right), sizes)
    ])
    keys.sort()
    both = keys[1:][keys[1:] == keys[:-1]]
    shared = np.bincount((both >> np.uint64(32)).astype(np.int64), minlength=n)
    union = sizes[0] + sizes[1] - shared
    return np.where(union > 0, shared / np.maximum(union, 1), 0.0)


def _pairs(job: _Job) -> dict[str, int]:
    candidates, target = job.workdir / "candidates.parquet", job.workdir / "pairs.parquet"
    if not job.settings.verify:
        return {"pairs": job.copy(f"SELECT a, b, NULL::DOUBLE AS jaccard FROM read_parquet('{candidates}')", target)}
    stream = job.stream(f"""SELECT c.a, c.b, l.shingles AS left_set, r.shingles AS right_set
                            FROM read_parquet('{candidates}') c
                            JOIN {job.sigs} l ON l.ord = c.a JOIN {job.sigs} r ON r.ord = c.b""")
    unsorted = job.workdir / "pairs-unsorted.parquet"
    writer = AtomicParquetWriter(unsorted, PAIR_SCHEMA)
    for batch in stream:
        jaccard = pair_jaccard(batch.column("left_set"), batch.column("right_set"))
        writer.write(pa.table([batch.column("a"), batch.column("b"), pa.array(jaccard)], schema=PAIR_SCHEMA))
    writer.close()
    rows = job.copy(f"SELECT * FROM read_parquet('{unsorted}') ORDER BY a, b", target)
    unsorted.unlink()
    similar = pq.read_table(target, columns=["jaccard"], filters=[("jaccard", ">=", job.settings.threshold)])
    return {"pairs": rows, "pairs_at_threshold": similar.num_rows}


def _clusters(job: _Job) -> dict[str, int]:
    filters = [("jaccard", ">=", job.settings.threshold)] if job.settings.verify else None
    pairs = pq.read_table(job.workdir / "pairs.parquet", columns=["a", "b"], filters=filters)
    nodes, labels = components(pairs.column("a").to_numpy(), pairs.column("b").to_numpy())
    target = job.workdir / "clusters.parquet"
    tmp = temp_name(target)
    pq.write_table(pa.table({"ord": pa.array(nodes, pa.int64()), "cluster": pa.array(labels, pa.int64())}), tmp)
    os.replace(tmp, target)
    return {"clustered_docs": len(nodes), "clusters": len(np.unique(labels))}


def _jaccard(x: np.ndarray, y: np.ndarray) -> float:
    """Exact Jaccard of two sorted, distinct, non-empty arrays."""
    at = np.minimum(np.searchsorted(y, x), len(y) - 1)
    shared = int(np.count_nonzero(y[at] == x))
    return shared / (len(x) + len(y) - shared)


def _assign(job: _Job, writer: AtomicParquetWriter) -> None:
    """Walk every cluster's members best first: a member joins the first kept document it is similar to (all of
    them are, without `verify`), or is kept itself. Only the kept documents' sets of one cluster are held."""
    columns = "c.cluster, s.ord, s.id" + (", s.shingles" if job.settings.verify else "")
    order = "c.cluster, " + ", ".join(f"s.{term}" for term in job.priority.split(", "))
    stream = job.stream(f"""SELECT {columns} FROM read_parquet('{job.workdir / 'clusters.parquet'}') c
                            JOIN {job.sigs} s USING (ord) ORDER BY {order}""")
    current, kept = None, []
    for batch in stream:
        clusters, ords, ids = (batch.column(c).to_pylist() for c in ("cluster", "ord", "id"))
        if job.settings.verify:
            sets = batch.column("shingles")
            values, offsets = sets.flatten().to_numpy(), sets.offsets.to_numpy()
        out: list[tuple[int, int, str, bool]] = []
        for i, (cluster, ordinal, doc_id) in enumerate(zip(clusters, ords, ids)):
            if cluster != current:
                current, kept = cluster, []
            mine = values[offsets[i]:offsets[i + 1]].copy() if job.settings.verify else None
            match = next((k for k in kept if mine is None or _jaccard(mine, k[2]) >= job.settings.threshold), None)
            if match is None:
                kept.append((ordinal, doc_id, mine))
                out.append((ordinal, ordinal, doc_id, False))
            else:
                out.append((ordinal, match[0], match[1], True))
        writer.write(pa.table(list(zip(*out)), schema=_GROUP_SCHEMA) if out else _GROUP_SCHEMA.empty_table())


def _decisions(job: _Job) -> dict[str, int]:
    groups = job.workdir / "groups.parquet"
    writer = AtomicParquetWriter(groups, _GROUP_SCHEMA)
    _assign(job, writer)
    writer.close()
    # A kept document that nothing joined is a singleton after all: no decision row, so no cluster id.
    query = f"""SELECT ord, CASE WHEN removed THEN kept_id END AS duplicate_of, kept_id AS cluster_id,
                       count(*) OVER (PARTITION BY kept_ord) AS cluster_size
                FROM read_parquet('{groups}') QUALIFY cluster_size > 1 ORDER BY ord"""
    rows = job.copy(query, decisions_path(job.workdir))
    groups.unlink()
    removed = pq.read_table(decisions_path(job.workdir), columns=["duplicate_of"]).column(0).null_count
    return {"decided_docs": rows, "removed": rows - removed}


PHASES: list[tuple[str, Callable[[_Job], dict[str, int]]]] = [
    ("buckets", _buckets), ("candidates", _candidates), ("pairs", _pairs), ("clusters", _clusters),
    ("decisions", _decisions)]


def run(signature_files: list[Path], workdir: Path, settings: Settings) -> dict[str, Any]:
    """Run the phases not yet done; return the LSH scheme and every phase's counts (also in workdir/lsh.json)."""
    summary = {"bands": settings.bands, "rows": settings.rows, "threshold": settings.threshold,
               "s_curve": lsh.s_curve(settings.bands, settings.rows)}
    if not signature_files:
        target = decisions_path(workdir)
        tmp = temp_name(target)
        pq.write_table(DECISION_SCHEMA.empty_table(), tmp)
        os.replace(tmp, target)
    else:
        job = _Job(signature_files, workdir, settings)
        for name, phase in PHASES:
            marker = workdir / f"{name}.done"
            if not marker.exists():
                write_json(marker, phase(job))
            summary[name] = read_json(marker)
        if job._con is not None:
            job._con.close()
    write_json(workdir / "lsh.json", summary)
    return summary

"""The resolve step of `minhash_dedup`: phases over files in the stage's work folder, each written atomically and
followed by a done-marker (`<phase>.done`, JSON with its counts), so a run killed mid-resolve resumes at the phase
it was in. No phase holds all signatures in memory: DuckDB sorts and joins the fixed-width columns out of core
under `memory_limit` (spilling to work/<stage>/duckdb-tmp), and the shingle sets are read a bounded block at a time.

  buckets     one sorted file per band: (key, ord) of the band keys shared by two or more documents
  candidates  candidate pairs merged from all bands: each bucket member paired with the bucket's best document
  sets        (`verify`) the shingle sets of the documents in candidate pairs, in blocks (setstore.py)
  pairs       every candidate pair with the exact Jaccard of its shingle sets (`verify`), else as they are
  clusters    connected components (union-find) of the pairs at or above the threshold
  decisions   per clustered document: the kept document it duplicates (null if kept), its cluster's id and size
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.corpora.atomic import AtomicParquetWriter, atomic_path, read_json, write_json
from refinery.pipelines.stages.neardup import lsh
from refinery.pipelines.stages.neardup.setstore import Sets, SetStore, jaccard, pair_jaccard, read_sets
from refinery.pipelines.stages.neardup.unionfind import components

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
        """A DuckDB connection that spills to the work folder beyond the memory budget. It only ever sorts and joins
        fixed-width columns (and ids): the shingle sets go through setstore's blocks."""
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
    def block_bytes(self) -> int:
        """Bytes of shingle sets per block: a phase holds two blocks, or a bucket of two, with room for Arrow's and
        numpy's copies within the budget."""
        return max(1 << 20, self.settings.memory_limit // 16)

    def release(self) -> None:
        """Give back what a phase held: DuckDB keeps its buffers, and Arrow its pool, until told."""
        if self._con is not None:
            self._con.close()
            self._con = None
        pa.default_memory_pool().release_unused()

    def copy(self, query: str, target: Path) -> int:
        """Run `query` into a Parquet file atomically; return its row count."""
        with atomic_path(target) as tmp:
            self.con.execute(f"COPY ({query}) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 65536)")
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


def _sets(job: _Job) -> dict[str, int]:
    if not job.settings.verify:
        return {"blocks": 0}
    candidates = pq.read_table(job.workdir / "candidates.parquet")
    wanted = np.unique(np.concatenate([candidates.column(c).to_numpy() for c in ("a", "b")]))
    blocks = SetStore.write(job.signatures, wanted, job.workdir / "sets", job.block_bytes)
    return {"candidate_docs": len(wanted), "blocks": blocks}


def _pairs(job: _Job) -> dict[str, int]:
    candidates, target = job.workdir / "candidates.parquet", job.workdir / "pairs.parquet"
    if not job.settings.verify:
        return {"pairs": job.copy(f"SELECT a, b, NULL::DOUBLE AS jaccard FROM read_parquet('{candidates}')", target)}
    store = SetStore(job.workdir / "sets")
    unsorted = job.workdir / "pairs-unsorted.parquet"
    writer = AtomicParquetWriter(unsorted, PAIR_SCHEMA)
    budget = max(1 << 16, job.block_bytes // 24)  # set values compared at once (~20 bytes each while sorted)
    for i in range(len(store)):
        # The pairs whose first document is in block i (candidates are sorted by it), by the block of the second.
        last = store.firsts[i + 1] - 1 if i + 1 < len(store) else np.iinfo(np.int64).max
        mine = pq.read_table(candidates, filters=[("a", ">=", int(store.firsts[i])), ("a", "<=", int(last))])
        a, b = mine.column("a").to_numpy(), mine.column("b").to_numpy()
        order = np.argsort(store.block_of(b), kind="stable")
        a, b, right_blocks = a[order], b[order], store.block_of(b[order])
        left = store.load(i)
        for j in np.unique(right_blocks):
            right = left if j == i else store.load(int(j))
            first, end = int(np.searchsorted(right_blocks, j)), int(np.searchsorted(right_blocks, j, "right"))
            rows_a, rows_b = left.rows(a[first:end]), right.rows(b[first:end])
            weight = np.cumsum(left.sizes(rows_a) + right.sizes(rows_b))
            lo = 0
            while lo < len(weight):  # batches of about `budget` values
                hi = max(lo + 1, int(np.searchsorted(weight, (weight[lo - 1] if lo else 0) + budget, "right")))
                value = pair_jaccard(left.take(rows_a[lo:hi]), right.take(rows_b[lo:hi]))
                writer.write(pa.table([a[first + lo:first + hi], b[first + lo:first + hi], value], schema=PAIR_SCHEMA))
                lo = hi
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
    with atomic_path(target) as tmp:
        pq.write_table(pa.table({"ord": pa.array(nodes, pa.int64()), "cluster": pa.array(labels, pa.int64())}), tmp)
    return {"clustered_docs": len(nodes), "clusters": len(np.unique(labels))}


def _member_buckets(job: _Job) -> tuple[int, Path]:
    """Split the clustered documents' sets into buckets by cluster (cluster mod n) of about two blocks each, so the
    walk holds one bucket at a time and never splits a cluster."""
    folder = job.workdir / "members"
    folder.mkdir(exist_ok=True)
    store = SetStore(job.workdir / "sets")
    count = max(1, -(-store.bytes() // (2 * job.block_bytes)))
    clusters = pq.read_table(job.workdir / "clusters.parquet")
    ords, labels = clusters.column("ord").to_numpy(), clusters.column("cluster").to_numpy()
    writers = [AtomicParquetWriter(folder / f"bucket-{k:05d}.parquet", pa.schema([("ord", pa.int64()),
               ("shingles", pa.list_(pa.uint32()))])) for k in range(count)]
    for block in range(len(store)):
        sets = store.load(block)
        rows = np.flatnonzero(np.isin(sets.ords, ords))
        bucket = labels[np.searchsorted(ords, sets.ords[rows])] % count
        for k in np.unique(bucket):
            chosen = rows[bucket == k]
            values, sizes = sets.take(chosen)
            offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int32)
            writers[k].write(pa.table([sets.ords[chosen], pa.ListArray.from_arrays(offsets, values)],
                                      names=["ord", "shingles"]))
    for writer in writers:
        writer.close()
    return count, folder


class _Walk:
    """Walks every cluster's members best first (they arrive sorted so, a cluster possibly over several calls): a
    member joins the first kept document it is similar to (every one is, without sets to compare), or is kept."""

    def __init__(self, threshold: float):
        self.threshold, self.current, self.kept = threshold, None, []

    def __call__(self, members: pa.Table, sets: Sets | None) -> pa.Table:
        out: list[tuple[int, int, str, bool]] = []
        rows = sets.rows(members.column("ord").to_numpy()) if sets is not None else None
        columns = (members.column(c).to_pylist() for c in ("cluster", "ord", "id"))
        for i, (cluster, ordinal, doc_id) in enumerate(zip(*columns)):
            if cluster != self.current:
                self.current, self.kept = cluster, []
            mine = sets.one(rows[i]) if sets is not None else None
            match = next((k for k in self.kept if mine is None or jaccard(mine, k[2]) >= self.threshold), None)
            if match is None:
                self.kept.append((ordinal, doc_id, mine))
                out.append((ordinal, ordinal, doc_id, False))
            else:
                out.append((ordinal, match[0], match[1], True))
        return pa.table(list(zip(*out)), schema=_GROUP_SCHEMA) if out else _GROUP_SCHEMA.empty_table()


def _assign(job: _Job, writer: AtomicParquetWriter) -> None:
    members = job.workdir / "members.parquet"
    order = "c.cluster, " + ", ".join(f"s.{term}" for term in job.priority.split(", "))
    job.copy(f"""SELECT c.cluster, c.ord, s.id FROM read_parquet('{job.workdir / 'clusters.parquet'}') c
                 JOIN {job.sigs} s USING (ord) ORDER BY {order}""", members)
    walk = _Walk(job.settings.threshold)
    if not job.settings.verify:
        for batch in pq.ParquetFile(members).iter_batches(batch_size=65536):
            writer.write(walk(pa.Table.from_batches([batch]), None))
        return
    count, folder = _member_buckets(job)
    for k in range(count):
        mine = []
        for batch in pq.ParquetFile(members).iter_batches(batch_size=65536):
            table = pa.Table.from_batches([batch])
            mine.append(table.filter(pa.array(table.column("cluster").to_numpy() % count == k)))
        if mine:
            sets = Sets.from_table(read_sets(folder / f"bucket-{k:05d}.parquet"))
            writer.write(walk(pa.concat_tables(mine), sets))


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
    ("buckets", _buckets), ("candidates", _candidates), ("sets", _sets), ("pairs", _pairs),
    ("clusters", _clusters), ("decisions", _decisions)]


def run(signature_files: list[Path], workdir: Path, settings: Settings) -> dict[str, Any]:
    """Run the phases not yet done; return the LSH scheme and every phase's counts (also in workdir/lsh.json)."""
    summary = {"bands": settings.bands, "rows": settings.rows, "threshold": settings.threshold,
               "s_curve": lsh.s_curve(settings.bands, settings.rows)}
    if not signature_files:
        with atomic_path(decisions_path(workdir)) as tmp:
            pq.write_table(DECISION_SCHEMA.empty_table(), tmp)
    else:
        job = _Job(signature_files, workdir, settings)
        for name, phase in PHASES:
            marker = workdir / f"{name}.done"
            if not marker.exists():
                write_json(marker, phase(job))
                job.release()
            summary[name] = read_json(marker)
    write_json(workdir / "lsh.json", summary)
    return summary

"""The resolve step of `minhash_dedup`: steps over files in the stage's work folder, run one after another. A step
is cut into parts that do not depend on each other (one per band, per block of sets, per bucket of clusters), which
the engine runs as parallel tasks on its executor (local processes, or Ray across machines); `run` runs them all
here, in turn. Each part writes its files atomically, then a marker (`steps/<step>-<part>.json`, with its counts),
so a run killed mid-resolve redoes only the parts without one. No part holds all signatures in memory: DuckDB sorts
and joins the fixed-width columns out of core under `memory_limit` (per part; spilling to work/<stage>/duckdb-tmp),
and the shingle sets are read a bounded block at a time.

  buckets     (up to a part per band) one sorted file per band: (key, ord) of the keys shared by two or more documents
  candidates  candidate pairs merged from all bands: each bucket member paired with the bucket's best document
  sets        (`verify`) the shingle sets of the documents in candidate pairs, in blocks (setstore.py)
  pairs       (a part per block) every candidate pair whose first document is in the block, with the exact Jaccard
              of its shingle sets (`verify`), else as they are; the parts in order are sorted by (a, b)
  clusters    connected components (union-find) of the pairs at or above the threshold
  members     the clustered documents, best first within each cluster, and their sets in buckets of clusters
  walk        (a part per bucket) each cluster's members, kept or joined to a kept document they are similar to
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
from refinery.pipelines.stages.neardup.setstore import SetStore, pair_jaccard
from refinery.pipelines.stages.neardup.unionfind import components
from refinery.pipelines.stages.neardup.walk import GROUP_SCHEMA, member_buckets, walk_bucket

DECISION_SCHEMA = pa.schema([("ord", pa.int64()), ("duplicate_of", pa.string()), ("cluster_id", pa.string()),
                             ("cluster_size", pa.int64())])
PAIR_SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64()), ("jaccard", pa.float64())])

@dataclass(frozen=True)
class Settings:
    bands: int
    rows: int
    threshold: float
    verify: bool
    by_score: bool  # keep the highest `score`, else the earliest ordinal
    memory_limit: int  # bytes
    block_bytes: int | None = None  # bytes of shingle sets per block (None: from memory_limit)


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
    part: str = "resolve"  # names the part's own DuckDB spill folder: parts may run at once
    _con: Any = field(default=None, repr=False)

    @property
    def con(self) -> Any:
        """A DuckDB connection that spills to the work folder beyond the memory budget. It only ever sorts and joins
        fixed-width columns (and ids): the shingle sets go through setstore's blocks."""
        if self._con is None:
            import duckdb  # only the barrier needs it

            self._con = duckdb.connect()
            self._con.execute(f"SET memory_limit = '{self.settings.memory_limit // 1024}KiB'")
            self._con.execute(f"SET temp_directory = '{self.workdir / 'duckdb-tmp' / self.part}'")
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
        """Bytes of shingle sets per block: a part holds two blocks, or a bucket of two, with room for Arrow's and
        numpy's copies within the budget."""
        return self.settings.block_bytes or max(1 << 20, self.settings.memory_limit // 16)

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


def _band_file(job: _Job, band: int) -> Path:
    return job.workdir / "buckets" / f"band-{band:03d}.parquet"


def _bucket_parts(job: _Job) -> int:
    """Parts of the buckets step, about one per `block_bytes` of signatures (at most one per band): each part scans
    every signature file once per band it has, so a small corpus is one part (no task to start), a large one as
    many as there are bands."""
    size = sum(path.stat().st_size for path in job.signatures)
    return max(1, min(job.settings.bands, -(-size // job.block_bytes)))


def _bucket(job: _Job, part: int) -> dict[str, int]:
    (job.workdir / "buckets").mkdir(exist_ok=True)
    extra = ", score" if job.settings.by_score else ""
    rows = 0
    for band in range(part, job.settings.bands, _bucket_parts(job)):
        key = band_column(band)
        rows += job.copy(f"SELECT {key} AS key, ord{extra} FROM {job.sigs} WHERE {key} IN "
                         f"(SELECT {key} FROM {job.sigs} GROUP BY {key} HAVING count(*) > 1) ORDER BY key, ord",
                         _band_file(job, band))
    return {"bucket_rows": rows}


def _candidates(job: _Job, part: int) -> dict[str, int]:
    # A star per bucket (each member with the bucket's best document) links a bucket with k members by k - 1
    # pairs instead of k(k-1)/2; union-find over all bands still joins everything the buckets join.
    bands = [_band_file(job, band) for band in range(job.settings.bands)]
    query = f"""SELECT DISTINCT center AS a, ord AS b FROM (
                    SELECT ord, first_value(ord) OVER (PARTITION BY filename, key ORDER BY {job.priority}) AS center
                    FROM read_parquet({_sql_files(bands)}, filename = true)
                ) WHERE ord <> center ORDER BY a, b"""
    return {"candidate_pairs": job.copy(query, job.workdir / "candidates.parquet")}


def _sets(job: _Job, part: int) -> dict[str, int]:
    if not job.settings.verify:
        return {"blocks": 0}
    candidates = pq.read_table(job.workdir / "candidates.parquet")
    wanted = np.unique(np.concatenate([candidates.column(c).to_numpy() for c in ("a", "b")]))
    blocks = SetStore.write(job.signatures, wanted, job.workdir / "sets", job.block_bytes)
    return {"candidate_docs": len(wanted), "blocks": blocks}


def _pair_parts(job: _Job) -> int:
    return max(1, len(SetStore(job.workdir / "sets"))) if job.settings.verify else 1


def _pair_part(job: _Job, block: int) -> Path:
    return job.workdir / "pairs" / f"part-{block:05d}.parquet"


def _pairs(job: _Job, i: int) -> dict[str, int]:
    """The candidate pairs whose first document is in block i (candidates are sorted by it), with their Jaccard."""
    candidates, target = job.workdir / "candidates.parquet", _pair_part(job, i)
    target.parent.mkdir(exist_ok=True)
    if not job.settings.verify:
        return {"pairs": job.copy(f"SELECT a, b, NULL::DOUBLE AS jaccard FROM read_parquet('{candidates}')", target)}
    store = SetStore(job.workdir / "sets")
    unsorted = target.with_name(f"unsorted-{i:05d}.parquet")
    writer = AtomicParquetWriter(unsorted, PAIR_SCHEMA)
    budget = max(1 << 16, job.block_bytes // 24)  # set values compared at once (~20 bytes each while sorted)
    if i < len(store):
        last = store.firsts[i + 1] - 1 if i + 1 < len(store) else np.iinfo(np.int64).max
        mine = pq.read_table(candidates, filters=[("a", ">=", int(store.firsts[i])), ("a", "<=", int(last))])
        a, b = mine.column("a").to_numpy(), mine.column("b").to_numpy()
        order = np.argsort(store.block_of(b), kind="stable")
        a, b, right_blocks = a[order], b[order], store.block_of(b[order])
        left = store.load(i)
        for j in np.unique(right_blocks):  # the pairs by the block of their second document
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


def _clusters(job: _Job, part: int) -> dict[str, int]:
    filters = [("jaccard", ">=", job.settings.threshold)] if job.settings.verify else None
    parts = [pq.read_table(_pair_part(job, i), columns=["a", "b"], filters=filters) for i in range(_pair_parts(job))]
    # In part order the pairs are sorted by (a, b), as one sort of all of them would be.
    a, b = (np.concatenate([part.column(c).to_numpy() for part in parts]) for c in ("a", "b"))
    nodes, labels = components(a, b)
    target = job.workdir / "clusters.parquet"
    with atomic_path(target) as tmp:
        pq.write_table(pa.table({"ord": pa.array(nodes, pa.int64()), "cluster": pa.array(labels, pa.int64())}), tmp)
    return {"clustered_docs": len(nodes), "clusters": len(np.unique(labels))}


def _members(job: _Job, part: int) -> dict[str, int]:
    order = "c.cluster, " + ", ".join(f"s.{term}" for term in job.priority.split(", "))
    job.copy(f"""SELECT c.cluster, c.ord, s.id FROM read_parquet('{job.workdir / 'clusters.parquet'}') c
                 JOIN {job.sigs} s USING (ord) ORDER BY {order}""", job.workdir / "members.parquet")
    if not job.settings.verify:
        return {"member_buckets": 1}
    return {"member_buckets": member_buckets(job.workdir, job.block_bytes)}


def _walk_parts(job: _Job) -> int:
    return read_json(_marker(job.workdir, "members", 0))["member_buckets"]


def _walk(job: _Job, bucket: int) -> dict[str, int]:
    target = job.workdir / "groups" / f"part-{bucket:05d}.parquet"
    target.parent.mkdir(exist_ok=True)
    writer = AtomicParquetWriter(target, GROUP_SCHEMA)
    walk_bucket(job.workdir, bucket, _walk_parts(job), job.settings.threshold, job.settings.verify, writer)
    writer.close()
    return {}


def _decisions(job: _Job, part: int) -> dict[str, int]:
    groups = [job.workdir / "groups" / f"part-{k:05d}.parquet" for k in range(_walk_parts(job))]
    # A kept document that nothing joined is a singleton after all: no decision row, so no cluster id.
    query = f"""SELECT ord, CASE WHEN removed THEN kept_id END AS duplicate_of, kept_id AS cluster_id,
                       count(*) OVER (PARTITION BY kept_ord) AS cluster_size
                FROM read_parquet({_sql_files(groups)}) QUALIFY cluster_size > 1 ORDER BY ord"""
    rows = job.copy(query, decisions_path(job.workdir))
    removed = pq.read_table(decisions_path(job.workdir), columns=["duplicate_of"]).column(0).null_count
    return {"decided_docs": rows, "removed": rows - removed}


def _one(job: _Job) -> int:
    return 1


# (name, how many parts once the steps before it are done, what one part does)
STEPS: list[tuple[str, Callable[[_Job], int], Callable[[_Job, int], dict[str, int]]]] = [
    ("buckets", _bucket_parts, _bucket), ("candidates", _one, _candidates), ("sets", _one, _sets),
    ("pairs", _pair_parts, _pairs), ("clusters", _one, _clusters), ("members", _one, _members),
    ("walk", _walk_parts, _walk), ("decisions", _one, _decisions)]
_STEP = {name: (parts, run_part) for name, parts, run_part in STEPS}


def _marker(workdir: Path, step: str, part: int) -> Path:
    return workdir / "steps" / f"{step}-{part:05d}.json"


def parts(signature_files: list[Path], workdir: Path, settings: Settings, step: str) -> int:
    """How many parts `step` has (the steps before it done)."""
    return _STEP[step][0](_Job(signature_files, workdir, settings)) if signature_files else 1


def run_part(signature_files: list[Path], workdir: Path, settings: Settings, step: str, part: int) -> None:
    """Run one part of one step, unless its marker says it is done; after the last step, write lsh.json."""
    marker = _marker(workdir, step, part)
    if marker.exists():
        return
    if not signature_files:  # nothing collected: nothing is a duplicate
        counts: dict[str, int] = {}
        if step == STEPS[-1][0]:
            with atomic_path(decisions_path(workdir)) as tmp:
                pq.write_table(DECISION_SCHEMA.empty_table(), tmp)
    else:
        job = _Job(signature_files, workdir, settings, part=f"{step}-{part:05d}")
        try:
            counts = _STEP[step][1](job, part)
        finally:
            job.release()
    write_json(marker, counts)
    if step == STEPS[-1][0]:
        write_json(workdir / "lsh.json", _summary(workdir, settings))


def run(signature_files: list[Path], workdir: Path, settings: Settings) -> dict[str, Any]:
    """Every step's parts in turn, here (the engine runs a step's parts in parallel instead); the summary."""
    for step, _, _ in STEPS:
        for part in range(parts(signature_files, workdir, settings, step)):
            run_part(signature_files, workdir, settings, step, part)
    return read_json(workdir / "lsh.json")


def _summary(workdir: Path, settings: Settings) -> dict[str, Any]:
    """The LSH scheme and each step's counts, summed over its parts."""
    summary: dict[str, Any] = {"bands": settings.bands, "rows": settings.rows, "threshold": settings.threshold,
                               "s_curve": lsh.s_curve(settings.bands, settings.rows)}
    for step, _, _ in STEPS:
        totals: dict[str, int] = {}
        for marker in sorted((workdir / "steps").glob(f"{step}-*.json")):
            for key, value in read_json(marker).items():
                totals[key] = totals.get(key, 0) + value
        summary[step] = totals
    return summary

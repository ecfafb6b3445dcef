"""The walk of `minhash_dedup`'s resolve: within each cluster, members best first; a member joins the first kept
document it is similar to, or is kept. Clusters are split into buckets (cluster mod n) of about two blocks of
shingle sets each, so a part holds one bucket at a time and never splits a cluster; buckets are independent parts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.corpora.atomic import AtomicParquetWriter
from refinery.pipelines.stages.neardup.setstore import Sets, SetStore, jaccard, read_sets

GROUP_SCHEMA = pa.schema([("ord", pa.int64()), ("kept_ord", pa.int64()), ("kept_id", pa.string()),
                          ("removed", pa.bool_())])
_SETS_SCHEMA = pa.schema([("ord", pa.int64()), ("shingles", pa.list_(pa.uint32()))])


def _bucket_file(workdir: Path, bucket: int) -> Path:
    return workdir / "members" / f"bucket-{bucket:05d}.parquet"


def member_buckets(workdir: Path, block_bytes: int) -> int:
    """Split the clustered documents' sets into buckets by cluster; return how many."""
    (workdir / "members").mkdir(exist_ok=True)
    store = SetStore(workdir / "sets")
    count = max(1, -(-store.bytes() // (2 * block_bytes)))
    clusters = pq.read_table(workdir / "clusters.parquet")
    ords, labels = clusters.column("ord").to_numpy(), clusters.column("cluster").to_numpy()
    writers = [AtomicParquetWriter(_bucket_file(workdir, k), _SETS_SCHEMA) for k in range(count)]
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
    return count


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
        return pa.table(list(zip(*out)), schema=GROUP_SCHEMA) if out else GROUP_SCHEMA.empty_table()


def walk_bucket(workdir: Path, bucket: int, buckets: int, threshold: float, verify: bool,
                writer: AtomicParquetWriter) -> None:
    """Walk the clusters of one bucket (members.parquet: clusters in order, members best first) into `writer`."""
    members = pq.ParquetFile(workdir / "members.parquet")
    walk = _Walk(threshold)
    if not verify:  # one bucket: every member joins its cluster's best
        for batch in members.iter_batches(batch_size=65536):
            writer.write(walk(pa.Table.from_batches([batch]), None))
        return
    mine = []
    for batch in members.iter_batches(batch_size=65536):
        table = pa.Table.from_batches([batch])
        mine.append(table.filter(pa.array(table.column("cluster").to_numpy() % buckets == bucket)))
    if mine:
        sets = Sets.from_table(read_sets(_bucket_file(workdir, bucket)))
        writer.write(walk(pa.concat_tables(mine), sets))

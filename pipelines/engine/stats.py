"""Per-stage counts: documents in, kept, removed by reason, text bytes and seconds.

Counters are summed per task, stored in the task's done-marker, and merged in task order at the end,
so the counts (not the timings) are the same whatever the number of workers.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def text_bytes(docs: pa.Table) -> int:
    """UTF-8 bytes of the `text` column."""
    if not docs.num_rows:
        return 0
    return int(pc.sum(pc.binary_length(docs.column("text"))).as_py() or 0)


def reason_category(reason: str) -> str:
    """'malformed_json: Expecting value at column 3' counts as 'malformed_json'."""
    return reason.split(":", 1)[0]


class StageCounter:
    def __init__(self) -> None:
        self.docs_in = self.kept = self.removed = self.quarantined = self.skipped = 0
        self.bytes_in = self.bytes_out = 0
        self.seconds = 0.0
        self.reasons: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    def add(self, docs_in: pa.Table, result: Any, seconds: float) -> None:
        """Count one batch through a stage (`result` is a StageResult)."""
        self.docs_in += docs_in.num_rows
        self.kept += result.kept.num_rows
        self.removed += result.removed.num_rows
        self.bytes_in += text_bytes(docs_in)
        self.bytes_out += text_bytes(result.kept)
        self.seconds += seconds
        if result.removed.num_rows:
            self.reasons.update(reason_category(r) for r in result.removed.column("reason").to_pylist())
        if result.counts:
            self.counts.update(result.counts)

    def add_kept(self, docs: pa.Table, seconds: float) -> None:
        """Count one batch through a stage that keeps every document as it is (a producer)."""
        self.docs_in += docs.num_rows
        self.kept += docs.num_rows
        self.bytes_in += text_bytes(docs)
        self.bytes_out = self.bytes_in
        self.seconds += seconds

    def add_read(self, batch: Any) -> None:
        """Count one reader batch (a ReadBatch): records read, documents made, quarantined, and skipped.

        Skipped records (not documents by design, e.g. WARC requests) are counted apart from `docs_in`,
        so read = kept + removed + quarantined still holds over documents.
        """
        self.docs_in += batch.records
        self.kept += batch.documents.num_rows
        self.quarantined += batch.quarantined.num_rows
        self.bytes_out += text_bytes(batch.documents)
        if batch.quarantined.num_rows:
            self.reasons.update(reason_category(r) for r in batch.quarantined.column("reason").to_pylist())
        for reason, count in batch.skipped.items():
            self.skipped += count
            self.reasons[f"skipped_{reason}"] += count

    def to_dict(self) -> dict[str, Any]:
        return {
            "docs_in": self.docs_in,
            "kept": self.kept,
            "removed": self.removed,
            "quarantined": self.quarantined,
            "skipped": self.skipped,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "seconds": self.seconds,
            "reasons": dict(self.reasons),
            "counts": dict(self.counts),
        }


def merge(dicts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum counter dicts (from to_dict) of many tasks."""
    total: dict[str, Any] = StageCounter().to_dict()
    tallies: dict[str, Counter[str]] = {"reasons": Counter(), "counts": Counter()}
    for d in dicts:
        for key, value in d.items():
            if key in tallies:
                tallies[key].update(value)
            else:
                total[key] += value
    for key, tally in tallies.items():
        total[key] = dict(sorted(tally.items()))
    return total

#!/usr/bin/env python3
"""paragraph_dedup: docs/s of its three steps, side by side with a plain-Python line counter (CCNet's idea).

    python tests/benchmarks/bench_paragraph_dedup.py [--repeat 3] [--data ../shared/data]

Text: the Common Crawl WET records of `warc/*.wet.gz` (menus and footers kept, as Common Crawl writes them), the
300 C4 pages of `text/c4_demo.jsonl` and the 20 CCNet documents of `text/cc_en_head-*.jsonl.gz`, copied
`--copies` times with the copy number prefixed to every line, so that no line repeats across copies and the
repeats are those of the real text. Ours: `signatures` (one batch), `resolve` (DuckDB, to Parquet), then
`load_decisions` + `apply`, in this process. The anchor: a `dict` from normalised line to the set of documents,
then the same rewrite, all in memory. Medians of `--repeat` rounds; both must remove the same lines.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.corpora.readers import plan_input, read_task
from refinery.pipelines.engine.segments import with_partitions
from refinery.pipelines.stages.paragraphs import ParagraphDedup, ParagraphDedupConfig

ROOT = Path(__file__).resolve().parents[2]


def _texts(data: Path) -> list[str]:
    texts = []
    for pattern in ("warc/*.wet.gz", "text/c4_demo.jsonl", "text/cc_en_head-*.jsonl.gz"):
        for task in plan_input(str(data / pattern), data, 1 << 30, None, None, {}):
            texts += [t for batch in read_task(task) for t in batch.documents.column("text").to_pylist()]
    return texts


def ours(texts: list[str], folder: Path) -> list[str]:
    stage = ParagraphDedup(ParagraphDedupConfig())
    docs, ordinals = pa.table({"text": texts}), pa.array(range(len(texts)), pa.int64())
    rows = with_partitions(stage.collect(docs, ordinals), stage.partition_column, 1)  # as the engine writes them
    pq.write_table(rows, folder / "part-00000.parquet")
    stage.finish_partition([folder / "part-00000.parquet"], folder, 0)
    decisions = stage.load_decisions(folder, 0, len(texts))
    return stage.apply(docs, ordinals, decisions).kept.column("text").to_pylist()


def plain(texts: list[str]) -> list[str]:
    key = lambda line: re.sub(r"[ \t\n\f\r]+", " ", line.lower()).strip()  # noqa: E731
    documents: dict[str, set[int]] = defaultdict(set)
    for n, text in enumerate(texts):
        for line in text.split("\n"):
            if len(key(line)) >= 10:
                documents[key(line)].add(n)
    return ["\n".join(line for line in text.split("\n") if len(documents.get(key(line), ())) < 3) for text in texts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    base = _texts(args.data)
    texts = ["\n".join(f"{c} {line}" for line in t.split("\n")) for c in range(args.copies) for t in base]
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            mine = ours(texts, Path(folder))
            times["ours"].append(time.perf_counter() - started)
        started = time.perf_counter()
        theirs = plain(texts)
        times["plain"].append(time.perf_counter() - started)
        assert mine == theirs, "the two disagree"
    ours_s, plain_s = statistics.median(times["ours"]), statistics.median(times["plain"])
    changed = sum(a != b for a, b in zip(texts, mine))
    print(f"{len(texts):,} docs, {megabytes:.1f} MB; lines removed from {changed:,} docs")
    print(f"ours  {ours_s:.2f} s  {len(texts) / ours_s:,.0f} docs/s  {megabytes / ours_s:.1f} MB/s")
    print(f"plain {plain_s:.2f} s  {len(texts) / plain_s:,.0f} docs/s  {megabytes / plain_s:.1f} MB/s  "
          f"(ours/plain speed {plain_s / ours_s:.2f}x)")


if __name__ == "__main__":
    main()

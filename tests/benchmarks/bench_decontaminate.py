#!/usr/bin/env python3
"""decontaminate: index build time and docs/s, side by side with a plain-Python set of 13-gram tuples.

    python tests/benchmarks/bench_decontaminate.py [--repeat 3] [--data ../shared/data]

Evaluation sets: every file under `evals/` (llm-foundry gauntlet JSONL and HellaSwag). Text: the 30 Wikipedia
articles of `text/wiki_demo.txt`, the 300 C4 pages of `text/c4_demo.jsonl` and the WikiText-2 validation lines
(at least 5 words), each in one process, one batch. The anchor is the textbook way (GPT-3's appendix,
lm-evaluation-harness' decontamination): Python's `re` for the same normalisation, a `set` of 13-word tuples of
the same passages, and a lookup of every 13-word window of a document. Medians of `--repeat` rounds.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import pyarrow as pa

from refinery.corpora.evalsets import eval_files, load_eval_set
from refinery.pipelines.stages.decontaminate import Decontaminate, DecontaminateConfig
from refinery.pipelines.stages.text.ngram_index import EvalIndex

ROOT = Path(__file__).resolve().parents[2]
_FOLD = re.compile(r"[^\w]+|_")
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff])")


def _words(text: str) -> list[str]:
    return _CJK.sub(r" \1 ", _FOLD.sub(" ", text.lower())).split()


def _python_index(items, n: int = 13) -> set[tuple[str, ...]]:
    grams: set[tuple[str, ...]] = set()
    for item in items:
        for passage in item.passages:
            words = _words(passage)
            grams.update(zip(*(words[i:] for i in range(n))))
    return grams


def _python_lookup(grams: set[tuple[str, ...]], texts: list[str], n: int = 13) -> int:
    return sum(any(g in grams for g in zip(*(w[i:] for i in range(n)))) for w in map(_words, texts))


def _median(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    data = args.data
    load_s, items = _median(lambda: [i for f in eval_files(data / "evals") for i in load_eval_set(f)], args.repeat)
    ours_s, index = _median(lambda: EvalIndex.build(items, 13, 20, 8, 10), args.repeat)
    theirs_s, grams = _median(lambda: _python_index(items), args.repeat)
    print(f"{len(items):,} items; reading the files {load_s:.2f} s; index: ours {ours_s:.2f} s "
          f"({sum(len(g.hashes) for g in index.groups.values()):,} n-grams), python set {theirs_s:.2f} s "
          f"({len(grams):,} 13-grams)")
    stage = Decontaminate(DecontaminateConfig(evals=[str(data / "evals")], action="flag"))
    assert stage.index.groups  # built once per process, as in a worker
    corpora = {
        "wiki_demo articles": [t for t in (data / "text/wiki_demo.txt").read_text().split("\n") if t.strip()],
        "c4_demo pages": [json.loads(line)["text"] for line in (data / "text/c4_demo.jsonl").open()],
        "wikitext-2 valid lines": [t for t in (data / "text/wikitext-2-valid.txt").read_text().split("\n")
                                   if len(t.split()) >= 5],
    }
    print("| text | docs | MB | ours docs/s | ours MB/s | python set docs/s | ratio | flagged (ours, set) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, texts in corpora.items():
        table = pa.table({"text": texts})
        megabytes = sum(len(t.encode()) for t in texts) / 1e6
        ours, kept = _median(lambda table=table: stage.process(table).kept, args.repeat)
        theirs, flagged = _median(lambda texts=texts: _python_lookup(grams, texts), args.repeat)
        ours_flagged = len(texts) - kept.column("contaminated_by").null_count
        print(f"| {name} | {len(texts):,} | {megabytes:.2f} | {len(texts) / ours:,.0f} | {megabytes / ours:.1f} | "
              f"{len(texts) / theirs:,.0f} | {theirs / ours:.1f}x | {ours_flagged}, {flagged} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The pii stage's throughput on real text, side by side with datatrove's PIIFormatter (the anchor).

    python tests/benchmarks/bench_pii.py --docs BENCH/docs.jsonl [--datatrove-python VENV/bin/python]
        [--repeat 3] [--data ../shared/data]

Inputs: the shared benchmark documents (../shared/bench/make_bench_docs.py: ~11,800 real documents of
1-3 KB, few with contact details), and web text dense in them: text/c4_demo.jsonl, text/cc_en_head-*.jsonl.gz
and warc/*.wet.gz (351 documents), copied 10 times. One process, one core (what each engine worker gets):
`Pii.process` in batches of 4,096, all kinds and email+ipv4 (datatrove's kinds: emails and public IPv4), and
datatrove 0.10's PIIFormatter.format over the same texts in a child process of the datatrove venv's Python.
Median of --repeat rounds; ratios are this stage over the anchor, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from refinery.corpora.readers import plan_input, read_task
from refinery.corpora.records import document_table
from refinery.pipelines.stages.pii import Pii, PiiConfig

ROOT = Path(__file__).resolve().parents[2]
BATCH_ROWS = 4096
ANCHOR = """
import json, sys, time
from datatrove.pipeline.formatters import PIIFormatter
texts = [json.loads(line)["text"] for line in open(sys.argv[1], encoding="utf-8")]
formatter = PIIFormatter()
times = []
for _ in range(int(sys.argv[2])):
    started = time.perf_counter()
    for text in texts:
        formatter.format(text)
    times.append(time.perf_counter() - started)
print(json.dumps(times))
"""


def web_texts(data: Path) -> list[str]:
    texts = []
    for pattern in ("text/c4_demo.jsonl", "text/cc_en_head-*.jsonl.gz", "warc/*.wet.gz"):
        for task in plan_input(str(data / pattern), Path("."), 1 << 30):
            for batch in read_task(task):
                texts += batch.documents.column("text").to_pylist()
    return texts * 10


def time_stage(texts: list[str], kinds: list[str], repeat: int) -> tuple[float, dict[str, int]]:
    stage = Pii(PiiConfig(kinds=kinds))
    batches = [document_table([str(i) for i in range(start, start + len(chunk))], chunk, "bench")
               for start in range(0, len(texts), BATCH_ROWS) for chunk in [texts[start:start + BATCH_ROWS]]]
    times, counts = [], {}
    for _ in range(repeat):
        started = time.perf_counter()
        counts = {}
        for batch in batches:
            for kind, n in stage.process(batch).counts.items():
                counts[kind] = counts.get(kind, 0) + n
        times.append(time.perf_counter() - started)
    return statistics.median(times), counts


def time_anchor(python: str, texts: list[str], repeat: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", encoding="utf-8") as file:
        file.writelines(json.dumps({"text": t}) + "\n" for t in texts)
        file.flush()
        out = subprocess.run([python, "-c", ANCHOR, file.name, str(repeat)], check=True, capture_output=True,
                             text=True).stdout
    return statistics.median(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=Path, required=True, help="make_bench_docs.py output (JSONL)")
    parser.add_argument("--datatrove-python", help="a Python with datatrove installed (the anchor); omit to skip")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    inputs = {"bench docs": [json.loads(line)["text"] for line in args.docs.open(encoding="utf-8")],
              "web text x10": web_texts(args.data)}
    for name, texts in inputs.items():
        megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
        print(f"{name}: {len(texts):,} docs, {megabytes:.1f} MB")
        anchor = time_anchor(args.datatrove_python, texts, args.repeat) if args.datatrove_python else None
        if anchor:
            print(f"  datatrove PIIFormatter (email, ipv4)  {len(texts) / anchor:>9,.0f} docs/s  "
                  f"{megabytes / anchor:6.2f} MB/s")
        for kinds in (["email", "ipv4"], ["email", "ipv6", "ipv4", "phone"]):
            seconds, counts = time_stage(texts, kinds, args.repeat)
            ratio = f"  {anchor / seconds:.2f}x datatrove" if anchor else ""
            print(f"  pii {'+'.join(kinds):<26} {len(texts) / seconds:>9,.0f} docs/s  {megabytes / seconds:6.2f} "
                  f"MB/s{ratio}  replaced {counts}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

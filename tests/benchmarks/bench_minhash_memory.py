#!/usr/bin/env python3
"""minhash_dedup at scale: the resolve step's peak memory against the size of all signatures, and runs under a
small `memory_limit`.

    python tests/benchmarks/bench_minhash_memory.py [--docs /tmp/refinery-bench/docs.jsonl] [--count 200000]
        [--limits 1GB,256MB,64MB] [--work /tmp/refinery-bench/minhash-memory]

Documents: the ~11,800 bench documents of ../shared/bench/make_bench_docs.py (real text, with their labelled
near-copies), plus COUNT documents each made of 3–8 (--paragraphs) real paragraphs (lines of ≥ 8 words) of those
documents drawn at random (seeded): every document is different, but they share paragraphs the way web pages share
boilerplate, so the buckets and candidate pairs are not empty.

1. `refinery run` of [minhash_dedup] with 2 workers and the first limit: wall time, docs/s, workers' peak RSS.
2. For each limit: the resolve step alone, in a fresh process (`MinhashDedup.resolve` over the signature files of
   run 1, its work files deleted first): seconds and peak RSS (getrusage), against the signatures' size on disk and
   in memory (Arrow), and the process's RSS after imports; the decisions must be identical for every limit.
3. The whole recipe again with the smallest limit, to show it completes.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# VmHWM, not getrusage: Linux carries ru_maxrss over exec, so a child would report its parent's peak.
RESOLVE_CHILD = """
import json, sys, time
from pathlib import Path
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.stages.minhash import MinhashDedup
def status(key):  # MB
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key + ":")) / 1024
recipe, workdir = load_recipe(sys.argv[1]), Path(sys.argv[2])
stage = MinhashDedup(recipe.stages[0].config)
baseline = status("VmRSS")
started = time.perf_counter()
stage.finish(sorted((workdir / "collected").glob("part-*.parquet")), workdir)
print(json.dumps({"seconds": time.perf_counter() - started, "baseline_rss_mb": baseline,
                  "peak_rss_mb": status("VmHWM")}))
"""


def build_docs(source: Path, target: Path, count: int, paragraphs: tuple[int, int], seed: int = 0) -> int:
    docs = [json.loads(line) for line in open(source, encoding="utf-8")]
    pool = [p for d in docs for p in d["text"].split("\n") if len(p.split()) >= 8]
    rng = random.Random(seed)
    with open(target, "w", encoding="utf-8") as out:
        for d in docs:
            out.write(json.dumps({"id": d["id"], "text": d["text"]}, ensure_ascii=False) + "\n")
        for i in range(count):
            text = "\n".join(rng.choice(pool) for _ in range(rng.randint(*paragraphs)))
            out.write(json.dumps({"id": f"mix/{i:07d}", "text": text}, ensure_ascii=False) + "\n")
    return len(docs) + count


def write_recipe(work: Path, name: str, docs: Path, limit: str) -> Path:
    recipe = work / f"{name}.yaml"
    recipe.write_text(json.dumps({"name": name, "inputs": [{"path": str(docs)}], "output": str(work / name),
                                  "stages": [{"minhash_dedup": {"memory_limit": limit}}]}))
    return recipe


def run_cli(recipe: Path) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "refinery.pipelines", "run", str(recipe), "--workers", "2", "--force",
                           "--quiet"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"run failed:\n{done.stderr[-3000:]}")
    return {"seconds": time.perf_counter() - started, "summary": done.stdout.strip().splitlines()[0]}


def signature_sizes(workdir: Path) -> dict:
    files = sorted((workdir / "collected").glob("part-*.parquet"))
    in_memory = bands = 0
    for path in files:  # one file at a time, so that measuring does not need the memory it measures
        table = pq.read_table(path)
        in_memory += table.nbytes
        bands += sum(table.column(c).nbytes for c in table.column_names if c.startswith("band_"))
    return {"files": len(files), "on_disk_mb": sum(p.stat().st_size for p in files) / 2**20,
            "in_memory_mb": in_memory / 2**20, "band_columns_mb": bands / 2**20}


def resolve_alone(recipe: Path, workdir: Path) -> dict:
    for path in workdir.iterdir():
        if path.name != "collected":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    done = subprocess.run([sys.executable, "-c", RESOLVE_CHILD, str(recipe), str(workdir)], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"resolve failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["lsh"] = json.loads((workdir / "lsh.json").read_text())
    result["decisions"] = pq.read_table(workdir / "decisions.parquet")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=Path("/tmp/refinery-bench/docs.jsonl"))
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--paragraphs", default="3,8", help="paragraphs per made-up document: fewest,most")
    parser.add_argument("--limits", default="1GB,256MB,64MB")
    parser.add_argument("--work", type=Path, default=Path("/tmp/refinery-bench/minhash-memory"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    limits = args.limits.split(",")
    docs = args.work / "docs.jsonl"
    low, high = (int(x) for x in args.paragraphs.split(","))
    total = build_docs(args.docs, docs, args.count, (low, high))
    print(f"{total:,} documents, {docs.stat().st_size / 2**20:.0f} MiB", flush=True)
    results: dict = {"command": " ".join(sys.argv), "docs": total, "jsonl_mb": docs.stat().st_size / 2**20}

    recipe = write_recipe(args.work, "run", docs, limits[0])
    results["run"] = run_cli(recipe)
    workdir = args.work / "run" / "work" / "minhash_dedup"
    markers = [json.loads(p.read_text()) for p in (args.work / "run/work/segment-0/done").glob("task-*.json")]
    results["run"]["docs_per_s"] = total / results["run"]["seconds"]
    results["run"]["worker_peak_rss_mb"] = max(m["worker_peak_rss_mb"] for m in markers)
    results["signatures"] = signature_sizes(workdir)
    print(json.dumps(results, indent=1), flush=True)

    first = None
    results["resolve"] = {}
    for limit in limits:
        resolve_recipe = write_recipe(args.work, f"resolve-{limit}", docs, limit)
        measured = resolve_alone(resolve_recipe, workdir)
        decisions = measured.pop("decisions")
        first = decisions if first is None else first
        measured["decisions_identical"] = decisions.equals(first)
        results["resolve"][limit] = measured
        print(limit, json.dumps({k: v for k, v in measured.items() if k != "lsh"}), flush=True)
    results["lsh"] = measured["lsh"]

    small = write_recipe(args.work, "small", docs, limits[-1])
    results["small_limit_run"] = {"memory_limit": limits[-1], **run_cli(small)}
    print(json.dumps(results["small_limit_run"]), flush=True)
    results["parent_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

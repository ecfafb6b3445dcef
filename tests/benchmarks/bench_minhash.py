#!/usr/bin/env python3
"""minhash_dedup against its anchors, in one run: speed beside datasketch and datatrove, accuracy against exact
Jaccard (the labelled pairs of make_bench_docs.py, and a brute-force all-pairs pass that finds what they miss).

    python tests/benchmarks/bench_minhash.py [--docs /tmp/refinery-bench/docs.jsonl] [--parts speed,accuracy]
        [--runs 3] [--datatrove-python /tmp/dtvenv/bin/python] [--work /tmp/refinery-bench/minhash]

The documents are ../shared/bench/make_bench_docs.py's (built if --docs is missing): ~11,800 real documents and
2,000 near-copies, with ground-truth pairs and their word-5-gram Jaccard (words = \\w+ of the lowercased text).

speed     raw text in memory → signatures, one core: our stage's `signatures` (batches of 4,096) and datasketch
          `MinHash.update_batch` (num_perm 128, word 5-grams; ../shared/bench/datatrove_baseline.py's own child, in
          a fresh process); the whole recipe (`refinery run`, read JSONL → signatures → resolve → write Parquet)
          with 1 and 2 workers; datatrove's four MinHash stages (2 tasks, 2 workers) once. Medians of --runs.
accuracy  the recipe with verify on and off: recall of labelled pairs with J ≥ 0.8 (both documents end in one
          cluster), precision of removals (the removed document's true Jaccard to the document it names ≥ 0.8),
          and datatrove_baseline's component measure (removal@θ) for comparison; then exact Jaccard of all pairs
          (sparse shingle × document matrix product) to find pairs the labels miss and our recall on them.
cjk       (not in the default parts) the table behind `cjk_ngram: 3`: see part_cjk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
BENCH = Path(os.environ.get("REFINERY_SHARED", ROOT.parent / "shared")) / "bench"
sys.path[:0] = [str(ROOT), str(BENCH)]

import datatrove_baseline as dtb  # noqa: E402  (the shared anchor scripts)
import make_bench_docs as mbd  # noqa: E402

from refinery.pipelines.engine.recipe import load_recipe  # noqa: E402
from refinery.pipelines.engine.run import run_recipe  # noqa: E402
from refinery.pipelines.stages.minhash import MinhashDedup, MinhashDedupConfig  # noqa: E402
from refinery.pipelines.stages.neardup.shingles import document_shingles  # noqa: E402

BATCH_ROWS = 4096


def load_docs(path: Path) -> pa.Table:
    ids, texts = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            ids.append(doc["id"])
            texts.append(doc["text"])
    return pa.table({"id": ids, "text": texts})


def our_signatures(docs: pa.Table, config: dict) -> float:
    """Seconds for the stage's `signatures` over all documents (after a warm-up batch)."""
    stage = MinhashDedup(MinhashDedupConfig(**config))
    stage.collect(docs.slice(0, 100), pa.array(range(100), pa.int64()))
    started = time.perf_counter()
    for lo in range(0, docs.num_rows, BATCH_ROWS):
        batch = docs.slice(lo, BATCH_ROWS)
        stage.collect(batch, pa.array(range(lo, lo + batch.num_rows), pa.int64()))
    return time.perf_counter() - started


def write_recipe(work: Path, name: str, docs: Path, stage: dict, task_size: str = "4MB") -> Path:
    recipe = work / f"{name}.yaml"
    recipe.write_text(json.dumps({"name": name, "inputs": [{"path": str(docs)}], "stages": [{"minhash_dedup": stage}],
                                  "output": str(work / name), "task_size": task_size}))
    return recipe


def cli_run(recipe: Path, workers: int) -> float:
    """Wall seconds of `refinery run --force` in a fresh process (start-up included)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "refinery.pipelines", "run", str(recipe), "--workers", str(workers),
                    "--force", "--quiet"], check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - started


def in_process_run(recipe: Path, workers: int) -> float:
    """Wall seconds of the engine's run in this process: start-up and imports excluded, as datatrove's `run_s`
    (its `executor.run()`) excludes them."""
    from refinery.pipelines.engine.recipe import load_recipe
    from refinery.pipelines.engine.run import run_recipe

    started = time.perf_counter()
    run_recipe(load_recipe(recipe), workers=workers, force=True, progress=False)
    return time.perf_counter() - started


def part_speed(args, docs_path: Path, work: Path, log) -> dict:
    docs = load_docs(docs_path)
    n = docs.num_rows
    out: dict = {"docs": n}
    ours = [our_signatures(docs, {}) for _ in range(args.runs)]
    out["ours_signatures"] = {"runs_s": ours, "docs_per_s": n / statistics.median(ours)}
    log(f"ours signatures: {out['ours_signatures']['docs_per_s']:.0f} docs/s (runs {[round(s, 2) for s in ours]})")
    ds = [dtb.run_child(sys.executable, "datasketch", {"docs": str(docs_path), "num_perm": 128, "processes": 1,
                                                       "work_root": str(work)}) for _ in range(args.runs)]
    out["datasketch_update_batch"] = dtb.summarize(ds, n, {"version": ds[0]["datasketch"]})
    log(f"datasketch update_batch: {out['datasketch_update_batch']['docs_per_s']:.0f} docs/s")
    for workers in (1, 2):
        recipe = write_recipe(work, f"speed-w{workers}", docs_path, {})
        walls = [cli_run(recipe, workers) for _ in range(args.runs)]
        out[f"recipe_workers_{workers}"] = {"runs_s": walls, "docs_per_s": n / statistics.median(walls)}
        log(f"recipe, {workers} worker(s): {n / statistics.median(walls):.0f} docs/s "
            f"(runs {[round(w, 2) for w in walls]})")
        engine = [in_process_run(recipe, workers) for _ in range(args.runs)]
        out[f"engine_workers_{workers}"] = {"runs_s": engine, "docs_per_s": n / statistics.median(engine)}
        log(f"engine in-process, {workers} worker(s): {n / statistics.median(engine):.0f} docs/s "
            f"(runs {[round(w, 2) for w in engine]})")
    if args.datatrove_python:
        out["datatrove"] = datatrove(args, docs_path, work, n, log)
    sig = out["ours_signatures"]["docs_per_s"]
    out["ratios"] = {"signatures_vs_datasketch": sig / out["datasketch_update_batch"]["docs_per_s"]}
    if "datatrove" in out:
        recipe_rate, dt = out["recipe_workers_2"]["docs_per_s"], out["datatrove"]
        out["ratios"]["recipe_2_workers_vs_datatrove_4_stages"] = recipe_rate / dt["docs_per_s"]
        out["ratios"]["engine_2_workers_vs_datatrove_4_stages"] = (out["engine_workers_2"]["docs_per_s"]
                                                                   / dt["docs_per_s"])
        out["ratios"]["signatures_vs_datatrove_signature_stage"] = sig / dt["signature_docs_per_s"]
    log(f"ratios: {out['ratios']}")
    return out


def datatrove(args, docs_path: Path, work: Path, n: int, log) -> dict:
    """datatrove 0.10's four MinHash stages, as datatrove_baseline.py --parts c runs them (2 tasks, 2 workers)."""
    shards = work / "dt-shards"
    shard_ids = dtb.shard_docs(str(docs_path), str(shards), 2)
    mh_work = work / "dt-minhash"
    seconds = {}
    for stage in ("signatures", "buckets", "cluster", "filter"):
        params = {"docs_dir": str(shards), "work": str(mh_work), "stage": stage, "tasks": 2, "workers": 2,
                  "work_root": str(work)}
        seconds[stage] = dtb.run_child(args.datatrove_python, "minhash", params)["run_s"]
    quality = dtb.dedup_quality(str(mh_work), shard_ids, 2, str(docs_path), str(docs_path.with_suffix(".pairs.jsonl")))
    total = sum(seconds.values())
    log(f"datatrove: {seconds} → {n / total:.0f} docs/s all four stages, signatures {n / seconds['signatures']:.0f}")
    return {"stage_seconds": seconds, "docs_per_s": n / total, "signature_docs_per_s": n / seconds["signatures"],
            "quality": quality}


def decisions(run_dir: Path) -> dict[str, str]:
    """removed id → the kept id it names."""
    table = pq.read_table(run_dir / "removed" / "minhash_dedup", columns=["id", "duplicate_of"])
    return dict(zip(table.column("id").to_pylist(), table.column("duplicate_of").to_pylist()))


def clusters(run_dir: Path) -> dict[str, int]:
    """id → its union-find cluster (documents in no candidate pair at the threshold are absent)."""
    import duckdb

    work = run_dir / "work" / "minhash_dedup"
    return dict(duckdb.sql(f"SELECT s.id, c.cluster FROM read_parquet('{work}/clusters.parquet') c JOIN "
                           f"read_parquet('{work}/collected/*.parquet') s USING (ord)").fetchall())


def own_jaccard(a: str, b: str) -> float:
    """Jaccard of two texts' shingle sets as the stage computes them (its normalisation and tokens)."""
    sets, _ = document_shingles(pa.array([a, b]), None, 5, 3)
    x, y = (set(sets.values[sets.offsets[i]:sets.offsets[i + 1]].tolist()) for i in (0, 1))
    return len(x & y) / max(1, len(x | y))


def quality(run_dir: Path, texts: dict[str, str], gt: list[dict]) -> dict:
    """Recall of labelled pairs at J ≥ 0.8: `detected` (one cluster, datatrove_baseline's measure) and `resolved`
    (at most one of the two is left); precision of removals against the document each names."""
    removed, cluster = decisions(run_dir), clusters(run_dir)
    shingles: dict[str, set] = {}

    def true_j(a: str, b: str) -> float:
        for x in (a, b):
            if x not in shingles:
                shingles[x] = mbd.shingles(texts[x])
        return mbd.jaccard(shingles[a], shingles[b])

    res: dict = {"removed": len(removed)}
    for kind in ("all", "synthetic", "natural", "incidental"):
        sel = [p for p in gt if p["jaccard"] >= 0.8 and kind in ("all", p["kind"])]
        detected = sum(p["a"] in cluster and cluster.get(p["a"]) == cluster.get(p["b"]) for p in sel)
        resolved = sum(p["a"] in removed or p["b"] in removed for p in sel)
        res[f"recall_j>=0.8_{kind}"] = {"pairs": len(sel), "detected": detected / max(1, len(sel)),
                                        "resolved": resolved / max(1, len(sel))}
    missed = [p for p in gt if p["jaccard"] >= 0.8 and not (p["a"] in removed or p["b"] in removed)]
    # A miss whose Jaccard under the stage's own tokens is below 0.8 is a difference of word definitions (the
    # labels split words at combining marks, as Python's \w does; the stage keeps marks inside words).
    res["missed_pairs"] = [{"a": p["a"], "b": p["b"], "labelled_j": p["jaccard"],
                            "stage_j": round(own_jaccard(texts[p["a"]], texts[p["b"]]), 4)} for p in missed]
    removed_j = [true_j(doc, kept) for doc, kept in removed.items()]
    for t in (0.5, 0.7, 0.8):
        res[f"precision_to_named_doc_j>={t}"] = sum(j >= t for j in removed_j) / max(1, len(removed_j))
    for theta in (0.7, 0.8):  # datatrove_baseline's measure: a labelled component of size s should lose s - 1
        comps = dtb.components([(p["a"], p["b"]) for p in gt if p["jaccard"] >= theta])
        should = sum(len(c) - 1 for c in comps)
        correct = sum(min(len(c & set(removed)), len(c) - 1) for c in comps)
        res[f"removal@{theta}"] = {"should_remove": should, "correct": correct,
                                   "precision": correct / max(1, len(removed)), "recall": correct / max(1, should)}
    return res


def all_pairs(texts: dict[str, str], min_j: float = 0.5) -> list[tuple[str, str, float]]:
    """Exact Jaccard of every pair of documents that share a shingle (sparse product of the shingle matrix)."""
    from scipy.sparse import csr_matrix

    ids = sorted(texts)
    vocab: dict[tuple, int] = {}
    rows, cols = [], []
    for i, doc in enumerate(ids):
        for s in mbd.shingles(texts[doc]):
            rows.append(i)
            cols.append(vocab.setdefault(s, len(vocab)))
    m = csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(len(ids), len(vocab)))
    sizes = np.asarray(m.sum(axis=1)).ravel()
    shared = (m @ m.T).tocoo()
    upper = shared.row < shared.col
    a, b, inter = shared.row[upper], shared.col[upper], shared.data[upper]
    j = inter / (sizes[a] + sizes[b] - inter)
    keep = j >= min_j
    return [(ids[x], ids[y], float(v)) for x, y, v in zip(a[keep], b[keep], j[keep])]


def part_accuracy(args, docs_path: Path, work: Path, log) -> dict:
    texts = {d["id"]: d["text"] for d in map(json.loads, open(docs_path, encoding="utf-8"))}
    gt = [json.loads(line) for line in open(docs_path.with_suffix(".pairs.jsonl"), encoding="utf-8")]
    out: dict = {}
    for name, stage in (("verify", {}), ("no_verify", {"verify": False})):
        recipe = write_recipe(work, f"accuracy-{name}", docs_path, stage)
        summary = run_recipe(load_recipe(recipe), workers=2, force=True, progress=False)
        out[name] = quality(summary.run_dir, texts, gt)
        out[name]["lsh"] = json.loads((summary.run_dir / "work/minhash_dedup/lsh.json").read_text())
        log(f"{name}: {json.dumps({k: v for k, v in out[name].items() if k not in ('lsh', 'missed_pairs')})}")
        missed = out[name]["missed_pairs"]
        below = sum(m["stage_j"] < 0.8 for m in missed)
        log(f"{name}: {len(missed)} labelled pairs at J ≥ 0.8 left unresolved, {below} of them below 0.8 under the "
            "stage's own tokens")
    started = time.perf_counter()
    brute = all_pairs(texts)
    labelled = {tuple(sorted((p["a"], p["b"]))) for p in gt}
    cluster = clusters(work / "accuracy-verify")
    high = [p for p in brute if p[2] >= 0.8]
    missing = [p for p in brute if tuple(sorted(p[:2])) not in labelled]
    out["brute_force"] = {
        "docs": len(texts), "seconds": time.perf_counter() - started, "pairs_j>=0.5": len(brute),
        "pairs_j>=0.8": len(high), "unlabelled_j>=0.5": len(missing),
        "unlabelled_j>=0.8": sum(p[2] >= 0.8 for p in missing),
        "unlabelled_examples": [list(p) for p in sorted(missing, key=lambda p: -p[2])[:5]],
        "recall_j>=0.8_detected": sum(a in cluster and cluster.get(a) == cluster.get(b) for a, b, _ in high)
        / max(1, len(high)),
    }
    log(f"brute force: {json.dumps({k: v for k, v in out['brute_force'].items() if k != 'unlabelled_examples'})}")
    return out


def part_cjk(args, docs_path: Path, work: Path, log) -> dict:
    """Character n-gram length for CJK text: how similar unrelated Chinese documents look (the highest Jaccard of
    each with any other, labelled near-copies excluded) against how similar a copy with 1% or 3% of its Han
    characters replaced stays, for n = 2..6, on the bench's Chinese poetry pieces."""
    import random

    from scipy.sparse import csr_matrix

    from refinery.pipelines.stages.neardup.shingles import char_tokens, normalise, shingle_sets

    docs = [d for d in map(json.loads, open(docs_path, encoding="utf-8"))
            if d["metadata"]["source"].startswith("chinese-poetry")]
    labelled = {tuple(sorted((p["a"], p["b"]))) for p in map(json.loads, open(docs_path.with_suffix(".pairs.jsonl")))}
    index = {d["id"]: i for i, d in enumerate(docs)}
    related = {(index[a], index[b]) for a, b in labelled if a in index and b in index}
    out = {"docs": len(docs)}
    for n in range(2, 7):
        sets = shingle_sets(char_tokens(normalise(pa.array([d["text"] for d in docs]))), n)
        sizes = sets.sizes()
        vocabulary, column = np.unique(sets.values, return_inverse=True)
        m = csr_matrix((np.ones(len(column), np.int32), column, sets.offsets), shape=(len(docs), len(vocabulary)))
        shared = (m @ m.T).tocoo()
        best = np.zeros(len(docs))
        for a, b, inter in zip(shared.row, shared.col, shared.data):
            if a != b and (min(a, b), max(a, b)) not in related:
                best[a] = max(best[a], inter / (sizes[a] + sizes[b] - inter))
        rng, edited = random.Random(n), {}
        for rate in (0.01, 0.03):
            js = []
            for d in rng.sample(docs, 200):
                chars = list(d["text"])
                han = [i for i, c in enumerate(chars) if "\u4e00" <= c <= "\u9fff"]
                for i in rng.sample(han, max(1, int(len(han) * rate))):
                    chars[i] = chars[rng.choice(han)]
                pair = shingle_sets(char_tokens(normalise(pa.array([d["text"], "".join(chars)]))), n)
                x, y = (set(pair.values[pair.offsets[k]:pair.offsets[k + 1]].tolist()) for k in (0, 1))
                js.append(len(x & y) / len(x | y))
            edited[f"{rate:.0%}"] = {"p10": float(np.percentile(js, 10)), "median": float(np.median(js))}
        out[n] = {"unrelated_max_j": {"median": float(np.median(best)), "p99": float(np.percentile(best, 99)),
                                      "max": float(best.max())}, "edited": edited}
        log(f"cjk n={n}: {json.dumps(out[n])}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=Path("/tmp/refinery-bench/docs.jsonl"))
    parser.add_argument("--parts", default="speed,accuracy")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--datatrove-python", default="/tmp/dtvenv/bin/python" if os.path.exists(
        "/tmp/dtvenv/bin/python") else None, help="the venv with datatrove 0.10 (omit to skip datatrove)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/refinery-bench/minhash"))
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if not args.docs.exists():
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(BENCH / "make_bench_docs.py"), str(args.docs)], check=True)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()

    def log(message: str) -> None:
        print(f"[{time.time() - started:6.0f}s] {message}", flush=True)

    results: dict = {"command": " ".join(sys.argv), "cpus": os.cpu_count()}
    for part in args.parts.split(","):
        parts = {"speed": part_speed, "accuracy": part_accuracy, "cjk": part_cjk}
        results[part] = parts[part](args, args.docs, args.work, log)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

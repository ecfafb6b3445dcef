#!/usr/bin/env python3
"""The extract stage: snippet precision/recall/F1 on trafilatura-eval and pages/s, per mode; optionally side by
side with datatrove (WarcReader → Trafilatura) on the same WARC.

    python tests/benchmarks/bench_extract.py [--modes fast,balanced,precision,recall,resiliparse] [--repeat 3]
        [--workers 1,2] [--datatrove-python /tmp/dtvenv/bin/python] [--warc-modes balanced,fast] [--warc-repeat 3]
        [--identical] [--work DIR]

Ground truth: `evaldata.json` of ../shared/data/extraction/trafilatura-eval names, per URL, a page file (in
pages/ or cache/: 990 pages) and snippets that must (`with`) and must not (`without`) appear in the text.
Counted as upstream's tests/comparison.py does: a `with` snippet found is a true positive, missed a false
negative; a `without` snippet found is a false positive, absent a true negative; a page with no output misses
all its `with` snippets. Two matchings: raw substring (upstream's comparison.py) and with whitespace runs
collapsed on both sides (the datatrove baseline script reports both; its 0.914 is the latter).

Throughput, per mode (`resiliparse` stands for `extract: {engine: resiliparse}`):
  1 core      `Extract.process` in this process on one table of every page (bytes decoded as trafilatura does):
              CPU time, with the trafilatura speed-ups and, alternating, without (stock); the texts must match
  N workers   `refinery run --workers N` as a subprocess on a JSONL of {id, url, text: html} (no content_type
              column: the stage treats text starting with `<` as HTML), cut into 8 MB tasks; start-up included
Side by side (with --datatrove-python): the WARC of make_bench_warc.py (--with-cache --repeat R --shards 2, as
the datatrove baseline builds it) through `refinery run` (warc → extract) and through datatrove 0.10's
WarcReader → Trafilatura() → JsonlWriter (tasks=2, workers=2), one after the other, the order rotating by
round, the load average recorded after each run; F1 on copy 0 of each page. Machines are noisy: compare
medians and ratios, never a lone absolute time.
--identical: every page of the bench WARC, read by Refinery's reader, through every trafilatura mode with and
without the speed-ups (pipelines/stages/web/speedups.py): texts, titles and removals must be byte-identical.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import shutil
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from trafilatura.utils import decode_file

from refinery.corpora.records import document_table
from refinery.pipelines.stages.extract import Extract, ExtractConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from process_cpu import Timed, run_timed  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
EVAL = SHARED / "data" / "extraction" / "trafilatura-eval"
MAKE_WARC = SHARED / "bench" / "make_bench_warc.py"
MODES = ["fast", "balanced", "precision", "recall"]
ENGINES = ["resiliparse"]  # named in --modes / --warc-modes like a mode: `extract: {engine: resiliparse}`


def stage_config(mode: str) -> ExtractConfig:
    return ExtractConfig(engine=mode) if mode in ENGINES else ExtractConfig(mode=mode)


def recipe_stage(mode: str) -> str:
    return f"extract: {{engine: {mode}}}" if mode in ENGINES else f"extract: {{mode: {mode}}}"


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())

DATATROVE_CHILD = """
import json, sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.readers import WarcReader
from datatrove.pipeline.writers import JsonlWriter
warc_dir, out_dir, log_dir = sys.argv[1:4]
pipeline = [WarcReader(warc_dir, glob_pattern="*.warc.gz"), Trafilatura(), JsonlWriter(out_dir)]
executor = LocalPipelineExecutor(pipeline=pipeline, tasks=2, workers=2, logging_dir=log_dir)
started = time.perf_counter()
executor.run()
print(json.dumps({"run_s": time.perf_counter() - started}))
"""


@dataclass(frozen=True)
class EvalPage:
    url: str
    html: str
    with_snippets: list[str]
    without_snippets: list[str]


def load_pages(folder: Path) -> list[EvalPage]:
    """Every page of evaldata.json, decoded from bytes the way trafilatura itself decodes them."""
    evaldata = json.loads((folder / "evaldata.json").read_text(encoding="utf-8"))
    pages = []
    for url, item in evaldata.items():
        candidates = [folder / sub / f"{item['file']}.gz" for sub in ("pages", "cache")]
        path = next(p for p in candidates if p.exists())
        html = decode_file(gzip.decompress(path.read_bytes()))
        pages.append(EvalPage(url, html, item["with"], item["without"]))
    return pages


def collapse_whitespace(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def score(pages: list[EvalPage], texts: dict[str, str]) -> dict[str, dict[str, float]]:
    """Snippet precision/recall/F1 per matching (`raw`, `ws`); `texts` maps url → extracted text."""
    results = {}
    for matching, norm in (("raw", lambda s: s), ("ws", collapse_whitespace)):
        tp = fp = fn = 0
        for page in pages:
            text = norm(texts.get(page.url) or "")
            found = [bool(text) and norm(s) in text for s in page.with_snippets]
            tp, fn = tp + sum(found), fn + len(found) - sum(found)
            fp += sum(bool(text) and norm(s) in text for s in page.without_snippets)
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        f1 = 2 * precision * recall / (precision + recall)
        results[matching] = {"precision": precision, "recall": recall, "f1": f1}
    return results


def in_process(pages: list[EvalPage], mode: str, stock: bool = False) -> tuple[float, dict[str, str], int]:
    """(CPU seconds, url → text, pages removed) for one pass of the stage over every page, in this process;
    `stock`: with trafilatura as released (its speed-ups uninstalled for the pass)."""
    from refinery.pipelines.stages.web import speedups

    table = document_table([f"page-{i}" for i in range(len(pages))], [p.html for p in pages], "trafilatura-eval",
                           [p.url for p in pages])
    stage = Extract(stage_config(mode))
    with speedups.stock_trafilatura() if stock else contextlib.nullcontext():
        started = time.process_time()
        kept, removed, _ = stage.process(table)
        elapsed = time.process_time() - started
    return elapsed, dict(zip(kept.column("url").to_pylist(), kept.column("text").to_pylist())), removed.num_rows


def write_recipe(path: Path, inputs: list[str], mode: str, output: Path, fmt: str | None = None) -> None:
    lines = [f"name: bench-extract-{mode}", "inputs:"]
    for item in inputs:
        lines += [f"  - path: {item}"] + ([f"    format: {fmt}"] if fmt else [])
    lines += ["stages:", f"  - {recipe_stage(mode)}", "task_size: 8MB", f"output: {output}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def refinery_command() -> list[str]:
    # The console script of this interpreter (a version manager's shim on PATH would add its own start-up).
    beside = Path(sys.executable).parent / "refinery"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "refinery.pipelines"]


def run_refinery(recipe: Path, workers: int) -> Timed:
    return run_timed([*refinery_command(), "run", str(recipe), "--workers", str(workers), "--force", "--quiet"])


def refinery_texts(run_dir: Path) -> dict[str, str]:
    texts = {}
    for part in sorted((run_dir / "data").glob("part-*.parquet")):
        table = pq.read_table(part, columns=["url", "text"])
        texts.update(zip(table.column("url").to_pylist(), table.column("text").to_pylist()))
    return texts


def fmt_quality(quality: dict[str, dict[str, float]]) -> str:
    ws, raw = quality["ws"], quality["raw"]
    return f"{ws['precision']:.3f} {ws['recall']:.3f} {ws['f1']:.3f} (raw F1 {raw['f1']:.3f})"


def bench_modes(pages: list[EvalPage], args: argparse.Namespace) -> dict:
    """Quality and 1-core pages/s in-process, then pages/s through the engine, per mode."""
    jsonl = args.work / "pages.jsonl"
    with open(jsonl, "w", encoding="utf-8") as out:
        for i, page in enumerate(pages):
            out.write(json.dumps({"id": f"page-{i}", "url": page.url, "text": page.html}, ensure_ascii=False) + "\n")
    results: dict[str, dict] = {mode: defaultdict(list) for mode in args.modes}
    for round_ in range(args.repeat):
        order = args.modes[round_ % len(args.modes):] + args.modes[: round_ % len(args.modes)]
        for mode in order:
            res = results[mode]
            variants = [False] if mode in ENGINES else [False, True] if round_ % 2 == 0 else [True, False]
            for stock in variants:  # stock: trafilatura as released, alternating first and second by round
                seconds, texts, res["removed"] = in_process(pages, mode, stock)
                res["stock_in_process_s" if stock else "in_process_s"].append(seconds)
                if stock:
                    assert texts == res["texts"], f"{mode}: the speed-ups changed the text"
                else:
                    res["texts"] = texts
            res["quality"] = score(pages, res["texts"])
            recipe, run_dir = args.work / f"jsonl-{mode}.yaml", args.work / "runs" / f"jsonl-{mode}"
            write_recipe(recipe, [str(jsonl)], mode, run_dir)
            for workers in args.workers:
                run = run_refinery(recipe, workers)
                res[f"workers_{workers}_s"].append(run.seconds)
                res[f"workers_{workers}_cpu_s"].append(run.cpu_seconds)
                assert score(pages, refinery_texts(run_dir)) == res["quality"], "the engine and the stage disagree"
            stock_s = f" (stock {res['stock_in_process_s'][-1]:.1f})" if res["stock_in_process_s"] else ""
            print(f"  round {round_ + 1} {mode:<11} in-process CPU {res['in_process_s'][-1]:5.1f} s{stock_s}, "
                  + ", ".join(
                f"{w} workers {res[f'workers_{w}_s'][-1]:6.1f} s (CPU {res[f'workers_{w}_cpu_s'][-1]:5.1f} s)"
                for w in args.workers) + f", load {load()}", flush=True)

    print(f"\n{len(pages)} pages. P/R/F1 with whitespace collapsed; medians of {args.repeat} rounds: 1 core = pages "
          "per CPU second of Extract.process in this process (stock trafilatura -> with the speed-ups); N workers = "
          "pages/s of `refinery run` and, in brackets, pages per CPU second of the whole run")
    print(f"{'mode':<12} {'precision recall F1':<36} {'1 core':>14} " + " ".join(f"{f'{w} workers':>16}"
                                                                                for w in args.workers))
    for mode, res in results.items():
        res.pop("texts")
        res["pages_per_s"] = {"in_process": len(pages) / statistics.median(res["in_process_s"])}
        one_core = f"{res['pages_per_s']['in_process']:.1f}"
        if res["stock_in_process_s"]:
            res["pages_per_s"]["stock_in_process"] = len(pages) / statistics.median(res["stock_in_process_s"])
            one_core = f"{res['pages_per_s']['stock_in_process']:.1f} -> {one_core}"
        cells = []
        for w in args.workers:
            rate, per_cpu = (len(pages) / statistics.median(res[f"workers_{w}{unit}"]) for unit in ("_s", "_cpu_s"))
            res["pages_per_s"][f"workers_{w}"], res["pages_per_s"][f"workers_{w}_per_cpu_s"] = rate, per_cpu
            cells.append(f"{rate:7.1f} ({per_cpu:5.1f})")
        print(f"{mode:<12} {fmt_quality(res['quality']):<36} {one_core:>14} "
              + " ".join(f"{cell:>16}" for cell in cells))
    return results


def datatrove_texts(out_dir: Path, original_url) -> dict[str, str]:
    texts = {}
    for path in sorted(out_dir.rglob("*.jsonl*")):
        with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")) as f:
            for line in f:
                doc = json.loads(line)
                url, copy = original_url(doc["metadata"]["url"])
                if copy == 0:
                    texts[url] = doc["text"]
    return texts


def bench_warc(pages: list[EvalPage], args: argparse.Namespace) -> dict:
    """refinery (warc → extract, 2 workers) in each of --warc-modes and datatrove (tasks=2, workers=2) on the same
    WARC files, one after the other, the order rotating by round; ratios to datatrove of medians and per round."""
    sys.path.insert(0, str(MAKE_WARC.parent))
    from make_bench_warc import original_url, warc_url

    warc_dir, records = build_warc(args, args.warc_repeat)
    by_warc_url = {warc_url(p.url): p for p in pages}
    scored = [EvalPage(warc_url(p.url), "", p.with_snippets, p.without_snippets) for p in by_warc_url.values()]
    recipes = {}
    for mode in args.warc_modes:
        recipe, run_dir = args.work / f"warc-{mode}.yaml", args.work / "runs" / f"warc-{mode}"
        write_recipe(recipe, [str(warc_dir / "*.warc.gz")], mode, run_dir, fmt="warc")
        recipes[f"refinery {mode}"] = (recipe, run_dir)
    dt_out, dt_logs = args.work / "datatrove-out", args.work / "datatrove-logs"
    names = [*recipes, "datatrove"]
    runs: dict[str, list[Timed]] = {name: [] for name in names}
    loads: list[str] = []
    for round_ in range(args.repeat):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            if name in recipes:
                runs[name].append(run_refinery(recipes[name][0], 2))
            else:
                for folder in (dt_out, dt_logs):
                    shutil.rmtree(folder, ignore_errors=True)
                runs["datatrove"].append(run_timed([args.datatrove_python, "-c", DATATROVE_CHILD, str(warc_dir),
                                                    str(dt_out), str(dt_logs)]))
            last = runs[name][-1]
            loads.append(load())
            print(f"  round {round_ + 1} {name:<22} {last.seconds:6.1f} s, CPU {last.cpu_seconds:6.1f} s, load "
                  f"{loads[-1]}", flush=True)
    quality = {name: score(scored, {original_url(u)[0]: t for u, t in refinery_texts(run_dir).items()
                                    if original_url(u)[1] == 0}) for name, (_, run_dir) in recipes.items()}
    quality["datatrove"] = score(scored, datatrove_texts(dt_out, original_url))
    rate = {name: records / statistics.median(r.seconds for r in rs) for name, rs in runs.items()}
    per_cpu = {name: records / statistics.median(r.cpu_seconds for r in rs) for name, rs in runs.items()}
    executor_s = statistics.median(json.loads(r.stdout.strip().splitlines()[-1])["run_s"] for r in runs["datatrove"])
    print(f"\nWARC: {records} records ({len(scored)} scored pages), 2 workers, medians of {args.repeat} rounds; "
          f"whole processes (start-up included); load average (1/5/15 min) after each run: {', '.join(loads)}")
    print(f"datatrove (Trafilatura()): {rate['datatrove']:.1f} pages/s ({records / executor_s:.1f} in "
          f"executor.run()), {per_cpu['datatrove']:.1f} pages per CPU s, P/R/F1 {fmt_quality(quality['datatrove'])}")
    ratios = {}
    for name in recipes:
        per_round = [d.seconds / r.seconds for r, d in zip(runs[name], runs["datatrove"])]
        cpu_round = [d.cpu_seconds / r.cpu_seconds for r, d in zip(runs[name], runs["datatrove"])]
        ratios[name] = {"pages_per_s": rate[name] / rate["datatrove"], "per_round": per_round,
                        "pages_per_cpu_s": per_cpu[name] / per_cpu["datatrove"], "cpu_per_round": cpu_round}
        print(f"{name:<22}: {rate[name]:.1f} pages/s, {per_cpu[name]:.1f} pages per CPU s, P/R/F1 "
              f"{fmt_quality(quality[name])}; vs datatrove {ratios[name]['pages_per_s']:.2f}x pages/s (rounds "
              f"{', '.join(f'{x:.2f}' for x in per_round)}), {ratios[name]['pages_per_cpu_s']:.2f}x pages per CPU s "
              f"(rounds {', '.join(f'{x:.2f}' for x in cpu_round)}); target >= 2x")
    return {"records": records, "runs": {name: [r._replace(stdout="") for r in rs] for name, rs in runs.items()},
            "loads": loads, "pages_per_s": rate, "pages_per_cpu_s": per_cpu, "quality": quality, "ratios": ratios}


def build_warc(args: argparse.Namespace, repeat: int) -> tuple[Path, int]:
    """make_bench_warc.py --with-cache --repeat R --shards 2 (as the datatrove baseline builds it): (folder, records).
    It needs warcio, which the datatrove venv has (Refinery itself reads WARCs with FastWARC)."""
    warc_dir = args.work / f"warc-{repeat}"
    shutil.rmtree(warc_dir, ignore_errors=True)
    built = run_timed([args.warc_python or args.datatrove_python or sys.executable, str(MAKE_WARC),
                       str(warc_dir / "pages.warc.gz"), "--with-cache", "--repeat", str(repeat), "--shards", "2"])
    return warc_dir, json.loads(built.stdout)["records"]


def check_identical(args: argparse.Namespace) -> dict:
    """Every page of the bench WARC (read by Refinery's reader, as a run reads it) through every mode, with
    and without the trafilatura speed-ups: the texts, titles and removals must be byte-identical."""
    from refinery.corpora.readers.base import ReadTask
    from refinery.corpora.readers.warc import WarcReader
    from refinery.pipelines.stages.web import speedups

    warc_dir, _ = build_warc(args, 1)
    tables = [batch.documents for path in sorted(warc_dir.glob("*.warc.gz"))
              for batch in WarcReader().read(ReadTask("warc", str(path), path.name))]
    results = {}
    for mode in [m for m in args.modes if m not in ENGINES]:
        stage = Extract(ExtractConfig(mode=mode))
        outputs, seconds = {}, {}
        for name in ("stock", "speedups"):
            started, outputs[name] = time.process_time(), []
            for table in tables:
                if name == "stock":
                    with speedups.stock_trafilatura():
                        kept, removed, _ = stage.process(table)
                else:
                    kept, removed, _ = stage.process(table)
                outputs[name].append((kept.to_pylist(), removed.to_pylist()))
            seconds[name] = time.process_time() - started
        pages = sum(t.num_rows for t in tables)
        same = outputs["stock"] == outputs["speedups"]
        results[mode] = {"pages": pages, "identical": same, "cpu_s": seconds}
        print(f"  {mode:<9} {pages} pages of the WARC: output {'byte-identical' if same else 'DIFFERS'}; CPU "
              f"{seconds['stock']:.1f} s stock, {seconds['speedups']:.1f} s with the speed-ups", flush=True)
        if not same:
            raise SystemExit(f"the speed-ups changed the output of mode {mode}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated modes (default {','.join(MODES)})")
    parser.add_argument("--workers", default="1,2", help="worker counts for the engine runs (default 1,2)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported (default 3)")
    parser.add_argument("--data", type=Path, default=EVAL, help="the trafilatura-eval folder")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench" / "extract",
                        help="folder for inputs and outputs (default out/bench/extract, git-ignored)")
    parser.add_argument("--skip-modes", action="store_true", help="only the WARC side by side")
    parser.add_argument("--datatrove-python", help="python of a venv with datatrove: run the WARC side by side")
    parser.add_argument("--warc-repeat", type=int, default=3, help="copies of every page in the WARC (default 3)")
    parser.add_argument("--warc-modes", default="balanced,fast",
                        help="comma-separated extract modes (or engines) of refinery in the side by side")
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    parser.add_argument("--identical", action="store_true",
                        help="check that every page of the bench WARC extracts byte-identically with and without "
                        "the trafilatura speed-ups, in every mode of --modes")
    parser.add_argument("--warc-python", help="python with warcio for make_bench_warc.py (default: "
                        "--datatrove-python, else this one)")
    args = parser.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    args.workers = [int(w) for w in args.workers.split(",") if w]
    args.warc_modes = [m for m in args.warc_modes.split(",") if m]
    if unknown := set(args.modes + args.warc_modes) - set(MODES + ENGINES):
        parser.error(f"unknown modes {sorted(unknown)}: use {MODES + ENGINES}")
    args.work.mkdir(parents=True, exist_ok=True)

    pages = load_pages(args.data)
    results = {}
    if args.identical:
        results["identical"] = check_identical(args)
    if not args.skip_modes:
        results["modes"] = bench_modes(pages, args)
    if args.datatrove_python:
        results["warc"] = bench_warc(pages, args)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

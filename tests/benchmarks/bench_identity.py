#!/usr/bin/env python3
"""Side-by-side benchmark: the identity recipe (JSONL → Parquet, no stages) against plain pyarrow.

    python tests/benchmarks/bench_identity.py [--workers 2] [--repeat 3] [--scale 6] [--files 4]

Input: the ~11,800 real documents of shared/bench/make_bench_docs.py (deterministic, seeded), concatenated
`--scale` times and cut at line boundaries into `--files` JSONL files (about 27 MB per copy).

Each round runs, one after the other, in an order that rotates between rounds:
  pyarrow         `pyarrow.json.read_json` of every file + `pyarrow.parquet.write_table` with Refinery's
                  compression (pipelines.storage.PARQUET_OPTIONS), in this process (pyarrow's own threads)
  pyarrow-def     the same with pyarrow's default Parquet options (snappy), for reference
  pyarrow-proc    the same as `pyarrow`, as a `python -c` process (pays start-up and imports like a CLI)
  refinery        `refinery run RECIPE --workers N --force --quiet` as a subprocess (interpreter start-up,
                  planning, worker spawn, manifest and stats included)
  in-process      `pipelines.engine.run_recipe` called from this process (no interpreter start-up)
  start-up        `refinery run` of two one-line files: the fixed cost of a run
  1core-pyarrow   one task's byte range (the first of the first file), pyarrow with use_threads=False
  1core-refinery  the same task through Refinery's reader and Parquet writer: per-byte cost, one core each
Reported: median wall time, MB/s (input JSONL bytes), docs/s, and refinery / pyarrow throughput ratios.
Every contender's row count is checked; nothing may be quarantined.
Machines are noisy: compare the ratios, never a lone absolute time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.json as pj
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
MAKE_DOCS = ROOT.parent / "shared" / "bench" / "make_bench_docs.py"


def build_inputs(work: Path, scale: int, files: int, make_docs: Path) -> tuple[list[Path], int, int]:
    """The benchmark JSONL files (rebuilt only when missing); returns (paths, total bytes, total lines)."""
    source = work / "source" / "docs.jsonl"
    if not source.exists():
        source.parent.mkdir(parents=True, exist_ok=True)
        print(f"building {source} with {make_docs} ...", flush=True)
        subprocess.run([sys.executable, str(make_docs), str(source)], check=True, stdout=subprocess.DEVNULL)
    lines = source.read_bytes().splitlines(keepends=True)
    inputs = work / f"inputs-x{scale}-f{files}"
    paths = [inputs / f"docs-{i:02d}.jsonl" for i in range(files)]
    total_lines = len(lines) * scale
    if not all(p.exists() for p in paths):
        inputs.mkdir(parents=True, exist_ok=True)
        per_file = -(-total_lines // files)
        for i, path in enumerate(paths):
            first, last = i * per_file, min((i + 1) * per_file, total_lines)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as out:
                out.writelines(lines[j % len(lines)] for j in range(first, last))
            os.replace(tmp, path)
    return paths, sum(p.stat().st_size for p in paths), total_lines


def run_pyarrow(paths: list[Path], out: Path, options: dict) -> int:
    out.mkdir(parents=True, exist_ok=True)
    rows = 0
    for i, path in enumerate(paths):
        table = pj.read_json(path)
        pq.write_table(table, out / f"part-{i:05d}.parquet", **options)
        rows += table.num_rows
    return rows


# The same plain pyarrow job as a process of its own, so that it pays interpreter start-up and imports as
# `refinery run` does: python -c PYARROW_PROCESS OUT_DIR OPTIONS_JSON FILE...
PYARROW_PROCESS = """
import json, sys
import pyarrow.json as pj, pyarrow.parquet as pq
out, options, paths = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
for i, path in enumerate(paths):
    pq.write_table(pj.read_json(path), f"{out}/part-{i:05d}.parquet", **options)
"""


def write_recipe(paths: list[Path], out: Path, recipe: Path) -> None:
    inputs = "\n".join(f"  - path: {p}" for p in paths)
    # task_size is the default, written out so the benchmark says how its ~40 MB files are cut (two tasks each).
    recipe.write_text(f"name: bench-identity\ninputs:\n{inputs}\nstages: []\ntask_size: 32MB\noutput: {out}\n")


def refinery_rows(run_dir: Path) -> tuple[int, int]:
    """(kept rows in data/, quarantined rows) of a finished run."""
    kept = sum(pq.ParquetFile(p).metadata.num_rows for p in (run_dir / "data").glob("part-*.parquet"))
    quarantined = sum(pq.ParquetFile(p).metadata.num_rows for p in (run_dir / "quarantine").glob("part-*.parquet"))
    return kept, quarantined


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="Refinery worker processes (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported (default 3)")
    parser.add_argument("--scale", type=int, default=6, help="copies of the ~27 MB document set (default 6)")
    parser.add_argument("--files", type=int, default=4, help="input files the copies are cut into (default 4)")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench" / "identity",
                        help="folder for inputs and outputs (default out/bench/identity, git-ignored)")
    parser.add_argument("--make-docs", type=Path, default=MAKE_DOCS, help="path of make_bench_docs.py")
    parser.add_argument("--skip-in-process", action="store_true", help="do not time run_recipe in-process")
    args = parser.parse_args()

    from refinery.corpora.atomic import PARQUET_OPTIONS
    from refinery.pipelines.engine.recipe import load_recipe
    from refinery.pipelines.engine.run import run_recipe

    paths, total_bytes, total_lines = build_inputs(args.work, args.scale, args.files, args.make_docs)
    mb = total_bytes / 1e6
    print(f"input: {len(paths)} files, {mb:.1f} MB, {total_lines:,} docs ({args.scale} copies); "
          f"cpus: {os.cpu_count()}; workers: {args.workers}; Parquet options: {PARQUET_OPTIONS}", flush=True)

    runs = args.work / "runs"
    recipe = args.work / "identity.yaml"
    write_recipe(paths, runs / "refinery", recipe)
    # The console script of this interpreter (a version manager's shim on PATH would add its own start-up).
    beside = Path(sys.executable).parent / "refinery"
    command = [str(beside)] if beside.exists() else [sys.executable, "-m", "refinery.pipelines"]

    def cli(recipe_path: Path) -> list[str]:
        return [*command, "run", str(recipe_path), "--workers", str(args.workers), "--force", "--quiet"]

    def pyarrow_ours() -> int:
        return run_pyarrow(paths, runs / "pyarrow", PARQUET_OPTIONS)

    def pyarrow_process() -> int:
        out = runs / "pyarrow-proc"
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", PYARROW_PROCESS, str(out), json.dumps(PARQUET_OPTIONS), *map(str, paths)],
                       check=True)
        return sum(pq.ParquetFile(p).metadata.num_rows for p in out.glob("part-*.parquet"))

    def pyarrow_default() -> int:
        return run_pyarrow(paths, runs / "pyarrow-default", {})

    def refinery_cli() -> int:
        subprocess.run(cli(recipe), check=True, stdout=subprocess.DEVNULL)
        kept, quarantined = refinery_rows(runs / "refinery")
        assert quarantined == 0, f"{quarantined} records quarantined"
        return kept

    # The fixed cost of a run (interpreter start-up, imports, spawning the workers, manifest and stats),
    # measured on two one-line files so that the pool starts as it does for the real input.
    tiny = [args.work / "tiny" / f"tiny-{i}.jsonl" for i in range(2)]
    for path in tiny:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(paths[0].open("rb").readline())
    tiny_recipe = args.work / "tiny.yaml"
    write_recipe(tiny, runs / "tiny", tiny_recipe)

    def refinery_tiny() -> int:
        subprocess.run(cli(tiny_recipe), check=True, stdout=subprocess.DEVNULL)
        return refinery_rows(runs / "tiny")[0]

    # One task on one core: the first byte range of the first file, read and written in this process (pyarrow
    # with use_threads=False): the per-byte cost of each side, without start-up, pools or other processes.
    from refinery.corpora.atomic import AtomicParquetWriter
    from refinery.corpora.readers import plan_input, read_task
    from refinery.corpora.records import DOCUMENT_SCHEMA

    task = plan_input(str(paths[0]), ROOT, load_recipe(recipe).recipe.task_size)[0]
    with open(paths[0], "rb") as stream:
        chunk = stream.read(task.end) if task.end is not None else stream.read()
        if not chunk.endswith(b"\n"):
            chunk += stream.readline()  # the line that starts before the range's end belongs to it
    chunk_lines = chunk.count(b"\n")

    def one_core_pyarrow() -> int:
        table = pj.read_json(io.BytesIO(chunk), read_options=pj.ReadOptions(use_threads=False))
        (runs / "1core-pyarrow").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, runs / "1core-pyarrow" / "part.parquet", **PARQUET_OPTIONS)
        return table.num_rows

    def one_core_refinery() -> int:
        writer, rows = AtomicParquetWriter(runs / "1core-refinery" / "part.parquet", DOCUMENT_SCHEMA), 0
        for batch in read_task(task):
            writer.write(batch.documents)
            rows += batch.documents.num_rows
        writer.close()
        return rows

    def refinery_in_process() -> int:
        summary = run_recipe(load_recipe(recipe), workers=args.workers, force=True, progress=False)
        assert summary.quarantined == 0, f"{summary.quarantined} records quarantined"
        return summary.kept

    contenders = {"pyarrow": pyarrow_ours, "pyarrow-def": pyarrow_default, "pyarrow-proc": pyarrow_process,
                  "refinery": refinery_cli}
    if not args.skip_in_process:
        contenders["in-process"] = refinery_in_process
    contenders["start-up"] = refinery_tiny
    contenders["1core-pyarrow"] = one_core_pyarrow
    contenders["1core-refinery"] = one_core_refinery
    expected = {name: total_lines for name in contenders}
    expected.update({"start-up": len(tiny), "1core-pyarrow": chunk_lines, "1core-refinery": chunk_lines})
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(args.repeat):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for name in order:
            shutil.rmtree(runs / name, ignore_errors=True)
            started = time.perf_counter()
            rows = contenders[name]()
            elapsed = time.perf_counter() - started
            times[name].append(elapsed)
            if rows != expected[name]:
                raise SystemExit(f"{name} wrote {rows:,} rows, expected {expected[name]:,}")
            print(f"  round {round_ + 1} {name:<14} {elapsed:7.2f} s  ({rows:,} rows)", flush=True)

    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n{'contender':<14} {'median s':>9} {'MB/s':>8} {'docs/s':>10} {'vs pyarrow':>11}")
    base = median["pyarrow"]
    for name in ("pyarrow", "pyarrow-def", "pyarrow-proc", "refinery", "in-process"):
        if name in median:
            m = median[name]
            print(f"{name:<14} {m:9.2f} {mb / m:8.1f} {total_lines / m:10,.0f} {base / m:10.2f}x")
    print(f"{'start-up':<14} {median['start-up']:9.2f}   (refinery run of two one-line files: the fixed cost of a run)")
    chunk_mb = len(chunk) / 1e6
    for name in ("1core-pyarrow", "1core-refinery"):
        m = median[name]
        print(f"{name:<14} {m:9.2f} {chunk_mb / m:8.1f} {chunk_lines / m:10,.0f} {median['1core-pyarrow'] / m:10.2f}x"
              f"   (one {chunk_mb:.1f} MB task, one core)")
    ratio = base / statistics.median(times["refinery"])
    print(f"\nrefinery CLI / plain pyarrow throughput: {ratio:.2f}x (target >= 0.8x)")
    print(f"refinery CLI / plain pyarrow as a process: {median['pyarrow-proc'] / median['refinery']:.2f}x")
    if "in-process" in times:
        print(f"in-process run_recipe / plain pyarrow: {base / statistics.median(times['in-process']):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

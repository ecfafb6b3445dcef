#!/usr/bin/env python3
"""Side-by-side benchmark: the identity recipe (JSONL → Parquet, no stages) against plain pyarrow.

    python tests/benchmarks/bench_identity.py [--workers 2] [--repeat 3] [--scale 6] [--files 4]

Input: the ~11,800 real documents of shared/bench/make_bench_docs.py (deterministic, seeded), concatenated
`--scale` times and cut at line boundaries into `--files` JSONL files (about 27 MB per copy).

Each round runs, one after the other in the same process tree:
  pyarrow      `pyarrow.json.read_json` of every file + `pyarrow.parquet.write_table` with Refinery's
               compression (pipelines.storage.PARQUET_OPTIONS), in this process (pyarrow's own threads)
  pyarrow-def  the same with pyarrow's default Parquet options (snappy), for reference
  refinery     `refinery run RECIPE --workers N --force --quiet` as a subprocess (interpreter start-up,
               planning, worker spawn and the manifest included)
  in-process   `pipelines.engine.run_recipe` called from this process (no interpreter start-up)
The order rotates between rounds so that no contender always runs on a warm or cold page cache.
Reported: median wall time, MB/s (input JSONL bytes), docs/s, and refinery / pyarrow throughput ratios.
Machines are noisy: compare the ratios, never a lone absolute time.
"""

from __future__ import annotations

import argparse
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

    from pipelines.engine import run_recipe
    from pipelines.recipe import load_recipe
    from pipelines.storage import PARQUET_OPTIONS

    paths, total_bytes, total_lines = build_inputs(args.work, args.scale, args.files, args.make_docs)
    mb = total_bytes / 1e6
    print(f"input: {len(paths)} files, {mb:.1f} MB, {total_lines:,} docs ({args.scale} copies); "
          f"cpus: {os.cpu_count()}; workers: {args.workers}; Parquet options: {PARQUET_OPTIONS}", flush=True)

    runs = args.work / "runs"
    recipe = args.work / "identity.yaml"
    write_recipe(paths, runs / "refinery", recipe)
    command = shutil.which("refinery") or shutil.which("refinery", path=str(Path(sys.executable).parent))
    cli = [command] if command else [sys.executable, "-m", "pipelines.cli"]
    cli += ["run", str(recipe), "--workers", str(args.workers),
           "--force", "--quiet"]

    def pyarrow_ours() -> int:
        return run_pyarrow(paths, runs / "pyarrow", PARQUET_OPTIONS)

    def pyarrow_default() -> int:
        return run_pyarrow(paths, runs / "pyarrow-default", {})

    def refinery_cli() -> int:
        subprocess.run(cli, check=True, stdout=subprocess.DEVNULL)
        kept, quarantined = refinery_rows(runs / "refinery")
        assert quarantined == 0, f"{quarantined} records quarantined"
        return kept

    def refinery_in_process() -> int:
        summary = run_recipe(load_recipe(recipe), workers=args.workers, force=True, progress=False)
        assert summary.quarantined == 0, f"{summary.quarantined} records quarantined"
        return summary.kept

    contenders = {"pyarrow": pyarrow_ours, "pyarrow-def": pyarrow_default, "refinery": refinery_cli}
    if not args.skip_in_process:
        contenders["in-process"] = refinery_in_process
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
            if rows != total_lines:
                raise SystemExit(f"{name} wrote {rows:,} rows, expected {total_lines:,}")
            print(f"  round {round_ + 1} {name:<12} {elapsed:7.2f} s  ({rows:,} rows)", flush=True)

    print(f"\n{'contender':<12} {'median s':>9} {'MB/s':>8} {'docs/s':>10} {'vs pyarrow':>11}")
    base = statistics.median(times["pyarrow"])
    for name in names:
        median = statistics.median(times[name])
        print(f"{name:<12} {median:9.2f} {mb / median:8.1f} {total_lines / median:10,.0f} {base / median:10.2f}x")
    ratio = base / statistics.median(times["refinery"])
    print(f"\nrefinery CLI / plain pyarrow throughput: {ratio:.2f}x (target >= 0.8x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

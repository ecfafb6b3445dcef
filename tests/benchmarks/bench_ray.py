#!/usr/bin/env python3
"""Side-by-side benchmark: the Ray executor against the local one, on one machine, through exact + MinHash dedup
+ tokenize.

    python tests/benchmarks/bench_ray.py [--workers 2] [--repeat 3] [--scale 1] [--task-size 2MB]

Input: the ~11,800 real documents of shared/bench/make_bench_docs.py (deterministic, seeded; 26.8 MB),
`--scale` copies in one JSONL file. Recipe: exact_dedup, minhash_dedup, tokenize with the fixed GPT-NeoX test
tokenizer of shared/data/tokenizers (no training, so the run is the tasks and the barriers, not a driver-side
fit). Each round runs these, in an order that rotates between rounds, each a process of its own (interpreter
start-up, imports, the workers' start and imports included on every side, as a user sees them):
  local        `refinery run RECIPE --executor local --workers N --force --quiet` (processes from a fork server)
  ray          `refinery run RECIPE --executor ray --address local --workers N --force --quiet`: a Ray instance
               started for the run, N tasks in flight, stopped after it (what no --address does on a machine
               where no cluster runs; `local` because this script runs one for the next contender)
  ray-address  the same with `--address` of a Ray instance (N CPUs) started once by this script, as on a cluster:
               the run connects, and its own worker processes start (Ray starts workers per job)
  start-stop   Ray's fixed cost alone, in a process: `ray.init(address="local")`, then `ray.shutdown()`
Reported: median wall time, docs/s (input documents), the ratio to local (with Ray's median start and stop taken
out for `ray`), Ray's start-up and shutdown, and `uptime` before and after. The executors' data/ and tokens/ are
compared byte for byte.
Machines are noisy: compare the ratios from one run, never a lone absolute time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_identity import MAKE_DOCS, build_inputs  # the same inputs as the identity benchmark

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
TOKENIZER = SHARED / "data" / "tokenizers" / "gpt-neo-test-tokenizer.json"


def write_recipe(path: Path, work: Path, task_size: str, name: str) -> Path:
    """The recipe one executor runs (the same but for its `output:`, out-NAME)."""
    recipe = work / f"recipe-{name}.yaml"
    recipe.write_text(f"""name: bench-ray
inputs:
  - path: {path}
stages:
  - exact_dedup: {{}}
  - minhash_dedup: {{}}
  - tokenize: {{tokenizer: {TOKENIZER}}}
task_size: {task_size}
output: {work / f"out-{name}"}
""", encoding="utf-8")
    return recipe


# Ray's fixed cost for a run that starts its own instance: prints the seconds of ray.init() and of ray.shutdown().
START_STOP = """
import logging, time
import ray
started = time.perf_counter()
ray.init(address="local", logging_level=logging.WARNING)
ready = time.perf_counter()
ray.shutdown()
print(ready - started, time.perf_counter() - ready)
"""


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for folder in ("data", "tokens")
            for p in sorted((run_dir / folder).rglob("*")) if p.is_file()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="processes / Ray tasks in flight (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported (default 3)")
    parser.add_argument("--scale", type=int, default=1, help="copies of the 26.8 MB document set (default 1)")
    parser.add_argument("--task-size", default="2MB", help="the recipe's task_size (default 2MB: ~14 tasks a pass)")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench" / "ray",
                        help="folder for the input and the runs (default out/bench/ray, git-ignored)")
    args = parser.parse_args()

    (path,), _, docs = build_inputs(args.work, args.scale, 1, MAKE_DOCS)
    names = ["local", "ray", "ray-address", "start-stop"]
    recipes = {name: write_recipe(path, args.work, args.task_size, name) for name in names[:3]}
    print(f"input: {path} ({path.stat().st_size / 1e6:.1f} MB, {docs:,} docs); workers {args.workers}; "
          f"task_size {args.task_size}")
    print(f"load before: {uptime()}", flush=True)

    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.workers})
    times: dict[str, list[float]] = {name: [] for name in names + ["start", "stop"]}
    outputs: dict[str, dict[str, bytes]] = {}
    try:
        for round_ in range(args.repeat):
            for name in names[round_ % 4:] + names[:round_ % 4]:
                started = time.perf_counter()
                if name == "start-stop":
                    done = subprocess.run([sys.executable, "-c", START_STOP], capture_output=True, text=True)
                else:
                    address = {"ray": ["--address", "local"], "ray-address": ["--address", cluster.address]}
                    executor = ["--executor", name.split("-")[0], *address.get(name, [])]
                    done = subprocess.run([sys.executable, "-m", "refinery.pipelines.commands.cli", "run",
                                           str(recipes[name]), *executor, "--workers", str(args.workers), "--force",
                                           "--quiet"], capture_output=True, text=True)
                times[name].append(time.perf_counter() - started)
                if done.returncode:
                    print(done.stdout, done.stderr[-3000:])
                    return 1
                if name == "start-stop":
                    start, stop = map(float, done.stdout.split()[-2:])
                    times["start"].append(start)
                    times["stop"].append(stop)
                else:
                    outputs.setdefault(name, files(args.work / f"out-{name}"))
                print(f"round {round_ + 1} {name}: {times[name][-1]:.2f} s", flush=True)
    finally:
        cluster.shutdown()
    print(f"load after: {uptime()}")
    identical = outputs["local"] == outputs["ray"] == outputs["ray-address"]
    print(f"data/ and tokens/ byte-identical between the executors: {identical}")

    median = {name: statistics.median(values) for name, values in times.items()}
    local, fixed = median["local"], median["start"] + median["stop"]
    rows = [(f"--executor local ({args.workers} processes)", local),
            (f"--executor ray (a Ray instance started for the run, {args.workers} in flight)", median["ray"]),
            ("--executor ray, less Ray's median start and stop", median["ray"] - fixed),
            ("--executor ray --address (an instance already running)", median["ray-address"])]
    print("\n| `refinery run` | median s | docs/s | vs local |\n|---|---|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} | {docs / seconds:,.0f} | {local / seconds:.2f}× |")
    print(f"\nRay's own start-up (ray.init() of a local instance) {median['start']:.2f} s, shutdown "
          f"{median['stop']:.2f} s (medians)")
    print("rounds (s): " + "; ".join(f"{k}: {', '.join(f'{t:.2f}' for t in v)}" for k, v in times.items()))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Where `refinery demo` spends its time, phase by phase, this tree against another commit, in interleaved rounds.

    python tests/benchmarks/bench_demo.py [--rounds 3] [--baseline REF] [--workers 2] [--train-steps N]

Each round runs `refinery demo --force` in a fresh process for each tree (the baseline's packages extracted with
`git archive` and put ahead of the editable install), the demo's functions wrapped with timers:
  start-up             interpreter, `refinery`'s CLI and torch imported (torch once, up front, for both trees)
  recipes              the two `run_recipe` calls (web recipe, instruction recipe)
  pretraining, tuning  each `_train` call: data, model, validation, steps, checkpoint, loss.png
  evaluation           perplexities and the tuned model's answer
  reports              the reports and dataset cards of both runs
  other                the rest: printing, the process's exit
and the CPU time of the whole process tree (workers included): on an otherwise idle 2-core box the wall time is
close to it for the single-threaded phases. Medians are printed with the load averages seen: compare the trees
within one run, never absolute times from different days.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_train_fixed_costs import CHILD_PRELUDE, baseline_tree, loadavg  # noqa: E402

CHILD = CHILD_PRELUDE + r"""
timed("start-up: refinery CLI", lambda: __import__("refinery.pipelines.commands.cli"))
timed("start-up: torch", lambda: __import__("torch"))
import refinery.pipelines.commands.demo as demo
from refinery.pipelines.commands.cli import main
def wrap(name, label):
    fn = getattr(demo, name)
    def inner(*a, **k):
        key = label(times) if callable(label) else label
        return timed(key, lambda: fn(*a, **k))
    setattr(demo, name, inner)
wrap("run_recipe", "recipes")
wrap("_train", lambda t: "instruction tuning" if "pretraining" in t else "pretraining")
wrap("_evaluate", "evaluation"); wrap("write_outputs", "reports")
code = main(sys.argv[1:])
times["in-process total"] = time.perf_counter() - started
print("PHASES " + json.dumps(times))
sys.exit(code)
"""


def demo_run(output: Path, workers: int, train_steps: int | None, pythonpath: Path | None) -> dict[str, float]:
    env = dict(os.environ, **({"PYTHONPATH": str(pythonpath)} if pythonpath else {}))
    command = [sys.executable, "-c", CHILD, "demo", "--output", str(output), "--workers", str(workers), "--force"]
    if train_steps is not None:
        command += ["--train-steps", str(train_steps)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    times = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("PHASES "))[7:])
    in_process = times.pop("in-process total")
    times["start-up: interpreter"] = wall - in_process
    times["other"] = in_process - sum(v for k, v in times.items() if not k.startswith("start-up: interpreter"))
    times["wall, the whole demo"] = wall
    times["CPU time, all processes"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    answer = next((line.strip() for line in done.stdout.splitlines() if "answers: " in line), "")
    times["answer"] = answer  # type: ignore[assignment]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="a git commit to run alternately with this tree")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--train-steps", type=int, help="passed to both trees (default: each tree's own default)")
    parser.add_argument("--json", type=Path, help="also write every run's phases here")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; {loadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trees = {"this tree": None}
        if args.baseline:
            trees = {f"baseline {args.baseline}": baseline_tree(args.baseline, work), **trees}
        runs: dict[str, list[dict]] = {name: [] for name in trees}
        for round_ in range(args.rounds):
            for index, (name, path) in enumerate(trees.items()):
                runs[name].append(demo_run(work / f"demo-{index}", args.workers, args.train_steps, path))
                print(f"  round {round_ + 1}/{args.rounds}, {name}: {runs[name][-1]['wall, the whole demo']:.1f} s; "
                      f"{loadavg()}", flush=True)
    labels = [label for label in dict.fromkeys(k for rs in runs.values() for r in rs for k in r) if label != "answer"]
    order = sorted(labels, key=lambda k: (k.startswith(("wall", "CPU")), not k.startswith("start-up"), k == "other"))
    print(f"\n`refinery demo --workers {args.workers}` (seconds, median of {args.rounds}):")
    print(f"  {'phase':28}" + "".join(f"{name:>24}" for name in runs))
    for label in order:
        cells = [statistics.median(r.get(label, 0.0) for r in rs) for rs in runs.values()]
        print(f"  {label:28}" + "".join(f"{c:24.1f}" for c in cells))
    for name, rs in runs.items():
        print(f"  {name}: {rs[-1]['answer']}")
        print(f"  {name}, wall per round: " + ", ".join(f"{r['wall, the whole demo']:.1f}" for r in rs))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    print(f"end: {loadavg()}")


if __name__ == "__main__":
    main()

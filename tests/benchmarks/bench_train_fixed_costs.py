#!/usr/bin/env python3
"""What a short CPU training run spends outside its steps, the loop against a bare torch loop, and threads.

    python tests/benchmarks/bench_train_fixed_costs.py [--data RUN/tokens] [--rounds 3] [--baseline REF]
        [--sections fixed,loop,threads] [--busy N]

Data: the demo's web shards (2,000-token BPE, about 150k training tokens); without --data the demo's recipes run
once into a temporary folder (no training). Sections, each in interleaved rounds, medians reported:
  fixed    `refinery train --max-steps 12 -q` (the tiny GPT, the CLI's defaults: seq_len 256, batch 16, validation
           at step 0 and at the end over 20 batches, a checkpoint and loss.png at the end) in a fresh process,
           split into phases by wrapping the trainer's functions; with --baseline REF the same run of that commit
           (its tree extracted by `git archive`), alternating with this tree's in every round
  loop     steady-state tokens/s of `train()` (log windows after the first, nothing else in them) against a bare
           loop of the same model on the same batches: forward, backward, clip, torch.optim.AdamW, zero_grad,
           loss.item(); the ratio is what the trainer's bookkeeping costs
  threads  steps/s of the tiny and small GPT with 1 and 2 torch threads, under the box's own load and with
           --busy N more processes spinning on the CPU (the load other users put on a shared box)
Machines are noisy: compare what one run measured side by side, and read the load averages printed with it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("corpora", "pipelines", "tokenization", "training")

# Runs in the child: imports timed one by one, then the trainer's functions wrapped with timers, then the CLI.
# The child scripts' common start: a clock, and timed(label, thunk) adding to times[label].
CHILD_PRELUDE = r"""
import json, sys, time
started = time.perf_counter()
times = {}
def timed(label, value_of):
    t = time.perf_counter(); value = value_of(); times[label] = times.get(label, 0.0) + time.perf_counter() - t
    return value
"""
CHILD = CHILD_PRELUDE + r"""
timed("import refinery CLI", lambda: __import__("refinery.pipelines.commands.cli"))
torch = timed("import torch", lambda: __import__("torch"))
timed("import refinery.training", lambda: __import__("refinery.training.train"))
import refinery.training.train as tr, refinery.training.logs as logs, refinery.training.data as data
from refinery.pipelines.commands.cli import main
def wrap(owner, name, label):
    fn = getattr(owner, name)
    setattr(owner, name, lambda *a, **k: timed(label, lambda: fn(*a, **k)))
wrap(data.TrainingData, "unigram_entropy", "data: unigram entropy"); wrap(tr, "TrainingData", "data: open shards")
wrap(tr, "build_model", "model: build"); wrap(tr, "make_optimizer", "optimizer: set-up")
wrap(tr, "_evaluate", "validation (step 0 and end)"); wrap(tr, "_checkpoint", "checkpoint")
wrap(logs.TrainingLog, "plot", "loss.png")
code = timed("train, all of it", lambda: main(sys.argv[1:]))
times["in-process total"] = time.perf_counter() - started
print("PHASES " + json.dumps(times))
sys.exit(code)
"""


def loadavg() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def demo_tokens(work: Path) -> Path:
    from refinery.pipelines.commands.demo import run_demo

    with contextlib.redirect_stdout(io.StringIO()):
        run_demo(work / "demo", workers=2, train_steps=0)
    return work / "demo" / "tokens"


def baseline_tree(ref: str, work: Path) -> Path:
    """The packages of commit `ref`, importable as refinery.* ahead of the editable install (PYTHONPATH)."""
    archive = subprocess.run(["git", "archive", ref, *PACKAGES], cwd=ROOT, capture_output=True, check=True).stdout
    src = work / f"tree-{ref}"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(src, filter="data")
    (src / "pkg" / "refinery").mkdir(parents=True)
    for package in PACKAGES:
        (src / "pkg" / "refinery" / package).symlink_to(src / package)
    return src / "pkg"


def fixed_run(data: Path, out: Path, steps: int, pythonpath: Path | None) -> dict[str, float]:
    env = dict(os.environ, **({"PYTHONPATH": str(pythonpath)} if pythonpath else {}))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, "train", "--data", str(data), "--out", str(out),
                           "--max-steps", str(steps), "--device", "cpu", "-q"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    phases = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("PHASES "))[7:])
    measured = sum(v for k, v in phases.items() if k not in ("train, all of it", "in-process total")
                   and not k.startswith("import"))
    phases["steps (the rest of train)"] = phases["train, all of it"] - measured
    phases["interpreter start-up and exit"] = wall - phases["in-process total"]
    phases["wall, the whole command"] = wall
    return phases


def section_fixed(data: Path, work: Path, rounds: int, steps: int, baseline: str | None) -> None:
    trees = {"this tree": None}
    if baseline:
        trees = {f"baseline {baseline}": baseline_tree(baseline, work), **trees}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for round_ in range(rounds):
        for name, path in trees.items():
            runs[name].append(fixed_run(data, work / f"fixed-{round_}-{len(runs[name])}-{hash(name)}", steps, path))
        print(f"  round {round_ + 1}/{rounds} done, {loadavg()}", flush=True)
    labels = list(dict.fromkeys(k for rs in runs.values() for r in rs for k in r if k != "in-process total"))
    print(f"\nfixed costs of `refinery train --max-steps {steps}` (seconds, median of {rounds}):")
    print(f"  {'phase':34}" + "".join(f"{name:>22}" for name in runs))
    for label in labels:
        cells = [statistics.median(r.get(label, 0.0) for r in rs) for rs in runs.values()]
        print(f"  {label:34}" + "".join(f"{c:22.2f}" for c in cells))


def bare_loop(data, model, steps: int, batch_size: int, window: int) -> list[float]:
    """tokens/s per window of `window` steps: the same model and batches as train(), no trainer around them."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=False)
    rates, started = [], time.perf_counter()
    for step in range(steps):
        x, y, _ = (torch.from_numpy(a) if a is not None else None for a in data.batch(batch_size, step))
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        if (step + 1) % window == 0:
            rates.append(window * batch_size * data.seq_len / (time.perf_counter() - started))
            started = time.perf_counter()
    return rates[1:]  # the first window holds the first steps' allocations


def section_loop(data_path: Path, work: Path, rounds: int, steps: int, threads: int) -> None:
    import torch

    from refinery.training.config import TrainConfig, model_config_for
    from refinery.training.data import TrainingData
    from refinery.training.model import build_model
    from refinery.training.train import train

    torch.set_num_threads(threads)
    config = TrainConfig(data=[str(data_path)], out="unused", seq_len=128, batch_size=16, max_steps=steps,
                         eval_interval=0, eval_batches=1, checkpoint_interval=0, log_interval=10, device="cpu")
    data = TrainingData(config.data, config.weights, config.seq_len, config.seed)
    ratios, bares, ours = [], [], []
    for round_ in range(rounds):
        torch.manual_seed(0)
        model = build_model(model_config_for(config, data.vocab_size, data.special_ids["eos"]))
        bare = statistics.median(bare_loop(data, model, steps, config.batch_size, config.log_interval))
        out = work / f"loop-{round_}"
        train(config.model_copy(update={"out": str(out)}), progress=False)
        records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        windows = [r["tokens_per_s"] for r in records if r["kind"] == "train"][2:]  # after step 1 and the first window
        trainer = statistics.median(windows)
        bares.append(bare), ours.append(trainer), ratios.append(trainer / bare)
        print(f"  round {round_ + 1}/{rounds}: bare {bare:,.0f} tokens/s, train() {trainer:,.0f} tokens/s, "
              f"ratio {trainer / bare:.3f}; {loadavg()}", flush=True)
    print(f"\nloop, {threads} thread(s), tiny GPT, seq_len 128, batch 16, {steps} steps: bare "
          f"{statistics.median(bares):,.0f} tokens/s, train() {statistics.median(ours):,.0f} tokens/s, "
          f"median ratio {statistics.median(ratios):.3f} (per round: {', '.join(f'{r:.3f}' for r in ratios)})")


THREADS_CHILD = r"""
import sys, time, torch
from refinery.training.model import GPT, GPTConfig
from refinery.training.model_options import GPT_PRESETS
torch.set_num_threads(int(sys.argv[1])); steps = int(sys.argv[3])
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=2000, block_size=128, **GPT_PRESETS[sys.argv[2]]))
optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)  # the optimizer is not what is measured
x = torch.randint(0, 2000, (16, 128))
for step in range(steps + 2):
    if step == 2:
        started = time.perf_counter()
    model(x, x)[1].backward(); optimizer.step(); optimizer.zero_grad()
print(steps / (time.perf_counter() - started))
"""


def section_threads(rounds: int, busy: int) -> None:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(1 if busy else 0)
        cases = [(size, threads) for size in ("tiny", "small") for threads in (1, 2)]
        rates: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
        for round_ in range(rounds):
            for size, threads in cases:
                steps = "40" if size == "tiny" else "4"
                done = subprocess.run([sys.executable, "-c", THREADS_CHILD, str(threads), size, steps],
                                      capture_output=True, text=True, check=True)
                rates[(size, threads)].append(float(done.stdout.split()[-1]))
            print(f"  round {round_ + 1}/{rounds} done, {loadavg()}", flush=True)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    print(f"\nsteps/s (seq_len 128, batch 16, vocab 2,000), {busy} spinning process(es) added, median of {rounds}:")
    for size in ("tiny", "small"):
        one, two = (statistics.median(rates[(size, t)]) for t in (1, 2))
        print(f"  {size:6} 1 thread {one:7.2f}   2 threads {two:7.2f}   2 threads / 1 thread {two / one:.2f}"
              f"   (per round, 1: {', '.join(f'{r:.2f}' for r in rates[(size, 1)])};"
              f" 2: {', '.join(f'{r:.2f}' for r in rates[(size, 2)])})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="token shards (default: the demo's, built once)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="steps of the fixed-cost runs")
    parser.add_argument("--loop-steps", type=int, default=80, help="steps per round of the loop comparison")
    parser.add_argument("--loop-threads", type=int, default=1)
    parser.add_argument("--baseline", help="a git commit to measure the fixed costs of, alternating with this tree")
    parser.add_argument("--sections", default="fixed,loop,threads")
    parser.add_argument("--busy", type=int, default=0, help="processes spinning on the CPU during `threads`")
    args = parser.parse_args()
    sections = args.sections.split(",")
    print(f"torch threads by default: {__import__('torch').get_num_threads()}; cores: {os.cpu_count()}; {loadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = args.data or demo_tokens(work)
        if "fixed" in sections:
            section_fixed(data, work, args.rounds, args.steps, args.baseline)
        if "loop" in sections:
            section_loop(data, work, args.rounds, args.loop_steps, args.loop_threads)
        if "threads" in sections:
            section_threads(args.rounds, args.busy)
    print(f"end: {loadavg()}")


if __name__ == "__main__":
    main()

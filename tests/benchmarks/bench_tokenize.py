#!/usr/bin/env python3
"""Side-by-side benchmark: the tokenize stage (shards written) against raw `Tokenizer.encode_batch`.

    python tests/benchmarks/bench_tokenize.py [--workers 2] [--repeat 3] [--scale 1] [--memory-scales 1,4]

Input: the real documents of shared/bench/make_bench_docs.py (about 27 MB of JSONL per `--scale`), and the
GPT-NeoX-style tokenizer in shared/data/tokenizers (50,280 ids, so uint16 shards). Each round runs:
  raw        `Tokenizer.encode_batch` over every text, in chunks of 1,000, in this process (Rust threads)
  identity   `run_recipe` with no stage: read JSONL, write Parquet (the engine's own cost)
  tokenize   `run_recipe` with `tokenize` (encode per task, then split, shuffle, write the shards)
Reported: medians, tokens/s of raw and of the tokenize run end to end, and of the stage alone
(tokenize − identity); then the peak RSS of one process of a tokenize run at each memory scale.
Machines are noisy: compare the ratios, never a lone absolute time.
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

from bench_identity import MAKE_DOCS, build_inputs  # same inputs as the identity benchmark

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT.parent / "shared" / "data" / "tokenizers" / "gpt-neo-test-tokenizer.json"


def recipe(paths: list[Path], stages: list, output: Path) -> Path:
    path = output.parent / f"{output.name}.yaml"
    path.write_text(json.dumps({"name": output.name, "inputs": [{"path": str(p)} for p in paths],
                                "stages": stages, "output": str(output)}))
    return path


def timed_run(recipe_path: Path, workers: int) -> float:
    from refinery.pipelines.engine.recipe import load_recipe
    from refinery.pipelines.engine.run import run_recipe

    started = time.perf_counter()
    run_recipe(load_recipe(recipe_path), workers=workers, force=True, progress=False)
    return time.perf_counter() - started


def raw_encode(texts: list[str]) -> tuple[float, int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    started = time.perf_counter()
    tokens = 0
    for i in range(0, len(texts), 1000):
        tokens += sum(len(e.ids) + 1 for e in tokenizer.encode_batch(texts[i : i + 1000], add_special_tokens=False))
    return time.perf_counter() - started, tokens


def peak_rss_mb(recipe_path: Path, workers: int) -> tuple[float, float]:
    """Peak resident memory (MB) of the main process, and the largest any worker reported in its task markers."""
    code = (
        "import resource, sys\n"
        "from pipelines.engine import run_recipe\nfrom pipelines.recipe import load_recipe\n"
        f"summary = run_recipe(load_recipe(sys.argv[1]), workers={workers}, force=True, progress=False)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, summary.run_dir)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(recipe_path)], capture_output=True, text=True, check=True)
    main_kb, run_dir = out.stdout.split()[-2:]
    markers = Path(run_dir).glob("work/segment-*/done/task-*.json")
    worker_mb = max(json.loads(m.read_text()).get("worker_peak_rss_mb", 0.0) for m in markers)
    return int(main_kb) / 1024, worker_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--memory-scales", default="1,4")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench")
    args = parser.parse_args()

    paths, size, lines = build_inputs(args.work, args.scale, 2, MAKE_DOCS)
    texts = [json.loads(line)["text"] for p in paths for line in p.open(encoding="utf-8")]
    stage = {"tokenize": {"tokenizer": str(TOKENIZER), "shard_tokens": 10_000_000}}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp_dir = Path(tmp)
        identity = recipe(paths, [], tmp_dir / "identity")
        tokenize = recipe(paths, [stage], tmp_dir / "tokenize")
        times: dict[str, list[float]] = {"raw": [], "identity": [], "tokenize": []}
        tokens = 0
        for round_index in range(args.repeat):
            seconds, tokens = raw_encode(texts)
            times["raw"].append(seconds)
            times["identity"].append(timed_run(identity, args.workers))
            times["tokenize"].append(timed_run(tokenize, args.workers))
            print(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
        written = sum(json.loads((tmp_dir / "tokenize/tokens" / s / "meta.json").read_text())["tokens"]
                      for s in ("train", "validation"))
        assert written == tokens, f"shards hold {written} tokens, raw encoding gave {tokens}"
        median = {k: statistics.median(v) for k, v in times.items()}
        raw_rate = tokens / median["raw"]
        run_rate = tokens / median["tokenize"]
        stage_rate = tokens / max(1e-9, median["tokenize"] - median["identity"])
        print(f"\ninput: {len(texts):,} documents, {size / 1e6:.1f} MB JSONL, {tokens:,} tokens; "
              f"workers {args.workers}")
        print(f"raw encode_batch        {median['raw']:7.2f}s  {raw_rate / 1e6:6.3f} M tokens/s")
        print(f"identity run            {median['identity']:7.2f}s")
        print(f"tokenize run            {median['tokenize']:7.2f}s  {run_rate / 1e6:6.3f} M tokens/s  "
              f"= {run_rate / raw_rate:.2f}x raw (end to end: read, encode, shards, Parquet)")
        print(f"tokenize stage alone    {median['tokenize'] - median['identity']:7.2f}s  "
              f"{stage_rate / 1e6:6.3f} M tokens/s  = {stage_rate / raw_rate:.2f}x raw")
        for scale in (int(s) for s in args.memory_scales.split(",")):
            scaled, scaled_size, _ = build_inputs(args.work, scale, 2, MAKE_DOCS)
            main_mb, worker_mb = peak_rss_mb(recipe(scaled, [stage], tmp_dir / f"memory-x{scale}"), args.workers)
            print(f"peak RSS at {scaled_size / 1e6:6.1f} MB input: main {main_mb:6.0f} MB, "
                  f"largest worker {worker_mb:6.0f} MB")


if __name__ == "__main__":
    main()

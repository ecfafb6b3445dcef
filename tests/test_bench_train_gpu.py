"""tests/benchmarks/bench_train_gpu.py, the GPU training path's benchmark, at tiny size on the CPU: it trains on
real shards and prints tokens/s and MFU at every log interval, and its mask-free document attention kernels
agree with the trainer's dense mask. (The GPU run itself is owed: docs/performance.md has the command.)"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from refinery.training.model import GPTConfig

SCRIPT = Path(__file__).parent / "benchmarks" / "bench_train_gpu.py"


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_train_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_it_trains_on_the_cpu_and_prints_tokens_per_second_and_mfu_every_interval(shakespeare_shards):
    done = subprocess.run([sys.executable, str(SCRIPT), "--data", str(shakespeare_shards), "--size", "tiny",
                           "--seq-len", "64", "--batch-size", "4", "--steps", "6", "--log-interval", "2",
                           "--device", "cpu"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = re.findall(r"step +(\d+)/6 \| loss ([\d.]+) \| ([\d,]+) tokens/s \| MFU ([\d.]+)% \|", done.stdout)
    assert [int(step) for step, *_ in lines] == [2, 4, 6], done.stdout
    for _, loss, tokens_per_s, mfu in lines:
        assert 0 < float(loss) < 10 and float(tokens_per_s.replace(",", "")) > 0
        assert math.isfinite(float(mfu)) and 0 < float(mfu) < 100
    assert "attention segments" in done.stdout and "float32 1024² matmuls measured" in done.stdout
    summary = json.loads(done.stdout.split("summary (median of the intervals after the first): ")[1])
    assert all(math.isfinite(v) and v >= 0 for v in summary.values()) and summary["tokens_per_s"] > 0


def test_the_mask_free_document_attention_agrees_with_the_dense_mask():
    bench = bench_module()
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, block_size=64, n_layer=2, n_head=2, n_embd=32, eos_id=0)
    idx = torch.randint(1, 50, (3, 64))
    idx[0, [5, 6, 40]] = 0  # documents of one token, an EOS right after another, and a window without EOS (row 2)
    idx[1, [0, 63]] = 0
    weights = bench.BenchGPT(config, "dense").state_dict()
    outputs = {}
    for mode in bench.ATTENTION:
        if mode == "varlen":
            continue  # flash attention: CUDA only; its sequence boundaries are checked below
        model = bench.BenchGPT(config, mode).eval()
        model.load_state_dict(weights)
        with torch.no_grad():
            outputs[mode] = model(idx)[0]
    for mode in ("segments", "flex"):
        assert torch.allclose(outputs[mode], outputs["dense"], atol=1e-5), mode
    assert not torch.allclose(outputs["causal"][0], outputs["dense"][0], atol=1e-3)  # documents do matter
    assert torch.allclose(outputs["causal"][2], outputs["dense"][2], atol=1e-5)  # ... except in a single one
    boundaries = bench.Documents(idx, 0, "varlen").cu_seqlens.tolist()
    assert boundaries == [0, 6, 7, 41, 64, 65, 128, 192]  # each document of each window, in flattened order

"""DDP under torchrun on CPU (gloo): two processes read disjoint parts of the shards, keep identical
weights, and a resumed two-process run repeats the uninterrupted losses exactly."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from test_training import records, tokens  # noqa: F401  (the Shakespeare shards fixture)

from refinery.tokenization.reader import TokenShards
from refinery.training.data import TrainingData


def torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "refinery.training.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_each_rank_reads_its_own_part_of_the_shards(tokens):  # noqa: F811
    shards = TokenShards(tokens / "train")
    for rank in (0, 1):
        data = TrainingData([str(tokens)], [1.0], 64, seed=0, rank=rank, world_size=2)
        low, high = shards.rank_range(rank, 2)
        part = shards.span(low, high)
        x, _, _ = data.batch(8, step=3)
        for row in x:  # every window lies inside this rank's token range
            starts = np.flatnonzero(part[: len(part) - 64] == row[0])
            assert any(np.array_equal(part[s : s + 64], row) for s in starts)
    assert not np.array_equal(TrainingData([str(tokens)], [1.0], 64, 0, 0, 2).batch(8, 3)[0],
                              TrainingData([str(tokens)], [1.0], 64, 0, 1, 2).batch(8, 3)[0])


def test_two_processes_stay_in_sync_and_resume_exactly(tokens, tmp_path):  # noqa: F811
    out = tmp_path / "ddp"
    args = ["--data", str(tokens), "--out", str(out), "--max-steps", "40", "--seq-len", "64", "--batch-size", "8",
            "--lr", "3e-3", "--device", "cpu", "-q"]
    for setting in ("warmup_steps=5", "eval_interval=20", "eval_batches=5", "checkpoint_interval=20", "log_interval=1",
                    "keep_checkpoints=0"):
        args += ["--set", setting]
    first = torchrun(*args)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
    assert records(out, "start")[0]["world_size"] == 2
    assert records(out, "start")[0]["tokens_per_step"] == 2 * 8 * 64
    checkpoints = records(out, "checkpoint")
    assert [c["step"] for c in checkpoints] == [20, 40]
    for checkpoint in checkpoints:  # both processes hold exactly the same weights
        assert len(checkpoint["rank_checksums"]) == 2 and len(set(checkpoint["rank_checksums"])) == 1
    val = records(out, "val")
    assert val[-1]["val_loss"] < val[0]["val_loss"] - 0.5
    losses = {r["step"]: r["loss"] for r in records(out, "train")}
    final_weights = (out / "step-000040/model.safetensors").read_bytes()

    resumed = torchrun(*args, "--resume", str(out / "step-000020"))
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-4000:]
    assert {r["step"]: r["loss"] for r in records(out, "train")} == losses
    assert (out / "step-000040/model.safetensors").read_bytes() == final_weights

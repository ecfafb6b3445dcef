"""What a CPU training run pays besides its steps: AdamW without torch._dynamo (the same weights as torch's, to the
last bit), loss.png drawn once at the end rather than at every validation, and torch threads chosen by model size
(docs/performance.md, "Training: fixed costs" has the figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from refinery.training.config import TrainConfig
from refinery.training.logs import TrainingLog
from refinery.training.model import GPT, GPT_PRESETS, LSTM, GPTConfig, LSTMConfig
from refinery.training.optim import PlainAdamW
from refinery.training.train import cpu_threads, train


def _groups(model):
    params = list(model.parameters())
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def test_plain_adamw_gives_torch_adamws_weights_and_state_bit_for_bit():
    def model():
        torch.manual_seed(0)
        return GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))

    ours, theirs = model(), model()
    plain = PlainAdamW(_groups(ours), lr=3e-3, betas=(0.9, 0.95))
    reference = torch.optim.AdamW(_groups(theirs), lr=3e-3, betas=(0.9, 0.95), fused=False)  # the CPU path before
    for step in range(25):
        x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(step))
        for net, optimizer in ((ours, plain), (theirs, reference)):
            for group in optimizer.param_groups:
                group["lr"] = 3e-3 * min(1.0, (step + 1) / 5)
            net(x, x)[1].backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    mine, torchs = plain.state_dict(), reference.state_dict()
    assert mine["param_groups"] == torchs["param_groups"]  # the layout old checkpoints have
    assert all(torch.equal(mine["state"][i][key], torchs["state"][i][key]) for i in torchs["state"]
               for key in torchs["state"][i])
    resumed = PlainAdamW(_groups(model()), lr=1.0, betas=(0.5, 0.5))
    resumed.load_state_dict(torchs)  # a checkpoint written by torch.optim.AdamW resumes ...
    assert resumed.state_dict()["param_groups"] == torchs["param_groups"]
    back = torch.optim.AdamW(_groups(model()), lr=1.0, fused=False)
    back.load_state_dict(mine)  # ... and ours resumes under torch's (on a GPU, say)
    assert back.state_dict()["param_groups"] == mine["param_groups"]


def test_a_cpu_run_imports_no_dynamo_and_draws_its_plot_once(shakespeare_shards, tmp_path):
    probe = ("import sys, json\nfrom refinery.training.config import TrainConfig\n"
             "from refinery.training.train import train\nimport refinery.training.logs as logs\n"
             "drawn = []\nplot = logs.TrainingLog.plot\n"
             "logs.TrainingLog.plot = lambda self, *a: (drawn.append(1), plot(self, *a))\n"
             f"train(TrainConfig(data=[{str(shakespeare_shards)!r}], out={str(tmp_path / 'm')!r}, seq_len=32, "
             "batch_size=4, max_steps=6, eval_interval=2, eval_batches=2, checkpoint_interval=0, device='cpu'), "
             "progress=False)\n"
             "print(json.dumps(['torch._dynamo' in sys.modules, 'torch._inductor' in sys.modules, len(drawn)]))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [False, False, 1]  # four validations, one drawing
    assert (tmp_path / "m/loss.png").read_bytes()[:4] == b"\x89PNG"
    assert [r["step"] for r in TrainingLog(tmp_path / "m", resume_step=6).records() if r["kind"] == "val"] == \
        [0, 2, 4, 6]


def test_auto_threads_are_one_for_small_models_and_torchs_own_for_larger(monkeypatch):
    tiny = GPT(GPTConfig(vocab_size=2000, block_size=64, **GPT_PRESETS["tiny"]))
    small = GPT(GPTConfig(vocab_size=2000, block_size=64, **GPT_PRESETS["small"]))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpu_threads("auto", tiny) == 1 and cpu_threads("auto", LSTM(LSTMConfig(vocab_size=2000))) == 1
    assert cpu_threads("auto", small) is None  # 10.6 M non-embedding parameters: a thread per core
    assert cpu_threads(3, tiny) == 3 and cpu_threads(None, tiny) is None  # set, or torch's setting left alone
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cpu_threads("auto", tiny) is None  # the user's environment decides


def test_train_uses_its_threads_and_gives_the_callers_back(shakespeare_shards, tmp_path):
    seen = []
    config = TrainConfig(data=[str(shakespeare_shards)], out=str(tmp_path / "m"), seq_len=32, batch_size=4, max_steps=2,
                         eval_interval=0, eval_batches=1, checkpoint_interval=0, device="cpu", threads=1)
    before = torch.get_num_threads()
    original = torch.nn.utils.clip_grad_norm_
    try:
        torch.nn.utils.clip_grad_norm_ = lambda *a, **k: (seen.append(torch.get_num_threads()), original(*a, **k))[1]
        train(config, progress=False)
    finally:
        torch.nn.utils.clip_grad_norm_ = original
    assert seen == [1, 1] and torch.get_num_threads() == before


def test_refinery_train_defaults_to_auto_threads(shakespeare_shards, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-m", "refinery.pipelines", "train", "--data", str(shakespeare_shards),
                           "--out", str(tmp_path / "m"), "--max-steps", "2", "--seq-len", "32", "--device", "cpu",
                           "-q"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    start = json.loads((tmp_path / "m/log.jsonl").read_text().splitlines()[0])
    assert start["config"]["threads"] == "auto"

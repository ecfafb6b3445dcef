#!/usr/bin/env python3
"""The GPU training path, measured: the GPT-2 124M shape on token shards, bf16 autocast, torch.compile, fused AdamW,
a pinned-memory loader that prefetches on a background thread, and document attention without a dense T×T mask.
Every log interval prints tokens/s and MFU (model FLOPs utilisation), and the time the step waited for data.

    python tests/benchmarks/bench_train_gpu.py --data RUN/tokens [--size gpt2-124m] [--seq-len 1024]
        [--batch-size 16] [--steps 200] [--attention flex|varlen|segments|dense|causal] [--peak-tflops T]

The model is refinery.training.model's GPT (RoPE, RMSNorm, SwiGLU: the trainer's own), with its attention kernel
chosen here. Document attention (a token sees the earlier tokens of its own document only) in five ways:
  flex      flex_attention with a block mask from the EOS positions: blocks across documents are skipped, none is
            materialised as T×T (GPU default; compiled with the model)
  varlen    flash attention over variable-length sequences (torch.nn.attention.varlen): each document of each
            window is one sequence, causal; CUDA only
  segments  scaled_dot_product_attention with is_causal=True once per document: exact, mask-free, a Python loop
            (the CPU default, and the reference varlen must agree with)
  dense     the trainer's path today: a (B, 1, T, T) boolean mask handed to SDPA (no flash kernel takes it)
  causal    plain is_causal=True, documents see each other: the speed without document masking
MFU = FLOPs per token × tokens/s ÷ the device's peak, FLOPs per token = 6 × parameters in matmuls + 12 × layers ×
width × seq_len (the PaLM convention: attention over the full window, causal masking not discounted). The peak is
the dense bf16 tensor-core figure of a known GPU, --peak-tflops, or on a CPU a float32 matmul measured here.
On a CPU it runs at tiny size (tests/test_bench_train_gpu.py): float32, eager, `segments`.
"""

from __future__ import annotations

import argparse
import json
import math
import queue
import statistics
import threading
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from refinery.training.config import TrainConfig, model_config_for
from refinery.training.data import TrainingData
from refinery.training.model import GPT, CausalSelfAttention, apply_rope, count_parameters, document_ids
from refinery.training.train import lr_at, make_optimizer

ATTENTION = ("flex", "varlen", "segments", "dense", "causal")
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), matched in order against torch.cuda.get_device_name().
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4),
               ("A100", 312.0), ("L40S", 362.0), ("A10G", 70.0), ("L4", 121.0)]


class Documents:
    """Where each window's documents lie (a document ends with its EOS), in the form each kernel wants."""

    def __init__(self, idx: torch.Tensor, eos_id: int, mode: str):
        self.mode, (self.B, self.T) = mode, idx.shape
        self.doc = document_ids(idx, eos_id) if mode != "causal" else None
        if mode == "flex":
            from torch.nn.attention.flex_attention import create_block_mask

            doc = self.doc

            def same_document_causal(b, h, q, kv):
                return (q >= kv) & (doc[b, q] == doc[b, kv])

            self.block_mask = create_block_mask(same_document_causal, self.B, None, self.T, self.T,
                                                device=idx.device)
        elif mode == "varlen":  # one sequence per document per window, in the flattened (B*T) token order
            starts = torch.ones_like(idx, dtype=torch.bool)
            starts[:, 1:] = self.doc[:, 1:] != self.doc[:, :-1]
            first = torch.nonzero(starts.flatten()).flatten()
            self.cu_seqlens = torch.cat([first, first.new_tensor([self.B * self.T])]).to(torch.int32)
        elif mode == "dense":
            causal = torch.ones(self.T, self.T, dtype=torch.bool, device=idx.device).tril()
            self.mask = (causal & (self.doc[:, :, None] == self.doc[:, None, :])).unsqueeze(1)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention of (B, H, T, D) queries, keys and values, each token within its own document."""
        if self.mode == "flex":
            from torch.nn.attention.flex_attention import flex_attention

            return flex_attention(q, k, v, block_mask=self.block_mask)
        if self.mode == "varlen":
            from torch.nn.attention.varlen import varlen_attn

            B, H, T, D = q.shape
            flat = [t.transpose(1, 2).reshape(B * T, H, D) for t in (q, k, v)]
            out = varlen_attn(*flat, self.cu_seqlens, self.cu_seqlens, T, T, window_size=(-1, 0))
            return out.view(B, T, H, D).transpose(1, 2)
        if self.mode == "segments":
            out = torch.empty_like(q)
            for b in range(self.B):
                bounds = [0, *(torch.nonzero(self.doc[b, 1:] != self.doc[b, :-1]).flatten() + 1).tolist(), self.T]
                for lo, hi in zip(bounds, bounds[1:]):
                    out[b, :, lo:hi] = F.scaled_dot_product_attention(q[b:b + 1, :, lo:hi], k[b:b + 1, :, lo:hi],
                                                                      v[b:b + 1, :, lo:hi], is_causal=True)[0]
            return out
        if self.mode == "dense":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class DocumentAttention(CausalSelfAttention):
    """The trainer's attention layer (same weights), its kernel chosen by the Documents it is given."""

    def forward(self, x, cos, sin, documents: Documents):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.qkv(x).split(C, dim=2))
        y = documents.attend(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class BenchGPT(GPT):
    """refinery's GPT, with document attention through one of ATTENTION's kernels."""

    def __init__(self, config, attention: str):
        super().__init__(config)
        self.attention = attention
        for block in self.blocks:
            block.attn.__class__ = DocumentAttention

    def attention_input(self, idx, doc_ids):
        return Documents(idx, self.config.eos_id, self.attention)


class PrefetchLoader:
    """The trainer's batches (TrainingData: the same windows for the same seed and step), drawn on a background
    thread `depth` micro-batches ahead; on a GPU pinned and copied on a side stream, so the step finds its batch
    on the device. `waited` is the time the training loop spent waiting for one."""

    def __init__(self, data: TrainingData, batch_size: int, steps: int, grad_accum: int, device: torch.device,
                 depth: int):
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.device, self.waited = device, 0.0
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.thread = threading.Thread(target=self._fill, args=(data, batch_size, steps, grad_accum), daemon=True)
        self.thread.start()

    def _fill(self, data, batch_size, steps, grad_accum) -> None:
        try:
            for step in range(steps):
                for micro in range(grad_accum):
                    x, y, _ = data.batch(batch_size, step, micro)
                    tensors = [torch.from_numpy(x.copy()), torch.from_numpy(y.copy())]  # contiguous
                    event = None
                    if self.stream is not None:
                        tensors = [t.pin_memory() for t in tensors]
                        with torch.cuda.stream(self.stream):
                            tensors = [t.to(self.device, non_blocking=True) for t in tensors]
                            event = torch.cuda.Event()
                            event.record(self.stream)
                    self.queue.put((tensors, event))
        except BaseException as err:  # handed to the training loop, which raises it
            self.queue.put((err, None))

    def next(self) -> list[torch.Tensor]:
        started = time.perf_counter()
        tensors, event = self.queue.get()
        self.waited += time.perf_counter() - started
        if isinstance(tensors, BaseException):
            raise tensors
        if event is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(event)
            for tensor in tensors:
                tensor.record_stream(stream)  # the copy stream's memory stays in use until this step is done
        return tensors


def flops_per_token(model: GPT, seq_len: int) -> float:
    """6 × parameters that multiply (the input embedding is a lookup unless tied to the head) + attention."""
    c = model.config
    matmul = count_parameters(model) - (0 if c.tie_embeddings else model.embed.weight.numel())
    return 6 * matmul + 12 * c.n_layer * c.n_embd * seq_len


def peak_flops(device: torch.device, given_tflops: float | None) -> tuple[float, str]:
    if given_tflops:
        return given_tflops * 1e12, "given with --peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_TFLOPS:
            if all(part in name for part in key.split()):
                return tflops * 1e12, f"{name}: the {key}'s dense bf16 peak"
        raise SystemExit(f"the peak FLOP/s of {name} is not known here: give --peak-tflops")
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < 0.5:
        a @ b
        count += 1
    return 2 * 1024**3 * count / (time.perf_counter() - started), "float32 1024² matmuls measured on this CPU"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, nargs="+", help="token shards: RUN, RUN/tokens or RUN/tokens/train")
    parser.add_argument("--size", default="gpt2-124m", help="the GPT preset (default %(default)s)")
    parser.add_argument("--model-args", type=json.loads, default={}, help='JSON over the preset, e.g. {"n_layer": 2}')
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="auto: bfloat16 autocast on a GPU, float32 on a CPU")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="auto: on a GPU")
    parser.add_argument("--attention", choices=["auto", *ATTENTION], default="auto",
                        help="auto: flex on a GPU, segments on a CPU")
    parser.add_argument("--prefetch", type=int, default=4, help="micro-batches the loader keeps ready")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak, for MFU (known GPUs: looked up)")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    on_gpu = device.type == "cuda"
    attention = args.attention if args.attention != "auto" else "flex" if on_gpu else "segments"
    bf16 = args.dtype == "bfloat16" or (args.dtype == "auto" and on_gpu)
    compiled = args.compile == "on" or (args.compile == "auto" and on_gpu)
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    config = TrainConfig(data=args.data, out="unused", size=args.size, model_args=args.model_args,
                         seq_len=args.seq_len, batch_size=args.batch_size, grad_accum=args.grad_accum,
                         max_steps=args.steps, lr=args.lr, device=str(device))
    data = TrainingData(config.data, config.weights, config.seq_len, config.seed)
    torch.manual_seed(config.seed)
    model = BenchGPT(model_config_for(config, data.vocab_size, data.special_ids["eos"]), attention).to(device)
    optimizer = make_optimizer(model, config, device)  # fused AdamW on a GPU
    runner = torch.compile(model) if compiled else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    per_token = flops_per_token(model, config.seq_len)
    peak, peak_source = peak_flops(device, args.peak_tflops)
    tokens_per_step = config.batch_size * config.seq_len * config.grad_accum
    print(f"{torch.cuda.get_device_name(device) if on_gpu else 'CPU'}, torch {torch.__version__}: GPT {args.size} "
          f"{count_parameters(model):,} parameters, vocabulary {data.vocab_size:,}; {tokens_per_step:,} tokens/step "
          f"(batch {config.batch_size} × seq_len {config.seq_len} × accumulation {config.grad_accum}); "
          f"{'bfloat16 autocast' if bf16 else 'float32'}, {'compiled' if compiled else 'eager'}, "
          f"{type(optimizer).__name__}{' (fused)' if on_gpu else ''}, attention {attention}", flush=True)
    print(f"{per_token / 1e6:,.1f} MFLOP per token; peak {peak / 1e12:,.4g} TFLOP/s ({peak_source})", flush=True)

    loader = PrefetchLoader(data, config.batch_size, config.max_steps, config.grad_accum, device, args.prefetch)
    windows, started, waited, window_start = [], time.perf_counter(), 0.0, 0
    for step in range(config.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        for _ in range(config.grad_accum):
            x, y = loader.next()
            with autocast:
                _, loss = runner(x, y)
            (loss / config.grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if done % args.log_interval == 0 or done == config.max_steps:
            loss_value = loss.item()  # the one synchronisation of the interval
            elapsed, steps = time.perf_counter() - started, done - window_start
            tokens_per_s = steps * tokens_per_step / elapsed
            mfu = per_token * tokens_per_s / peak
            wait_ms = (loader.waited - waited) / steps * 1000
            print(f"step {done:>5}/{config.max_steps} | loss {loss_value:.4f} | {tokens_per_s:,.0f} tokens/s | "
                  f"MFU {mfu:.2%} | {elapsed / steps * 1000:,.1f} ms/step | loader wait {wait_ms:.2f} ms/step "
                  f"({wait_ms / (elapsed / steps * 1000):.1%})", flush=True)
            windows.append((tokens_per_s, mfu, wait_ms))
            started, waited, window_start = time.perf_counter(), loader.waited, done
    steady = windows[1:] or windows  # the first window holds compilation and warm-up
    summary = {"tokens_per_s": statistics.median(w[0] for w in steady), "mfu": statistics.median(w[1] for w in steady),
               "loader_wait_ms_per_step": statistics.median(w[2] for w in steady)}
    if on_gpu:
        summary["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if not all(math.isfinite(v) for v in summary.values()):
        raise SystemExit(f"a measurement is not finite: {summary}")
    print("summary (median of the intervals after the first): " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()

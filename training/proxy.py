"""Proxy models for data ablations: train a small model on one token folder for a fixed token budget, then
evaluate it on fixed held-out sets. `refinery ablate` trains one per recipe and seed; this module knows token
folders, not recipes.

Every model of an ablation is given every compared folder as data, its own with weight 1 and the others with
weight 0: it trains on its own tokens only, but its log records the validation loss on each folder's validation
split (`by_source`), so the learning curves of all models are measured on the same sets.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refinery.training.config import TrainConfig, load_train_config

# `tiny`: the GPT `refinery demo` trains (pipelines/commands/demo); `small`: training/configs/gpt.yaml (a GPU).
SIZES: dict[str, tuple[str | None, dict[str, Any]]] = {
    "tiny": (None, {"size": "tiny", "seq_len": 128, "batch_size": 16, "lr": 3e-3}),
    "small": ("gpt", {}),
}
VOCAB_SIZES = {"tiny": 2048, "small": 8192}  # the shared tokenizer's default vocabulary for each size
CURVE_POINTS = 10  # validation losses per training run, for the learning curves
CURVE_BATCHES = 10  # at most this many batches per validation loss, the same for every model


def proxy_config(size: str, folders: list[str], own: int, out: str | Path, tokens: int, seed: int,
                 device: str = "auto") -> TrainConfig:
    """The training config of a proxy model: the size's preset, trained on folders[own] for about `tokens`
    tokens (whole steps: steps × batch_size × seq_len × grad_accum)."""
    if size not in SIZES:
        raise ValueError(f"unknown proxy size '{size}' (valid: {', '.join(SIZES)})")
    config_file, preset = SIZES[size]
    weights = [1.0 if index == own else 0.0 for index in range(len(folders))]
    overrides = {**preset, "data": [str(f) for f in folders], "data_weights": weights, "out": str(out),
                 "seed": seed, "device": device, "checkpoint_interval": 0}
    probe = load_train_config(config_file, {**overrides, "max_steps": 1, "warmup_steps": 0})
    steps = max(1, round(tokens / tokens_per_step(probe)))
    # The curves cost forward passes over every folder: keep them near a tenth of training (3 passes a token).
    batches = max(1, min(CURVE_BATCHES, 3 * steps // (10 * CURVE_POINTS * len(folders))))
    return load_train_config(config_file, {**overrides, "max_steps": steps, "eval_batches": batches,
                                           "eval_interval": max(1, steps // CURVE_POINTS)})


def tokens_per_step(config: TrainConfig) -> int:
    """Tokens one optimizer step trains on, on one process."""
    return config.batch_size * config.seq_len * config.grad_accum


@dataclass
class HeldOut:
    """The fixed evaluation of every proxy: raw texts (perplexity and bits per byte), validation splits of token
    folders (perplexity), and zero-shot multiple choice tasks (acc, acc_norm) from an llm-foundry folder."""

    texts: dict[str, Path]
    shards: dict[str, Path]
    tasks: list[str] = field(default_factory=list)
    evals_dir: Path | None = None
    mc_items: int | None = None
    max_tokens: int | None = None


def train_and_evaluate(config: TrainConfig, held_out: HeldOut, names: dict[str, str],
                       threads: int | None = None) -> dict[str, Any]:
    """Train the proxy (its printout goes to the caller's stdout), evaluate it, and return its figures, its
    validation curves (named by `names`: data folder → name) and its timing."""
    import torch

    from refinery.training.eval_cli import evaluate_checkpoint
    from refinery.training.train import train

    if threads:
        torch.set_num_threads(threads)  # one thread: the fastest for tiny models, and the same sums every run
    started = time.perf_counter()
    result = train(config, progress=False)
    trained = time.perf_counter() - started
    shards = {name: str(folder) for name, folder in held_out.shards.items()}
    args = argparse.Namespace(
        checkpoint=str(result.out), device=config.device, data=list(shards.values()), split="validation",
        text=[str(path) for path in held_out.texts.values()], tasks=held_out.tasks, evals_dir=held_out.evals_dir,
        instructions=None, skip=0, limit=held_out.mc_items, max_tokens=held_out.max_tokens, window=None,
        stride=None, max_new_tokens=0, batch_size=16)
    evaluated = evaluate_checkpoint(args)
    perplexity = evaluated["perplexity"]  # keyed as `refinery eval` names its sources
    figures: dict[str, Any] = {name: perplexity[str(path)] for name, path in held_out.texts.items()}
    figures.update({f"val:{name}": perplexity[f"{folder} (validation)"] for name, folder in shards.items()})
    figures.update(evaluated["tasks"])
    return {
        "figures": figures,
        "steps": result.step,
        "tokens_trained": result.step * tokens_per_step(config),
        "unigram_entropy": result.unigram_entropy,
        "val_loss": result.val_loss,
        "curve": validation_curve(Path(config.out), names, tokens_per_step(config)),
        "timing": {"train_seconds": round(trained, 1), "eval_seconds": round(time.perf_counter() - started - trained,
                                                                               1),
                   "tokens_per_second": round(result.tokens_per_second, 1)},
    }


def validation_curve(out: Path, names: dict[str, str], per_step: int) -> list[dict[str, Any]]:
    """The `val` records of a training log: step, tokens seen and the validation loss on each named folder."""
    curve = []
    for line in (out / "log.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["kind"] == "val":
            losses = record.get("by_source") or {}
            curve.append({"step": record["step"], "tokens": record["step"] * per_step,
                          "val_loss": {names.get(source, source): loss for source, loss in losses.items()}})
    return curve

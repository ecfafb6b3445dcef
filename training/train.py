"""The training loop: pretraining and SFT on token shards, one process or many under torchrun.

One optimizer step = `grad_accum` micro-batches of `batch_size` windows on each of the processes. The
learning rate warms up linearly, then follows a cosine down to `min_lr`. Every random draw of step k
comes from (seed, rank, k), so a run resumed from a checkpoint repeats the uninterrupted run's losses
exactly. A loss or gradient that is not finite stops the run, naming the step, before the weights change.
"""

from __future__ import annotations

import gc
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from refinery.corpora.atomic import remove_temp_files
from refinery.training.checkpoint import (
    checkpoint_folder,
    load_train_state,
    load_weights,
    read_config,
    resume_folder,
    save_checkpoint,
)
from refinery.training.config import SINGLE_THREAD_BELOW, ConfigError, TrainConfig, model_config_for
from refinery.training.data import TrainingData
from refinery.training.ddp import Distributed, all_gather_floats, all_reduce_mean, init_distributed, shutdown
from refinery.training.logs import TrainingLog
from refinery.training.model import GPT, LSTM, GPTConfig, LSTMConfig, build_model, count_parameters
from refinery.training.optim import PlainAdamW


class TrainingError(RuntimeError):
    """Training stopped: what happened, at which step, and what to do."""


@dataclass
class TrainResult:
    out: Path
    step: int
    val_loss: float | None
    unigram_entropy: float
    tokens_per_second: float


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of update `step` (0-based): linear warmup, then cosine from lr down to min_lr."""
    min_lr = config.lr / 10 if config.min_lr is None else config.min_lr
    warmup = config.warmup
    if step < warmup:
        return config.lr * (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, config.max_steps - warmup)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (config.lr - min_lr)


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW | PlainAdamW:
    """AdamW that decays matrices and embeddings but not norm gains (1-D), as GPT-2 and Llama train: fused on a
    GPU; on the CPU the same arithmetic without importing torch._dynamo (training/optim.py)."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    if device.type == "cpu":
        return PlainAdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2))
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=device.type == "cuda")


def cpu_threads(setting: int | str | None, model: torch.nn.Module) -> int | None:
    """The torch threads of a CPU run: the number set; for `auto`, 1 for a model under SINGLE_THREAD_BELOW
    non-embedding parameters unless OMP_NUM_THREADS is set; None: leave torch's setting as it is."""
    if setting != "auto":
        return setting
    vocab = model.config.vocab_size  # the embedding and output matrices have a row per token
    small = sum(p.numel() for p in model.parameters() if p.shape[0] != vocab) < SINGLE_THREAD_BELOW
    return 1 if small and "OMP_NUM_THREADS" not in os.environ else None


def step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def parameter_checksum(model: torch.nn.Module) -> float:
    """A number that two copies of the model share only when their weights agree."""
    with torch.no_grad():
        return sum(float((p.double() * (1 + p.double().abs())).sum()) for p in model.parameters())


def _model_config(config: TrainConfig, data: TrainingData, resume_from: Path | None) -> GPTConfig | LSTMConfig:
    """The model a fresh run would build (from the init checkpoint or the preset); a resumed run must match it."""
    if config.init:
        model_config, info = read_config(config.init)
        if info["tokenizer_fingerprint"] != data.fingerprint:
            tokenizer = checkpoint_folder(config.init) / "tokenizer.json"
            raise ConfigError(f"init checkpoint {config.init} was trained with another tokenizer than "
                              f"{config.data[0]}; tokenize this data with {tokenizer}")
        if getattr(model_config, "block_size", config.seq_len) < config.seq_len:
            raise ConfigError(f"seq_len {config.seq_len} is longer than the init model's block_size "
                              f"{model_config.block_size}")
    else:
        model_config = model_config_for(config, data.vocab_size, data.special_ids["eos"])
    if resume_from is not None:
        resumed, info = read_config(resume_from)
        if resumed != model_config or info["tokenizer_fingerprint"] != data.fingerprint:
            raise ConfigError(f"{resume_from} holds a different model or tokenizer than this config "
                              f"({asdict(resumed)} vs {asdict(model_config)}); resume with the run's own config")
    return model_config


def _evaluate(model: torch.nn.Module, data: TrainingData, config: TrainConfig, env: Distributed,
              autocast) -> dict | None:
    """Mean validation loss over fixed windows, per source and mixed by the sources' weights."""
    sources = [s for s in data.sources if s.validation is not None]
    if not sources:
        return None
    model.eval()
    by_source = {}
    with torch.no_grad():
        for source in sources:
            total = torch.zeros((), device=env.device)
            for index in range(config.eval_batches):
                x, y, mask = _to_device(data.validation_batch(source, config.batch_size, index), env.device)
                with autocast:
                    total += model(x, y, mask)[1].float()
            by_source[source.name] = all_reduce_mean(total / config.eval_batches, env).item()
    model.train()
    weight = sum(s.weight for s in sources)
    return {"val_loss": sum(s.weight * by_source[s.name] for s in sources) / weight, "by_source": by_source}


def _to_device(batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    x, y, mask = (None if a is None else torch.from_numpy(a).to(device, non_blocking=True) for a in batch)
    return x, y, mask


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train as the config says (under torchrun: this process's part); rank 0 writes checkpoints and logs."""
    env = init_distributed(config.device)
    threads = torch.get_num_threads()
    try:
        result = _train(config, env, progress)  # on an error, leave the group alone: torchrun stops the others
    finally:
        torch.set_num_threads(threads)  # as the caller had it
    gc.collect()  # DDP's reference cycles: no gloo work may outlive the process group into interpreter exit
    shutdown(env)
    return result


def _train(config: TrainConfig, env: Distributed, progress: bool) -> TrainResult:
    out = Path(config.out)
    resume_from = None
    if config.resume:
        resume_from = resume_folder(config.resume, out)
    elif (out / "latest").exists():
        raise ConfigError(f"{out} already holds a training run: add --resume to continue it, or choose another out")
    data = TrainingData(config.data, config.weights, config.seq_len, config.seed, env.rank, env.world_size)
    model_config = _model_config(config, data, resume_from)
    model, optimizer, start_step = _prepare(config, model_config, env, resume_from)
    if env.device.type == "cpu" and (threads := cpu_threads(config.threads, model)):
        torch.set_num_threads(threads)

    on_gpu = env.device.type == "cuda"
    bf16 = config.dtype == "bfloat16" or (config.dtype == "auto" and on_gpu and torch.cuda.is_bf16_supported())
    autocast = torch.autocast(env.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    runner = torch.compile(model) if config.compile is True or (config.compile == "auto" and on_gpu) else model
    stepper = DistributedDataParallel(runner, device_ids=[env.device.index] if on_gpu else None) if env.enabled \
        else runner

    tokens_per_step = config.batch_size * config.seq_len * config.grad_accum * env.world_size
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if resume_from is not None:  # what a killed run of this folder left half-written (only temp names)
            remove_temp_files(out)
    log = TrainingLog(out, start_step if resume_from else None) if env.is_main else None
    baseline = data.unigram_entropy() if env.is_main else float("nan")
    say = tqdm.write if env.is_main else (lambda _message: None)
    if env.is_main:
        say(f"model {type(model).__name__} {count_parameters(model):,} parameters on {env.device} "
            f"({'bfloat16' if bf16 else 'float32'}, {env.world_size} process(es)); {tokens_per_step:,} tokens/step; "
            f"data {sum(s.train.tokens for s in data.sources):,} tokens")
        say(f"unigram entropy of the training tokens: {baseline:.4f} nats (the loss of a model that ignores context)")
        if resume_from is not None:
            say(f"resuming from step {start_step} ({resume_from.parent / resume_from.resolve().name}); "
                f"{config.max_steps - start_step} steps to go")
        log.write("start", step=start_step, parameters=count_parameters(model), unigram_entropy=baseline,
                  tokens_per_step=tokens_per_step, world_size=env.world_size, model=asdict(model_config),
                  config=config.model_dump(), resumed_from=str(resume_from) if resume_from else None)

    def validate(step: int) -> float | None:
        result = _evaluate(runner, data, config, env, autocast)
        if result is None:
            return None
        if env.is_main:
            by_source = result["by_source"] if len(result["by_source"]) > 1 else {}
            log.write("val", step=step, val_loss=result["val_loss"], by_source=by_source)
            say(f"step {step}: validation loss {result['val_loss']:.4f} (unigram entropy {baseline:.4f})")
        return result["val_loss"]

    for source in data.sources:
        if source.validation is None:
            say(f"no validation loss for {source.name}: {source.no_validation}")
    if not any(s.validation for s in data.sources):
        say("training without validation: nothing is evaluated, and checkpoints carry no val_loss")
    val_loss = validate(0) if start_step == 0 and config.eval_interval else None
    bar = tqdm(total=config.max_steps, initial=start_step, unit="step", disable=not (progress and env.is_main))
    window_start, window_steps, tokens_per_second = time.perf_counter(), 0, 0.0
    for step in range(start_step, config.max_steps):
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_value, grad_norm = _accumulate_gradients(stepper, model, data, config, env, step, autocast)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        window_steps += 1
        if done % config.log_interval == 0 or done in (start_step + 1, config.max_steps):
            elapsed = time.perf_counter() - window_start
            tokens_per_second = window_steps * tokens_per_step / elapsed
            window_start, window_steps = time.perf_counter(), 0
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_second:,.0f}")
            if env.is_main:
                log.write("train", step=done, loss=loss_value, lr=lr, grad_norm=grad_norm,
                          tokens=done * tokens_per_step, tokens_per_s=round(tokens_per_second, 1))
        bar.update(1)
        if done == config.max_steps or (config.eval_interval and done % config.eval_interval == 0):
            val_loss = validate(done)
        if done == config.max_steps or (config.checkpoint_interval and done % config.checkpoint_interval == 0):
            _checkpoint(model, optimizer, config, data, env, log, done, val_loss, baseline, tokens_per_step)
            if env.is_main and done < config.max_steps:  # loss.png: at each checkpoint and at the end, not at each
                log.plot(baseline)  # validation (0.1 s a drawing, and matplotlib's import, 0.5-1 s, in a short run)
    bar.close()
    if env.is_main:
        if val_loss is not None:
            gap = baseline - val_loss
            say(f"done: step {config.max_steps}, validation loss {val_loss:.4f} nats vs unigram entropy "
                f"{baseline:.4f} nats ({abs(gap):.4f} {'below' if gap > 0 else 'ABOVE'} it); checkpoint "
                f"{out / 'latest'}")
        else:
            say(f"done: step {config.max_steps}, no validation split (see above); checkpoint {out / 'latest'}")
        log.write("end", step=config.max_steps, val_loss=val_loss, unigram_entropy=baseline)
        log.plot(baseline)
    return TrainResult(out, config.max_steps, val_loss, baseline, tokens_per_second)


def _prepare(config: TrainConfig, model_config: GPTConfig | LSTMConfig, env: Distributed,
             resume_from: Path | None) -> tuple[GPT | LSTM, torch.optim.AdamW | PlainAdamW, int]:
    """The model (fresh, from init or from the resumed checkpoint), its optimizer, and the step to start from."""
    torch.manual_seed(config.seed)
    model = build_model(model_config)
    if resume_from or config.init:
        load_weights(model, resume_from or config.init)
    model.to(env.device)
    optimizer = make_optimizer(model, config, env.device)
    if resume_from is None:
        return model, optimizer, 0
    state = load_train_state(resume_from)
    optimizer.load_state_dict(state["optimizer"])
    if state["step"] >= config.max_steps:
        raise ConfigError(f"{resume_from} is at step {state['step']} and max_steps is {config.max_steps}: "
                          "nothing to do; raise max_steps to train longer")
    if state["world_size"] != env.world_size and env.is_main:
        tqdm.write(f"note: the run had {state['world_size']} processes, now {env.world_size}: the batches "
                   "after the checkpoint differ from the uninterrupted run's")
    return model, optimizer, state["step"]


def _accumulate_gradients(stepper: torch.nn.Module, model: torch.nn.Module, data: TrainingData, config: TrainConfig,
                          env: Distributed, step: int, autocast) -> tuple[float, float]:
    """Forward and backward over the step's micro-batches, then clip: the loss (mean over ranks) and grad norm."""
    torch.manual_seed(step_seed(config.seed, env.rank, step))  # dropout of this step, whatever ran before
    loss_sum = torch.zeros((), device=env.device)
    for micro in range(config.grad_accum):
        x, y, mask = _to_device(data.batch(config.batch_size, step, micro), env.device)
        last = micro == config.grad_accum - 1
        with stepper.no_sync() if env.enabled and not last else nullcontext():  # all-reduce once per step
            with autocast:
                _, loss = stepper(x, y, mask)
            (loss / config.grad_accum).backward()
        loss_sum += loss.detach().float()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or math.inf))
    loss_value = all_reduce_mean(loss_sum / config.grad_accum, env).item()
    if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):  # the same on every rank: all stop together
        raise TrainingError(
            f"step {step + 1}: the loss is {loss_value} and the gradient norm {grad_norm}; the weights were not "
            f"updated. Lower lr (now {lr_at(step, config):.3g}), keep grad_clip on, or resume from "
            f"{Path(config.out) / 'latest'} with --resume after changing them; check the data if it happens at "
            "the first step")
    return loss_value, grad_norm


def _checkpoint(model, optimizer, config: TrainConfig, data: TrainingData, env: Distributed,
                log: TrainingLog | None, step: int, val_loss: float | None, baseline: float,
                tokens_per_step: int) -> None:
    """Check that every rank holds the same weights, then save them (rank 0)."""
    checksums = all_gather_floats(parameter_checksum(model), env)
    if len(set(checksums)) > 1:
        raise TrainingError(f"step {step}: the processes hold different weights (checksums {checksums}); "
                            "DDP lost sync: resume from the last checkpoint")
    if not env.is_main:
        return
    info = {"tokenizer_fingerprint": data.fingerprint, "special_ids": data.special_ids, "val_loss": val_loss,
            "sft": data.has_mask,
            "unigram_entropy": baseline, "tokens_seen": step * tokens_per_step, "train": config.model_dump()}
    state = {"step": step, "optimizer": optimizer.state_dict(), "seed": config.seed, "world_size": env.world_size}
    folder = save_checkpoint(Path(config.out), step, model, info, state, data.tokenizer_path, config.keep_checkpoints)
    log.write("checkpoint", step=step, path=str(folder), rank_checksums=checksums)

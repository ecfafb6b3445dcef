"""The training configuration: a YAML file and command-line overrides, validated before anything runs.

```yaml
data: out/web-en/tokens          # a token-shard folder (RUN, RUN/tokens or RUN/tokens/train), or a list to mix
out: out/gpt-tiny                # checkpoints, log.jsonl, loss.png
model: gpt                       # gpt (Llama-style) or lstm
size: tiny                       # a preset: tiny, small, and gpt2-124m for gpt
model_args: {document_attention: true}
max_steps: 2000
```

Paths in the file are relative to the file's folder; paths given on the command line to the current one.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator
from refinery.training.model import ARCHITECTURES, GPTConfig, LSTMConfig

PATH_FIELDS = ("data", "out", "init", "resume")


class ConfigError(ValueError):
    """A training configuration that cannot run; the message names the option and what to do."""


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    data: list[str] = Field(min_length=1, description="token-shard folders; several are mixed by data_weights")
    data_weights: list[float] | None = Field(None, description="sampling weight of each data folder (default equal)")
    out: str = Field(description="folder for checkpoints (step-N/, latest), log.jsonl and loss.png")
    init: str | None = Field(None, description="start from this checkpoint's weights (fine-tuning, SFT)")
    resume: str | None = Field(None, description="'latest' (OUT/latest) or a checkpoint: continue that run exactly")

    model: Literal["gpt", "lstm"] = "gpt"
    size: str = Field("tiny", description="preset size of the model")
    model_args: dict[str, Any] = Field(default_factory=dict, description="model options over the preset")

    seq_len: int = Field(256, ge=2)
    batch_size: int = Field(16, ge=1, description="windows per micro-batch per process")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_steps: int = Field(1000, ge=1)
    lr: float = Field(6e-4, gt=0)
    min_lr: float | None = Field(None, ge=0, description="the cosine schedule's floor (default lr / 10)")
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.1, ge=0, description="AdamW decay of matrices and embeddings (not norms)")
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0, description="clip the gradient norm to this (0: no clipping)")

    eval_interval: int = Field(200, ge=0, description="steps between validation losses (0: only at the end)")
    eval_batches: int = Field(20, ge=1)
    checkpoint_interval: int = Field(1000, ge=0, description="steps between checkpoints (0: only at the end)")
    keep_checkpoints: int = Field(3, ge=0, description="step-N folders kept (0: all)")
    log_interval: int = Field(10, ge=1)
    seed: int = 0
    device: str = Field("auto", description="auto (cuda when present), cpu, cuda, cuda:1, mps")
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="auto: bfloat16 autocast on GPU")
    compile: bool | Literal["auto"] = Field("auto", description="torch.compile (auto: on GPU)")

    @field_validator("data", "data_weights", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, int, float)) else value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.data_weights is not None:
            if len(self.data_weights) != len(self.data):
                raise ValueError(f"data_weights has {len(self.data_weights)} entries, data has {len(self.data)}")
            if any(w < 0 for w in self.data_weights) or not sum(self.data_weights):
                raise ValueError("data_weights must be non-negative with a positive sum")
        if self.min_lr is not None and self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr} is above lr {self.lr}")
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} is longer than max_steps {self.max_steps}")
        if self.init and {"model", "size", "model_args"} & self.model_fields_set:
            raise ValueError("init takes the model from the checkpoint: remove model, size and model_args")
        presets = ARCHITECTURES[self.model][2]
        if self.size not in presets:
            raise ValueError(f"unknown size '{self.size}' for model {self.model}{_suggest(self.size, presets)}")
        return self

    @property
    def weights(self) -> list[float]:
        raw = self.data_weights or [1.0] * len(self.data)
        return [w / sum(raw) for w in raw]


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" — did you mean '{close[0]}'?" if close else f" (valid: {', '.join(sorted(choices))})"


def _describe(err: ValidationError, where: str) -> str:
    lines = []
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown option '{key}'{_suggest(key, TrainConfig.model_fields)}")
        elif problem["type"] == "missing":
            lines.append(f"{where}: '{key}' is required ({TrainConfig.model_fields[key].description})")
        else:
            lines.append(f"{where}: {key + ': ' if key else ''}{problem['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def _set(values: dict, dotted_key: str, value: Any) -> None:
    *parents, last = dotted_key.split(".")
    for part in parents:
        values = values.setdefault(part, {})
    values[last] = value


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (paths relative to its folder) and apply overrides ('model_args.dropout' reaches inside)."""
    values: dict[str, Any] = {}
    where = "command line"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"training config {path} does not exist")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a training config is a mapping of options (data: …, out: …)")
        for key in PATH_FIELDS:
            if isinstance(loaded.get(key), str) and not (key == "resume" and loaded[key] == "latest"):
                loaded[key] = str(path.parent / loaded[key])
            elif key == "data" and isinstance(loaded.get(key), list):
                loaded[key] = [str(path.parent / p) for p in loaded[key]]
        values, where = loaded, str(path)
    for key, value in (overrides or {}).items():
        _set(values, key, value)
    try:
        return TrainConfig(**values)
    except ValidationError as err:
        raise ConfigError(_describe(err, where)) from None


def model_config_for(config: TrainConfig, vocab_size: int, eos_id: int | None) -> GPTConfig | LSTMConfig:
    """The model's dataclass: the preset, then model_args, with the vocabulary and length the data needs."""
    config_class, _, presets = ARCHITECTURES[config.model]
    known = {f.name for f in dataclasses.fields(config_class)}
    for key in config.model_args:
        if key not in known:
            raise ConfigError(f"model_args: unknown option '{key}' for model {config.model}{_suggest(key, known)}")
    values = {**presets[config.size], **config.model_args, "vocab_size": vocab_size}
    if config_class is GPTConfig:
        values.setdefault("block_size", config.seq_len)
        values.setdefault("eos_id", eos_id)
        if values["block_size"] < config.seq_len:
            raise ConfigError(f"model_args: block_size {values['block_size']} is shorter than seq_len {config.seq_len}")
    try:
        return TypeAdapter(config_class).validate_python(values)  # checks types, then runs __post_init__
    except ValidationError as err:
        raise ConfigError(_describe(err, "model_args")) from None

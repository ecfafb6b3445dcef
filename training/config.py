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
Importing this module does not import torch: `refinery train --help` reads the defaults here.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from refinery.training.model_options import MODEL_OPTIONS, GPTConfig, LSTMConfig

PATH_FIELDS = ("data", "out", "init", "resume")
WARMUP_FRACTION_INVERSE = 10  # default warmup: a tenth of max_steps (the old fixed 100 for the default 1,000)...
MAX_DEFAULT_WARMUP = 100  # ...and never more than 100 steps, as before, however long the run
# threads: auto trains a model below this many non-embedding parameters on one thread: its operations are too small
# to share, and on a busy 2-core box a second thread made the tiny GPT 7x slower (docs/performance.md)
SINGLE_THREAD_BELOW = 1_000_000


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
    lr: float = Field(6e-4, gt=0, allow_inf_nan=False)
    min_lr: float | None = Field(None, ge=0, allow_inf_nan=False, description="the cosine schedule's floor "
                                 "(default lr / 10)")
    # Unset, warmup follows the run's length, as HF's warmup_ratio does: a short run is not all warmup.
    warmup_steps: int | None = Field(None, ge=0, description=f"linear warmup (default: max_steps / "
                                     f"{WARMUP_FRACTION_INVERSE}, at most {MAX_DEFAULT_WARMUP})")
    weight_decay: float = Field(0.1, ge=0, description="AdamW decay of matrices and embeddings (not norms)")
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0, description="clip the gradient norm to this (0: no clipping)")

    eval_interval: int = Field(200, ge=0, description="steps between validation losses (0: only at the end)")
    eval_batches: int = Field(20, ge=1)
    checkpoint_interval: int = Field(1000, ge=0, description="steps between checkpoints (0: only at the end)")
    keep_checkpoints: int = Field(3, ge=0, description="step-N folders kept (0: all)")
    log_interval: int = Field(10, ge=1)
    seed: int = Field(0, ge=0)
    device: str = Field("auto", description="auto (cuda when present), cpu, cuda, cuda:1, mps")
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="auto: bfloat16 autocast on GPU")
    compile: bool | Literal["auto"] = Field("auto", description="torch.compile (auto: on GPU)")
    threads: int | Literal["auto"] | None = Field(None, description=(
        "torch threads on the CPU: a number; auto (what `refinery train` uses unless set): 1 for a model under "
        f"{SINGLE_THREAD_BELOW:,} non-embedding parameters, else torch's own; unset: torch's own (a thread per "
        "core, or OMP_NUM_THREADS)"))

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
        if self.warmup_steps is not None and self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} is longer than max_steps {self.max_steps}: lower it "
                             f"(--set warmup_steps={self.max_steps // WARMUP_FRACTION_INVERSE}) or leave it out (the "
                             f"default is max_steps / {WARMUP_FRACTION_INVERSE}, at most {MAX_DEFAULT_WARMUP})")
        if isinstance(self.threads, int) and self.threads < 1:
            raise ValueError(f"threads must be at least 1 or auto, not {self.threads}")
        if self.init and {"model", "size", "model_args"} & self.model_fields_set:
            raise ValueError("init takes the model from the checkpoint: remove model, size and model_args")
        presets = MODEL_OPTIONS[self.model][1]
        if self.size not in presets:
            raise ValueError(f"unknown size '{self.size}' for model {self.model}{_suggest(self.size, presets)}")
        return self

    @property
    def warmup(self) -> int:
        """The warmup steps the schedule uses: warmup_steps, or by default a share of max_steps."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(MAX_DEFAULT_WARMUP, self.max_steps // WARMUP_FRACTION_INVERSE)

    @property
    def weights(self) -> list[float]:
        raw = self.data_weights or [1.0] * len(self.data)
        return [w / sum(raw) for w in raw]


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" — did you mean '{close[0]}'?" if close else f" (valid: {', '.join(sorted(choices))})"


def _describe(err: ValidationError, where: str, given_as: dict[str, str]) -> str:
    """One line per problem, naming where the option came from: the file, or the flag that set it."""
    lines = []
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"])
        place = given_as.get(str(problem["loc"][0]), where) if problem["loc"] else where
        if problem["type"] == "extra_forbidden":
            lines.append(f"{place}: unknown option '{key}'{_suggest(key, TrainConfig.model_fields)}")
        elif problem["type"] == "missing":
            lines.append(f"{place}: '{key}' is required ({TrainConfig.model_fields[key].description})")
        elif key:
            lines.append(f"{place}: {key} {problem['input']!r}: {problem['msg']}")
        else:
            lines.append(f"{place}: {problem['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def _set(values: dict, dotted_key: str, value: Any) -> None:
    *parents, last = dotted_key.split(".")
    for part in parents:
        values = values.setdefault(part, {})
    values[last] = value


def resumed_run_options(resume: str, out: str | None) -> tuple[dict[str, Any], str]:
    """The options a run was started with, as its checkpoint saved them, and where they were read: with them
    `--resume --out OUT` alone continues a run. Its output folder is OUT, or the checkpoint's folder."""
    from refinery.training.checkpoint import read_config, resume_folder  # torch: only when resuming

    folder = resume_folder(resume, out)
    _, info = read_config(folder)
    if "train" not in info:
        raise ConfigError(f"{folder / 'config.json'} does not hold the options of its run; resume with the run's "
                          "config file: refinery train CONFIG --resume")
    values = dict(info["train"])
    if values.get("init"):  # the validator refuses model options beside init: the dump holds their defaults
        for key in ("model", "size", "model_args"):
            values.pop(key, None)
    values.update(resume=resume, out=str(out) if out is not None else str(folder.parent))
    return values, str(folder / "config.json")


BUNDLED_CONFIGS = Path(__file__).parent / "configs"


def bundled_config(path: Path) -> Path:
    """`path` itself when it is a file; else the shipped config of that name (`gpt` or `gpt.yaml`), if any."""
    if path.exists() or path.parent != Path("."):
        return path
    shipped = BUNDLED_CONFIGS / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    return shipped if shipped.is_file() else path


def _beside(config_file: Path, value: str) -> str:
    """A path of a config file, relative to the file's folder; a URL (s3://…) as it is."""
    return value if "://" in value else str(config_file.parent / value)


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                      given_as: dict[str, str] | None = None) -> TrainConfig:
    """Read a YAML config (paths relative to its folder) and apply overrides ('model_args.dropout' reaches inside).

    Without a file, a resumed run starts from the options its checkpoint saved. `given_as` names the flag of
    each override, for messages."""
    values: dict[str, Any] = {}
    where = "command line"
    overrides = overrides or {}
    if path is None and overrides.get("resume"):
        values, where = resumed_run_options(overrides["resume"], overrides.get("out"))
        missing = [folder for folder in values["data"] if not Path(folder).exists()]
        if missing and "data" not in overrides:
            raise ConfigError(f"{where}: the run trained on {', '.join(missing)}, which is not there from "
                              f"{Path.cwd()}; run the command from the folder the training started in, or add "
                              "--data FOLDER")
    if path is not None:
        path = bundled_config(Path(path))
        if not path.exists():
            shipped = ", ".join(sorted(p.stem for p in BUNDLED_CONFIGS.glob("*.yaml")))
            raise ConfigError(f"training config {path} does not exist (the configs Refinery ships: {shipped})")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a training config is a mapping of options (data: …, out: …)")
        for key in PATH_FIELDS:
            if isinstance(loaded.get(key), str) and not (key == "resume" and loaded[key] == "latest"):
                loaded[key] = _beside(path, loaded[key])
            elif key == "data" and isinstance(loaded.get(key), list):
                loaded[key] = [_beside(path, p) for p in loaded[key]]
        values, where = loaded, str(path)
    for key, value in overrides.items():
        _set(values, key, value)
    given_as = {key.split(".")[0]: f"command line ({flag})" for key, flag in (given_as or {}).items()}
    given_as.update({key.split(".")[0]: "command line" for key in overrides if key.split(".")[0] not in given_as})
    try:
        return TrainConfig(**values)
    except ValidationError as err:
        raise ConfigError(_describe(err, where, given_as)) from None


def model_config_for(config: TrainConfig, vocab_size: int, eos_id: int | None) -> GPTConfig | LSTMConfig:
    """The model's dataclass: the preset, then model_args, with the vocabulary and length the data needs."""
    config_class, presets = MODEL_OPTIONS[config.model]
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

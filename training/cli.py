"""`refinery train`: arguments and entry point. Importing this module does not import torch.

    refinery train config.yaml --max-steps 2000 --set model_args.dropout=0.1
    refinery train --data out/web-en/tokens --out out/tiny --size tiny
    refinery train --resume --out out/tiny                                   (continue after Ctrl-C or a crash)
    torchrun --standalone --nproc_per_node 2 -m training.cli config.yaml      (DDP; `$(which refinery) train` too)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = (
    "Train a model on token shards: a Llama-style GPT or an LSTM baseline. Options come from a YAML config "
    "(every option of docs/training.md), then from the flags below, then from --set. Checkpoints, log.jsonl "
    "and loss.png go to --out; --resume continues a run exactly where it stopped. Under torchrun each process "
    "trains on its own part of the shards (DDP). A default below is what an option is when neither the config nor "
    "a flag sets it."
)

# (flag, option of the config, argparse keywords): each flag overrides its option only when given
FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--data", "data", dict(nargs="+", metavar="FOLDER", help="token shards: RUN, RUN/tokens or RUN/tokens/train; "
                                                               "several are mixed")),
    ("--data-weights", "data_weights", dict(nargs="+", type=float, metavar="W", help="mixing weight per --data")),
    ("--out", "out", dict(metavar="FOLDER", help="output folder: checkpoints, log.jsonl, loss.png")),
    ("--init", "init", dict(metavar="CKPT", help="start from this checkpoint's weights (SFT, fine-tuning)")),
    ("--resume", "resume", dict(nargs="?", const="latest", metavar="CKPT",
                                help="continue the run in --out (or from CKPT) exactly where it stopped, "
                                     "with the options it was started with (flags override them)")),
    ("--model", "model", dict(choices=["gpt", "lstm"], help="architecture")),
    ("--size", "size", dict(help="preset: tiny, small, and gpt2-124m for gpt")),
    ("--max-steps", "max_steps", dict(type=int, metavar="N", help="optimizer steps")),
    ("--batch-size", "batch_size", dict(type=int, metavar="N", help="windows per micro-batch per process")),
    ("--grad-accum", "grad_accum", dict(type=int, metavar="N", help="micro-batches per optimizer step")),
    ("--seq-len", "seq_len", dict(type=int, metavar="N", help="tokens per training window")),
    ("--lr", "lr", dict(type=float, help="peak learning rate")),
    ("--device", "device", dict(help="auto (cuda when present, else cpu), cpu, cuda, cuda:1, mps")),
    ("--seed", "seed", dict(type=int, metavar="N", help="seeds the initial weights, the batches drawn and dropout")),
    ("--threads", "threads", dict(type=lambda v: v if v == "auto" else int(v), metavar="N",
                                  help="torch threads on the CPU, or auto")),
]
# What an option is when neither the config file nor a flag sets it, where its default (None) means something.
DEFAULT_IN_WORDS = {"data": "none: required, here or in the config file", "out": "none: required, here or in the "
                    "config file", "data_weights": "equal weights", "init": "none: a new model",
                    "resume": "none: a new run", "settings": "none", "config": "none: the flags alone",
                    "quiet": "off: a progress bar is drawn",
                    "threads": "auto: 1 for a model under 1,000,000 non-embedding parameters (the tiny presets), "
                               "else torch's own, a thread per core; OMP_NUM_THREADS, when set, decides instead"}


class _ConfigDefaultsFormatter(argparse.HelpFormatter):
    """Help that ends every option with "(default: X)", X as TrainConfig defines it: the config is imported only
    when help is printed (it needs pydantic, not torch), so that `refinery` itself starts without either."""

    def _get_help_string(self, action: argparse.Action) -> str:
        default = option_default(action.dest)
        text = action.help or ""
        return text if default is None else f"{text} (default: {default.replace('%', '%%')})".lstrip()


def option_default(option: str) -> str | None:
    """What a `refinery train` option is by default, in words; None for an argument with no default (--help)."""
    if option in DEFAULT_IN_WORDS:
        return DEFAULT_IN_WORDS[option]
    from refinery.training.config import TrainConfig

    field = TrainConfig.model_fields.get(option)
    return None if field is None else str(field.get_default(call_default_factory=True))


def _key_value(text: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE (e.g. model_args.dropout=0.1)")
    return key.strip(), yaml.safe_load(value)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _ConfigDefaultsFormatter
    parser.add_argument("config", nargs="?", help="training config YAML, or the name of one Refinery ships (gpt); "
                        "optional when --data and --out are given")
    for flag, option, keywords in FLAGS:
        parser.add_argument(flag, dest=option, default=None, **keywords)
    parser.add_argument("--set", dest="settings", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                        help="any other option, YAML-typed; dots reach inside (model_args.n_layer=4); repeatable")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def resume_command(out: str | Path) -> str:
    """The command that continues the run in `out` (under torchrun, with as many processes)."""
    arguments = f"train --resume --out {shlex.quote(str(out))}"
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if processes > 1:
        return f"torchrun --standalone --nproc_per_node {processes} $(which refinery) {arguments}"
    return f"refinery {arguments}"


def interrupted_advice(out: str | Path | None) -> str:
    """What Ctrl-C leaves: the newest checkpoint and the exact command that resumes from it, or that there is none."""
    if out is None:
        return "interrupted before training started: rerun the same command"
    latest = Path(out) / "latest"
    if not (latest / "config.json").exists():
        return (f"interrupted before the first checkpoint: {out} holds none, so there is nothing to resume; rerun "
                "the same command to start again")
    step = json.loads((latest / "config.json").read_text(encoding="utf-8"))["step"]
    return (f"interrupted: the last checkpoint is step {step} ({Path(out) / latest.resolve().name}); the steps after "
            f"it are redone. Resume with:\n  {resume_command(out)}")


def run_train(args: argparse.Namespace) -> int:
    """Train from parsed arguments; 0 on success, 2 with a message on a configuration or data error, 130 on Ctrl-C
    (with the command that resumes)."""
    from refinery.corpora.remote_folder import local_or_staged
    from refinery.corpora.storage import InputError, is_remote
    from refinery.tokenization.reader import ShardError
    from refinery.tokenization.shards import TokenLayout
    from refinery.tokenization.tokenizer import TokenizerError
    from refinery.training.checkpoint import CheckpointError
    from refinery.training.config import ConfigError, load_train_config
    from refinery.training.train import TrainingError, train

    overrides = {option: getattr(args, option) for _, option, _ in FLAGS if getattr(args, option) is not None}
    given_as = {option: flag for flag, option, _ in FLAGS if option in overrides}
    overrides.update(dict(args.settings))
    given_as.update({key: f"--set {key}" for key, _ in args.settings})
    out = overrides.get("out")
    try:
        config = load_train_config(args.config, overrides, given_as)
        if config.threads is None:  # the command's default; train() in Python leaves torch's threads alone
            config = config.model_copy(update={"threads": "auto"})
        out = config.out
        if any(is_remote(folder) for folder in config.data):  # shards are memory-mapped: read from local disk
            staged = [local_or_staged(folder, of_run=TokenLayout.RUN_FOLDER) for folder in config.data]
            config = config.model_copy(update={"data": staged})
        train(config, progress=not args.quiet)
    except (ConfigError, CheckpointError, ShardError, TokenizerError, InputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingError as err:
        print(f"training stopped: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # caught here: the generic advice of `refinery` ("rerun the same command") is wrong
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"\n{interrupted_advice(out)}", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.cli", description=DESCRIPTION)
    add_train_arguments(parser)
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

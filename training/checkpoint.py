"""Checkpoints: plain files that any tool can open, and nothing that runs code when loaded.

    OUT/step-000500/model.safetensors   the weights (safetensors; tied embeddings stored once)
    OUT/step-000500/config.json         architecture, model config, step, tokenizer fingerprint, special ids
    OUT/step-000500/train_state.pt      optimizer state and progress: tensors and plain values only,
                                        loadable with torch.load(weights_only=True)
    OUT/step-000500/tokenizer.json      the tokenizer of the training shards
    OUT/latest -> step-000500           the newest complete checkpoint

A checkpoint is written into a temporary folder and renamed into place (refinery.corpora.atomic's temp
names), so a crash never leaves a half checkpoint behind `latest`. The training RNG needs no saved state:
every step's randomness is drawn from (seed, rank, step), and `seed` and `step` are in train_state.pt.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from refinery.corpora.atomic import commit, temp_name
from refinery.training.model import GPT, LSTM, GPTConfig, LSTMConfig, architecture_of, build_model

FORMAT_VERSION = 1
STEP_FOLDER = re.compile(r"^step-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says what to give instead."""


def checkpoint_folder(path: str | Path) -> Path:
    """A checkpoint folder from OUT (its latest), OUT/latest or OUT/step-N."""
    path = Path(path)
    for candidate in (path, path / "latest"):
        if (candidate / "config.json").exists():
            return candidate
    raise CheckpointError(f"{path} is not a checkpoint (no config.json in it or in {path / 'latest'}); give a "
                          "training output folder, OUT/latest or OUT/step-N")


def save_weights(model: GPT | LSTM, path: Path) -> None:
    """The model as safetensors, with the permissions the user's umask gives new files, as any file they create:
    safetensors itself writes 0600, which would hide checkpoints and exports from the user's group."""
    save_model(model, str(path))
    user_permissions(path)


def user_permissions(path: Path) -> None:
    """Set a written file's mode to what the umask gives a new file (0644 under the usual umask 022)."""
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def resume_folder(resume: str, out: str | Path | None) -> Path:
    """The checkpoint that `resume` names: 'latest' is OUT's newest; a plain message when there is none yet."""
    if resume != "latest":
        return checkpoint_folder(resume)
    if out is None:
        raise CheckpointError("--resume needs the run's output folder: add --out OUT (or give a checkpoint: "
                              "--resume OUT/step-N)")
    out = Path(out)
    if not out.is_dir():
        raise CheckpointError(f"nothing to resume: {out} does not exist; start the run without --resume")
    if not (out / "latest" / "config.json").exists():
        raise CheckpointError(f"nothing to resume: {out} holds no checkpoint yet (a run writes its first one after "
                              "checkpoint_interval steps, and at its end); start the run again without --resume")
    return checkpoint_folder(out)


def save_checkpoint(out: Path, step: int, model: GPT | LSTM, info: dict[str, Any], train_state: dict[str, Any],
                    tokenizer_path: Path, keep: int = 0) -> Path:
    """Write OUT/step-N atomically, point OUT/latest at it, and keep only the `keep` newest (0: all)."""
    name = f"step-{step:06d}"
    folder = out / name
    tmp = temp_name(folder)
    tmp.mkdir(parents=True)
    save_weights(model, tmp / "model.safetensors")
    config = {"format_version": FORMAT_VERSION, "architecture": architecture_of(model.config),
              "model": dataclasses.asdict(model.config), "step": step, **info}
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    torch.save(train_state, tmp / "train_state.pt")
    shutil.copyfile(tokenizer_path, tmp / "tokenizer.json")
    shutil.rmtree(folder, ignore_errors=True)  # a resumed run rewrites the checkpoints after its starting point
    commit(tmp, folder)
    link = temp_name(out / "latest")
    link.symlink_to(name, target_is_directory=True)
    commit(link, out / "latest")
    if keep:
        older = sorted(p for p in out.iterdir() if STEP_FOLDER.match(p.name) and int(p.name[5:]) <= step)
        for stale in older[:-keep]:
            shutil.rmtree(stale)
    return folder


def read_config(path: str | Path) -> tuple[GPTConfig | LSTMConfig, dict[str, Any]]:
    """The model config of a checkpoint, and everything else config.json holds."""
    folder = checkpoint_folder(path)
    info = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if info.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{folder}: checkpoint format {info.get('format_version')}, this Refinery reads "
                              f"{FORMAT_VERSION}")
    config_class = {"gpt": GPTConfig, "lstm": LSTMConfig}.get(info.get("architecture"))
    if config_class is None:
        raise CheckpointError(f"{folder}: unknown architecture {info.get('architecture')!r} in config.json")
    return config_class(**info["model"]), info


def load_weights(model: GPT | LSTM, path: str | Path) -> None:
    """Copy a checkpoint's weights into a model of the same config (safetensors: no code is unpickled)."""
    folder = checkpoint_folder(path)
    missing, unexpected = load_model(model, str(folder / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{folder}: the weights do not fit the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}); the checkpoint and its config.json disagree")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[GPT | LSTM, GPTConfig | LSTMConfig,
                                                                                   Path]:
    """The trained model (in eval mode), its config and the tokenizer.json it was trained with."""
    folder = checkpoint_folder(path)
    config, _ = read_config(folder)
    model = build_model(config)
    load_weights(model, folder)
    return model.to(device).eval(), config, folder / "tokenizer.json"


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Optimizer state and progress, read without unpickling code (torch.load with weights_only)."""
    return torch.load(checkpoint_folder(path) / "train_state.pt", map_location="cpu", weights_only=True)

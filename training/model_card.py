"""The model card: README.md of an exported model, by the Hugging Face Hub's conventions (YAML metadata, then
prose), written by `refinery export` beside the weights.

Every number in it is read, never recomputed: the model from the checkpoint's config.json (and the loaded
weights, for the parameter count); steps, batch and tokens seen from the training options it saved; the losses
from the training folder's log.jsonl, up to the checkpoint's step; the data from each token folder it trained
on (a split's meta.json) and, when the shards came from a run, the run's manifest.json and dataset card.
Training never imports pipelines, so a run is recognised by its files: RUN/tokens/<split>/ with
RUN/manifest.json two levels above the split. A README.md without the marker line is the user's and stays.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from refinery.corpora.atomic import read_json, write_text
from refinery.tokenization.shards import SPLITS, TokenLayout, find_split
from refinery.training.config import TrainConfig
from refinery.training.model import GPT, count_parameters

CARD = "README.md"
# Written under the metadata: a README.md without it is the user's, and a re-export leaves it alone.
MARKER = "<!-- Written by Refinery (refinery export); edit freely, but delete this line or a re-export replaces it. -->"
# The names pipelines' RunLayout gives a run's manifest and dataset card (training may not import it).
RUN_MANIFEST, RUN_CARD = "manifest.json", "README.md"


@dataclass
class DataFolder:
    """One token folder the model trained on, with what its files say (empty where they are not found)."""

    given: str  # as the checkpoint records it
    weight: float
    split: Path | None = None  # the train split folder, None when it is not there from here
    meta: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    run: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    dataset_card: dict[str, Any] | None = None  # the run's README.md front matter; None without a card

    @property
    def name(self) -> str:
        return self.manifest.get("name") or self.given


@dataclass
class Losses:
    """The log's losses up to the checkpoint's step; None where the log holds none."""

    found: bool = False
    train: dict[str, Any] | None = None  # the last `train` record (step, loss, tokens)
    val: dict[str, Any] | None = None  # the last `val` record (step, val_loss, by_source)
    start: dict[str, Any] | None = None  # the last `start` record (tokens_per_step, world_size)


def read_data_folder(given: str, weight: float) -> DataFolder:
    folder = DataFolder(given, weight, find_split(given, SPLITS[0]))
    if folder.split is None:
        return folder
    folder.meta = read_json(TokenLayout.meta(folder.split))
    validation = TokenLayout.meta(folder.split.parent / SPLITS[1])
    folder.validation = read_json(validation) if validation.exists() else {}
    tokens = folder.split.resolve().parent
    manifest = tokens.parent / RUN_MANIFEST
    if tokens.name == TokenLayout.RUN_FOLDER and manifest.exists():  # RUN/tokens/<split>: the shards of a run
        loaded = read_json(manifest)
        if isinstance(loaded, dict) and "name" in loaded:  # a Refinery manifest, not some other file of that name
            folder.run, folder.manifest = tokens.parent, loaded
            card = folder.run / RUN_CARD
            folder.dataset_card = front_matter(card) if card.exists() else None
    return folder


def front_matter(path: Path) -> dict[str, Any]:
    """The YAML metadata at the top of a card (empty when there is none, or it does not parse)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    end = text.find("\n---", 4)
    if not text.startswith("---\n") or end < 0:
        return {}
    try:
        meta = yaml.safe_load(text[4:end])
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def read_losses(training_folder: Path, step: int) -> Losses:
    """The log's records up to `step`, trusted only if the log recorded this checkpoint (a checkpoint copied
    elsewhere may sit beside another run's log)."""
    path = training_folder / "log.jsonl"
    if not path.exists():
        return Losses()
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not any(r["kind"] == "checkpoint" and r.get("step") == step for r in records):
        return Losses()
    upto = [r for r in records if r.get("step", 0) <= step]
    last = {kind: next((r for r in reversed(upto) if r["kind"] == kind), None) for kind in ("train", "val", "start")}
    return Losses(True, last["train"], last["val"], last["start"])


def card_metadata(name: str, folders: list[DataFolder], losses: Losses, info: dict[str, Any],
                  licence: str | None, chat: bool) -> dict[str, Any]:
    """The front matter: what the Hub files the model under, and the validation loss as its one evaluation."""
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "text-generation"}
    meta.update({"license": licence} if licence else {"license": "other", "license_name": "unknown"})
    languages = [lang for f in folders for lang in (f.dataset_card or {}).get("language") or []]
    if languages:
        meta["language"] = list(dict.fromkeys(languages))
    runs = [f.name for f in folders if f.run]
    if runs:
        meta["datasets"] = list(dict.fromkeys(runs))
    init = (info.get("train") or {}).get("init")
    if init:
        meta["base_model"] = str(init)
    meta["tags"] = ["refinery", "llama"] + (["conversational"] if chat else [])
    # Only a loss measured on this very checkpoint is an evaluation of it (an older one may predate training)
    results = [_result(folder, loss) for folder, loss, step in validation_losses(folders, losses, info)
               if step == info["step"]]
    if results:
        meta["model-index"] = [{"name": name, "results": results}]
    return meta


def validation_losses(folders: list[DataFolder], losses: Losses,
                      info: dict[str, Any]) -> list[tuple[DataFolder, float, int | None]]:
    """Each data folder's latest validation loss up to the checkpoint, with the step it was measured at (None:
    unknown). The log keeps one per folder only for a mix; without the log, the checkpoint's own `val_loss` is
    the latest, measured at its step only for the run's last checkpoint (training always validates at the end)."""
    if not folders:
        return []
    if losses.val:
        by_source = losses.val.get("by_source") or {}
        found = [(f, by_source[f.given]) for f in folders if f.given in by_source] if len(folders) > 1 else \
            [(folders[0], losses.val["val_loss"])]
        return [(f, loss, losses.val["step"]) for f, loss in found]
    final = info["step"] == (info.get("train") or {}).get("max_steps")
    if len(folders) != 1 or info.get("val_loss") is None:
        return []
    return [(folders[0], info["val_loss"], info["step"] if final else None)]


def _result(folder: DataFolder, loss: float) -> dict[str, Any]:
    """One model-index result, as the Hub's leaderboards read it: task, dataset (with split), metrics."""
    return {"task": {"type": "text-generation", "name": "Text Generation"},
            "dataset": {"name": f"{folder.name} (validation split)", "type": folder.name, "split": SPLITS[1]},
            "metrics": [{"type": "loss", "value": round(loss, 4), "name": "validation loss (nats per token)"},
                        {"type": "perplexity", "value": round(math.exp(loss), 2), "name": "validation perplexity"}]}


def card_text(out: Path, checkpoint: Path, model: GPT, info: dict[str, Any], licence: str | None = None,
              chat: bool = False) -> str:
    """The whole README.md of the export folder `out`, for the GPT of `checkpoint` (config.json read as `info`)."""
    # The saved options with TrainConfig's defaults and warmup rule, unvalidated: a hand-made checkpoint may lack some
    train = TrainConfig.model_construct(**{"data": [], **(info.get("train") or {})})
    folders = [read_data_folder(given, weight) for given, weight in zip(train.data, train.weights)]
    losses = read_losses(checkpoint.parent, info["step"])
    name = out.resolve().name
    meta = card_metadata(name, folders, losses, info, licence, chat)
    parts = ["---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---", MARKER, f"# {name}",
             _summary(model, folders, info, chat), _model(model), _data(out, folders, info),
             _training(train, folders, losses, info), _metrics(folders, losses, info),
             _limitations(model, folders, chat), _licence(meta, folders), _loading(name, chat)]
    return "\n\n".join(p for p in parts if p) + "\n"


def write_model_card(out: Path, checkpoint: Path, model: GPT, info: dict[str, Any], licence: str | None = None,
                     chat: bool = False) -> Path | None:
    """Write OUT/README.md; None, writing nothing, when a README.md without the marker (the user's) is there."""
    target = out / CARD
    if target.exists() and MARKER not in target.read_text(encoding="utf-8", errors="replace"):
        return None
    write_text(target, card_text(out, checkpoint, model, info, licence, chat))
    return target


def _table(headers: list[str], rows: list[list[object]]) -> str:
    def row(cells: list[object]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([row(headers), row(["---"] * len(headers)), *(row(r) for r in rows)])


def _summary(model: GPT, folders: list[DataFolder], info: dict[str, Any], chat: bool) -> str:
    data = ", ".join(f"`{f.name}`" for f in folders) or "data the checkpoint does not record"
    kind = "A chat model fine-tuned" if chat else "A compact research language model trained"
    return (f"{kind} with Refinery: a Llama-style GPT of {count_parameters(model):,} parameters, exported from step "
            f"{info['step']:,} of a training run on {data}. It loads with `transformers` as a `LlamaForCausalLM` "
            "(see [How to load](#how-to-load)).")


def _model(model: GPT) -> str:
    config = model.config
    total = count_parameters(model)
    embeddings = model.embed.weight.numel() * (1 if config.tie_embeddings else 2)
    rows = [["architecture", "Llama-style decoder (RMSNorm, RoPE, SwiGLU, no biases, no grouped-query attention)"],
            ["parameters", f"{total:,} ({total - embeddings:,} without the embeddings)"],
            ["layers × width (heads)", f"{config.n_layer} × {config.n_embd} ({config.n_head})"],
            ["MLP hidden size", f"{config.mlp_hidden:,}"], ["vocabulary", f"{config.vocab_size:,} tokens"],
            ["context length", f"{config.block_size:,} tokens"], ["RoPE theta", f"{config.rope_theta:g}"],
            ["tied embeddings", "yes" if config.tie_embeddings else "no"],
            ["document-aware attention", "yes (in training; Llama attends across documents)"
             if config.document_attention else "no"]]
    return "## Model\n\n" + _table(["", ""], rows)


def _link(out: Path, target: Path) -> str:
    """A Markdown link to a file, relative to the export folder where a relative path exists."""
    try:
        path = os.path.relpath(target.resolve(), out.resolve())
    except ValueError:  # another drive (Windows): no relative path
        path = str(target.resolve())
    return f"[{target.resolve()}]({quote(Path(path).as_posix())})"


def _data(out: Path, folders: list[DataFolder], info: dict[str, Any]) -> str:
    if not folders:
        return "## Training data\n\nThe checkpoint records no training data."
    lines = []
    for f in folders:
        if f.split is None:
            lines.append(f"- `{f.given}`: not found from {Path.cwd()}, so nothing more is known about it here.")
            continue
        run = f"the token shards of the Refinery run `{f.name}`" if f.run else "token shards"
        stages = ", ".join(f"`{s['key']}`" for s in f.manifest.get("stages") or [])
        about = f" (recipe stages: {stages})" if stages else ""
        card = ("; dataset card: " + _link(out, f.run / RUN_CARD)) if f.dataset_card is not None else \
            ("; the run has no dataset card (`refinery report` writes one)" if f.run else "")
        lines.append(f"- `{f.given}`: {run}{about}, in `{f.split.resolve()}`{card}.")
    rows = [[f"`{f.name}`", f"{f.weight:.3g}", *_split_cells(f)] for f in folders if f.split]
    if any(f.run for f in folders):
        lines.append("\nThe metadata's `datasets` names the runs by their recipe names, local folders here: on the "
                     "Hub, put the ids of the datasets you pushed there.")
    fingerprint = info.get("tokenizer_fingerprint")
    return ("## Training data\n\n" + "\n".join(lines) + "\n\n"
            + (_table(["data", "weight", "documents", "training tokens", "validation documents", "validation tokens",
                       "training tokens per source"], rows) + "\n\n" if rows else "")
            + (f"The tokenizer (`tokenizer.json` here) has fingerprint `{fingerprint}`, as the shards record it."
               if fingerprint else ""))


def _split_cells(folder: DataFolder) -> list[str]:
    meta, validation = folder.meta, folder.validation
    per_source = ", ".join(f"{source}: {count:,}" for source, count in (meta.get("tokens_per_source") or {}).items())
    return [f"{meta.get('documents', 0):,}", f"{meta.get('tokens', 0):,}",
            f"{validation.get('documents', 0):,}" if validation else "none",
            f"{validation.get('tokens', 0):,}" if validation else "none", per_source]


def _training(train: TrainConfig, folders: list[DataFolder], losses: Losses, info: dict[str, Any]) -> str:
    if not train.data:
        return ""
    step, tokens = info["step"], info.get("tokens_seen")
    processes = (losses.start or {}).get("world_size")
    batch = f"`batch_size` {train.batch_size} × `grad_accum` {train.grad_accum}" + \
        (f" × {processes} process(es)" if processes else "") + f" windows of `seq_len` {train.seq_len} tokens"
    if tokens and step:
        batch += f" = {tokens // step:,} tokens per step"
    data_tokens = sum(f.meta.get("tokens", 0) for f in folders)
    seen = "not recorded" if tokens is None else f"{tokens:,}" + (
        f" ({tokens / data_tokens:.2g} passes over the training tokens)" if data_tokens else "")
    min_lr = train.lr / 10 if train.min_lr is None else train.min_lr  # TrainConfig's default floor
    rows = [["checkpoint", f"step {step:,} of {train.max_steps:,}"],
            ["tokens seen", seen], ["batch", batch],
            ["learning rate", f"{train.lr:g}, linear warmup over {train.warmup} steps, cosine to {min_lr:g}"],
            ["optimizer", f"AdamW (β {train.beta1}, {train.beta2}; weight decay {train.weight_decay}; gradient "
                          f"clipping at {train.grad_clip})"],
            ["initialisation", f"the checkpoint `{train.init}`" if train.init else f"random (seed {train.seed})"],
            ["loss", "on the assistant's tokens only (SFT loss masks)" if info.get("sft") else "on every token"]]
    base = ("\n\nThe metadata's `base_model` is that checkpoint's path as training recorded it: on the Hub, put the "
            "id of the base model there.") if train.init else ""
    return "## Training\n\n" + _table(["", ""], rows) + base


def _metrics(folders: list[DataFolder], losses: Losses, info: dict[str, Any]) -> str:
    rows = []
    if losses.train:
        rows.append(["training loss (last logged)", f"{losses.train['loss']:.4f}", losses.train["step"]])
    for folder, loss, step in validation_losses(folders, losses, info):
        label = "validation loss" + (f" of `{folder.given}`" if len(folders) > 1 else "")
        rows.append([label, f"{loss:.4f} (perplexity {math.exp(loss):.2f})", "unknown" if step is None else step])
    if losses.val and len(folders) > 1:
        rows.append(["validation loss, mixed by weight", f"{losses.val['val_loss']:.4f}", losses.val["step"]])
    if info.get("unigram_entropy") is not None:
        rows.append(["unigram entropy of the training tokens", f"{info['unigram_entropy']:.4f}", ""])
    if not rows:
        return "## Metrics\n\nNone recorded: the checkpoint has no validation loss and no training log beside it."
    note = "" if losses.found else " The training log (`log.jsonl` beside the checkpoint) was not found or does " \
        "not record this checkpoint, so the training loss is not given."
    return ("## Metrics\n\nCross-entropy in nats per token of this tokenizer (compare only models that share it). The "
            "unigram entropy is the loss of the best model that ignores context: the number to beat." + note + "\n\n"
            + _table(["metric", "value", "step"], rows))


def _limitations(model: GPT, folders: list[DataFolder], chat: bool) -> str:
    tokens = sum(f.meta.get("tokens", 0) for f in folders)
    size = f" ({tokens:,} training tokens)" if tokens else ""
    cards = " The data's dataset cards (linked above) say which filters ran and what they leave behind." \
        if any(f.dataset_card is not None for f in folders) else ""
    lines = [f"A small research model trained on a small corpus{size}: for studying data recipes and training, not "
             "for production. Its text is often fluent and often wrong; do not rely on what it says.",
             "It had no safety training: it can repeat biases, offensive text and personal data that were in its "
             "data." + cards,
             f"It reads at most {model.config.block_size:,} tokens. Refinery's documents start after an end-of-text "
             "token, which is also this model's BOS: begin every prompt with it."]
    if model.config.document_attention:
        lines.append("It was trained with document-aware attention; Llama attends across documents, so this export "
                     "matches the trained model on inputs of one document.")
    if chat:
        lines.append("As a chat model it had supervised fine-tuning only (no preference tuning): prompt it through "
                     "the chat template in `tokenizer_config.json`; it ends a reply with `<|end|>`.")
    return "## Intended use and limitations\n\n" + "\n".join(f"- {line}" for line in lines)


def _licence(meta: dict[str, Any], folders: list[DataFolder]) -> str:
    data = [f"`{f.name}`: {_data_licence(f)}" for f in folders]
    terms = ("\n\nThe training data's terms:\n\n" + "\n".join(f"- {line}" for line in data)) if data else ""
    if meta["license"] != "other":
        return f"## Licence\n\n`{meta['license']}`, as given at export.{terms}"
    return ("## Licence\n\n**Unknown.** No licence was given for this model, so the metadata says `other` "
            "(`license_name: unknown`). A model carries obligations from its training data: check the terms of "
            "every source before you share the model or its outputs." + terms)


def _data_licence(folder: DataFolder) -> str:
    licence = (folder.dataset_card or {}).get("license")
    if licence and licence != "other":
        return f"`{licence}`, as its dataset card states"
    if folder.dataset_card is not None:
        return "unknown (its dataset card states none)"
    return "unknown (no dataset card)"


def _loading(name: str, chat: bool) -> str:
    prompt = ('text = tokenizer.apply_chat_template([{"role": "user", "content": "Give three tips for staying '
              'healthy."}],\n                                     tokenize=False, add_generation_prompt=True)\n'
              if chat else 'text = "The album was released"\n')
    return ("## How to load\n\n```python\nimport torch\n"
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("path/to/{name}")   # this folder\n'
            f'tokenizer = AutoTokenizer.from_pretrained("path/to/{name}")\n{prompt}'
            "ids = [tokenizer.eos_token_id] + tokenizer(text)[\"input_ids\"]   # documents start after an EOS\n"
            "output = model.generate(torch.tensor([ids]), max_new_tokens=50)   # generation_config.json: top-k 200\n"
            "print(tokenizer.decode(output[0, len(ids):]))\n```")

"""Evaluating a checkpoint: perplexity over token shards or a text file, and zero-shot multiple choice.

Every document in Refinery's shards follows an EOS, so evaluated text starts after an EOS too: the first
token is predicted from the model's "start of text", as in training.

Perplexity slides a window of the model's context over the tokens with a stride: every token is scored
exactly once, and (after the first window) with at least `window - stride` tokens of context.

Multiple choice scores each ending by its log-likelihood given the context, as lm-evaluation-harness does:
`acc` picks the ending with the highest sum, `acc_norm` the highest sum per character of the ending.
The context is encoded alone and each ending (after a space) alone, then joined, so every ending is
scored after exactly the same context tokens.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from refinery.corpora.evalsets import hellaswag_rows
from refinery.tokenization.reader import TokenShards
from refinery.training.data import split_folder
from refinery.training.model import GPT, LSTM

# Where each task's file sits in an llm-foundry `local_data` folder (and HellaSwag beside it as plain text).
TASK_FILES = {
    "hellaswag": "hellaswag_val_full.txt.bz2",
    "arc_easy": "world_knowledge/arc_easy.jsonl",
    "arc_challenge": "world_knowledge/arc_challenge.jsonl",
    "piqa": "commonsense_reasoning/piqa.jsonl",
}


@dataclass(frozen=True)
class MultipleChoiceItem:
    context: str
    endings: list[str]
    label: int


@dataclass
class Perplexity:
    nll_sum: float  # nats, summed over the scored tokens
    tokens: int
    bytes: int | None = None  # UTF-8 bytes of the text those tokens cover (text files only)

    @property
    def mean_nll(self) -> float:
        return self.nll_sum / max(self.tokens, 1)

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)

    def as_dict(self) -> dict:
        result = {"tokens": self.tokens, "mean_nll": self.mean_nll, "perplexity": self.perplexity}
        if self.bytes:  # tokenizer-independent: comparable across vocabularies
            result["bits_per_byte"] = self.nll_sum / math.log(2) / self.bytes
        return result


@dataclass
class MultipleChoiceResult:
    scores: list[list[float]]  # per item, the log-likelihood of each ending
    predictions: list[int]  # argmax of the raw scores
    predictions_norm: list[int]  # argmax of the scores per character of the ending
    labels: list[int]

    @property
    def acc(self) -> float:
        return float(np.mean(np.array(self.predictions) == np.array(self.labels)))

    @property
    def acc_norm(self) -> float:
        return float(np.mean(np.array(self.predictions_norm) == np.array(self.labels)))

    def as_dict(self) -> dict:
        return {"items": len(self.labels), "acc": self.acc, "acc_norm": self.acc_norm}


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def context_window(model: GPT | LSTM, default: int = 256) -> int:
    """The longest input the model takes: the GPT's block_size (the LSTM has no limit: `default`)."""
    return getattr(model.config, "block_size", default)


def window_plan(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first_scored): inputs tokens[start:end] predict targets tokens[start+1:end+1], of which
    those from index first_scored on are counted; together the windows count every target once."""
    if not 0 < stride <= window:
        raise ValueError(f"stride {stride} must be between 1 and the window {window}")
    plan, scored, start = [], 0, 0
    while scored < n_tokens - 1:
        end = min(start + window, n_tokens - 1)
        plan.append((start, end, scored + 1))
        scored, start = end, start + stride
    return plan


@torch.no_grad()
def sliding_window_nll(model: GPT | LSTM, tokens: np.ndarray, window: int, stride: int,
                       counted: np.ndarray | None = None, batch_size: int = 8) -> Perplexity:
    """Summed next-token NLL of tokens[1:] (only where `counted`, aligned with tokens, is 1)."""
    device = model_device(model)
    plan = window_plan(len(tokens), window, stride)
    nll_sum, count = 0.0, 0
    for first in range(0, len(plan), batch_size):
        group = plan[first:first + batch_size]
        for length in sorted({end - start for start, end, _ in group}):  # only the last window can be shorter
            rows = [p for p in group if p[1] - p[0] == length]
            x = torch.from_numpy(np.stack([tokens[s:e] for s, e, _ in rows]).astype(np.int64)).to(device)
            y = torch.from_numpy(np.stack([tokens[s + 1:e + 1] for s, e, _ in rows]).astype(np.int64)).to(device)
            losses = F.cross_entropy(model(x)[0].float().flatten(0, 1), y.flatten(), reduction="none").view_as(y)
            target_index = torch.tensor([s + 1 for s, _, _ in rows])[:, None] + torch.arange(length)
            keep = target_index >= torch.tensor([f for _, _, f in rows])[:, None]
            if counted is not None:
                keep &= torch.from_numpy(np.asarray(counted, dtype=bool))[target_index]
            keep = keep.to(device)
            nll_sum += float(losses[keep].sum())
            count += int(keep.sum())
    return Perplexity(nll_sum, count)


def shard_perplexity(model: GPT | LSTM, folder: str | Path, fingerprint: str, split: str = "validation",
                     window: int | None = None, stride: int | None = None, max_tokens: int | None = None,
                     batch_size: int = 8) -> Perplexity:
    """Perplexity over a token-shard split (RUN, RUN/tokens or the split folder); SFT shards count the
    assistant tokens only, as their loss does."""
    shards = TokenShards(split_folder(folder, split), expected_fingerprint=fingerprint)
    end = shards.tokens if max_tokens is None else min(shards.tokens, max_tokens)
    window = window or context_window(model)
    counted = shards.span(0, end, mask=True) if shards.masks is not None else None
    return sliding_window_nll(model, shards.span(0, end), window, stride or window, counted, batch_size)


def text_perplexity(model: GPT | LSTM, tokenizer: Tokenizer, text: str, eos_id: int, window: int | None = None,
                    stride: int | None = None, max_tokens: int | None = None, batch_size: int = 8) -> Perplexity:
    """Perplexity of a raw text, tokenized with the model's tokenizer and read after an EOS."""
    encoding = tokenizer.encode(text, add_special_tokens=False)
    ids = encoding.ids if max_tokens is None else encoding.ids[:max_tokens]
    window = window or context_window(model)
    result = sliding_window_nll(model, np.array([eos_id, *ids]), window, stride or window, batch_size=batch_size)
    covered = encoding.offsets[len(ids) - 1][1] if ids else 0
    result.bytes = len(text[:covered].encode("utf-8"))
    return result


def read_hellaswag(path: str | Path, limit: int | None = None) -> list[MultipleChoiceItem]:
    """HellaSwag as plain text, 6 lines an item: `activity: context`, the label, then the 4 endings."""
    rows = hellaswag_rows(path)[:limit]
    return [MultipleChoiceItem(context, endings, label) for context, label, endings in rows]


def read_choices_jsonl(path: str | Path, limit: int | None = None) -> list[MultipleChoiceItem]:
    """llm-foundry multiple choice JSONL (`query`, `choices`, `gold`), prompted as lm-evaluation-harness
    prompts ARC and PIQA: "Question: ...\\nAnswer:" followed by " " + the choice."""
    items = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            if limit is not None and len(items) == limit:
                break
            if line.strip():
                row = json.loads(line)
                items.append(MultipleChoiceItem(f"{row['query'].strip()}\nAnswer:", row["choices"], int(row["gold"])))
    return items


def load_task(task: str, evals_dir: str | Path | None, limit: int | None = None) -> list[MultipleChoiceItem]:
    """A task by name (its file under evals_dir, an llm-foundry `local_data` folder) or by file path."""
    path = Path(task)
    if task in TASK_FILES:
        if evals_dir is None:
            raise FileNotFoundError(f"task {task} needs --evals-dir: the folder that holds {TASK_FILES[task]}")
        path = Path(evals_dir) / TASK_FILES[task]
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; give a task ({', '.join(TASK_FILES)}) with --evals-dir, "
                                "or the path of an llm-foundry multiple choice JSONL or HellaSwag .txt(.bz2)")
    reader = read_choices_jsonl if path.name.endswith(".jsonl") else read_hellaswag
    return reader(path, limit)


@torch.no_grad()
def score_multiple_choice(model: GPT | LSTM, tokenizer: Tokenizer, items: list[MultipleChoiceItem], eos_id: int,
                          batch_size: int = 32) -> MultipleChoiceResult:
    """Log-likelihood of every ending given its context; the context is cut on the left to fit the window."""
    window = context_window(model)
    device = model_device(model)
    contexts = [[eos_id, *ids] for ids in (e.ids for e in tokenizer.encode_batch([i.context for i in items],
                                                                                 add_special_tokens=False))]
    pairs = [(n, ending) for n, item in enumerate(items) for ending in item.endings]
    endings = [e.ids for e in tokenizer.encode_batch([" " + ending for _, ending in pairs], add_special_tokens=False)]
    sequences = [(contexts[n] + ids)[-(window + 1):] for (n, _), ids in zip(pairs, endings)]
    flat_scores = []
    for first in range(0, len(sequences), batch_size):
        batch = sequences[first:first + batch_size]
        length = max(len(s) for s in batch) - 1
        x = torch.full((len(batch), length), eos_id, dtype=torch.long)  # right padding: never seen by real tokens
        for row, seq in enumerate(batch):
            x[row, :len(seq) - 1] = torch.tensor(seq[:-1])
        log_probs = F.log_softmax(model(x.to(device))[0].float(), dim=-1).cpu()
        for row, seq in enumerate(batch):
            n_ending = min(len(endings[first + row]), len(seq) - 1)  # an ending longer than the window: its tail
            positions = torch.arange(len(seq) - 1 - n_ending, len(seq) - 1)
            flat_scores.append(float(log_probs[row, positions, torch.tensor(seq[-n_ending:])].sum()))
    scores, cursor = [], 0
    for item in items:
        scores.append(flat_scores[cursor:cursor + len(item.endings)])
        cursor += len(item.endings)
    predictions = [int(np.argmax(s)) for s in scores]
    predictions_norm = [int(np.argmax(np.array(s) / [len(e) for e in item.endings])) for s, item in zip(scores, items)]
    return MultipleChoiceResult(scores, predictions, predictions_norm, [item.label for item in items])

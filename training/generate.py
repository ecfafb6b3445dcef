"""Sampling text from a checkpoint: temperature and top-k, one token at a time.

There is no KV cache: the models here are small, and recomputing the window keeps the code obvious.
A prompt starts after an EOS, as every document in the shards does. A chat (SFT) model is prompted
through the chat template its shards were rendered with (tokenization.chat.render_chat), up to where the
assistant's reply begins, and stops at <|end|>, the marker that closes the reply.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch
from tokenizers import Tokenizer

from refinery.tokenization.chat import END, render_chat
from refinery.tokenization.reader import TokenShards
from refinery.tokenization.tokenizer import special_ids
from refinery.training.data import split_folder
from refinery.training.evaluate import model_device
from refinery.training.model import GPT, LSTM


@torch.no_grad()
def sample_tokens(model: GPT | LSTM, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 1.0,
                  top_k: int | None = None, stop_ids: Collection[int] = (), seed: int = 0) -> list[int]:
    """New tokens after the prompt, up to (not including) the first stop token. temperature 0 is greedy."""
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    limit = getattr(model.config, "block_size", None)
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(ids if limit is None else ids[:, -limit:])[0][0, -1].float()
        if temperature <= 0:
            next_id = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k:
                kth_best = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth_best, float("-inf"))
            next_id = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))
        if next_id in stop_ids:
            break
        new.append(next_id)
        ids = torch.cat([ids, torch.tensor([[next_id]], device=device)], dim=1)
    return new


def chat_prompt(messages: Sequence[dict]) -> str:
    """The conversation in the chat template, ending where the assistant's next reply begins."""
    text, spans = render_chat([*messages, {"role": "assistant", "content": ""}])
    return text[:spans[-1][0]]  # the template itself decides what precedes a reply


def is_chat_model(info: dict[str, Any]) -> bool:
    """Whether a checkpoint (its config.json) was fine-tuned on chat shards, i.e. shards with loss masks."""
    if "sft" in info:
        return bool(info["sft"])
    train = info.get("train") or {}
    found_data = False
    for folder in train.get("data") or []:
        try:
            shards = TokenShards(split_folder(folder))
        except (OSError, ValueError):  # the shards moved or are gone
            continue
        if shards.masks is not None:
            return True
        found_data = True
    return not found_data and bool(train.get("init"))  # no shards to look at: a fine-tuned model likely chats


def generate(model: GPT | LSTM, tokenizer: Tokenizer, prompt: str | Sequence[dict], chat: bool,
             max_new_tokens: int = 200, temperature: float = 0.8, top_k: int | None = 200, seed: int = 0) -> str:
    """Text the model writes after the prompt (a string, or messages for a chat model)."""
    ids = special_ids(tokenizer)
    if chat:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        prompt = chat_prompt(messages)
    elif not isinstance(prompt, str):
        raise ValueError("a model that is not a chat model takes a text prompt, not messages")
    end_id = tokenizer.token_to_id(END)
    stop_ids = {ids["eos"]} | ({end_id} if chat and end_id is not None else set())
    prompt_ids = [ids["eos"], *tokenizer.encode(prompt, add_special_tokens=False).ids]
    new = sample_tokens(model, prompt_ids, max_new_tokens, temperature, top_k, stop_ids, seed)
    return tokenizer.decode(new, skip_special_tokens=False)

"""The chat template of Refinery's SFT shards, and loss masks from character spans.

A conversation renders as

    <|system|>{content}<|end|>\\n<|user|>{content}<|end|>\\n<|assistant|>{content}<|end|>\\n

and the loss counts the assistant's content and its closing <|end|> (so the model learns to stop).
Content sits directly between special tokens, which always split: no token can straddle a span's edge,
so the masked tokens decode to exactly the assistant's content (a newline after the marker would merge
with content that starts with whitespace).
Masks come from the tokenizer's character offsets over the whole rendered text: prefixes are never
re-tokenised, which would break on templates that are not prefix-stable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from refinery.tokenization.tokenizer import CHAT_ROLES

# The `loss_spans` column a chat-template stage writes and `encode_documents` turns into loss masks.
LOSS_SPANS_TYPE = pa.list_(pa.struct([("start", pa.int64()), ("end", pa.int64())]))

ROLE_MARKERS = {role.strip("<|>"): role for role in CHAT_ROLES[:3]}
END = CHAT_ROLES[3]


def render_chat(messages: Sequence[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as template text, and the (start, end) character spans that count in the loss."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0
    for message in messages:
        role = message["role"]
        if role not in ROLE_MARKERS:
            raise ValueError(f"unknown role '{role}': use one of {', '.join(ROLE_MARKERS)}")
        head = ROLE_MARKERS[role]
        body = f"{message['content']}{END}"
        if role == "assistant":
            spans.append((length + len(head), length + len(head) + len(body)))
        parts.append(f"{head}{body}\n")
        length += len(head) + len(body) + 1
    return "".join(parts), spans


def loss_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """1 for every token whose characters lie inside one of the spans, else 0."""
    if not len(offsets):
        return np.zeros(0, dtype=np.uint8)
    token_starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(offsets))
    token_ends = np.fromiter((o[1] for o in offsets), dtype=np.int64, count=len(offsets))
    mask = np.zeros(len(offsets), dtype=np.uint8)
    for start, end in spans:
        mask |= ((token_starts >= start) & (token_ends <= end) & (token_ends > token_starts)).astype(np.uint8)
    return mask

"""The models' options and their named sizes, without torch: the training config validates against them (and
`refinery train --help` shows its defaults) before torch is imported. training/model.py builds the models."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class GPTConfig:
    vocab_size: int = 512
    block_size: int = 256  # the longest sequence the model takes (the training seq_len)
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    mlp_hidden: int | None = None  # SwiGLU width; None: 8/3 * n_embd rounded up to a multiple of 64
    dropout: float = 0.0
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    document_attention: bool = False
    eos_id: int | None = None  # where documents end; needed by document_attention

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ValueError(f"n_embd {self.n_embd} must split into {self.n_head} heads of even size "
                             "(RoPE rotates pairs)")
        if self.document_attention and self.eos_id is None:
            raise ValueError("document_attention needs eos_id: the token that ends each document")
        if self.mlp_hidden is None:
            self.mlp_hidden = 64 * math.ceil(8 * self.n_embd / 3 / 64)


@dataclass
class LSTMConfig:
    vocab_size: int = 512
    n_layer: int = 2
    n_embd: int = 64  # embedding and hidden size (equal, so the embeddings can be tied)
    dropout: float = 0.0
    tie_embeddings: bool = True


# Sizes by name. GPT-2 124M's shape with SwiGLU (3 matrices of 768 x 2048 match GPT-2's 2 of 768 x 3072).
# An LSTM preset has about the non-embedding parameters of the GPT preset of the same name.
GPT_PRESETS: dict[str, dict] = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64),
    "small": dict(n_layer=6, n_head=6, n_embd=384),
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768),
}
LSTM_PRESETS: dict[str, dict] = {
    "tiny": dict(n_layer=2, n_embd=64),
    "small": dict(n_layer=2, n_embd=768),
}

# Each architecture's options and sizes, by the name a training config gives it (`model: gpt`).
MODEL_OPTIONS: dict[str, tuple[type[GPTConfig] | type[LSTMConfig], dict[str, dict]]] = {
    "gpt": (GPTConfig, GPT_PRESETS),
    "lstm": (LSTMConfig, LSTM_PRESETS),
}

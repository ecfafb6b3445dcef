"""The models, each in plain PyTorch: a Llama-style GPT and an LSTM baseline.

GPT: pre-norm decoder blocks with RMSNorm, rotary position embeddings (RoPE), SwiGLU feed-forward,
`scaled_dot_product_attention` and optionally tied input/output embeddings. With `document_attention`,
a token attends only to earlier tokens of its own document inside a packed window (documents end
with EOS), so packing never leaks one document into another.

Both models share one call: `model(idx, targets=None, loss_mask=None, doc_ids=None) -> (logits, loss)`.
Logits are returned for every position; the loss is the mean cross-entropy over the positions where
`loss_mask` is 1 (all positions without a mask).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# The options and sizes live apart, without torch, for the training config; importers of this module find them here.
from refinery.training.model_options import GPT_PRESETS as GPT_PRESETS
from refinery.training.model_options import LSTM_PRESETS as LSTM_PRESETS
from refinery.training.model_options import GPTConfig, LSTMConfig


def document_ids(idx: torch.Tensor, eos_id: int) -> torch.Tensor:
    """The document number of every position: it goes up by one after each EOS (the EOS ends its own document)."""
    ends = (idx == eos_id).long()
    return torch.cumsum(ends, dim=1) - ends


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions where loss_mask is 1 (every position without a mask)."""
    losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    if loss_mask is None:
        return losses.mean()
    mask = loss_mask.flatten().to(losses.dtype)
    return (losses * mask).sum() / mask.sum().clamp(min=1)  # a window with no counted token adds nothing


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every (position, frequency) pair, shaped (length, head_dim) for `apply_rope`."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + head_dim/2) of x (B, H, T, D) by their position's angle (the Hugging Face Llama layout)."""
    first, second = x.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return (x * cos + rotated * sin).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.qkv(x).split(C, dim=2))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=attn_mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class SwiGLU(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gate = nn.Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.up = nn.Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.down = nn.Linear(config.mlp_hidden, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.n_embd, config.norm_eps)
        self.attn = CausalSelfAttention(config)
        self.mlp_norm = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = SwiGLU(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), cos, sin, attn_mask))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.norm_eps)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight
        cos, sin = rope_tables(config.n_embd // config.n_head, config.block_size, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # derived from the config: not saved
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith(("proj.weight", "down.weight")):  # GPT-2: residual writes shrink with depth
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, loss_mask: torch.Tensor | None = None,
                doc_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        T = idx.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than the model's block_size {self.config.block_size}")
        attention = self.attention_input(idx, doc_ids)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.dropout(self.embed(idx))
        for block in self.blocks:
            x = block(x, cos, sin, attention)
        logits = self.head(self.norm(x))
        return logits, (None if targets is None else lm_loss(logits, targets, loss_mask))

    def attention_input(self, idx: torch.Tensor, doc_ids: torch.Tensor | None) -> torch.Tensor | None:
        """What every attention layer is given besides its input: None (causal), or a (B, 1, T, T) mask that keeps
        each token within its document."""
        if doc_ids is None and self.config.document_attention:
            doc_ids = document_ids(idx, self.config.eos_id)
        if doc_ids is None:
            return None
        T = idx.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
        return (causal & (doc_ids[:, :, None] == doc_ids[:, None, :])).unsqueeze(1)


class LSTM(nn.Module):
    """The recurrent baseline: embeddings, a stacked LSTM, a linear head. It reads a window from its start,
    state and all, so it ignores doc_ids (the hidden state carries across packed documents)."""

    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(config.n_embd, config.n_embd, num_layers=config.n_layer, batch_first=True,
                            dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:  # keeps PyTorch's N(0, 1) embeddings: GPT's 0.02 leaves a tied LSTM's logits flat
            self.head.weight = self.embed.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, loss_mask: torch.Tensor | None = None,
                doc_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden, _ = self.lstm(self.dropout(self.embed(idx)))
        logits = self.head(self.dropout(hidden))
        return logits, (None if targets is None else lm_loss(logits, targets, loss_mask))


def build_model(config: GPTConfig | LSTMConfig) -> GPT | LSTM:
    return GPT(config) if isinstance(config, GPTConfig) else LSTM(config)


def architecture_of(config: GPTConfig | LSTMConfig) -> str:
    return "gpt" if isinstance(config, GPTConfig) else "lstm"


def count_parameters(model: nn.Module) -> int:
    """Parameters, each counted once (tied embeddings are one matrix)."""
    return sum(p.numel() for p in model.parameters())

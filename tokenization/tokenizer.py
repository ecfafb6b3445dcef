"""Tokenizers: train a byte-level BPE on a corpus, or load any `tokenizer.json`; never download.

The special tokens below are what Refinery's shards and chat templates use. A loaded tokenizer keeps its
own specials; `special_ids` finds its end-of-text token under the names common tokenizers give it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
CHAT_ROLES = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
SPECIAL_TOKENS = [BOS, EOS, PAD, *CHAT_ROLES]

# Names other tokenizers give their end-of-text / begin / padding tokens, most specific first.
_EOS_NAMES = (EOS, "<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")
_BOS_NAMES = (BOS, "<s>", "<|begin_of_text|>", "<bos>")
_PAD_NAMES = (PAD, "<|padding|>", "<pad>")


class TokenizerError(ValueError):
    """A tokenizer that cannot be used for shards, with what to do."""


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE (GPT-2 style: every byte is representable, decoding is lossless)."""
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise TokenizerError(f"vocab_size {vocab_size} is too small: byte-level BPE needs at least "
                             f"{256 + len(SPECIAL_TOKENS)} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.exists():
        raise TokenizerError(f"tokenizer file {path} does not exist; give a local tokenizer.json "
                             "(nothing is downloaded) or train one with `tokenizer: train`")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust side raises plain Exceptions
        raise TokenizerError(f"{path} is not a Hugging Face tokenizer.json: {err}") from None


def fingerprint(tokenizer: Tokenizer) -> str:
    """SHA-256 of the tokenizer's canonical JSON: equal fingerprints encode text identically."""
    return hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest()


def _first_id(tokenizer: Tokenizer, names: tuple[str, ...]) -> int | None:
    for name in names:
        token_id = tokenizer.token_to_id(name)
        if token_id is not None:
            return token_id
    return None


def special_ids(tokenizer: Tokenizer, eos_token: str | None = None) -> dict[str, int | None]:
    """The ids of eos / bos / pad (and chat role markers where present). EOS is required for shards."""
    eos = tokenizer.token_to_id(eos_token) if eos_token else _first_id(tokenizer, _EOS_NAMES)
    if eos is None:
        wanted = f"'{eos_token}'" if eos_token else f"any of {', '.join(_EOS_NAMES)}"
        raise TokenizerError(f"the tokenizer has no end-of-text token ({wanted}); name it with `eos_token:`")
    ids = {"eos": eos, "bos": _first_id(tokenizer, _BOS_NAMES), "pad": _first_id(tokenizer, _PAD_NAMES)}
    for role in CHAT_ROLES:
        ids[role.strip("<|>")] = tokenizer.token_to_id(role)
    return ids

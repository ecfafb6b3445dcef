"""`refinery tokens inspect`: what a token-shard folder holds, and a decoded sample to eyeball."""

from __future__ import annotations

from pathlib import Path

from refinery.tokenization.reader import EmptySplitError, TokenShards
from refinery.tokenization.shards import split_folders
from refinery.tokenization.tokenizer import load_tokenizer


def describe(path: str | Path, sample_chars: int = 300) -> str:
    folders = split_folders(path)
    if not folders:
        raise FileNotFoundError(f"{path} holds no token shards (no */meta.json); give RUN, RUN/tokens or "
                                "RUN/tokens/train")
    lines = []
    for folder in folders:
        try:
            shards = TokenShards(folder)
        except EmptySplitError as err:  # an empty split is a fact to report, and the other splits still are shown
            lines += [f"{folder}", "  documents 0   tokens 0", f"  {err}"]
            continue
        meta = shards.meta
        lines += [
            f"{folder}",
            f"  documents {meta['documents']:,}   tokens {meta['tokens']:,}   shards {len(meta['shards'])}   "
            f"dtype {meta['dtype']}   vocab {meta['vocab_size']:,}",
            f"  tokenizer {meta['tokenizer_fingerprint'][:16]}…   special ids {meta['special_ids']}",
            "  tokens per source: " + ", ".join(f"{s} {n:,}" for s, n in meta["tokens_per_source"].items()),
        ]
        if meta.get("effective_epochs"):
            lines.append("  effective epochs: " + ", ".join(f"{s} {e}" for s, e in meta["effective_epochs"].items()))
        tokenizer_file = (folder / meta["tokenizer"]).resolve()
        if tokenizer_file.exists():
            tokenizer = load_tokenizer(tokenizer_file)
            first = shards.span(0, min(shards.tokens, 200)).tolist()
            text = tokenizer.decode(first, skip_special_tokens=False)[:sample_chars]
            lines.append(f"  sample: {text!r}")
    return "\n".join(lines)

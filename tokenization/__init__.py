"""Text to tokens: tokenizers, the token-shard format, mixing and SFT masks (see ARCHITECTURE.md)."""

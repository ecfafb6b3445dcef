"""Text to tokens: tokenizers, the token-shard format, mixing and SFT masks (see docs/architecture.md)."""

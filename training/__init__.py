"""Tokens to model: a compact GPT trained and evaluated on Refinery's token shards."""

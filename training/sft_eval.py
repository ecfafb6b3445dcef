"""Evaluating a chat (SFT) model on held-out instructions: BLEU and ROUGE-L of its replies against references.

The replies are generated greedily (reproducible) through the chat template and scored with sacrebleu
(corpus BLEU, its standard 13a tokenization) and rouge-score (ROUGE-L F1 with stemming, averaged over
replies), the implementations papers report: `pip install 'refinery[eval]'`.

Instructions come as Alpaca JSON (`instruction`, `input`, `output`), or as records with `messages`
(a JSON array, JSON Lines, or the Parquet of a run's data/): the last assistant message is the reference,
the messages before it the prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from refinery.tokenization.chat import ROLE_MARKERS
from refinery.training.generate import generate
from refinery.training.model import GPT, LSTM


@dataclass
class InstructionResult:
    bleu: float  # sacrebleu corpus BLEU, 0-100
    rouge_l: float  # mean ROUGE-L F1, 0-1
    replies: list[str]
    references: list[str]

    def as_dict(self, samples: int = 3) -> dict:
        examples = [{"reply": r, "reference": t} for r, t in zip(self.replies[:samples], self.references[:samples])]
        return {"items": len(self.replies), "bleu": self.bleu, "rougeL": self.rouge_l, "examples": examples}


def _records(path: Path) -> list[dict]:
    if path.suffix == ".parquet" or path.is_dir():
        import pyarrow.dataset as ds

        return ds.dataset(path, format="parquet").to_table(columns=["messages"]).to_pylist()
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines()
                                                                    if line.strip()]


def _conversation(record: dict) -> list[dict] | None:
    if "messages" in record:
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    elif "instruction" in record and "output" in record:
        # the user turn as corpora.conversations.from_alpaca writes it: the input after a blank line
        user = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]
    else:
        return None
    ok = messages and messages[-1]["role"] == "assistant" and all(m["role"] in ROLE_MARKERS for m in messages)
    return messages if ok else None  # tool turns have no place in this template


def read_instructions(path: str | Path, skip: int = 0, limit: int | None = None) -> list[list[dict]]:
    """Conversations ending with an assistant reply (the reference), records `skip` to `skip + limit`."""
    conversations = [c for c in map(_conversation, _records(Path(path))) if c is not None]
    if not conversations:
        raise ValueError(f"{path}: no Alpaca records or conversations that end with an assistant reply")
    return conversations[skip:None if limit is None else skip + limit]


def reply_scores(replies: list[str], references: list[str]) -> tuple[float, float]:
    """Corpus BLEU (sacrebleu) and mean ROUGE-L F1 (rouge-score) of replies against one reference each."""
    try:
        import sacrebleu
        from rouge_score import rouge_scorer
    except ImportError as err:
        raise ImportError(f"BLEU and ROUGE need the eval extra: pip install 'refinery[eval]' ({err})") from None
    bleu = sacrebleu.corpus_bleu(replies, [references]).score
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [scorer.score(reference, reply)["rougeL"].fmeasure for reply, reference in zip(replies, references)]
    return bleu, sum(rouge) / max(len(rouge), 1)


def evaluate_instructions(model: GPT | LSTM, tokenizer: Tokenizer, conversations: list[list[dict]],
                          max_new_tokens: int = 128) -> InstructionResult:
    """Greedy replies to each conversation's prompt, scored against its last assistant message."""
    references = [c[-1]["content"] for c in conversations]
    replies = [generate(model, tokenizer, c[:-1], chat=True, max_new_tokens=max_new_tokens, temperature=0)
               for c in conversations]
    bleu, rouge_l = reply_scores(replies, references)
    return InstructionResult(bleu, rouge_l, replies, references)

"""Evaluation sets as plain text: each benchmark item's natural text, for decontamination.

A benchmark item is a few *passages*: runs of text that appear together in the source the benchmark was made
from (a question followed by one of its answers; a story followed by its last word). Prompt scaffolding that
the eval harness adds ("Question:", "Answer:", option letters) is not part of the source and is left out,
so that a document quoting the item matches it.

Formats:
- `foundry`: the JSONL of llm-foundry's eval gauntlet (`query` + `choices` + `gold`; `context` +
  `continuation`; `context_options` + `continuation`). Passages: every line of the query but the last, then
  the last line followed by each choice (the gold one first); where the choices are letters, the options
  written in the query ("A. bank") are the choices.
- `hellaswag`: the 6-lines-an-item text file (`activity: context`, label, 4 endings), .txt or .txt.bz2.
  Passages: the context followed by each ending (the gold one first); the activity label is left out.
- `fields`: JSON (a list) or JSONL records whose named `fields` are each one passage, e.g. a question and
  its reference answer.
"""

from __future__ import annotations

import bz2
import glob
import re
from dataclasses import dataclass
from pathlib import Path

import orjson

EVAL_FORMATS = ("auto", "foundry", "hellaswag", "fields")
# Labels eval harnesses put at the start of a prompt line; not part of the benchmark's source text.
_LABEL = re.compile(r"^(?:Question|Q|Context|Passage|Sentence|Answer|A|Choices)\s*:\s*")
_OPTION = re.compile(r"^([A-J])\.\s+(.*)$")
# Jeopardy clues start with their category in capitals ("WORLD HISTORY: ...").
_CATEGORY = re.compile(r"^[A-Z][A-Z0-9 &'.,-]*:\s+")


class EvalSetError(ValueError):
    """An evaluation file cannot be read; the message names the file and what to do."""


@dataclass(frozen=True)
class EvalItem:
    benchmark: str
    index: int  # 0-based position of the item in its file
    passages: tuple[str, ...]


def benchmark_name(path: str | Path) -> str:
    """`world_knowledge/arc_easy.jsonl` → `arc_easy`; `hellaswag_val_full.txt.bz2` → `hellaswag`."""
    name = Path(path).name
    for suffix in (".bz2", ".gz", ".jsonl", ".json", ".txt"):
        name = name.removesuffix(suffix)
    return re.sub(r"_(?:val|validation|test|dev)(?:_full)?$", "", name)


def eval_files(path: str | Path) -> list[Path]:
    """A file, every evaluation file under a folder (JSONL, JSON and HellaSwag text), or a glob; sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.is_file() and p.name.endswith((".jsonl", ".txt", ".txt.bz2"))]
    else:
        found = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
    return sorted(found)


def detect_format(path: Path, fields: list[str] | None) -> str:
    if fields:
        return "fields"
    if path.name.endswith((".txt", ".txt.bz2")):
        return "hellaswag"
    if path.name.endswith(".jsonl"):
        return "foundry"
    raise EvalSetError(f"{path}: cannot tell the evaluation format from the name; give `format` "
                       f"({', '.join(EVAL_FORMATS[1:])}) and, for `fields`, the text fields")


def load_eval_set(path: str | Path, name: str | None = None, fmt: str = "auto",
                  fields: list[str] | None = None) -> list[EvalItem]:
    """Every item of one evaluation file, with its passages."""
    path = Path(path)
    fmt = detect_format(path, fields) if fmt == "auto" else fmt
    name = name or benchmark_name(path)
    if fmt == "hellaswag":
        return _hellaswag(path, name)
    records = _records(path)
    if fmt == "fields":
        if not fields:
            raise EvalSetError(f"{path}: format `fields` needs the list of text fields, e.g. [question, answer]")
        return [EvalItem(name, i, tuple(str(r[f]) for f in fields if r.get(f))) for i, r in enumerate(records)]
    if fmt != "foundry":
        raise EvalSetError(f"{path}: unknown evaluation format {fmt!r}; use one of {', '.join(EVAL_FORMATS)}")
    return [EvalItem(name, i, _foundry_passages(path, i, r)) for i, r in enumerate(records)]


def _records(path: Path) -> list[dict]:
    raw = path.read_bytes()
    records = None
    if path.name.endswith(".json"):  # one JSON list, or JSON lines under a .json name (as BELLE ships them)
        try:
            records = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    if records is None:
        try:
            records = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
        except orjson.JSONDecodeError as err:
            raise EvalSetError(f"{path}: neither a JSON list nor JSON lines ({err})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise EvalSetError(f"{path}: expected JSON objects, one per item")
    return records


def _foundry_passages(path: Path, index: int, record: dict) -> tuple[str, ...]:
    gold = record.get("gold")
    if "context_options" in record:  # Winograd-style: each option is the start of the same sentence
        options = _gold_first(record["context_options"], gold)
        return tuple(f"{option} {record.get('continuation', '')}".strip() for option in options)
    if "context" in record:  # LAMBADA, Jeopardy: the context and its continuation run on
        context = _CATEGORY.sub("", record["context"].strip())
        return (f"{context} {record.get('continuation', '')}".strip(),)
    if "query" not in record:
        raise EvalSetError(f"{path}: item {index} has none of query, context, context_options: not the "
                           "llm-foundry eval format; give `format: fields` and its text fields")
    lines, options = [], []
    for line in record["query"].splitlines():
        line = _LABEL.sub("", line.strip())
        if option := _OPTION.match(line):
            options.append(option.group(2))
        elif line:
            lines.append(line)
    choices = [str(c) for c in record.get("choices", [])]
    if options and all(len(c) == 1 for c in choices):  # letters: the options are written in the query
        choices = options
    if not lines:
        return tuple(_gold_first(choices, gold))
    last = lines.pop()
    return (*lines, *(f"{last} {choice}" for choice in _gold_first(choices, gold)))


def _gold_first(values: list[str], gold: object) -> list[str]:
    if isinstance(gold, int) and 0 <= gold < len(values):
        return [values[gold], *values[:gold], *values[gold + 1:]]
    return list(values)


def hellaswag_rows(path: str | Path) -> list[tuple[str, int, list[str]]]:
    """HellaSwag's plain-text layout, 6 lines an item: `activity: context`, the gold label, the 4 endings.

    Returns (context line, label, endings) per item; shared by decontamination and `refinery eval`.
    """
    path = Path(path)
    opener = bz2.open if path.name.endswith(".bz2") else open
    with opener(path, "rt", encoding="utf-8") as file:
        lines = [line.strip() for line in file.read().split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) % 6 or not all(lines[i].isdigit() for i in range(1, len(lines), 6)):
        raise EvalSetError(f"{path}: not the HellaSwag text format (6 lines an item: `activity: context`, the "
                           "label digit, 4 endings); give `format` for another layout")
    return [(lines[start], int(lines[start + 1]), lines[start + 2:start + 6]) for start in range(0, len(lines), 6)]


def _hellaswag(path: Path, name: str) -> list[EvalItem]:
    items = []
    for index, (context, label, endings) in enumerate(hellaswag_rows(path)):
        context = context.split(": ", 1)[1] if ": " in context else context
        items.append(EvalItem(name, index, tuple(f"{context} {e}" for e in _gold_first(endings, label))))
    return items

"""What the run report and the dataset card say about a finished run, read with SQL through `refinery sql`'s
read-only views. Every question is an aggregate, a LIMIT, or an exact quantile over a hash sample of ids, so a
run of any size is read column by column and never loaded whole; and the answers are the same on every call.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from refinery.corpora.atomic import read_json
from refinery.pipelines.commands import sql
from refinery.pipelines.engine.layout import RunLayout
from refinery.tokenization.shards import split_folders
from refinery.tokenization.tokenizer import load_tokenizer

# Which stage writes each signal column, what its value counts, and which parameters are its thresholds. Stages do not
# declare this about themselves, so it is written down here; a signal column of one of these stages that is missing
# here is still drawn, without a threshold. Thresholds are (config key, "min" | "max", the key inside a dict-valued
# parameter).
SIGNALS: dict[str, tuple[str, str, list[tuple[str, str, str | None]]]] = {
    "lang_score": ("langid", "top language's probability", [("min_score", "min", None)]),
    "quality_score": ("quality_classifier", "probability of the good label", [("threshold", "min", None)]),
    "gopher_words": ("gopher_quality", "words", [("min_words", "min", None), ("max_words", "max", None)]),
    "gopher_mean_word_length": ("gopher_quality", "characters per word", [("min_mean_word_length", "min", None),
                                                                          ("max_mean_word_length", "max", None)]),
    "gopher_hash_ratio": ("gopher_quality", "# per word", [("max_symbol_word_ratio", "max", None)]),
    "gopher_ellipsis_ratio": ("gopher_quality", "ellipses per word", [("max_symbol_word_ratio", "max", None)]),
    "gopher_bullet_lines_frac": ("gopher_quality", "fraction of lines", [("max_bullet_lines_frac", "max", None)]),
    "gopher_ellipsis_lines_frac": ("gopher_quality", "fraction of lines", [("max_ellipsis_lines_frac", "max", None)]),
    "gopher_alpha_words_frac": ("gopher_quality", "fraction of words", [("min_alpha_words_frac", "min", None)]),
    "gopher_stop_words": ("gopher_quality", "distinct stop words", [("min_stop_words", "min", None)]),
    "gopher_rep_dup_para_frac": ("gopher_repetition", "fraction of paragraphs", [("max_dup_para_frac", "max", None)]),
    "gopher_rep_dup_para_chars": ("gopher_repetition", "fraction of characters",
                                  [("max_dup_para_char_frac", "max", None)]),
    "gopher_rep_dup_line_frac": ("gopher_repetition", "fraction of lines", [("max_dup_line_frac", "max", None)]),
    "gopher_rep_dup_line_chars": ("gopher_repetition", "fraction of characters",
                                  [("max_dup_line_char_frac", "max", None)]),
    **{f"gopher_rep_top_{n}gram": ("gopher_repetition", "fraction of characters",
                                   [("max_top_ngram_frac", "max", str(n))]) for n in (2, 3, 4)},
    **{f"gopher_rep_dup_{n}gram": ("gopher_repetition", "fraction of characters",
                                   [("max_dup_ngram_frac", "max", str(n))]) for n in range(5, 11)},
    "c4_sentences": ("c4_quality", "sentences in kept lines", [("min_sentences", "min", None)]),
    "c4_dropped_lines_frac": ("c4_quality", "fraction of lines", [("max_dropped_lines_frac", "max", None)]),
    "fineweb_line_punct_frac": ("fineweb_quality", "fraction of lines", [("min_line_punct_frac", "min", None)]),
    "fineweb_short_line_frac": ("fineweb_quality", "fraction of lines", [("max_short_line_frac", "max", None)]),
    "fineweb_char_dup_frac": ("fineweb_quality", "fraction of characters", [("max_char_dup_frac", "max", None)]),
    "fineweb_newline_word_ratio": ("fineweb_quality", "newlines per word", [("max_newline_word_ratio", "max", None)]),
    "repeats_removed": ("paragraph_dedup", "repeated units removed", []),
    "contamination_hits": ("decontaminate", "benchmark n-gram hits", []),
}
_PREFIXES = (("gopher_rep_", "gopher_repetition", "fraction of characters"), ("gopher_", "gopher_quality", ""),
             ("c4_lines", "c4_quality", "lines"), ("c4_", "c4_quality", ""), ("fineweb_", "fineweb_quality", ""))
LENGTH = "characters"  # the pseudo-signal of every run: length(text)
WORDS = "words"  # the pseudo-signal of a run whose length_filter bounds words: runs of non-whitespace, as it counts
# How each pseudo-signal is measured (DuckDB's regex is RE2, as Arrow's: \S is what length_filter's \S is), and the
# length_filter parameters that bound it.
_MEASURED = {LENGTH: ("length(text)", [("min_chars", "min", None), ("max_chars", "max", None)]),
             WORDS: (r"len(regexp_extract_all(text, '\S+'))", [("min_words", "min", None), ("max_words", "max", None)])}
SAMPLE_ROWS = 200_000  # quantiles (the histogram's range) from at most about this many rows, sampled by id hash


class ReportError(ValueError):
    """The folder cannot be reported on; the message says why and what to do."""


@dataclass
class Stage:
    key: str
    name: str
    kind: str
    position: int
    docs_in: int
    kept: int
    removed: int
    quarantined: int
    skipped: int
    bytes_in: int
    bytes_out: int
    seconds: float
    reasons: dict[str, int]
    counts: dict[str, int]


@dataclass
class Histogram:
    column: str
    stage: Stage | None  # the stage that wrote the column (None: the text length, measured here)
    unit: str
    edges: list[float]
    passed: list[int]  # rows that passed the stage (kept, or removed by a later stage)
    removed: list[int]  # rows removed by the stage itself
    thresholds: list[tuple[float, str]]
    clipped: tuple[bool, bool]
    missing: int  # rows where the signal is undefined (null)


@dataclass
class Training:
    folder: Path
    start: dict[str, Any]
    train: list[tuple[float, float]]
    val: list[tuple[float, float]]
    end: dict[str, Any] | None


class RunFacts:
    """One read-only connection to a finished run, and the questions the report and the card ask it."""

    def __init__(self, run_dir: str | Path):
        self.layout = RunLayout(Path(run_dir).resolve())
        if not self.layout.is_run():
            raise ReportError(f"{run_dir} is not a Refinery run folder (no manifest.json); give a recipe's `output:`")
        self.manifest: dict[str, Any] = read_json(self.layout.manifest)
        if self.manifest.get("status") != "complete":
            raise ReportError(f"the run in {run_dir} is not complete (status: {self.manifest.get('status')}); "
                              "finish it with `refinery run RECIPE` (it resumes), then report")
        self.con = sql.connect(self.layout.root)
        self.stages = [
            Stage(r["stage"], r["name"], r["kind"], r["position"], r["docs_in"], r["kept"], r["removed"],
                  r["quarantined"], r["skipped"], r["bytes_in"], r["bytes_out"], r["seconds"],
                  {x["reason"]: x["count"] for x in r["reasons"]}, {x["name"]: x["count"] for x in r["counts"]})
            for r in self.rows("SELECT * FROM stats ORDER BY position")]
        self.configs = {s["key"]: s["config"] for s in self.manifest["stages"]}
        described = {view: self.rows(f"DESCRIBE {view}") for view in ("docs", "removed")}
        self.columns = {view: [row["column_name"] for row in rows] for view, rows in described.items()}
        self.types = {row["column_name"]: row["column_type"] for row in described["docs"]}  # of the kept documents
        self.integral = {name for name, kind in self.types.items() if "INT" in kind}

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> RunFacts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rows(self, query: str, *params: Any) -> list[dict[str, Any]]:
        cursor = self.con.execute(query, list(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, values)) for values in cursor.fetchall()]

    def stage(self, key: str) -> Stage:
        return next(s for s in self.stages if s.key == key)

    @property
    def read(self) -> Stage:
        return self.stages[0]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def _text(self, view: str) -> str:
        """The text to show of a row: conversations before chat_template have an empty text and a prompt."""
        return "coalesce(nullif(text, ''), prompt, '')" if "prompt" in self.columns[view] else "text"

    def removed_examples(self, stage: str, reason: str, limit: int = 3, chars: int = 300) -> list[dict[str, Any]]:
        """A few documents the stage removed for `reason`: a spread by id hash, the same on every call."""
        extra = ", duplicate_of" if "duplicate_of" in self.columns["removed"] else ""
        return self.rows(f"SELECT id, source, reason{extra}, left({self._text('removed')}, ?) AS text FROM removed "
                         "WHERE stage = ? AND split_part(reason, ':', 1) = ? ORDER BY hash(id), id LIMIT ?",
                         chars, stage, reason, limit)

    def quarantine_examples(self, reason: str, limit: int = 3, chars: int = 300) -> list[dict[str, Any]]:
        found = self.rows("SELECT id, file, position, reason, raw[1:?] AS raw FROM quarantine "
                          "WHERE split_part(reason, ':', 1) = ? ORDER BY hash(id), id LIMIT ?", chars, reason, limit)
        for row in found:
            row["raw"] = (row["raw"] or b"").decode("utf-8", errors="replace")
        return found

    def signal_columns(self) -> list[tuple[str, Stage | None, str]]:
        """(column, the stage that wrote it, unit) for every signal column of the kept documents, in stage order."""
        found = []
        pii = [s for s in self.stages if s.name == "pii" and self.configs[s.key].get("count_column")]
        for column in self.columns["docs"]:
            name, unit = self._owner(column, pii)
            stage = next((s for s in reversed(self.stages) if s.name == name), None) if name else None
            if stage is not None:
                found.append((column, stage, unit))
        return sorted(found, key=lambda item: item[1].position if item[1] else 0)

    def _owner(self, column: str, pii: list[Stage]) -> tuple[str | None, str]:
        if column in SIGNALS:
            return SIGNALS[column][0], SIGNALS[column][1]
        if any(self.configs[s.key]["count_column"] == column for s in pii):
            return "pii", "replacements per document"
        for prefix, name, unit in _PREFIXES:
            if column.startswith(prefix) and column != "dup_cluster_size":
                return name, unit or column.removeprefix(prefix).replace("_", " ")
        return None, ""

    def bounds_words(self) -> bool:
        """Whether a length_filter of this run bounds the words (then the report draws them too)."""
        return any(s.name == "length_filter" and (self.configs[s.key].get("min_words") is not None
                                                  or self.configs[s.key].get("max_words") is not None)
                   for s in self.stages)

    def _thresholds(self, column: str, stage: Stage | None) -> list[tuple[float, str]]:
        if stage is None:  # a length of the text: length_filter's bounds of it, where the run has one
            spec = _MEASURED[column][1]
            stage = next((s for s in self.stages if s.name == "length_filter"), None)
        else:
            spec = SIGNALS.get(column, ("", "", []))[2]
        if stage is None:
            return []
        config, found = self.configs[stage.key], []
        for key, side, item in spec:
            value = config.get(key)
            value = value.get(item) if isinstance(value, dict) else value
            if value is not None and not (side == "min" and value == 0):  # a minimum of 0 removes nothing
                found.append((float(value), f"{side} {value:g} ({key}{f'[{item}]' if item else ''})"))
        return found

    def histogram(self, column: str, stage: Stage | None, unit: str, bins: int = 30) -> Histogram | None:
        """The column's distribution over the documents that reached the stage: passed vs removed by it."""
        value = _MEASURED[column][0] if stage is None else f'CAST("{column}" AS DOUBLE)'
        if stage is None:
            source = f"SELECT id, {value} AS x, 0 AS r FROM docs UNION ALL SELECT id, {value}, 1 FROM removed"
            params: list[Any] = []
        else:  # rows removed before the stage never had the column; those removed after it passed it
            source, params = f"SELECT id, {value} AS x, 0 AS r FROM docs", []
            if column in self.columns["removed"]:
                later = [s.key for s in self.stages if s.position >= stage.position]
                source += (f" UNION ALL SELECT id, {value}, CASE WHEN stage = ? THEN 1 ELSE 0 END FROM removed "
                           f"WHERE stage IN ({', '.join('?' * len(later))})")
                params = [stage.key, *later]
        rows = self.final.kept + sum(s.removed for s in self.stages)
        share = min(1.0, SAMPLE_ROWS / max(rows, 1))
        summary = self.rows(
            f"WITH v AS ({source}) SELECT min(x) AS lo, max(x) AS hi, count(x) AS n, count(*) - count(x) AS missing, "
            "quantile_cont(x, [0.01, 0.99]) FILTER (WHERE hash(id) % 1000000 < ?) AS q FROM v", *params,
            int(share * 1_000_000))[0]
        if not summary["n"]:
            return None
        thresholds = self._thresholds(column, stage)
        lo, hi, clipped = _range(summary["lo"], summary["hi"], summary["q"] or [summary["lo"], summary["hi"]],
                                 [t for t, _ in thresholds])
        if (stage is None or column in self.integral) and hi - lo < bins:  # counts: one bin per whole number
            lo, hi, bins = math.floor(lo) - 0.5, math.ceil(hi) + 0.5, int(math.ceil(hi) - math.floor(lo)) + 1
        elif hi <= lo:  # one value, and no threshold to span to
            lo, hi, bins = lo - 0.5, lo + 0.5, 1
        width = (hi - lo) / bins
        counts = self.rows(f"WITH v AS ({source}) SELECT least(greatest(floor((x - ?) / ?), 0), ?)::INTEGER AS b, "
                           "r, count(*) AS n FROM v WHERE x IS NOT NULL GROUP BY ALL", *params, lo, width, bins - 1)
        passed, removed = [0] * bins, [0] * bins
        for row in counts:
            (removed if row["r"] else passed)[row["b"]] += row["n"]
        edges = [lo + i * width for i in range(bins + 1)]
        return Histogram(column, stage, unit, edges, passed, removed, thresholds, clipped, summary["missing"])

    def languages(self) -> list[dict[str, Any]]:
        if "lang" not in self.columns["docs"]:
            return []
        return self.rows("SELECT coalesce(lang, '(none)') AS lang, count(*) AS docs, sum(strlen(text)) AS bytes "
                         "FROM docs GROUP BY ALL ORDER BY docs DESC, lang")

    def sources(self) -> list[dict[str, Any]]:
        """Per source: documents kept and removed, and the kept text's bytes."""
        kept = "SELECT source, count(*) AS kept, 0 AS removed, sum(strlen(text)) AS bytes FROM docs GROUP BY 1"
        removed = "SELECT source, 0, count(*), 0 FROM removed GROUP BY 1"
        return self.rows("SELECT source, sum(kept) AS kept, sum(removed) AS removed, sum(bytes) AS bytes FROM "
                         f"({kept} UNION ALL {removed}) GROUP BY 1 ORDER BY 1")

    def clusters(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Near-duplicate clusters by size (documents in them), and the members of the largest one."""
        if "dup_cluster_id" not in self.columns["docs"]:
            return [], []
        members = ("SELECT id, dup_cluster_id AS cluster, dup_cluster_size AS size, 'kept' AS fate, {text} AS text "
                   "FROM docs WHERE dup_cluster_id IS NOT NULL")
        union = members.format(text="text")
        if "dup_cluster_id" in self.columns["removed"]:
            union += (" UNION ALL SELECT id, dup_cluster_id, dup_cluster_size, 'removed by ' || stage || ': ' || "
                      "reason, text FROM removed WHERE dup_cluster_id IS NOT NULL")
        sizes = self.rows(f"SELECT size, count(DISTINCT cluster) AS clusters, count(*) AS docs FROM ({union}) "
                          "GROUP BY size ORDER BY size")
        largest = self.rows(f"SELECT cluster FROM ({union}) ORDER BY size DESC, cluster LIMIT 1")
        if not largest:
            return sizes, []
        example = self.rows(f"SELECT id, fate, left(text, 200) AS text FROM ({union}) WHERE cluster = ? "
                            "ORDER BY fate, id LIMIT 8", largest[0]["cluster"])
        return sizes, example

    def token_splits(self) -> list[dict[str, Any]]:
        """Each split's meta.json (documents, tokens, tokens per source, weights, vocabulary), with its name."""
        return [{"split": folder.name, **read_json(folder / "meta.json")}
                for folder in split_folders(self.layout.tokens.root)]

    def tokenizer(self) -> dict[str, Any] | None:
        """The run's tokenizer (tokens/tokenizer.json): its model type and vocabulary size."""
        path = self.layout.tokens.tokenizer
        if not path.is_file():
            return None
        tokenizer = load_tokenizer(path)
        kind = json.loads(tokenizer.to_str()).get("model", {}).get("type", "?")
        return {"path": path, "type": kind, "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True)}

    def ablation(self) -> dict[str, Any] | None:
        """The summary of the `refinery ablate` this run is a recipe of (RUN/ablation.json), if any."""
        return read_json(self.layout.ablation) if self.layout.ablation.is_file() else None

    def trainings(self, folders: Sequence[str | Path] = ()) -> list[Training]:
        """Training runs given, else those found beside or inside the run folder whose data is this run's tokens
        (the `start` record of OUT/log.jsonl names the data)."""
        found = [Path(f) for f in folders]
        if not found:
            root = self.layout.root
            for candidate in sorted({*root.glob("*/log.jsonl"), *root.parent.glob("*/log.jsonl")}):
                if _trained_on(candidate, root):
                    found.append(candidate.parent)
        return [t for t in (read_training(folder) for folder in found) if t is not None]


def _trained_on(log: Path, run_dir: Path) -> bool:
    try:
        with log.open(encoding="utf-8") as handle:
            start = json.loads(handle.readline())
    except (OSError, ValueError):
        return False
    data = [Path(p).resolve() for p in start.get("config", {}).get("data", [])]
    return any(p == run_dir or p.is_relative_to(run_dir / "tokens") for p in data)


def read_training(folder: str | Path) -> Training | None:
    """A training folder's log.jsonl (training/logs.py writes it; read as JSON lines, without importing torch)."""
    log = Path(folder) / "log.jsonl"
    if not log.is_file():
        raise ReportError(f"{folder} holds no training log (log.jsonl); give a `refinery train --out` folder")
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    start = next((r for r in records if r["kind"] == "start"), None)
    if start is None:
        return None
    train = [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]
    val = [(r["step"], r["val_loss"]) for r in records if r["kind"] == "val" and r.get("val_loss") is not None]
    end = next((r for r in reversed(records) if r["kind"] == "end"), None)
    return Training(Path(folder), start, train, val, end)


def _range(lo: float, hi: float, quantiles: list[float], thresholds: list[float]) -> tuple[float, float, tuple]:
    """The histogram's axis: the whole range, unless a tail is far longer than the middle 98% (then that tail is
    cut at its 1% quantile and its values fall into the edge bin); then widened to show a threshold where that
    keeps the data readable (at most 3 times the span; a threshold further away is marked at the edge)."""
    q_lo, q_hi = quantiles
    middle = (q_hi - q_lo) or abs(q_hi) or 1.0
    axis_lo = lo if q_lo - lo <= 3 * middle else q_lo
    axis_hi = hi if hi - q_hi <= 3 * middle else q_hi
    for t in sorted(thresholds, key=lambda t: abs(t - (axis_lo + axis_hi) / 2)):
        span = axis_hi - axis_lo
        if max(axis_hi, t) - min(axis_lo, t) <= 3 * span or span == 0:
            axis_lo, axis_hi = min(axis_lo, t), max(axis_hi, t)
    return axis_lo, axis_hi, (axis_lo > lo, axis_hi < hi)


def recipe_yaml(manifest: dict[str, Any]) -> str:
    """The recipe as run (from the manifest), written as a recipe file is: fields in recipe order, reader options
    flat in their input, unset values left out."""
    recipe = dict(manifest["recipe"])
    inputs = []
    for entry in recipe.pop("inputs"):
        options = entry.pop("options", {}) or {}
        flat = {"path": entry.pop("path"), **entry, **options}
        inputs.append({k: v for k, v in flat.items() if v not in (None, {}, [])})
    ordered = {"name": recipe.pop("name"), "inputs": inputs, "stages": recipe.pop("stages"),
               "output": recipe.pop("output"), **{k: v for k, v in recipe.items() if v is not None}}
    return yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=100)


def slug(text: str) -> str:
    """An HTML id or anchor made of the text."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")

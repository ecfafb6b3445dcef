"""Word-similarity evaluation of word vectors: Spearman's ρ between the model's cosine similarities and human
scores, on sets such as WordSim-353, SimLex-999, MEN, MTurk-771 and RG-65.

A set is a text file, one pair a line: `word1 word2 score`, separated by tabs or spaces (Windows line ends and
blank lines are fine; the sets of mfaruqui/eval-word-vectors `data/word-sim` have this form). Its words are
prepared as the training text was (word_vectors.words: lowercased, punctuation stripped at the ends).

Two scores per set, because they answer different questions:
- ρ over the *known* pairs (both words in the model's vocabulary), as Word2Vec and GloVe papers report it, with
  how many pairs that was: the quality of the vectors the corpus taught;
- ρ over *all* pairs, a word outside the vocabulary getting fastText's vector from its character n-grams (a
  word none of whose n-grams was seen has a zero vector, whose similarity to anything counts as 0): what a user
  of the model gets on the whole set.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refinery.pipelines.commands.word_vectors import EmbeddingsError, load_model, word_of

SETS_VARIABLE = "REFINERY_WORDSIM"
_CHECKOUT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass(frozen=True)
class Pair:
    first: str
    second: str
    score: float


def default_sets_dir() -> Path | None:
    """Where `--sets` points when not given: $REFINERY_WORDSIM, else `wordsim/` of the real-data folder the tests
    read ($REFINERY_SHARED_DATA, else shared/data beside the checkout); None where neither exists."""
    shared = Path(os.environ.get("REFINERY_SHARED_DATA", _CHECKOUT_DATA)) / "wordsim"
    for candidate in (os.environ.get(SETS_VARIABLE), shared):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def set_files(sets_dir: str | Path | None) -> list[Path]:
    """The similarity sets: every .txt file of the folder, sorted by name."""
    if sets_dir is None:
        raise EmbeddingsError(f"no word-similarity sets found: pass --sets DIR (or set ${SETS_VARIABLE}), a folder of "
                              "`word1 word2 score` text files such as data/word-sim of "
                              "https://github.com/mfaruqui/eval-word-vectors")
    folder = Path(sets_dir)
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if not files:
        raise EmbeddingsError(f"{folder} {'holds no .txt sets' if folder.is_dir() else 'is not a folder'}: pass "
                              "--sets DIR, a folder of `word1 word2 score` text files")
    return files


def read_pairs(path: Path) -> list[Pair]:
    """The pairs of one set; a line that is not `word1 word2 score` is an error naming the file and line."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 3:
                raise ValueError(f"{len(fields)} fields")
            pairs.append(Pair(word_of(fields[0]), word_of(fields[1]), float(fields[2])))
        except ValueError as err:  # EmbeddingsError is one too
            raise EmbeddingsError(f"{path}:{number}: expected `word1 word2 score`, got {line.strip()!r} "
                                  f"({err})") from None
    return pairs


def average_ranks(values: list[float]) -> list[float]:
    """Ranks from 1, tied values sharing the average of their ranks (as Spearman's ρ needs)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's ρ: the Pearson correlation of the average ranks. None when undefined (fewer than two pairs, or
    one side constant)."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} values against {len(y)}")
    if len(x) < 2:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    mean_x, mean_y = sum(rx) / len(rx), sum(ry) / len(ry)
    dx, dy = [r - mean_x for r in rx], [r - mean_y for r in ry]
    spread = math.sqrt(sum(d * d for d in dx) * sum(d * d for d in dy))
    return None if spread == 0 else sum(a * b for a, b in zip(dx, dy)) / spread


def _cosine(model: Any, first: str, second: str) -> float:
    import numpy as np

    a, b = model.get_word_vector(first), model.get_word_vector(second)
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 0.0 if norms == 0 else float(np.dot(a, b)) / norms


def evaluate_model(model: Any, sets_dir: str | Path | None) -> dict[str, dict]:
    """`evaluate_wordsim` for a loaded model."""
    results = {}
    for path in set_files(sets_dir):
        pairs = read_pairs(path)
        similarity = [_cosine(model, p.first, p.second) for p in pairs]
        known = [i for i, p in enumerate(pairs) if model.get_word_id(p.first) >= 0 and model.get_word_id(p.second) >= 0]
        results[path.stem] = {
            "rho_known": spearman([similarity[i] for i in known], [pairs[i].score for i in known]),
            "known_pairs": len(known),
            "total_pairs": len(pairs),
            "rho_all": spearman(similarity, [p.score for p in pairs]),
        }
    return results


def evaluate_wordsim(model_path: str | Path, sets_dir: str | Path | None) -> dict[str, dict]:
    """Spearman's ρ of a model on every set of `sets_dir`, by set name (the file name without .txt): rho_known
    (ρ over the pairs whose words the model knows), known_pairs, total_pairs and rho_all (every pair, unknown
    words through their character n-grams). A ρ is None where undefined (fewer than two pairs)."""
    return evaluate_model(load_model(model_path), sets_dir)


def describe(results: dict[str, dict]) -> str:
    """The results as a table a reader can take in at once."""
    def shown(rho: float | None) -> str:
        return "n/a" if rho is None else f"{rho:+.3f}"

    width = max([len("set"), *map(len, results)])
    header = (f"{'set':<{width}}  {'known/total pairs':>17}  {'ρ known pairs':>13}  "
              f"{'ρ all pairs (OOV via subwords)':>30}")
    lines = ["word similarity: Spearman's ρ between the model's cosine similarities and human scores", header]
    for name, row in results.items():
        counts = f"{row['known_pairs']:,}/{row['total_pairs']:,}"
        lines.append(f"{name:<{width}}  {counts:>17}  {shown(row['rho_known']):>13}  {shown(row['rho_all']):>30}")
    lines.append("known pairs: both words in the vocabulary (as Word2Vec/GloVe papers report); all pairs: unknown "
                 "words get fastText's vector from their character n-grams (a model trained --no-subwords has "
                 "none: their similarity counts as 0)")
    return "\n".join(lines)

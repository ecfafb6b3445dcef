"""Word vectors in `refinery ablate`: a cheap second signal of data quality. For every recipe and seed, fastText
skip-gram vectors (word_vectors.train_embeddings, as `refinery embeddings train` makes them) train on the recipe's
kept training documents and are scored on the word-similarity sets (wordsim.evaluate_wordsim): Spearman's ρ over
the pairs whose two words the vectors know, and how many pairs that is.

The same budget for every recipe: the same number of words (word_vectors.words, the embeddings' text preparation),
the smallest recipe's whole training split, at most --embedding-words. Each recipe's training documents (the split
the proxy models train on: never a validation document) are taken in the order of a hash of their ids, the shared
tokenizer's order, and the last one is cut at a word. So a larger recipe cannot win by size, and every seed trains
on the very same words: seeds vary only fastText's initialisation and sampling. Unless --embedding-epochs is given,
the epochs are enough for about 6 M words of training (5 to 25): on the bundled pair's 243 k words each, 5 epochs
left the mean ρ near 0 (-0.02 raw, 0.06 refined), 25 gave 0.19 and 0.32 (docs/ablation.md).

    OUT/embeddings/settings.json           what the vectors depend on; a rerun with others is refused
    OUT/embeddings/NAME/seed-S/skipgram.*  the vectors (`refinery embeddings query/analogy/eval` read the .bin)
    OUT/embeddings/NAME/seed-S.json        their facts and scores, written last: a rerun trains only what has none
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from statistics import fmean
from typing import Any

from refinery.corpora.atomic import read_json, write_json
from refinery.pipelines.commands.ablate_report import Metric, Results
from refinery.pipelines.commands.word_vectors import model_files, train_embeddings, words
from refinery.pipelines.commands.wordsim import evaluate_wordsim, set_files

MODEL = "skipgram"
# Character n-gram vectors. The .bin holds (vocabulary + bucket) × dim floats: 40 MB at dim 50, not fastText's 400 MB
# with its 2,000,000; on all our English text 200,000 gave the same ρ to within 0.011 (docs/embeddings.md).
BUCKET = 200_000
TRAINED_WORDS = 6_000_000  # automatic epochs: about this many words of training (epochs × words), within
EPOCHS = (5, 25)  # these bounds
GROUP = "wordsim"  # where a combined result holds the scores (ablate_report.Metric.group)
MEAN = "mean"


def auto_epochs(count: int) -> int:
    """Passes over `count` words for about TRAINED_WORDS of training: a small corpus needs more for its vectors to
    settle."""
    return max(EPOCHS[0], min(EPOCHS[1], math.ceil(TRAINED_WORDS / max(count, 1))))


def settings(dim: int, epochs: int | None, min_count: int, max_words: int, threads: int,
             sets_dir: Path) -> dict[str, Any]:
    """Everything the vectors and their scores depend on, besides the runs and their split (the ablation's own
    settings hold those, and so the words: "auto" epochs are a function of them)."""
    return {"model": MODEL, "dim": dim, "epochs": epochs or "auto", "min_count": min_count, "bucket": BUCKET,
            "max_words": max_words, "threads": threads,
            "wordsim": {path.stem: hashlib.sha256(path.read_bytes()).hexdigest() for path in set_files(sets_dir)}}


def check_settings(folder: Path, wanted: dict[str, Any]) -> None:
    """Refuse vectors of other settings (naming each change), else record these."""
    from refinery.pipelines.commands.ablate_data import AblationError, setting_changes

    path = folder / "settings.json"
    if path.exists() and (old := read_json(path)) != wanted:
        raise AblationError(f"{folder} holds word vectors made with other settings: "
                            f"{'; '.join(setting_changes(old, wanted))}. Rerun with those, delete {folder} to train "
                            "only the word vectors again (the models are kept), or add --no-embeddings")
    write_json(path, wanted)


def budget_texts(runs: dict[str, Path], validation_fraction: float, max_words: int) -> tuple[dict[str, list[str]], int]:
    """Each run's training documents cut to the same number of words (see the module docstring), as prepared text
    (one document a string); and that number."""
    from refinery.pipelines.commands.ablate_data import training_texts
    from refinery.tokenization.builder import SplitPlan

    plan = SplitPlan(validation_fraction)
    prepared = {name: [found for text in training_texts(run_dir, plan) if (found := words(text))]
                for name, run_dir in runs.items()}
    budget = min([max_words, *(sum(map(len, docs)) for docs in prepared.values())])
    texts = {}
    for name, docs in prepared.items():
        left, kept = budget, []
        for doc in docs:
            if left <= 0:
                break
            kept.append(" ".join(doc[:left]))
            left -= min(left, len(doc))
        texts[name] = kept
    return texts, budget


def train_grid(folder: Path, runs: dict[str, Path], seeds: list[int], wanted: dict[str, Any], sets_dir: Path,
               validation_fraction: float, quiet: bool) -> dict[str, dict[int, dict[str, Any]]]:
    """Train and score the vectors of every (recipe, seed) without a result; each result is written atomically
    when done. Returns recipe → seed → result (its words, vocabulary, seconds and `wordsim` scores by set)."""
    from tqdm import tqdm

    check_settings(folder, wanted)
    result_path = {(n, s): folder / n / f"seed-{s}.json" for s in seeds for n in runs}
    todo = [cell for cell, path in result_path.items() if not path.exists()]
    print(f"{len(result_path)} word-vector models ({MODEL}, dim {wanted['dim']}, {wanted['epochs']} epochs): "
          f"{len(result_path) - len(todo)} done, {len(todo)} to train")
    if todo:
        texts, budget = budget_texts(runs, validation_fraction, wanted["max_words"])
        epochs = auto_epochs(budget) if wanted["epochs"] == "auto" else wanted["epochs"]
        print(f"word vectors train on {budget:,} words of each recipe's training documents, {epochs} epochs")
    bar = tqdm(total=len(result_path), initial=len(result_path) - len(todo), unit="model", desc="word vectors",
               disable=quiet)
    for name, seed in todo:
        bar.set_postfix_str(f"{name} seed {seed}")
        prefix = folder / name / f"seed-{seed}" / MODEL
        model = train_embeddings(texts[name], prefix, model=MODEL, dim=wanted["dim"], epochs=epochs,
                                 min_count=wanted["min_count"], threads=wanted["threads"], seed=seed, bucket=BUCKET)
        facts = read_json(model_files(prefix)["json"])
        write_json(result_path[(name, seed)], {
            "recipe": name, "seed": seed, "model": str(model), "words": facts["words"], "epochs": epochs,
            "documents": facts["documents"], "vocabulary": facts["vocabulary"], "threads": facts["threads"],
            "seconds": facts["seconds"]["total"], "wordsim": evaluate_wordsim(model, sets_dir)})
        bar.update()
    bar.close()
    return {name: {seed: read_json(result_path[(name, seed)]) for seed in seeds} for name in runs}


def scored_sets(vectors: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """The sets with a ρ over known pairs for every recipe and seed (a set none or one of whose pairs a model
    knows has none): the mean is over the same sets for all."""
    results = [result for by_seed in vectors.values() for result in by_seed.values()]
    return [name for name in results[0]["wordsim"]
            if all(r["wordsim"][name][field] is not None for r in results for field in ("rho_known", "rho_all"))]


def combine(results: Results, vectors: dict[str, dict[int, dict[str, Any]]]) -> tuple[Results, list[Metric]]:
    """The proxies' results with each seed's word-similarity scores beside them (under GROUP, with the mean of the
    scored sets), and the metrics that show them: the mean first (its verdict), then each set."""
    sets = scored_sets(vectors)
    if not sets:
        return results, []
    combined: Results = {}
    for name, by_seed in results.items():
        combined[name] = {}
        for seed, result in by_seed.items():
            scores = vectors[name][seed]["wordsim"]
            mean = {field: fmean(scores[s][field] for s in sets) for field in ("rho_known", "rho_all")}
            combined[name][seed] = {**result, GROUP: {**scores, MEAN: mean}}
    about = f"mean of {len(sets)} set{'s' * (len(sets) > 1)}"
    return combined, [
        Metric(f"word similarity ρ, {about} (known pairs)", MEAN, "rho_known", False, digits=3, group=GROUP,
               verdict_on=f"word similarity (Spearman's ρ, {about}, known pairs)", unit="ρ"),
        Metric(f"word similarity ρ, {about} (all pairs)", MEAN, "rho_all", False, digits=3, group=GROUP),
        *(Metric(f"{s} ρ (known pairs)", s, "rho_known", False, digits=3, group=GROUP) for s in sets)]


def fact_rows(vectors: dict[str, dict[int, dict[str, Any]]]) -> list[list[str]]:
    """Table rows of what does not vary with the seed: the words each recipe trained on, its vocabulary, and how
    many pairs of each set it knows (its coverage)."""
    first = {name: by_seed[min(by_seed)] for name, by_seed in vectors.items()}
    rows = [["word vectors: training words (vocabulary)",
             *(f"{r['words']:,} ({r['vocabulary']:,})" for r in first.values())]]
    for name in next(iter(first.values()))["wordsim"]:
        cells = [(r["wordsim"][name]["known_pairs"], r["wordsim"][name]["total_pairs"]) for r in first.values()]
        rows.append([f"{name} pairs known ↑", *(f"{known:,}/{total:,} ({known / total:.0%})"
                                                for known, total in cells)])
    return rows

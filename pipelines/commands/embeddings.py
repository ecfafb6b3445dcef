"""The `refinery embeddings` command: word vectors from a run's kept documents, their nearest neighbours and
analogies, and their word-similarity scores. Standard library only at import (building the CLI parser stays
fast); the work is in word_vectors and wordsim, imported when a command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "train word vectors (Word2Vec skip-gram/CBOW with fastText) on a run and evaluate them"
DESCRIPTION = """Word vectors, as the seed papers built them before any language model: Word2Vec skip-gram or
CBOW, with fastText's character n-grams, trained on a run's kept documents (RUN/data). Then look at them (query:
nearest neighbours; analogy: A - B + C) and score them on word-similarity sets (eval: Spearman's rho against
human judgements). Text is lowercased, split on whitespace and stripped of punctuation at word ends, for training
and queries alike (refinery.pipelines.commands.word_vectors)."""

TRAIN_EXAMPLE = """example:
  refinery embeddings train out/web --model skipgram --dim 100 --epochs 5
  refinery embeddings query out/web/embeddings/skipgram.bin river
  refinery embeddings eval out/web/embeddings/skipgram.bin --sets ../shared/data/wordsim"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `embeddings` command's actions: train, query, analogy, eval."""
    actions = parser.add_subparsers(dest="embeddings_command", required=True, metavar="ACTION")
    train = actions.add_parser("train", help="train word vectors on a run's kept documents", epilog=TRAIN_EXAMPLE,
                               formatter_class=argparse.RawDescriptionHelpFormatter, description=(
        "Train fastText word vectors on RUN/data/*.parquet (the `text` column) and write MODEL.bin (fastText: "
        "query, analogy, eval, and vectors for unseen words from their n-grams), MODEL.vec (word2vec text format: "
        "a `WORDS DIM` header, then a word and its vector a line) and MODEL.json (the parameters and corpus size). "
        "fastText prints its progress on stderr."))
    train.add_argument("run_dir", metavar="RUN", help="the run folder (a recipe's `output:`)")
    train.add_argument("--model", choices=["skipgram", "cbow"], default="skipgram",
                       help="skipgram predicts the context from a word (better for rare words), cbow a word from "
                            "its context (faster); default %(default)s")
    train.add_argument("--dim", type=int, default=100, help="vector size (default %(default)s)")
    train.add_argument("--epochs", type=int, default=5, help="passes over the text (default %(default)s)")
    train.add_argument("--min-count", type=int, default=5,
                       help="keep words seen at least this often (default %(default)s)")
    train.add_argument("--threads", type=int, default=1,
                       help="training threads. Default 1: the same run, parameters and --seed give byte-identical "
                            "vectors (fastText fills its initial matrix in ten blocks, one per thread; below ten "
                            "threads the rest starts at zero, on Linux, and elsewhere ten threads train). More "
                            "threads train faster, but fastText's lock-free (Hogwild) updates make every training "
                            "differ a little")
    train.add_argument("--bucket", type=int, default=2_000_000,
                       help="character n-gram vectors (hashed); the .bin holds BUCKET x DIM floats, 800 MB at the "
                            "default (fastText's) and dim 100, whatever the corpus: a small corpus loses little with "
                            "200000")
    train.add_argument("--no-subwords", dest="subwords", action="store_false",
                       help="plain Word2Vec: no character n-grams (fastText's minn = maxn = 0), so each word is "
                            "its own vector; neighbours are then related words rather than look-alikes (king: "
                            "richard, elizabeth, not viking) on a small corpus, and unknown words have no vector")
    train.add_argument("--seed", type=int, default=0, help="fastText's random seed (default %(default)s)")
    train.add_argument("--out", metavar="DIR", type=Path, default=None,
                       help="the folder for MODEL.bin/.vec/.json, MODEL being --model (skipgram-nosubwords with "
                            "--no-subwords; default: RUN/embeddings, "
                            "which `refinery run --force` deletes with the data it was trained on)")
    train.add_argument("--quiet", "-q", action="store_true", help="no fastText progress")

    model_help = "a .bin from `refinery embeddings train`, or a folder holding one (RUN, RUN/embeddings)"
    oov_help = ("accept words outside the vocabulary: fastText builds their vectors from their character n-grams "
                "(default: refuse them, as their neighbours are guesses)")
    query = actions.add_parser("query", help="nearest neighbours of a word", description=(
        "The K words whose vectors are closest to WORD's (cosine similarity), WORD itself left out."))
    query.add_argument("model", metavar="MODEL", help=model_help)
    query.add_argument("word", metavar="WORD")
    query.add_argument("--k", "-k", type=int, default=10, help="how many neighbours (default %(default)s)")
    query.add_argument("--oov", action="store_true", help=oov_help)

    analogy = actions.add_parser("analogy", help="A - B + C: king man woman → queen", description=(
        "Word analogy by vector arithmetic: the K words closest to vector(A) - vector(B) + vector(C), the three "
        "words left out. Read it as 'B is to A as C is to ?': `analogy MODEL king man woman` asks man : king = "
        "woman : ? (queen); `analogy MODEL paris france italy` asks for the capital of Italy (rome)."))
    analogy.add_argument("model", metavar="MODEL", help=model_help)
    for name, role in (("a", "the word added first (king)"), ("b", "the word subtracted (man)"),
                       ("c", "the word added (woman)")):
        analogy.add_argument(name, metavar=name.upper(), help=role)
    analogy.add_argument("--k", "-k", type=int, default=10, help="how many answers (default %(default)s)")
    analogy.add_argument("--oov", action="store_true", help=oov_help)

    evaluate = actions.add_parser("eval", help="Spearman's rho on word-similarity sets", description=(
        "Score the vectors on every word-similarity set of a folder (`word1 word2 score` lines, e.g. WordSim-353, "
        "SimLex-999, MEN, MTurk-771, RG-65): Spearman's rho between cosine similarity and the human scores, over "
        "the pairs whose both words the model knows (with how many that is), and over all pairs, unknown words "
        "getting vectors from their character n-grams."))
    evaluate.add_argument("model", metavar="MODEL", help=model_help)
    evaluate.add_argument("--sets", metavar="DIR", default=None,
                          help="the folder of sets (default: $REFINERY_WORDSIM, else wordsim/ of the real-data folder "
                               "beside the checkout, shared/data/wordsim)")


def run(args: argparse.Namespace) -> int:
    """Run one action; a user's mistake (no run, no model, an unknown word) is `error: ...` and exit code 2."""
    from refinery.pipelines.commands.word_vectors import EmbeddingsError

    action = {"train": _train, "query": _query, "analogy": _analogy, "eval": _eval}[args.embeddings_command]
    try:
        print(action(args))
    except EmbeddingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _train(args: argparse.Namespace) -> str:
    from refinery.corpora.atomic import read_json
    from refinery.pipelines.commands.word_vectors import (
        kept_texts,
        model_files,
        progress_verbosity,
        train_embeddings,
    )
    from refinery.pipelines.engine.layout import RunLayout

    texts = kept_texts(args.run_dir)  # a missing run or an empty data/ is reported before anything is written
    name = args.model if args.subwords else f"{args.model}-nosubwords"
    prefix = (args.out if args.out is not None else RunLayout(args.run_dir).embeddings) / name
    model = train_embeddings(texts, prefix, model=args.model, dim=args.dim, epochs=args.epochs,
                             min_count=args.min_count, threads=args.threads, seed=args.seed,
                             bucket=args.bucket, subwords=args.subwords, verbose=progress_verbosity(args.quiet))
    facts = read_json(model_files(prefix)["json"])
    threads = f"{facts['threads']} thread{'s' if facts['threads'] > 1 else ''}"
    return "\n".join([
        f"trained {name} vectors (dim {facts['dim']}, {facts['epochs']} epochs, min count {facts['min_count']}, "
        f"{threads}, seed {facts['seed']}) on {facts['documents']:,} documents, {facts['words']:,} words: "
        f"{facts['vocabulary']:,} words in the vocabulary, {facts['seconds']['total']} s",
        f"model: {model}",
        f"vectors: {model.with_suffix('.vec')} (word2vec text format)",
        f"next: refinery embeddings query {model} WORD; refinery embeddings eval {model} --sets DIR",
    ])


def _query(args: argparse.Namespace) -> str:
    from refinery.pipelines.commands.word_vectors import known_word, load_model

    _check_k(args.k)
    model = load_model(args.model)
    word = known_word(model, args.word, args.oov)
    return _table(f"nearest neighbours of {word!r} (cosine similarity):", model.get_nearest_neighbors(word, args.k))


def _analogy(args: argparse.Namespace) -> str:
    from refinery.pipelines.commands.word_vectors import known_word, load_model

    _check_k(args.k)
    model = load_model(args.model)
    a, b, c = (known_word(model, word, args.oov) for word in (args.a, args.b, args.c))
    return _table(f"{a} - {b} + {c} ({b} : {a} = {c} : ?), closest words by cosine similarity:",
                  model.get_analogies(a, b, c, args.k))


def _check_k(k: int) -> None:
    from refinery.pipelines.commands.word_vectors import EmbeddingsError

    if k < 1:
        raise EmbeddingsError(f"--k must be at least 1, got {k}")


def _table(title: str, rows: list[tuple[float, str]]) -> str:
    return "\n".join([title, *(f"  {score:6.3f}  {word}" for score, word in rows)])


def _eval(args: argparse.Namespace) -> str:
    from refinery.pipelines.commands.word_vectors import find_model
    from refinery.pipelines.commands.wordsim import default_sets_dir, describe, evaluate_wordsim

    model = find_model(args.model)
    sets = args.sets if args.sets is not None else default_sets_dir()
    return f"model: {model}\nsets: {sets}\n" + describe(evaluate_wordsim(model, sets))

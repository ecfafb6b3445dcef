"""`refinery ablate A.yaml B.yaml …`: prove the data. Every recipe runs (or resumes) with the engine, one shared
tokenizer encodes every recipe's kept documents, and small proxy models train on exactly the same number of tokens
of each, with the same configuration and seeds, then are evaluated on the same held-out sets, none of which any
recipe read: WikiText-2 test (nats per token and bits per byte), a clean book, HellaSwag, ARC-Easy and PIQA, and
every recipe's validation split. The figures get 95 % t-intervals over seeds, and each pair of recipes a paired
t-test (FineWeb's and DCLM's method at small scale). Importing this module imports neither torch nor pyarrow.

    OUT/runs/NAME/       each recipe's run (the engine's; reruns resume)
    OUT/tokenizer.json   the shared tokenizer; OUT/tokens/NAME/ each run's train and validation shards
    OUT/models/NAME/seed-S/   a proxy model (its train.log: what training printed)
    OUT/results/NAME/seed-S.json   its figures, written when it is done: a rerun trains only what has none
    OUT/settings.json    what the results depend on; a rerun with other settings is refused
    OUT/embeddings/      word vectors per recipe and seed, on the same number of words of each (ablate_embeddings.py)
    OUT/ablation.json, ablation.md, ablation.png   every figure, the table and verdicts, the validation curves
    OUT/runs/NAME/ablation.json, report.html       the table and verdicts for each run's report
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

HELP = "compare recipes by training proxy models on their data (fixed tokens, several seeds)"
DESCRIPTION = (
    "Compare recipes by what their data does to a model, as FineWeb and DCLM ablate data: each recipe is run (or "
    "resumed), all kept documents are tokenized with one shared tokenizer, and one proxy GPT per recipe and seed "
    "trains on exactly --tokens tokens with the same configuration, then is evaluated on held-out sets that no "
    "recipe read (WikiText-2 test perplexity and bits per byte, a clean book, HellaSwag, ARC-Easy and PIQA acc_norm, "
    "each recipe's validation split). Word vectors (fastText skip-gram) trained on the same number of words of each "
    "recipe are a second signal: Spearman's rho on word-similarity sets. Prints a table of means with 95% t-intervals "
    "over seeds and a verdict per pair of recipes (paired t-test); writes OUT/ablation.json, ablation.md and "
    "ablation.png, and each run's report with the ablation in it. Rerun the same command "
    "to resume: only models without a result train. Example: refinery ablate ablation --tokens 2M --seeds 3")

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # the data beside a checkout, as web.yaml's
TASKS = ["hellaswag", "arc_easy", "piqa"]


def _token_count(text: str) -> int:
    match = re.fullmatch(r"\s*([\d_,.]+)\s*([kKmMbB]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"'{text}' is not a token count (e.g. 2000000, 500k, 2M, 1B)")
    value = float(match.group(1).replace("_", "").replace(",", "")) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9}[
        match.group(2).lower()]
    if value < 1:
        raise argparse.ArgumentTypeError(f"--tokens must be at least 1, got {text}")
    return int(value)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got '{text}'")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipes", nargs="+", metavar="RECIPE", help="two or more recipe files or bundled names; a "
                        "bundled folder name (ablation) stands for its recipes (ablation/raw, ablation/refined)")
    parser.add_argument("--input", "-i", action="append", default=[], metavar="PATH",
                        help="read this file, folder or glob (quote it) in every recipe instead of its inputs; "
                             "repeatable; relative to the current folder")
    parser.add_argument("--tokens", type=_token_count, required=True, metavar="N",
                        help="training tokens of every proxy model (2000000, 500k, 2M); a recipe with fewer is "
                             "repeated, with a warning giving the epochs")
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny",
                        help="proxy model: tiny (the demo's GPT, CPU) or small (training/configs/gpt.yaml, a GPU); "
                             "default %(default)s")
    parser.add_argument("--seeds", type=_positive, default=3, help="seeds 0..N-1 per recipe (default %(default)s)")
    parser.add_argument("--out", "-o", default="out/ablation", help="the ablation folder (default %(default)s)")
    parser.add_argument("--tokenizer", metavar="FILE", help="a tokenizer.json for every recipe (default: train one "
                        "on an equal share of each recipe's kept training documents)")
    parser.add_argument("--vocab-size", type=_positive, help="of the trained tokenizer (default: 2048 tiny, 8192 "
                        "small)")
    parser.add_argument("--validation-fraction", type=float, default=0.05,
                        help="share of documents held out (by id hash, the same in every recipe); default "
                             "%(default)s")
    parser.add_argument("--mc-items", type=_positive, default=500,
                        help="first N items of each multiple choice task (default %(default)s)")
    parser.add_argument("--eval-tokens", type=_positive, help="at most N tokens of each perplexity set "
                        "(default: all)")
    parser.add_argument("--wikitext", type=Path, default=SHARED_DATA / "text/wikitext-2-test.txt",
                        help="WikiText-2 test file (default: %(default)s)")
    parser.add_argument("--clean-text", type=Path, default=SHARED_DATA / "text/gutenberg-1661-sherlock.txt",
                        help="held-out clean prose; a Project Gutenberg book loses its licence text (default: "
                             "%(default)s)")
    parser.add_argument("--evals-dir", type=Path, default=SHARED_DATA / "evals",
                        help="llm-foundry local_data folder with hellaswag_val_full.txt.bz2 (default: %(default)s)")
    parser.add_argument("--no-embeddings", dest="embeddings", action="store_false",
                        help="no word vectors (by default each recipe and seed also trains fastText skip-gram vectors "
                             "on an equal number of its words, scored on the word-similarity sets)")
    parser.add_argument("--embedding-dim", type=_positive, default=50, help="word vector size (default %(default)s)")
    parser.add_argument("--embedding-epochs", type=_positive, help="default: enough for about 6M words of training, "
                        "5 to 25 (25 for the bundled pair's 243k words each)")
    parser.add_argument("--embedding-min-count", type=_positive, default=5,
                        help="rarer words get no vector: a pair with one is not a known pair (default %(default)s)")
    parser.add_argument("--embedding-words", type=_token_count, default=2_000_000, metavar="N",
                        help="words each recipe's vectors train on, at most: the smallest recipe's training split, "
                             "capped at N (default 2M)")
    parser.add_argument("--wordsim", type=Path, default=SHARED_DATA / "wordsim",
                        help="folder of word-similarity sets, `word1 word2 score` .txt files (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, …")
    parser.add_argument("--threads", type=_positive, default=1,
                        help="torch threads per model (default %(default)s: fastest for tiny models, reproducible)")
    parser.add_argument("--workers", "-w", type=_positive, help="worker processes of the recipe runs "
                        "(default: all cores)")
    parser.add_argument("--force", action="store_true", help="start the ablation over: delete its tokens, models "
                        "and results (the recipes' runs are kept; they resume)")
    parser.add_argument("--no-report", action="store_true", help="write no run reports (by default each recipe's "
                        "run gets its report.html, which shows the ablation)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _recipes(arguments: list[str], inputs: list[str], runs: Path) -> dict[str, Any]:
    """name → LoadedRecipe writing to runs/NAME, from files, bundled names and bundled folders (reading `inputs`
    instead of their own, when given)."""
    from refinery.pipelines.commands.ablate_data import AblationError
    from refinery.pipelines.commands.bundled import bundled_group, resolve_recipe
    from refinery.pipelines.engine.recipe import with_overrides

    expanded: list[str] = []
    for argument in arguments:
        group = [] if Path(argument).exists() else bundled_group(argument)
        expanded += [bundled.name for bundled in group] or [argument]
    recipes: dict[str, Any] = {}
    for argument in expanded:
        loaded, _ = resolve_recipe(argument, inputs, None)
        name = loaded.recipe.name
        if not re.fullmatch(r"[\w.+-]+", name):
            raise AblationError(f"recipe {argument}: its name '{name}' names folders of the ablation; use letters, "
                                "digits, '.', '_' or '-'")
        if name in recipes:
            raise AblationError(f"two recipes are named '{name}' ({recipes[name].source_file}, {loaded.source_file})"
                                ": give each its own `name:`")
        recipes[name] = with_overrides(loaded, output=str(runs / name))
    if len(recipes) < 2:
        raise AblationError(f"an ablation compares recipes: give two or more (got {', '.join(expanded)})")
    return recipes


def _check_settings(out: Path, settings: dict[str, Any], force: bool) -> None:
    """Results of other settings must never be mixed in: refuse them, or with --force delete them."""
    from refinery.corpora.atomic import read_json, remove_path, write_json
    from refinery.pipelines.commands.ablate_data import AblationError, setting_changes

    path = out / "settings.json"
    if force:
        for entry in ("tokens", "models", "results", "evals", "embeddings", "tokenizer.json", "tokenizer-sample.json",
                      "settings.json", "ablation.json", "ablation.md", "ablation.png"):
            remove_path(out / entry, ignore_errors=False)
    elif path.exists():
        old = read_json(path)
        if old != settings:
            raise AblationError(f"{out} holds an ablation made with other settings, whose results must not be mixed "
                                f"with these: {'; '.join(setting_changes(old, settings))}. Rerun with its settings, "
                                "add --force to start it over (the recipes' runs are kept), or give another --out")
    write_json(path, settings)


def _tokenizer(args: argparse.Namespace, out: Path, runs: dict[str, Path], vocab_size: int):
    """The shared tokenizer (OUT/tokenizer.json): the given file, or trained once on equal shares of the runs."""
    from refinery.corpora.atomic import atomic_path, write_json
    from refinery.pipelines.commands.ablate_data import train_shared_tokenizer
    from refinery.tokenization.tokenizer import load_tokenizer

    path = out / "tokenizer.json"
    if not path.exists():
        if args.tokenizer:
            tokenizer, used = load_tokenizer(args.tokenizer), {}
        else:
            print(f"training the shared tokenizer ({vocab_size:,} tokens) on an equal share of each recipe's text")
            tokenizer, used = train_shared_tokenizer(runs, vocab_size, args.validation_fraction)
        write_json(out / "tokenizer-sample.json", used)
        with atomic_path(path) as tmp:
            tokenizer.save(str(tmp))
    return load_tokenizer(path)


def _split_facts(tokens_dir: Path) -> dict[str, int]:
    from refinery.corpora.atomic import read_json
    from refinery.tokenization.shards import TokenLayout

    metas = {split: read_json(TokenLayout.meta(TokenLayout(tokens_dir).split(split))) for split in
             ("train", "validation")}
    return {"kept_documents": sum(m["documents"] for m in metas.values()), "train_tokens": metas["train"]["tokens"],
            "validation_tokens": metas["validation"]["tokens"]}


def run(args: argparse.Namespace) -> int:
    from refinery.pipelines.commands.ablate_data import AblationError
    from refinery.tokenization.reader import ShardError
    from refinery.tokenization.tokenizer import TokenizerError
    from refinery.training.config import ConfigError

    try:
        return _ablate(args)
    except (AblationError, ConfigError, ShardError, TokenizerError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run_recipes(recipes: dict[str, Any], args: argparse.Namespace) -> dict[str, Path]:
    """Run or resume every recipe with the engine; name → run folder."""
    from refinery.pipelines.commands.ablate_data import AblationError
    from refinery.pipelines.engine.run import RunError, describe_summary, run_recipe

    runs = {}
    for name, loaded in recipes.items():
        print(f"recipe {name} ({loaded.source_file}) → {loaded.output_dir}")
        try:
            summary = run_recipe(loaded, workers=args.workers, progress=not args.quiet)
        except RunError as err:  # its advice (--force) is `refinery run`'s: say what ablate needs instead
            raise AblationError(f"recipe {name}: {err}. For this ablation: delete {loaded.output_dir} to run the "
                                "recipe afresh, or give another --out") from None
        print("  " + describe_summary(summary).splitlines()[0])
        runs[name] = summary.run_dir
    return runs


def _settings(args: argparse.Namespace, runs: dict[str, Path], train: dict[str, Any], vocab_size: int) -> dict:
    """Everything the figures depend on (as JSON reads it back), to refuse mixing results of other settings."""
    from refinery.corpora.atomic import read_json

    given = {"file": str(args.tokenizer), "sha256": _sha256(Path(args.tokenizer))} if args.tokenizer else None
    settings = {
        "recipes": {name: read_json(run_dir / "manifest.json")["fingerprint"] for name, run_dir in runs.items()},
        "tokens": args.tokens, "size": args.size, "device": args.device, "threads": args.threads,
        "tokenizer": given or {"train": "equal shares", "vocab_size": vocab_size},
        "validation_fraction": args.validation_fraction, "train": train,
        "evaluation": {"wikitext2_sha256": _sha256(args.wikitext), "clean_text_sha256": _sha256(args.clean_text),
                       "clean_text": args.clean_text.stem, "evals_dir": str(args.evals_dir.resolve()),
                       "tasks": TASKS, "mc_items": args.mc_items, "eval_tokens": args.eval_tokens},
    }
    return json.loads(json.dumps(settings))


def _token_folders(runs: dict[str, Path], folders: list[Path], tokenizer, args: argparse.Namespace,
                   tokens_trained: int, seq_len: int) -> dict[str, dict[str, Any]]:
    """Tokenize each run (once), and its facts: documents, tokens, epochs at the budget (warned above 1)."""
    from refinery.pipelines.commands.ablate_data import AblationError, tokenize_run, tokens_ready

    facts = {}
    for (name, run_dir), folder in zip(runs.items(), folders):
        if not tokens_ready(folder):
            print(f"tokenizing {name}'s kept documents into {folder}")
            tokenize_run(run_dir, folder, tokenizer, args.validation_fraction)
        fact = facts[name] = {"run": str(run_dir), **_split_facts(folder)}
        fact["epochs"] = tokens_trained / max(1, fact["train_tokens"])
        if fact["validation_tokens"] <= seq_len + 1:
            raise AblationError(f"{name}'s validation split holds {fact['validation_tokens']:,} tokens, fewer than "
                                f"one window of {seq_len + 1}: raise --validation-fraction (and --force)")
        if fact["epochs"] > 1:
            print(f"warning: {name} has {fact['train_tokens']:,} training tokens, fewer than the {tokens_trained:,} "
                  f"each model trains on: its data is repeated, {fact['epochs']:.2f} epochs")
    return facts


def _train_grid(args: argparse.Namespace, out: Path, folders: list[Path], held_out, seeds: list[int]) -> dict:
    """Train and evaluate every (recipe, seed) without a result, seed by seed (an interrupted run has whole
    pairs); each result is written atomically as it finishes. Returns recipe → seed → result."""
    from tqdm import tqdm

    from refinery.corpora.atomic import read_json, remove_path, write_json
    from refinery.training.proxy import proxy_config, train_and_evaluate

    names = [folder.name for folder in folders]
    grid = [(name, seed) for seed in seeds for name in names]
    result_path = {(n, s): out / "results" / n / f"seed-{s}.json" for n, s in grid}
    todo = [cell for cell in grid if not result_path[cell].exists()]
    print(f"{len(grid)} models ({len(names)} recipes × {len(seeds)} seeds, {args.size} GPT): "
          f"{len(grid) - len(todo)} done, {len(todo)} to train")
    bar = tqdm(total=len(grid), initial=len(grid) - len(todo), unit="model", desc="ablation", disable=args.quiet)
    for name, seed in todo:
        bar.set_postfix_str(f"{name} seed {seed}")
        model_dir = out / "models" / name / f"seed-{seed}"
        remove_path(model_dir)  # what a killed training left: it starts over
        model_dir.mkdir(parents=True)
        config = proxy_config(args.size, folders, names.index(name), model_dir, args.tokens, seed, args.device)
        with open(model_dir / "train.log", "w", encoding="utf-8") as log, redirect_stdout(log):
            result = train_and_evaluate(config, held_out, {str(f): n for f, n in zip(folders, names)}, args.threads)
        write_json(result_path[(name, seed)], {"recipe": name, "seed": seed, **result})
        bar.update()
    bar.close()
    print(f"trained {len(todo)} of {len(grid)} models ({len(grid) - len(todo)} were done)")
    return {name: {seed: read_json(result_path[(name, seed)]) for seed in seeds} for name in names}


def _ablate(args: argparse.Namespace) -> int:
    from refinery.pipelines.commands.ablate_data import AblationError, clean_text_slice
    from refinery.training.proxy import VOCAB_SIZES, HeldOut, proxy_config, tokens_per_step

    out = Path(args.out).absolute()
    for flag, path in (("--wikitext", args.wikitext), ("--clean-text", args.clean_text),
                       ("--evals-dir", args.evals_dir), *((("--wordsim", args.wordsim),) if args.embeddings else ())):
        if not path.exists():
            raise AblationError(f"{flag} {path} does not exist; give the file (or folder) with {flag}")
    if not 0 < args.validation_fraction < 1:
        raise AblationError(f"--validation-fraction must be between 0 and 1, got {args.validation_fraction}")
    recipes = _recipes(args.recipes, args.input, out / "runs")
    runs = _run_recipes(recipes, args)
    names = list(runs)
    folders = [out / "tokens" / name for name in names]
    config = proxy_config(args.size, folders, 0, out / "models", args.tokens, 0, args.device)  # what all share
    vocab_size = args.vocab_size or VOCAB_SIZES[args.size]
    train = config.model_dump(exclude={"data", "data_weights", "out", "seed"})
    settings = _settings(args, runs, train, vocab_size)
    _check_settings(out, settings, args.force)
    tokenizer = _tokenizer(args, out, runs, vocab_size)
    tokens_trained = config.max_steps * tokens_per_step(config)
    if tokens_trained != args.tokens:
        print(f"note: {config.max_steps:,} whole steps of {tokens_per_step(config):,} tokens train on "
              f"{tokens_trained:,} tokens (--tokens {args.tokens:,})")
    facts = _token_folders(runs, folders, tokenizer, args, tokens_trained, config.seq_len)
    clean = clean_text_slice(args.clean_text, out / "evals" / f"{args.clean_text.stem}.txt")
    held_out = HeldOut(texts={"wikitext2": args.wikitext, args.clean_text.stem: clean},
                       shards=dict(zip(names, folders)), tasks=TASKS, evals_dir=args.evals_dir,
                       mc_items=args.mc_items, max_tokens=args.eval_tokens)
    seeds = list(range(args.seeds))
    results = _train_grid(args, out, folders, held_out, seeds)
    for name in names:
        facts[name].update(recipe_file=recipes[name].source_file,
                           results={str(seed): results[name][seed] for seed in seeds})
    payload = {"settings": settings, "seeds": seeds, "tokens_trained": tokens_trained, "recipes": facts,
               "tokenizer": _tokenizer_facts(out, tokenizer)}
    _report(args, out, runs, payload, results)
    return 0


def _tokenizer_facts(out: Path, tokenizer) -> dict[str, Any]:
    from refinery.corpora.atomic import read_json
    from refinery.tokenization.tokenizer import fingerprint

    return {"path": str(out / "tokenizer.json"), "sha256": fingerprint(tokenizer),
            "vocab_size": tokenizer.get_vocab_size(), "sample_chars": read_json(out / "tokenizer-sample.json")}


def _report(args: argparse.Namespace, out: Path, runs: dict[str, Path], payload: dict[str, Any], results: dict) -> None:
    """The word vectors (unless --no-embeddings), then the ablation's report, each run's summary and run report."""
    from refinery.pipelines.commands import ablate_embeddings
    from refinery.pipelines.commands.ablate_report import metrics, write_report

    seeds, columns, extra = payload["seeds"], metrics(list(runs), args.clean_text.stem), []
    if args.embeddings:
        wanted = ablate_embeddings.settings(args.embedding_dim, args.embedding_epochs, args.embedding_min_count,
                                            args.embedding_words, args.threads, args.wordsim)
        vectors = ablate_embeddings.train_grid(out / "embeddings", runs, seeds, wanted, args.wordsim,
                                               args.validation_fraction, args.quiet)
        results, scores = ablate_embeddings.combine(results, vectors)
        columns, extra = columns + scores, ablate_embeddings.fact_rows(vectors)
        first = vectors[next(iter(runs))][seeds[0]]
        payload["embeddings"] = {**wanted, "epochs": first["epochs"], "words": first["words"],
                                 "scored_sets": ablate_embeddings.scored_sets(vectors)}
        for name, fact in payload["recipes"].items():
            fact["embeddings"] = {str(seed): vectors[name][seed] for seed in seeds}
    command = shlex.join(["refinery", "ablate", *args.recipes, *(f"--input={path}" for path in args.input),
                          "--tokens", str(args.tokens), "--size", args.size, "--seeds", str(args.seeds), "--out",
                          str(args.out), *([] if args.embeddings else ["--no-embeddings"])])
    print(write_report(out, payload, results, seeds, columns, command, extra, runs))
    print(f"wrote {out / 'ablation.json'}, {out / 'ablation.md'} and {out / 'ablation.png'}")
    if not args.no_report:
        from refinery.pipelines.commands.report import write_report as write_run_report

        for name, run_dir in runs.items():
            print(f"run report of {name}, with the ablation: {write_run_report(run_dir)}")

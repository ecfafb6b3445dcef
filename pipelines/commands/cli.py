"""The `refinery` command. It never imports torch: `run` and `sql` start fast on any machine."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from refinery.pipelines import __version__

EPILOG = """examples:
  refinery demo                                   run the bundled recipe on bundled real samples
  refinery fetch https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-22/wet.paths.gz --dest crawl
  refinery plan recipe.yaml                       what a run will do: inputs, passes, barriers, outputs
  refinery run recipe.yaml --limit 100 -o out/look   a quick look: the first 100 records of each input file
  refinery run recipe.yaml --workers 4            run (or resume) a recipe; writes RUN/report.html and RUN/README.md
  refinery recipes                                the bundled recipes (web, instructions) and where their files are
  refinery run web --input 'crawl/*.warc.gz' --output out/web   a bundled recipe on your files (--dry-run: plan only)
  refinery report out/web-en                      (re)write a run's HTML report and dataset card
  refinery sql out/web-en "SELECT stage, reason, count(*) FROM removed GROUP BY ALL"
  refinery sql out/web-en                         a prompt over the run's views (statements end with ;)
  refinery train --data out/web-en/tokens --out out/gpt-tiny   train the tiny GPT on a run's shards
  refinery classifier train --positive wiki.xml.bz2 --negative 'crawl/*.wet.gz' -o quality.bin   a quality classifier
  refinery ablate ablation --tokens 1M --seeds 3  does refining pay? proxy models on equal tokens of raw vs refined
  refinery embeddings train out/web-en            word vectors of a run's documents (then: query, analogy, eval)
  refinery run recipe.yaml --output s3://bucket/runs/web --executor ray   on a Ray cluster, published to S3
  refinery schema > recipe.schema.json            the JSON schema of recipes (for editors)
"""


def _cmd_run(args: argparse.Namespace) -> int:
    from refinery.pipelines.commands.bundled import dry_run, resolve_recipe
    from refinery.pipelines.engine.executors import create_executor
    from refinery.pipelines.engine.run import describe_summary, run_recipe

    if args.verbose:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")
    loaded, note = resolve_recipe(args.recipe, args.input, args.output, args.limit)
    if args.dry_run:
        text, ok = dry_run(loaded)
        print(text)
        return 0 if ok else 2
    if note:
        print(note)
    options = {"workers": args.workers}
    if args.address is not None:
        if args.executor != "ray":
            print(f"error: --address applies to --executor ray (this run uses --executor {args.executor})",
                  file=sys.stderr)
            return 2
        options["address"] = args.address
    try:
        executor = create_executor(args.executor, **options)
    except (ImportError, ConnectionError) as err:  # Ray not installed, or no cluster at the address
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        summary = run_recipe(loaded, force=args.force, progress=not args.quiet, executor=executor)
    finally:
        executor.close()
    print(describe_summary(summary))
    from refinery.pipelines.commands.report import write_outputs

    print(write_outputs(summary.run_dir, report=not args.no_report))
    if summary.published_to:  # the report and card, written in staging, join the published run
        from refinery.pipelines.engine.layout import RunLayout
        from refinery.pipelines.engine.publish import publish_run

        publish_run(RunLayout(summary.run_dir), summary.published_to, progress=not args.quiet)
    print(f'inspect: refinery sql {summary.published_to or summary.run_dir} "SELECT * FROM stats"')
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from refinery.pipelines.commands.bundled import describe_bundled

    print(describe_bundled())
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from refinery.pipelines.commands.report import write_outputs

    print(write_outputs(args.run_dir, output=args.output, trainings=args.training))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from refinery.pipelines.commands import plan_view
    from refinery.pipelines.engine.recipe import load_recipe

    plan = plan_view.plan_recipe(load_recipe(args.recipe))
    print(plan_view.to_mermaid(plan) if args.format == "mermaid" else plan_view.to_text(plan), end="")
    if args.format == "text":
        print()
    return 0


def _cmd_sql(args: argparse.Namespace) -> int:
    from refinery.pipelines.commands import sql

    if args.query:
        sql.render(sql.query(args.run_dir, args.query), args.format, sys.stdout, args.output)
        return 0
    if args.output:
        raise sql.SqlError("--output saves the result of one query: give it as an argument, "
                           'refinery sql RUN "SELECT ..." --format csv --output FILE')
    from refinery.pipelines.commands.sql_prompt import run_prompt

    return run_prompt(args.run_dir, args.format)


def _cmd_schema(args: argparse.Namespace) -> int:
    from refinery.pipelines.engine.recipe import recipe_json_schema

    print(json.dumps(recipe_json_schema(), indent=2))
    return 0


def _cmd_tokens(args: argparse.Namespace) -> int:
    from refinery.tokenization.inspect import describe

    print(describe(args.path))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from refinery.training.cli import run_train

    return run_train(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from refinery.pipelines.commands.demo import run_demo

    return run_demo(Path(args.output), workers=args.workers, force=args.force, train_steps=args.train_steps)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refinery",
        description="Turn raw dumps into LLM-ready datasets, and inspect every artifact with SQL.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"refinery {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run or resume a recipe", description=(
        "Run a recipe. A rerun of the same recipe resumes where an interrupted run stopped and skips "
        "finished work; the output is the same whatever the number of workers."))
    run.add_argument("recipe", help="the recipe YAML file, or the name of a bundled recipe (`refinery recipes`)")
    run.add_argument("--input", "-i", action="append", default=[], metavar="PATH",
                     help="read this file, folder or glob (quote it) instead of the recipe's inputs; repeatable; the "
                          "format comes from the name, as in recipes; relative to the current folder")
    run.add_argument("--output", "-o", metavar="DIR", default=None,
                     help="the run folder instead of the recipe's `output:`, relative to the current folder (default "
                          "for a bundled recipe run by name: ./out/NAME)")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan and the files each input would read; write nothing")
    run.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                     help="a quick look before a long run: read only the first N records of each input file (every "
                          "file that --input or the recipe names, in its own order; a record is a document or an "
                          "unreadable record, not one skipped by design such as a WARC request). The run folder "
                          "remembers N: the same folder without --limit (or with another N) is refused, so use "
                          "--force or another --output for the full run (default: every record)")
    run.add_argument("--workers", "-w", type=_positive_int, default=None,
                     help="worker processes (default: all cores); with --executor ray, tasks in flight (default: "
                          "the cluster's CPUs)")
    from refinery.pipelines.engine.executors import DEFAULT_EXECUTOR, EXECUTORS  # stdlib only at import

    run.add_argument("--executor", choices=sorted(EXECUTORS), default=DEFAULT_EXECUTOR,
                     help="what runs the tasks (default: %(default)s, processes on this machine; ray: Ray tasks on "
                          "a Ray cluster, see docs/cluster.md)")
    run.add_argument("--address", metavar="ADDRESS", default=None,
                     help="with --executor ray, the Ray cluster to run on: auto (the one `ray start --head` started "
                          "on this machine), HOST:PORT (its head), ray://HOST:10001 (Ray Client), or local (a new "
                          "Ray instance on this machine for this run); default: $RAY_ADDRESS, else the cluster "
                          "`ray start` started on this machine, else local. Every node must see the run folder, the "
                          "inputs and the stages' files at the same paths (shared storage)")
    run.add_argument("--force", action="store_true", help="delete the run folder and start over")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    run.add_argument("--verbose", "-v", action="store_true", help="also the stages' details (e.g. minhash_dedup's "
                     "bands and the probability curve they give)")
    run.add_argument("--no-report", action="store_true",
                     help="skip the HTML report (RUN/report.html) after the run; the dataset card (RUN/README.md) is "
                          "still written. `refinery report RUN` writes both later")
    run.set_defaults(fn=_cmd_run)

    recipes = commands.add_parser("recipes", help="list the bundled recipes (refinery run NAME)", description=(
        "List the recipes that come with Refinery, one line each, and where each file is: run one by name "
        "(refinery run web --input 'crawl/*.warc.gz' --output out/web), or copy its file to change its stages."))
    recipes.set_defaults(fn=_cmd_recipes)

    plan = commands.add_parser("plan", help="show what a recipe will do, without running it", description=(
        "Show what the engine will do with a recipe: its inputs (reader format, files, read tasks), the passes "
        "(map stages fused into one streaming pass), the barrier of every global stage (collect → finish → apply; "
        "producers such as the tokenizer collect → finish) and the outputs (data/, removed/, quarantine/, tokens/). "
        "--format mermaid prints a Mermaid flowchart, which GitHub draws inside a ```mermaid block."))
    plan.add_argument("recipe", help="the recipe YAML file")
    plan.add_argument("--format", "-f", choices=["text", "mermaid"], default="text", help="default: %(default)s")
    plan.set_defaults(fn=_cmd_plan)

    report = commands.add_parser("report", help="write a run's HTML report and dataset card", description=(
        "Write a run's report: one HTML file that opens offline in any browser and prints. It shows the funnel "
        "(documents and bytes into and out of every stage), removed and quarantined documents by reason with "
        "examples, the distribution of every signal column against the stage's thresholds (kept vs removed), "
        "languages, duplicate clusters, tokens per split and source, the loss curves of models trained on the run's "
        "shards, the plan of passes and the recipe. Also (re)writes the dataset card RUN/README.md (Hugging Face "
        "conventions; `datasets.load_dataset(RUN)` loads the kept documents), unless that README.md is your own."))
    report.add_argument("run_dir", help="the run folder (a recipe's `output:`)")
    report.add_argument("--output", "-o", metavar="FILE.html", help="where to write the page (default: "
                        "RUN/report.html)")
    report.add_argument("--training", "-t", action="append", default=[], metavar="DIR",
                        help="a training folder (`refinery train --out`) whose loss curves to show; repeatable. "
                             "Default: the folders inside or beside RUN whose log.jsonl trained on RUN's tokens")
    report.set_defaults(fn=_cmd_report)

    sql = commands.add_parser("sql", help="query a run folder with DuckDB (read-only)", description=(
        "Query a run with SQL. Views: docs (kept), removed (with stage and reason), quarantine "
        "(unreadable input records), stats (one row per stage), tokens (when the run tokenized). With no query, in "
        "a terminal: a prompt (line editing, history in ~/.refinery_sql_history or $XDG_STATE_HOME/refinery/; "
        "statements end with ; and may span lines; .tables, .schema VIEW, .help; Ctrl-D leaves). With no query "
        "and statements piped in (refinery sql RUN < queries.sql): each runs in turn. With neither: the views and "
        "their columns. Read-only everywhere."))
    sql.add_argument("run_dir", help="the run folder (a recipe's `output:`)")
    sql.add_argument("query", nargs="?", help="a SELECT statement (leave it out for the prompt)")
    sql.add_argument("--format", "-f", choices=["table", "csv", "json", "parquet"], default="table")
    sql.add_argument("--output", "-o", help="write the result to this file (required for parquet)")
    sql.set_defaults(fn=_cmd_sql)

    from refinery.pipelines.commands.fetch import add_fetch_arguments, run_fetch  # stdlib + tqdm only

    fetch = commands.add_parser("fetch", help="download raw dumps (URLs, Common Crawl paths lists, Wikipedia)",
                                description=(
        "Download raw dumps into a folder: http(s) and file:// URLs, local paths and Common Crawl *.paths.gz "
        "lists. Each file is checked (size, and checksum with --checksums) before it takes its final name; "
        "rerun the same command to resume partial downloads and skip complete files."))
    add_fetch_arguments(fetch)
    fetch.set_defaults(fn=run_fetch)

    schema = commands.add_parser("schema", help="print the JSON schema of recipes", description=(
        "Print the JSON schema of recipes, with every registered reader's options and every stage's parameters, "
        "for editors: `refinery schema > recipe.schema.json`, then point your YAML editor at it (VS Code's YAML "
        "extension: a `# yaml-language-server: $schema=recipe.schema.json` first line)."))
    schema.set_defaults(fn=_cmd_schema)

    tokens = commands.add_parser("tokens", help="inspect token shards", description=(
        "Inspect token shards: counts, shards, dtype, tokenizer, tokens per source and a decoded sample. "
        "The shards are verified on the way (a truncated or mismatched shard is reported)."))
    tokens_commands = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    inspect = tokens_commands.add_parser("inspect", help="describe RUN/tokens or one split folder")
    inspect.add_argument("path", help="RUN/tokens, or a split folder such as RUN/tokens/train")
    inspect.set_defaults(fn=_cmd_tokens)

    from refinery.training.cli import DESCRIPTION as TRAIN_DESCRIPTION  # neither torch nor yaml at import time
    from refinery.training.cli import add_train_arguments

    train = commands.add_parser("train", help="train a GPT or LSTM on token shards", description=TRAIN_DESCRIPTION)
    add_train_arguments(train)
    train.set_defaults(fn=_cmd_train)

    from refinery.training.eval_cli import COMMANDS as MODEL_COMMANDS  # eval, generate, export; no torch at import

    model_help = {"eval": "perplexity, multiple-choice accuracy, BLEU/ROUGE-L of a checkpoint",
                  "generate": "sample text from a checkpoint (chat template for instruction-tuned models)",
                  "export": "export a GPT checkpoint to Hugging Face Llama format"}
    for name, (add_arguments, run, description) in MODEL_COMMANDS.items():
        command = commands.add_parser(name, help=model_help[name], description=description)
        add_arguments(command)
        command.set_defaults(fn=run)

    from refinery.pipelines.commands.classifier import DESCRIPTION as CLASSIFIER_DESCRIPTION  # stdlib only
    from refinery.pipelines.commands.classifier import add_arguments as add_classifier_arguments

    classifier = commands.add_parser("classifier", help="train a fastText quality classifier",
                                     description=CLASSIFIER_DESCRIPTION)
    add_classifier_arguments(classifier)

    from refinery.pipelines.commands import embeddings as embeddings_command  # stdlib only; fastText when run

    embeddings = commands.add_parser("embeddings", help=embeddings_command.HELP,
                                     description=embeddings_command.DESCRIPTION)
    embeddings_command.add_arguments(embeddings)
    embeddings.set_defaults(fn=embeddings_command.run)

    from refinery.pipelines.commands import ablate as ablate_command  # stdlib only; the engine and torch when run

    ablate = commands.add_parser("ablate", help=ablate_command.HELP, description=ablate_command.DESCRIPTION)
    ablate_command.add_arguments(ablate)
    ablate.set_defaults(fn=ablate_command.run)

    demo = commands.add_parser("demo", help="run the bundled recipe on bundled real samples", description=(
        "Run the whole path on real samples bundled with Refinery (Common Crawl WARC pages, C4 and CCNet text, an "
        "instruction set): refine them with the web recipe, write token shards, pretrain a tiny GPT on them, "
        "instruction-tune it on SFT shards, evaluate both, and write each run's report and dataset card. About a "
        "minute and a half at most on 2 CPU cores, busy or not; --train-steps 0 skips training (10 s)."))
    demo.add_argument("--output", "-o", default="refinery-demo", help="where to put the run (default: %(default)s)")
    demo.add_argument("--workers", "-w", type=_positive_int, default=None, help="worker processes (default: all cores)")
    demo.add_argument("--force", action="store_true", help="start the demo run over")
    demo.add_argument("--train-steps", type=int, default=None,
                      help="steps of each training stage of the tiny GPT, pretraining and instruction tuning (0: no "
                           "training; default: 300 each)")
    demo.set_defaults(fn=_cmd_demo)
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors whose message is written for the user. Imported only once one happened (the module that raised
    it is loaded by then), so that starting a command never pays for modules it does not use."""
    from refinery.corpora.fetch import FetchError
    from refinery.corpora.readers import InputError
    from refinery.pipelines.commands.run_facts import ReportError
    from refinery.pipelines.commands.sql import SqlError
    from refinery.pipelines.engine.executors import TaskFailed
    from refinery.pipelines.engine.recipe import RecipeError
    from refinery.pipelines.engine.run import RunError
    from refinery.tokenization.reader import ShardError
    from refinery.tokenization.tokenizer import TokenizerError

    return (RecipeError, InputError, RunError, TaskFailed, SqlError, ShardError, TokenizerError, FetchError,
            ReportError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

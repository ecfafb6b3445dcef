"""The `refinery classifier` command's arguments (standard library only: building the CLI parser stays fast);
the work is in pipelines.classifier, imported when the command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """Train a fastText quality classifier (DCLM style): positives against negatives, each read like a
recipe input (any format; conversations give their assistant answers). The classes are balanced (the larger is
cut to the smaller, both to --max-docs), a held-out split is chosen by hash, and the report (precision, recall,
F1 at 0.5, ROC AUC on the held-out split) is printed and written beside the model as JSON.
Score documents with the recipe stage `quality_classifier: {model: MODEL.bin}`."""

EXAMPLE = """example:
  refinery classifier train \\
    --positive 'data/wikipedia/*.bz2' --positive-format wikipedia \\
    --positive data/instructions/alpaca_en_demo.json \\
    --negative 'data/text/cc_en_head-*.jsonl.gz' --negative 'data/warc/*.wet.gz' --output quality.bin
(quote globs: Refinery expands them, in sorted order, as a recipe's inputs; a shell would pass several paths)"""


class _InputAction(argparse.Action):
    """--positive/--negative PATH adds an input, as a recipe's `inputs:` item ({path, format, reader options});
    --positive-format/-option apply to the last one named. The reader registry checks them when the command runs
    (importing it here would slow every CLI start)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any,
                 option: str | None = None) -> None:
        side, _, what = self.dest.partition("_")
        inputs: list[dict[str, str]] = getattr(namespace, side) or []
        setattr(namespace, side, inputs)
        if not what:
            inputs.append({"path": value})
            return
        if not inputs:
            parser.error(f"{option} comes after the --{side} PATH it applies to")
        if what == "format":
            inputs[-1]["format"] = value
            return
        name, equals, setting = value.partition("=")
        if not equals or not name:
            parser.error(f"{option} takes KEY=VALUE (e.g. unit=line for text files), got {value!r}")
        if name in ("path", "format"):
            parser.error(f"{option} sets reader options; give the {name} with --{side}"
                         f"{'-format' if name == 'format' else ''}")
        inputs[-1][name] = setting


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `classifier` command and its `train` action."""
    actions = parser.add_subparsers(dest="classifier_command", required=True, metavar="ACTION")
    command = actions.add_parser("train", help="train a fastText quality classifier", description=DESCRIPTION,
                                 epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    for side, example in (("positive", "Wikipedia, instruction answers"), ("negative", "raw crawl text")):
        command.add_argument(f"--{side}", metavar="PATH", action=_InputAction, required=True,
                             help=f"{side} documents ({example}): a file, folder or glob; repeat for more inputs")
        command.add_argument(f"--{side}-format", dest=f"{side}_format", metavar="FORMAT", action=_InputAction,
                             help=f"the reader of the last --{side} (default: from its name), e.g. wikipedia")
        command.add_argument(f"--{side}-option", dest=f"{side}_option", metavar="KEY=VALUE", action=_InputAction,
                             help=f"a reader option of the last --{side}: unit=line|paragraph for text, "
                                  "text_field=..., id_field=... for JSONL/Parquet, split=... for datasets")
    command.add_argument("--output", "-o", required=True, type=Path, help="the model file to write (.bin); the "
                         "report goes beside it with a .json suffix")
    command.add_argument("--max-docs", type=int, default=100_000, help="at most this many documents per class "
                         "(default %(default)s)")
    command.add_argument("--heldout", type=float, default=0.2, help="fraction held out for evaluation "
                         "(default %(default)s)")
    command.add_argument("--threads", type=int, default=10, help="fastText training threads (default 10). Fewer are "
                         "raised to 10, whatever the machine's cores: fastText 0.9.2 fills its weights in ten blocks, "
                         "one per thread, and with fewer threads part of them stays uninitialised")
    command.set_defaults(fn=run_train_command)


def run_train_command(args: argparse.Namespace) -> int:
    if not 0 < args.heldout < 1:
        print(f"error: --heldout is a fraction between 0 and 1, got {args.heldout}", file=sys.stderr)
        return 2
    if args.max_docs < 1:
        print(f"error: --max-docs must be at least 1, got {args.max_docs}", file=sys.stderr)
        return 2
    from refinery.pipelines.commands.classifier_train import describe, train

    try:
        report = train(args.positive, args.negative, args.output, Path.cwd(), args.max_docs, args.heldout,
                       args.threads)
    except ValueError as err:  # InputError is a ValueError: a path, a format or an empty class
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(describe(report))
    return 0

"""`refinery eval`, `refinery generate`, `refinery export`: arguments and entry points. Importing this module
does not import torch.

    refinery eval out/gpt-tiny --data out/web-en --text wikitext-2-test.txt --tasks hellaswag arc_easy piqa \\
        --evals-dir ../shared/data/evals --limit 500 --out results.json
    refinery eval out/gpt-sft --instructions held-out.json --limit 100
    refinery generate out/gpt-sft "Give three tips for staying healthy." --seed 1
    refinery export out/gpt-tiny hf/gpt-tiny        (LlamaForCausalLM.from_pretrained("hf/gpt-tiny"))
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EVAL_DESCRIPTION = (
    "Evaluate a checkpoint: perplexity over token shards (--data) and raw text files (--text), zero-shot "
    "multiple choice accuracy (--tasks: acc and length-normalised acc_norm, as lm-evaluation-harness), and for "
    "chat models BLEU and ROUGE-L of greedy replies to held-out instructions (--instructions). Prints a table; "
    "--out writes the results as JSON."
)
GENERATE_DESCRIPTION = (
    "Sample text from a checkpoint. A chat (SFT) model gets the prompt as a user message in its chat template "
    "and stops at <|end|>; other models continue the prompt and stop at EOS."
)
EXPORT_DESCRIPTION = (
    "Export a GPT checkpoint to Hugging Face Llama format (config.json, model.safetensors, tokenizer.json, "
    "tokenizer_config.json, generation_config.json), loadable with transformers' LlamaForCausalLM."
)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a training output folder (its latest), OUT/latest or OUT/step-N")
    # The same default as `refinery train`: this process's GPU when there is one, else the CPU.
    parser.add_argument("--device", default="auto", help="auto (default: cuda when present), cpu, cuda, cuda:1, mps")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--data", nargs="+", default=[], metavar="FOLDER",
                        help="token shards to measure perplexity on: RUN, RUN/tokens or a split folder")
    parser.add_argument("--split", default="validation", help="the split of --data (default validation)")
    parser.add_argument("--text", nargs="+", default=[], metavar="FILE", help="raw text files for perplexity")
    parser.add_argument("--tasks", nargs="+", default=[], metavar="TASK",
                        help="hellaswag, arc_easy, arc_challenge, piqa (from --evals-dir), or paths of llm-foundry "
                             "multiple choice JSONL files")
    parser.add_argument("--evals-dir", metavar="DIR", help="llm-foundry's local_data layout, with "
                                                           "hellaswag_val_full.txt.bz2 beside it")
    parser.add_argument("--instructions", metavar="FILE", help="held-out Alpaca JSON or `messages` records: "
                                                               "BLEU and ROUGE-L of the replies")
    parser.add_argument("--skip", type=int, default=0, help="instruction records to skip first")
    parser.add_argument("--limit", type=int, help="at most N items per task and N instructions")
    parser.add_argument("--max-tokens", type=int, help="at most N tokens per perplexity source")
    parser.add_argument("--window", type=int, help="tokens per perplexity window (default: the model's block_size)")
    parser.add_argument("--stride", type=int, help="tokens between windows (default: the window: no overlap)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="longest reply to an instruction")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass")
    parser.add_argument("--out", metavar="FILE", help="write the results as JSON")


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("prompt", help="the text to continue, or the user message for a chat model")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=200, help="sample among the k likeliest tokens (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=1, help="how many samples (seeds seed, seed+1, ...)")
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                        help="apply the chat template (default: when the checkpoint was fine-tuned on chat shards)")


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a training output folder (its latest), OUT/latest or OUT/step-N")
    parser.add_argument("out", help="the Hugging Face model folder to write")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--license", dest="licence", metavar="ID", help="the model's licence for its card, a Hub "
                        "licence id such as apache-2.0 (default: other, said to be unknown)")


def _load(args: argparse.Namespace):
    from refinery.tokenization.tokenizer import load_tokenizer
    from refinery.training.checkpoint import load_checkpoint, read_config
    from refinery.training.ddp import pick_device

    model, _, tokenizer_path = load_checkpoint(args.checkpoint, pick_device(args.device))
    return model, load_tokenizer(tokenizer_path), read_config(args.checkpoint)[1]


def evaluate_checkpoint(args: argparse.Namespace) -> dict:
    """Every evaluation the arguments ask for, as one JSON-ready dict."""
    from refinery.training.evaluate import load_task, score_multiple_choice, shard_perplexity, text_perplexity

    model, tokenizer, info = _load(args)
    eos = info["special_ids"]["eos"]
    window = {"window": args.window, "stride": args.stride, "max_tokens": args.max_tokens,
              "batch_size": args.batch_size}
    results: dict = {"checkpoint": str(args.checkpoint), "step": info.get("step"), "perplexity": {}, "tasks": {}}
    for folder in args.data:
        ppl = shard_perplexity(model, folder, info["tokenizer_fingerprint"], args.split, **window)
        results["perplexity"][f"{folder} ({args.split})"] = ppl.as_dict()
    for path in args.text:
        text = Path(path).read_text(encoding="utf-8")
        results["perplexity"][str(path)] = text_perplexity(model, tokenizer, text, eos, **window).as_dict()
    for task in args.tasks:
        items = load_task(task, args.evals_dir, args.limit)
        results["tasks"][task] = score_multiple_choice(model, tokenizer, items, eos, args.batch_size).as_dict()
    if args.instructions:
        from refinery.training.sft_eval import evaluate_instructions, read_instructions

        conversations = read_instructions(args.instructions, args.skip, args.limit)
        result = evaluate_instructions(model, tokenizer, conversations, args.max_new_tokens)
        results["instructions"] = {"file": str(args.instructions), **result.as_dict()}
    return results


def _print_results(results: dict) -> None:
    for source, ppl in results["perplexity"].items():
        extra = f"  bits/byte {ppl['bits_per_byte']:.4f}" if "bits_per_byte" in ppl else ""
        print(f"perplexity  {ppl['perplexity']:10.3f}  (mean NLL {ppl['mean_nll']:.4f} over {ppl['tokens']:,} "
              f"tokens{extra})  {source}")
    for task, score in results["tasks"].items():
        print(f"{task:<12} acc {score['acc']:.4f}  acc_norm {score['acc_norm']:.4f}  ({score['items']} items)")
    if "instructions" in results:
        sft = results["instructions"]
        print(f"instructions BLEU {sft['bleu']:.2f}  ROUGE-L {sft['rougeL']:.4f}  ({sft['items']} replies)")


def _errors() -> tuple[type[Exception], ...]:
    from refinery.tokenization.reader import ShardError
    from refinery.tokenization.tokenizer import TokenizerError
    from refinery.training.checkpoint import CheckpointError

    return CheckpointError, ShardError, TokenizerError, FileNotFoundError, ValueError, ImportError


def run_eval(args: argparse.Namespace) -> int:
    """0 on success, 2 with a message when a checkpoint, data file or argument cannot be used."""
    if not (args.data or args.text or args.tasks or args.instructions):
        print("error: nothing to evaluate: give --data, --text, --tasks or --instructions", file=sys.stderr)
        return 2
    try:
        results = evaluate_checkpoint(args)
    except _errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _print_results(results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from refinery.training.generate import generate, is_chat_model

    try:
        model, tokenizer, info = _load(args)
    except _errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    chat = is_chat_model(info) if args.chat is None else args.chat
    for sample in range(args.samples):
        text = generate(model, tokenizer, args.prompt, chat, args.max_new_tokens, args.temperature,
                        args.top_k or None, args.seed + sample)
        print(text if chat else args.prompt + text)
        if sample < args.samples - 1:
            print("---")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from refinery.training.export import export_llama

    try:
        out = export_llama(args.checkpoint, args.out, args.dtype, args.licence)
    except _errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}: load it with transformers.LlamaForCausalLM.from_pretrained({str(out)!r}); its model card "
          f"is {out / 'README.md'}")
    return 0


COMMANDS = {
    "eval": (add_eval_arguments, run_eval, EVAL_DESCRIPTION),
    "generate": (add_generate_arguments, run_generate, GENERATE_DESCRIPTION),
    "export": (add_export_arguments, run_export, EXPORT_DESCRIPTION),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.eval_cli")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, run, description) in COMMANDS.items():
        add_arguments(commands.add_parser(name, description=description))
        commands.choices[name].set_defaults(fn=run)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

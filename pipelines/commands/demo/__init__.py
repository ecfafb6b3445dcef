"""`refinery demo`: raw web pages and web text → clean documents → token shards → a tiny GPT pretrained on
them, then instruction-tuned on SFT shards built with the same tokenizer; and where to look next."""

from __future__ import annotations

import shutil
from pathlib import Path

from refinery.pipelines.commands.report import write_outputs
from refinery.pipelines.engine.recipe import LoadedRecipe, load_recipe
from refinery.pipelines.engine.run import describe_summary, run_recipe

HERE = Path(__file__).parent
RECIPE = HERE / "recipe.yaml"
SFT_RECIPE = HERE / "sft.yaml"


def _train(data: Path, out: Path, steps: int, init: Path | None = None) -> str:
    """Train on the CPU (pretraining, or SFT from `init`); one line comparing the loss with the baseline."""
    from refinery.training.config import TrainConfig  # torch is imported only when the demo trains
    from refinery.training.train import train

    shutil.rmtree(out, ignore_errors=True)  # a rerun of the demo trains afresh (the recipes resume)
    model = {"init": str(init)} if init else {"size": "tiny"}
    config = TrainConfig(data=[str(data)], out=str(out), seq_len=128, batch_size=16, max_steps=steps,
                         lr=1e-3 if init else 3e-3, warmup_steps=min(30, steps // 10), eval_interval=max(1, steps // 3),
                         eval_batches=10, checkpoint_interval=0, device="cpu", **model)
    result = train(config, progress=True)
    return (f"validation loss {result.val_loss:.3f} nats/token against {result.unigram_entropy:.3f} for the "
            f"unigram baseline (the data's token entropy); checkpoint {result.out}")


def _evaluate(pretrained: Path, tuned: Path, web_tokens: Path, sft_tokens: Path, question: str) -> str:
    """Validation perplexity of both models on both kinds of data, and the tuned model's answer to a question."""
    from refinery.tokenization.tokenizer import fingerprint, load_tokenizer
    from refinery.training.checkpoint import load_checkpoint
    from refinery.training.evaluate import shard_perplexity
    from refinery.training.generate import generate

    lines = []
    for label, checkpoint in (("pretrained", pretrained), ("instruction-tuned", tuned)):
        model, _, tokenizer_path = load_checkpoint(checkpoint)
        tokenizer = load_tokenizer(tokenizer_path)
        scores = [f"{name} {shard_perplexity(model, folder, fingerprint(tokenizer)).perplexity:.1f}"
                  for name, folder in (("web text", web_tokens), ("assistant replies", sft_tokens))]
        lines.append(f"  {label:17} validation perplexity: " + ", ".join(scores))
    answer = generate(model, tokenizer, question, chat=True, max_new_tokens=40, temperature=0.0)
    lines.append(f"  instruction-tuned model asked {question!r} answers: {answer!r}")
    return "\n".join(lines)


def _sft_recipe(output: Path, tokenizer: Path) -> LoadedRecipe:
    """The SFT recipe, writing beside the demo run and tokenizing with the pretraining run's tokenizer."""
    loaded = load_recipe(SFT_RECIPE)
    loaded.recipe.output = str(output)
    tokenize = loaded.stages[-1]
    tokenize.config = tokenize.config.model_copy(update={"tokenizer": str(tokenizer)})
    return loaded


def run_demo(output: Path, workers: int | None = None, force: bool = False, train_steps: int = 300) -> int:
    output = output.resolve()
    loaded = load_recipe(RECIPE)
    loaded.recipe.output = str(output)
    summary = run_recipe(loaded, workers=workers, force=force)
    print(describe_summary(summary))
    sft_dir = output / "sft"
    sft = run_recipe(_sft_recipe(sft_dir, output / "tokens/tokenizer.json"), workers=workers, force=force)
    print("instruction data: " + describe_summary(sft))
    if train_steps:
        print("pretraining the tiny GPT on the web shards ...")
        pretrain = _train(output / "tokens", output / "model", train_steps)
        print("instruction-tuning it on the SFT shards (loss on assistant tokens only) ...")
        tuned = _train(sft_dir / "tokens", output / "model-sft", max(20, train_steps // 3), init=output / "model")
        print(f"\npretrained: {pretrain}\ninstruction-tuned: {tuned}")
        print("evaluation:")
        print(_evaluate(output / "model", output / "model-sft", output / "tokens", sft_dir / "tokens",
                        "Who are you?"))
        print("(a loss is nats per token; perplexity is e to the loss, the number of tokens the model hesitates "
              "between. The unigram baseline is the loss of a model that ignores context: below it, the model "
              "has learned from context. A tiny model on a few hundred pages stays far from fluent.)")
    print(f"\nrecipes: {RECIPE}, {SFT_RECIPE}")
    print("try:")
    print(f'  refinery sql {output} "SELECT stage, reason, count(*) AS docs FROM removed GROUP BY ALL ORDER BY ALL"')
    print(f'  refinery sql {output} "SELECT stage, docs_in, kept, removed, quarantined FROM stats"')
    print(f'  refinery sql {output} "SELECT lang, count(*) AS docs FROM docs GROUP BY ALL ORDER BY docs DESC"')
    print(f'  refinery sql {sft_dir} "SELECT source, turns, left(prompt, 60) FROM docs LIMIT 5"')
    print(f"  refinery sql {output}            # lists every view and its columns")
    print(f"  refinery tokens inspect {output / 'tokens'}")
    print(f"  refinery plan {RECIPE}        # the passes the engine ran")
    if train_steps:
        tuned, pretrained = output / "model-sft", output / "model"
        print(f'  refinery generate {tuned} "What is a web crawl?"     # ask the instruction-tuned model')
        print(f"  refinery eval {pretrained} --data {output / 'tokens'}   # perplexity on the validation shards")
        print(f"  refinery export {tuned} {output / 'hf'}   # Hugging Face Llama format, with a model card")
    # Last, after training, so that the reports draw the models' loss curves (each finds the model trained on its
    # shards beside it).
    sft_outputs = write_outputs(sft_dir).replace("\n", "; ")
    print(f"\ninstruction data: {sft_outputs}")
    print(write_outputs(output))
    return 0

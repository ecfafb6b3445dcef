"""`refinery demo`: raw web pages and web text → clean documents → token shards → a tiny GPT pretrained on
them, then instruction-tuned on SFT shards built with the same tokenizer; and where to look next."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from refinery.pipelines.commands.report import write_outputs
from refinery.pipelines.engine.recipe import LoadedRecipe, load_recipe
from refinery.pipelines.engine.run import describe_summary, run_recipe

HERE = Path(__file__).parent
RECIPE = HERE / "recipe.yaml"
SFT_RECIPE = HERE / "sft.yaml"


# The tiny GPT on one thread, training and evaluating (its operations are too small to share: a second thread only
# slows it, 3-25x when the cores are busy). 300 steps of each stage at lr 5e-3: the pretrained model ends about 0.6
# nats below the unigram baseline, and the tuned one answers QUESTION with a short sentence that ends at <|end|>
# (fewer steps or a lower lr leave it rambling; docs/performance.md has the figures).
TRAIN_STEPS = 300
SEQ_LEN, BATCH_SIZE, LR = 128, 16, 5e-3
QUESTION = "Who are you?"
MAX_ANSWER_TOKENS = 40


def _train(data: Path, out: Path, steps: int, init: Path | None = None):
    """Train on the CPU (pretraining, or SFT from `init`), validating at the start and the end only."""
    from refinery.training.config import TrainConfig  # torch is imported only when the demo trains
    from refinery.training.train import train

    shutil.rmtree(out, ignore_errors=True)  # a rerun of the demo trains afresh (the recipes resume)
    model = {"init": str(init)} if init else {"size": "tiny"}
    config = TrainConfig(data=[str(data)], out=str(out), seq_len=SEQ_LEN, batch_size=BATCH_SIZE, max_steps=steps,
                         lr=LR, warmup_steps=min(30, steps // 10), eval_interval=steps, eval_batches=10,
                         checkpoint_interval=0, device="cpu", threads=1, **model)
    return train(config, progress=True)


def _trained(label: str, result) -> str:
    gap = result.unigram_entropy - result.val_loss
    return (f"{label}: validation loss {result.val_loss:.3f} nats/token against {result.unigram_entropy:.3f} for the "
            f"unigram baseline (the data's token entropy): {abs(gap):.2f} {'below' if gap > 0 else 'ABOVE'} it; "
            f"checkpoint {result.out}")


def _evaluate(pretrained, tuned, web_tokens: Path, sft_tokens: Path) -> str:
    """Validation perplexity of both models on both kinds of data beside the baselines, and the tuned model's
    answer to QUESTION, saying whether it ended at <|end|>."""
    from refinery.tokenization.tokenizer import fingerprint, load_tokenizer, special_ids
    from refinery.training.checkpoint import load_checkpoint
    from refinery.training.evaluate import shard_perplexity
    from refinery.training.generate import chat_prompt, sample_tokens

    perplexities = {}
    for label, result in (("pretrained", pretrained), ("instruction-tuned", tuned)):
        model, _, tokenizer_path = load_checkpoint(result.out)
        tokenizer = load_tokenizer(tokenizer_path)
        perplexities[label] = [shard_perplexity(model, folder, fingerprint(tokenizer)).perplexity
                               for folder in (web_tokens, sft_tokens)]
    vocab = tokenizer.get_vocab_size()
    rows = {"uniform guess": [vocab, vocab],
            "unigram baseline": [math.exp(pretrained.unigram_entropy), math.exp(tuned.unigram_entropy)], **perplexities}
    (web_pre, replies_pre), (web_tuned, replies_tuned) = perplexities.values()
    lines = ["evaluation: perplexity on the validation splits (e to the loss: about how many tokens the model "
             "hesitates between; lower is better)",
             f"  {'':19}{'web text':>10}{'assistant replies':>19}",
             *(f"  {label:19}{web:>10,.0f}{replies:>19,.0f}" for label, (web, replies) in rows.items()),
             f"  A uniform guess knows only the {vocab:,}-token vocabulary, the unigram baseline only how often each "
             "token occurs (the training tokens' entropy); a model below it has learned from context.",
             f"  Instruction tuning took the assistant replies from {replies_pre:,.0f} to {replies_tuned:,.0f} and web "
             f"text from {web_pre:,.0f} to {web_tuned:,.0f}: it learned the chat format and the assistant's words. "
             "A tiny model trained on a few hundred pages stays far from fluent."]
    ids = special_ids(tokenizer)
    end = tokenizer.token_to_id("<|end|>")
    prompt = [ids["eos"], *tokenizer.encode(chat_prompt([{"role": "user", "content": QUESTION}]),
                                            add_special_tokens=False).ids]
    new = sample_tokens(model, prompt, MAX_ANSWER_TOKENS + 1, temperature=0.0, stop_ids={ids["eos"], end})
    answer = tokenizer.decode(new[:MAX_ANSWER_TOKENS], skip_special_tokens=False)
    ending = (f"it ended its reply with <|end|> after {len(new)} tokens" if len(new) <= MAX_ANSWER_TOKENS else
              f"it wrote no <|end|> in {MAX_ANSWER_TOKENS} tokens (cut there)")
    lines.append(f"  the instruction-tuned model, asked {QUESTION!r}, answers: {answer!r} ({ending}; greedy decoding)")
    return "\n".join(lines)


def _sft_recipe(output: Path, tokenizer: Path) -> LoadedRecipe:
    """The SFT recipe, writing beside the demo run and tokenizing with the pretraining run's tokenizer."""
    loaded = load_recipe(SFT_RECIPE)
    loaded.recipe.output = str(output)
    tokenize = loaded.stages[-1]
    tokenize.config = tokenize.config.model_copy(update={"tokenizer": str(tokenizer)})
    return loaded


def run_demo(output: Path, workers: int | None = None, force: bool = False, train_steps: int | None = None) -> int:
    """The demo; `train_steps` of each training stage (None: TRAIN_STEPS, 0: no training)."""
    started = time.perf_counter()
    train_steps = TRAIN_STEPS if train_steps is None else train_steps
    took = {}
    output = output.resolve()
    loaded = load_recipe(RECIPE)
    loaded.recipe.output = str(output)
    summary = run_recipe(loaded, workers=workers, force=force)
    print(describe_summary(summary))
    sft_dir = output / "sft"
    sft = run_recipe(_sft_recipe(sft_dir, output / "tokens/tokenizer.json"), workers=workers, force=force)
    print("instruction data: " + describe_summary(sft))
    took["the recipes"] = time.perf_counter() - started
    if train_steps:
        import torch

        torch.set_num_threads(1)  # training and evaluation: a second thread only slows a model this small
        print("pretraining the tiny GPT on the web shards ...")
        mark = time.perf_counter()
        pretrained = _train(output / "tokens", output / "model", train_steps)
        took["pretraining"] = time.perf_counter() - mark
        print("instruction-tuning it on the SFT shards (loss on assistant tokens only) ...")
        mark = time.perf_counter()
        tuned = _train(sft_dir / "tokens", output / "model-sft", train_steps, init=output / "model")
        took["instruction tuning"] = time.perf_counter() - mark
        print(f"\n{_trained('pretrained', pretrained)}\n{_trained('instruction-tuned', tuned)}")
        print(_evaluate(pretrained, tuned, output / "tokens", sft_dir / "tokens"))
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
    outputs = write_outputs(output)
    total = time.perf_counter() - started
    took["evaluation and reports"] = total - sum(took.values())
    print(f"\nthe demo took {total:.0f} s: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in took.items()))
    # The report and the card come last: the two files a user opens next.
    print(f"\ninstruction data: {sft_outputs}")
    print(outputs)
    return 0

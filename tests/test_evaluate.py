"""Evaluation on real data: multiple choice at chance for an untrained model and equal to a hand computation on
real HellaSwag items, perplexity equal to exp(mean NLL) by hand, seeded generation that stops where it should,
BLEU/ROUGE-L of replies to real instructions, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from refinery.corpora.records import document_table
from refinery.tokenization.builder import SplitPlan, encode_documents, write_token_splits
from refinery.tokenization.chat import END, LOSS_SPANS_TYPE, render_chat
from refinery.tokenization.reader import TokenShards
from refinery.tokenization.tokenizer import fingerprint, special_ids, train_bpe
from refinery.training.checkpoint import save_checkpoint
from refinery.training.eval_cli import main as eval_main
from refinery.training.evaluate import (
    load_task,
    score_multiple_choice,
    shard_perplexity,
    text_perplexity,
    window_plan,
)
from refinery.training.generate import chat_prompt, generate, is_chat_model, sample_tokens
from refinery.training.model import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer(data_dir):
    """A 512-token BPE trained on the first 300 kB of WikiText-2 (validation part)."""
    text = (data_dir / "text/wikitext-2-valid.txt").read_text(encoding="utf-8")[:300_000]
    return train_bpe(text.split("\n"), 512)


@pytest.fixture(scope="module")
def eos(tokenizer) -> int:
    return special_ids(tokenizer)["eos"]


def tiny_gpt(seed: int = 0, block_size: int = 128, spread: float = 0.0) -> GPT:
    """An untrained tiny GPT; `spread` adds noise to every weight so that its predictions differ sharply."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=512, block_size=block_size)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(spread * torch.randn_like(param))
    return model


def checkpoint(model, tokenizer, folder, **info):
    tokenizer.save(str(folder / "tokenizer.json"))
    info = {"tokenizer_fingerprint": fingerprint(tokenizer), "special_ids": special_ids(tokenizer),
            "train": {"data": [], "init": None}, **info}
    return save_checkpoint(folder / "out", 0, model, info, {}, folder / "tokenizer.json")


def test_an_untrained_model_is_at_chance_on_hellaswag(data_dir, tokenizer, eos):
    items = load_task("hellaswag", data_dir / "evals", limit=200)
    assert len(items) == 200 and all(len(item.endings) == 4 for item in items)
    assert items[0].context.startswith("Roof shingle removal: A man is sitting on a roof.")
    result = score_multiple_choice(tiny_gpt(), tokenizer, items, eos)
    # 25% is chance; 200 items give a standard deviation of 3 points, so the band is about 2.7 sigma wide
    assert 0.17 < result.acc < 0.33 and 0.17 < result.acc_norm < 0.33
    assert len(set(result.predictions)) == 4  # not one position picked every time


def test_multiple_choice_equals_a_hand_computation_on_real_items(data_dir, tokenizer, eos):
    items = load_task("hellaswag", data_dir / "evals", limit=3)
    model = tiny_gpt(seed=1, block_size=256, spread=0.3)  # the items fit whole: no context is cut
    result = score_multiple_choice(model, tokenizer, items, eos, batch_size=5)  # batches cut across items
    for item, scores, prediction, prediction_norm in zip(items, result.scores, result.predictions,
                                                         result.predictions_norm):
        context = [eos, *tokenizer.encode(item.context).ids]
        by_hand = []
        for ending in item.endings:
            total = 0.0
            tokens = context + tokenizer.encode(" " + ending).ids
            for position in range(len(context), len(tokens)):  # one forward pass per token of the ending
                with torch.no_grad():
                    logits = model(torch.tensor([tokens[:position]]))[0][0, -1]
                total += float(F.log_softmax(logits, dim=-1)[tokens[position]])
            by_hand.append(total)
        assert scores == pytest.approx(by_hand, rel=1e-4)
        assert prediction == int(np.argmax(by_hand))
        assert prediction_norm == int(np.argmax([s / len(e) for s, e in zip(by_hand, item.endings)]))
    assert len(set(map(tuple, result.scores))) == 3


def test_arc_easy_and_piqa_load_as_lm_eval_harness_prompts_them(data_dir):
    arc = load_task("arc_easy", data_dir / "evals", limit=5)
    piqa = load_task("piqa", data_dir / "evals", limit=5)
    assert arc[0].context == ("Question: Which statement best explains why photosynthesis is the foundation of most "
                              "food webs?\nAnswer:")
    assert arc[0].label == 0 and len(arc[0].endings) == 4
    assert piqa[0].context == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert len(piqa[0].endings) == 2
    assert len(load_task("piqa", data_dir / "evals")) == 1838


def test_every_target_is_scored_once_by_the_sliding_windows():
    for n_tokens, window, stride in [(2, 8, 8), (100, 16, 16), (100, 16, 5), (17, 16, 1), (300, 32, 31)]:
        scored = [t for start, end, first in window_plan(n_tokens, window, stride) for t in range(first, end + 1)]
        assert scored == list(range(1, n_tokens))
        assert all(0 < end - start <= window for start, end, _ in window_plan(n_tokens, window, stride))


def test_perplexity_is_exp_of_the_mean_nll_computed_by_hand(data_dir, tokenizer, eos):
    text = (data_dir / "text/wikitext-2-test.txt").read_text(encoding="utf-8")[:700]
    model = tiny_gpt(block_size=32, spread=0.1)
    tokens = [eos, *tokenizer.encode(text).ids]
    assert len(tokens) > 100
    nll = []
    for position in range(1, len(tokens)):  # each token from at most the 32 tokens before it
        with torch.no_grad():
            logits = model(torch.tensor([tokens[max(0, position - 32):position]]))[0][0, -1]
        nll.append(-float(F.log_softmax(logits, dim=-1)[tokens[position]]))
    sliding = text_perplexity(model, tokenizer, text, eos, window=32, stride=1, batch_size=7)
    assert sliding.tokens == len(tokens) - 1
    assert sliding.perplexity == pytest.approx(float(np.exp(np.mean(nll))), rel=1e-5)
    assert sliding.bytes == len(text.encode("utf-8"))
    # Without overlap a token sees less context: another (fair) number, over the same tokens
    disjoint = text_perplexity(model, tokenizer, text, eos, window=32)
    assert disjoint.tokens == sliding.tokens and disjoint.nll_sum != pytest.approx(sliding.nll_sum, rel=1e-6)
    truncated = text_perplexity(model, tokenizer, text, eos, window=32, max_tokens=50)
    assert truncated.tokens == 50 and 0 < truncated.bytes < len(text)


def test_sft_shard_perplexity_counts_only_the_assistant_tokens(data_dir, tokenizer, tmp_path):
    rows = json.loads((data_dir / "instructions/alpaca_en_demo.json").read_text(encoding="utf-8"))[:40]
    chats = [[{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}]
             for r in rows]
    rendered = [render_chat(c) for c in chats]
    docs = document_table([f"chat:{i}" for i in range(len(chats))], [t for t, _ in rendered], "alpaca")
    docs = docs.append_column("loss_spans", pa.array([[{"start": s, "end": e} for s, e in sp] for _, sp in rendered],
                                                     LOSS_SPANS_TYPE))
    pq.write_table(encode_documents(tokenizer, docs, special_ids(tokenizer)["eos"]), tmp_path / "encoded.parquet")
    write_token_splits([tmp_path / "encoded.parquet"], tmp_path / "tokens", tokenizer,
                       SplitPlan(validation_fraction=0.3, seed=0), None, tmp_path / "work")
    model = tiny_gpt(block_size=512)
    result = shard_perplexity(model, tmp_path / "tokens", fingerprint(tokenizer), max_tokens=400)
    shards = TokenShards(tmp_path / "tokens/validation")
    tokens = torch.from_numpy(shards.span(0, 400).astype(np.int64))[None]
    mask = torch.from_numpy(shards.span(0, 400, mask=True).astype(np.int64))[None]
    with torch.no_grad():
        loss = model(tokens[:, :-1], tokens[:, 1:], mask[:, 1:])[1]  # the training loss on the same tokens
    assert result.tokens == int(mask[0, 1:].sum()) < 399
    assert result.mean_nll == pytest.approx(float(loss), rel=1e-5)


def test_generation_is_seeded_and_stops_at_the_stop_token(tokenizer, eos):
    model = tiny_gpt(spread=0.1)
    prompt = [eos, *tokenizer.encode("The song was released as a single").ids]
    first = sample_tokens(model, prompt, 40, temperature=1.0, top_k=50, seed=3)
    assert first == sample_tokens(model, prompt, 40, temperature=1.0, top_k=50, seed=3) and len(first) == 40
    assert first != sample_tokens(model, prompt, 40, temperature=1.0, top_k=50, seed=4)
    stop = first[12]  # a token the seeded run writes: stopping at it cuts the same run where it first appears
    assert sample_tokens(model, prompt, 40, 1.0, 50, stop_ids={stop}, seed=3) == first[:first.index(stop)]
    greedy = sample_tokens(model, prompt, 10, temperature=0)
    with torch.no_grad():
        assert greedy[0] == int(model(torch.tensor([prompt]))[0][0, -1].argmax())


def test_a_chat_model_is_prompted_with_the_template_and_stops_at_end(tokenizer):
    message = "Give three tips for staying healthy."
    prompt = chat_prompt([{"role": "user", "content": message}])
    full, spans = render_chat([{"role": "user", "content": message}, {"role": "assistant", "content": "Eat."}])
    assert full.startswith(prompt) and full[spans[0][0]:spans[0][1]] == "Eat." + END
    assert is_chat_model({"sft": True}) and not is_chat_model({"train": {"data": [], "init": None}})
    assert is_chat_model({"train": {"data": ["/gone"], "init": "out/base"}})  # no shards to read: init decides
    # A model that always writes <|end|>: feature 0 of every embedding is large, and only <|end|>'s logit reads it
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, block_size=128, tie_embeddings=False)).eval()
    with torch.no_grad():
        model.embed.weight[:, 0] = 5.0
        model.norm.weight.zero_()
        model.norm.weight[0] = 1.0
        model.head.weight.zero_()
        model.head.weight[tokenizer.token_to_id(END), 0] = 50.0
    assert generate(model, tokenizer, message, chat=True, max_new_tokens=20, seed=0) == ""
    assert END in generate(model, tokenizer, message, chat=False, max_new_tokens=20, seed=0)


def test_replies_to_real_instructions_get_bleu_and_rouge(data_dir, tokenizer):
    pytest.importorskip("sacrebleu")
    pytest.importorskip("rouge_score")
    from refinery.training.sft_eval import evaluate_instructions, read_instructions, reply_scores

    conversations = read_instructions(data_dir / "instructions/alpaca_en_demo.json", skip=900, limit=4)
    assert len(conversations) == 4 and conversations[0][-1]["role"] == "assistant"
    references = [c[-1]["content"] for c in conversations]
    assert reply_scores(references, references) == pytest.approx((100.0, 1.0))
    assert reply_scores(references[::-1], references)[1] < 0.5  # someone else's answer shares little
    result = evaluate_instructions(tiny_gpt(), tokenizer, conversations, max_new_tokens=16)
    assert len(result.replies) == 4 and result.bleu < 5 and result.rouge_l < 0.2  # an untrained model's babble


def test_the_eval_command_writes_every_result(data_dir, tokenizer, tmp_path, capsys):
    folder = checkpoint(tiny_gpt(), tokenizer, tmp_path)
    out = tmp_path / "results.json"
    assert eval_main(["eval", str(folder), "--text", str(data_dir / "text/wikitext-2-test.txt"), "--max-tokens",
                      "3000", "--tasks", "hellaswag", "piqa", "--evals-dir", str(data_dir / "evals"), "--limit", "20",
                      "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    wikitext = results["perplexity"][str(data_dir / "text/wikitext-2-test.txt")]
    assert wikitext["tokens"] == 3000 and 300 < wikitext["perplexity"] < 1500  # untrained: about the vocabulary
    assert results["tasks"]["hellaswag"]["items"] == 20 and results["tasks"]["piqa"]["items"] == 20
    assert "acc_norm" in capsys.readouterr().out
    assert eval_main(["eval", str(folder), "--tasks", "hellaswag"]) == 2
    assert "--evals-dir" in capsys.readouterr().err
    assert eval_main(["generate", str(folder), "The song", "--max-new-tokens", "5", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("The song")


def test_the_cli_module_does_not_import_torch():
    code = "import sys, training.eval_cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"

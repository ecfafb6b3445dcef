"""Export to Hugging Face Llama format: transformers loads it and gives our model's logits on real text, its
tokenizer encodes as ours does, and a chat model's template renders as ours."""

from __future__ import annotations

import json

import pytest
import torch

from refinery.tokenization.chat import render_chat
from refinery.tokenization.tokenizer import fingerprint, special_ids, train_bpe
from refinery.training.checkpoint import CheckpointError, save_checkpoint
from refinery.training.eval_cli import main as eval_main
from refinery.training.export import export_llama
from refinery.training.generate import chat_prompt, sample_tokens
from refinery.training.model import GPT, LSTM, GPTConfig, LSTMConfig

transformers = pytest.importorskip("transformers")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def wikitext(data_dir) -> str:
    return (data_dir / "text/wikitext-2-valid.txt").read_text(encoding="utf-8")[:300_000]


@pytest.fixture(scope="module")
def tokenizer(wikitext):
    return train_bpe(wikitext.split("\n"), 512)


def exported(model, tokenizer, folder, **info):
    tokenizer.save(str(folder / "tokenizer.json"))
    info = {"tokenizer_fingerprint": fingerprint(tokenizer), "special_ids": special_ids(tokenizer),
            "train": {"data": [], "init": None}, **info}
    save_checkpoint(folder / "run", 0, model, info, {}, folder / "tokenizer.json")
    return export_llama(folder / "run", folder / "hf")


def spread_gpt(**options) -> GPT:
    """A tiny GPT with weights far from their init (norm gains too), so a misplaced weight shows in the logits."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, block_size=128, **options)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param))
    return model


@pytest.mark.parametrize("tied", [True, False])
def test_transformers_gives_our_logits_on_real_text(tokenizer, wikitext, tmp_path, tied):
    model = spread_gpt(tie_embeddings=tied, rope_theta=500.0, norm_eps=1e-6)  # not Llama's defaults: they travel
    folder = exported(model, tokenizer, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is tied
    hf = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    assert hf.dtype == torch.float32
    eos = special_ids(tokenizer)["eos"]
    ids = torch.tensor([[eos, *tokenizer.encode(wikitext[5000:8000]).ids[:127]]])
    with torch.no_grad():
        ours, theirs = model(ids)[0], hf(ids).logits
        assert ours.std() > 1.0  # logits far from flat: a wrong mapping could not hide below the tolerance
        assert (ours - theirs).abs().max() < 1e-4
        assert sample_tokens(model, ids[0, :20].tolist(), 10, temperature=0) == \
            hf.generate(ids[:, :20], do_sample=False, max_new_tokens=10, min_new_tokens=10)[0, 20:].tolist()
        layer = hf.model.layers[1].self_attn  # the comparison notices a misplaced matrix (q and k swapped)
        layer.q_proj.weight, layer.k_proj.weight = layer.k_proj.weight, layer.q_proj.weight
        assert (ours - hf(ids).logits).abs().max() > 1e-2


def test_the_tokenizer_and_chat_template_load_in_transformers(data_dir, tokenizer, wikitext, tmp_path):
    folder = exported(spread_gpt(), tokenizer, tmp_path, sft=True)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert hf_tokenizer(wikitext[:2000])["input_ids"] == tokenizer.encode(wikitext[:2000]).ids
    rows = json.loads((data_dir / "instructions/alpaca_en_demo.json").read_text(encoding="utf-8"))[:3]
    for row in rows:
        messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": row["instruction"]},
                    {"role": "assistant", "content": row["output"]}]
        assert hf_tokenizer.apply_chat_template(messages, tokenize=False) == render_chat(messages)[0]
        assert hf_tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True) == \
            chat_prompt(messages[:2])
    generation = json.loads((folder / "generation_config.json").read_text())
    ids = special_ids(tokenizer)
    assert generation["eos_token_id"] == [ids["eos"], ids["end"]]  # a chat model stops at <|end|> too


def test_only_a_gpt_exports(tokenizer, tmp_path, capsys):
    torch.manual_seed(0)
    with pytest.raises(CheckpointError, match="only the GPT"):
        exported(LSTM(LSTMConfig(vocab_size=512)), tokenizer, tmp_path)
    assert eval_main(["export", str(tmp_path / "run"), str(tmp_path / "again")]) == 2
    assert "only the GPT" in capsys.readouterr().err

"""Training on real token shards: the tiny GPT beats the unigram baseline, resumes exactly, fine-tunes on
assistant tokens only, and keeps its checkpoints free of pickled code."""

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
from safetensors import safe_open

from refinery.corpora.records import document_table
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.tokenization.builder import SplitPlan, encode_documents, write_token_splits
from refinery.tokenization.chat import END, LOSS_SPANS_TYPE, render_chat
from refinery.tokenization.reader import TokenShards
from refinery.tokenization.tokenizer import load_tokenizer, special_ids, train_bpe
from refinery.training.checkpoint import load_checkpoint, load_train_state, save_checkpoint
from refinery.training.cli import main as train_main
from refinery.training.config import ConfigError, TrainConfig, load_train_config
from refinery.training.data import TrainingData
from refinery.training.model import GPT, GPT_PRESETS, GPTConfig, count_parameters
from refinery.training.train import TrainingError, lr_at, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(data, out, **options) -> TrainConfig:
    values = dict(data=[str(data)], out=str(out), seq_len=64, batch_size=16, max_steps=200, lr=3e-3, warmup_steps=20,
                  eval_interval=100, eval_batches=10, checkpoint_interval=100, keep_checkpoints=0, log_interval=1,
                  device="cpu")
    return TrainConfig(**{**values, **options})


def records(out, kind: str) -> list[dict]:
    lines = (out / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.fixture(scope="module")
def tokens(data_dir, tmp_path_factory):
    """Tiny Shakespeare, one document per paragraph, as token shards with a 512-token BPE."""
    folder = tmp_path_factory.mktemp("shakespeare")
    recipe = {"name": "shakespeare", "output": "out",
              "inputs": [{"path": str(data_dir / "text/tinyshakespeare.txt"), "unit": "paragraph"}],
              "stages": [{"tokenize": {"vocab_size": 512, "validation_fraction": 0.1}}]}
    (folder / "r.yaml").write_text(json.dumps(recipe))
    return run_recipe(load_recipe(folder / "r.yaml"), workers=2, progress=False).run_dir / "tokens"


@pytest.fixture(scope="module")
def trained(tokens, tmp_path_factory):
    config = tiny(tokens, tmp_path_factory.mktemp("train") / "gpt")
    return config, train(config, progress=False)


def test_validation_loss_falls_well_below_the_unigram_entropy(trained, tokens):
    config, result = trained
    shards = TokenShards(tokens / "train")
    counts = np.bincount(shards.span(0, shards.tokens), minlength=shards.vocab_size)
    p = counts[counts > 0] / counts.sum()
    assert result.unigram_entropy == pytest.approx(-(p * np.log(p)).sum())
    val = records(result.out, "val")
    assert [r["step"] for r in val] == [0, 100, 200]
    assert val[0]["val_loss"] > result.unigram_entropy  # an untrained model is worse than counting tokens
    assert result.val_loss == val[-1]["val_loss"] < result.unigram_entropy - 1.0
    assert (result.out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_repeats_the_uninterrupted_losses_exactly(trained):
    config, result = trained
    losses = {r["step"]: r["loss"] for r in records(result.out, "train")}
    final_weights = (result.out / "step-000200/model.safetensors").read_bytes()
    # As if the run had died after step 150: the state at step 100 is all a resumed run sees.
    resumed = train(config.model_copy(update={"resume": str(result.out / "step-000100")}), progress=False)
    after = {r["step"]: r["loss"] for r in records(result.out, "train")}
    assert sorted(after) == list(range(1, 201))
    assert after == losses
    assert resumed.val_loss == result.val_loss
    assert (result.out / "step-000200/model.safetensors").read_bytes() == final_weights


def test_checkpoints_load_without_unpickling_code(trained, tokens):
    config, result = trained
    folder = result.out / "latest"
    state = torch.load(folder / "train_state.pt", weights_only=True)
    assert state["step"] == 200 and state["optimizer"]["state"]
    with safe_open(str(folder / "model.safetensors"), "pt") as weights:
        assert "embed.weight" in weights.keys()  # the tied head is stored once
    model, model_config, tokenizer_path = load_checkpoint(result.out)
    info = json.loads((folder / "config.json").read_text())
    assert info["tokenizer_fingerprint"] == TokenShards(tokens / "train").meta["tokenizer_fingerprint"]
    assert load_tokenizer(tokenizer_path).get_vocab_size() == model_config.vocab_size == 512
    # The loaded model gives the validation loss the run logged, on the same windows.
    data = TrainingData(config.data, config.weights, config.seq_len, config.seed)
    with torch.no_grad():
        losses = [model(*(torch.from_numpy(a) for a in data.validation_batch(data.sources[0], 16, i)[:2]))[1]
                  for i in range(config.eval_batches)]
    assert float(torch.stack(losses).mean()) == pytest.approx(result.val_loss, abs=1e-5)


def test_document_attention_keeps_packed_documents_apart(tokens):
    shards = TokenShards(tokens / "validation")
    eos = shards.meta["special_ids"]["eos"]
    first = next(r for r in pq.read_table(tokens / "validation/index.parquet").to_pylist() if 10 < r["length"] < 60)
    start = int(shards.offsets[first["shard"]]) + first["offset"]
    window = torch.from_numpy(shards.span(start, start + 128).astype(np.int64))[None]
    end = first["length"] - 1  # the first document's EOS; more documents follow it in the window
    assert window[0, end] == eos
    edited = window.clone()
    edited[0, :end] = (edited[0, :end] + 7) % 512
    torch.manual_seed(0)
    isolated = GPT(GPTConfig(vocab_size=512, block_size=128, document_attention=True, eos_id=eos)).eval()
    with torch.no_grad():
        before, after = isolated(window)[0], isolated(edited)[0]
        assert torch.equal(before[0, end + 1:], after[0, end + 1:])  # the next documents never see the first
        assert not torch.allclose(before[0, :end], after[0, :end])
        isolated.config.document_attention = False  # the same weights attending across documents
        assert not torch.allclose(isolated(window)[0][0, end + 1:], isolated(edited)[0][0, end + 1:])


def conversations(data_dir, count: int) -> list[list[dict]]:
    rows = json.loads((data_dir / "instructions/alpaca_en_demo.json").read_text())
    short = [r for r in rows if len(r["instruction"]) + len(r["input"]) + len(r["output"]) < 300][:count]
    return [[{"role": "user", "content": r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")},
             {"role": "assistant", "content": r["output"]}] for r in short]


def sft_shards(chats: list[list[dict]], tokenizer, folder) -> None:
    rendered = [render_chat(c) for c in chats]
    docs = document_table([f"chat:{i}" for i in range(len(chats))], [t for t, _ in rendered], "alpaca")
    docs = docs.append_column("loss_spans", pa.array([[{"start": s, "end": e} for s, e in sp] for _, sp in rendered],
                                                     LOSS_SPANS_TYPE))
    encoded = encode_documents(tokenizer, docs, special_ids(tokenizer)["eos"])
    pq.write_table(encoded, folder / "encoded.parquet")
    plan = SplitPlan(validation_fraction=0.2, seed=0)
    write_token_splits([folder / "encoded.parquet"], folder / "tokens", tokenizer, plan, None, folder / "work")


@pytest.fixture(scope="module")
def sft_tokens(data_dir, tokens, tmp_path_factory):
    """Real Alpaca conversations, tokenized with the pretraining tokenizer (so the model can be fine-tuned)."""
    chats = conversations(data_dir, 300)
    folder = tmp_path_factory.mktemp("sft")
    sft_shards(chats, load_tokenizer(tokens / "tokenizer.json"), folder)
    return folder / "tokens", chats


def test_sft_loss_counts_only_the_assistant_tokens(sft_tokens):
    folder, chats = sft_tokens
    shards = TokenShards(folder / "train")
    tokenizer = load_tokenizer(folder / "tokenizer.json")
    index = pq.read_table(folder / "train/index.parquet").to_pylist()[:2]
    length = min(row["length"] for row in index)
    x, y, mask, replies = [], [], [], []
    for row in index:  # a hand-built batch: the first `length` tokens of two real conversations
        start = int(shards.offsets[row["shard"]]) + row["offset"]
        tokens, counted = shards.span(start, start + length).astype(np.int64), shards.span(start, start + length, True)
        x.append(tokens[:-1])
        y.append(tokens[1:])
        mask.append(counted[1:])
        replies.append(chats[int(row["doc_id"].split(":")[1])][-1]["content"] + END)
    x, y, mask = (torch.from_numpy(np.stack(a)) for a in (x, y, mask))
    for row_y, row_mask, reply in zip(y, mask, replies):
        counted_text = tokenizer.decode(row_y[row_mask == 1].tolist(), skip_special_tokens=False)
        assert counted_text and reply.startswith(counted_text)  # the reply, cut where the shortest chat ends
    assert 0 < int(mask.sum()) < mask.numel() // 2

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, block_size=x.shape[1])).requires_grad_(False)
    logits, loss = model(x, y, mask)
    by_hand = F.cross_entropy(logits[mask == 1], y[mask == 1])
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-6)
    other_prompts = torch.where(mask == 1, y, (y + 1) % 512)
    assert float(model(x, other_prompts, mask)[1]) == float(loss)  # prompt targets do not count
    other_reply = torch.where(mask == 1, (y + 1) % 512, y)
    assert float(model(x, other_reply, mask)[1]) != float(loss)


def test_sft_starts_from_the_checkpoint_and_learns_the_replies(trained, sft_tokens, tmp_path):
    _, pretrained = trained
    folder, _ = sft_tokens
    config = tiny(folder, tmp_path / "sft", init=str(pretrained.out), max_steps=60, lr=1e-3, warmup_steps=5,
                  eval_interval=60, checkpoint_interval=0, batch_size=8, grad_accum=2)
    result = train(config, progress=False)
    data = TrainingData(config.data, config.weights, config.seq_len, config.seed)
    assert data.has_mask
    model, _, _ = load_checkpoint(pretrained.out)
    with torch.no_grad():
        losses = [model(*(torch.from_numpy(a) for a in data.validation_batch(data.sources[0], 8, i)))[1]
                  for i in range(config.eval_batches)]
    val = records(result.out, "val")
    assert val[0]["val_loss"] == pytest.approx(float(torch.stack(losses).mean()), abs=1e-5)  # the init weights
    assert result.val_loss < val[0]["val_loss"] - 0.3
    assert result.unigram_entropy == pytest.approx(data.unigram_entropy())


def test_a_mix_draws_rows_by_weight_and_masks_only_the_sft_rows(tokens, sft_tokens):
    folder, _ = sft_tokens
    data = TrainingData([str(tokens), str(folder)], [0.75, 0.25], 64, seed=0)
    assert data.has_mask
    masks = np.concatenate([data.batch(16, step)[2] for step in range(50)])
    assert 0.68 < (masks == 1).all(axis=1).mean() < 0.82  # Shakespeare rows count every token


def test_init_refuses_data_from_another_tokenizer(trained, data_dir, tmp_path):
    chats = conversations(data_dir, 60)
    other = train_bpe((render_chat(c)[0] for c in chats), 300)
    sft_shards(chats, other, tmp_path)
    with pytest.raises(ConfigError, match="another tokenizer"):
        train(tiny(tmp_path / "tokens", tmp_path / "out", init=str(trained[1].out)), progress=False)


def test_a_non_finite_loss_stops_the_run_naming_the_step(trained, tokens, tmp_path):
    _, result = trained
    model, _, tokenizer_path = load_checkpoint(result.out)
    with torch.no_grad():
        model.blocks[0].mlp.up.weight[0, 0] = float("nan")
    info = json.loads((result.out / "latest/config.json").read_text())
    save_checkpoint(tmp_path / "broken", 1, model, info, load_train_state(result.out), tokenizer_path)
    with pytest.raises(TrainingError, match=r"step 1: the loss is nan .* were not updated"):
        train(tiny(tokens, tmp_path / "out", init=str(tmp_path / "broken")), progress=False)


def test_lstm_baseline_from_the_command_line(tokens, tmp_path, capsys):
    (tmp_path / "lstm.yaml").write_text(f"data: {tokens}\nout: run\nmodel: lstm\nseq_len: 64\nbatch_size: 16\n"
                                        "lr: 0.01\nwarmup_steps: 10\neval_interval: 0\neval_batches: 5\n")
    assert train_main([str(tmp_path / "lstm.yaml"), "--max-steps", "80", "--device", "cpu", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "unigram entropy of the training tokens: 5." in printed
    end = records(tmp_path / "run", "end")[0]  # out: is relative to the config's folder
    assert end["val_loss"] < end["unigram_entropy"] - 0.3
    assert f"validation loss {end['val_loss']:.4f} nats vs unigram entropy" in printed
    assert json.loads((tmp_path / "run/latest/config.json").read_text())["architecture"] == "lstm"
    # The same output folder again without --resume is refused rather than overwritten.
    assert train_main([str(tmp_path / "lstm.yaml"), "--max-steps", "80", "-q"]) == 2
    assert "add --resume" in capsys.readouterr().err


def test_config_errors_name_the_option(tmp_path):
    (tmp_path / "c.yaml").write_text("data: tokens\nout: run\nwarmup: 10\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown option 'warmup' — did you mean 'warmup_steps'\?"):
        load_train_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="unknown size 'huge'"):
        load_train_config(None, {"data": "t", "out": "o", "size": "huge"})
    with pytest.raises(ConfigError, match="data_weights has 1 entries, data has 2"):
        load_train_config(None, {"data": ["a", "b"], "out": "o", "data_weights": [1]})
    with pytest.raises(ConfigError, match="init takes the model from the checkpoint"):
        load_train_config(None, {"data": "t", "out": "o", "init": "ckpt", "size": "small"})
    config = load_train_config(None, {"data": "t", "out": "o", "model_args.n_layer": 3})
    assert config.model_args == {"n_layer": 3}


def test_schedule_and_presets():
    config = TrainConfig(data=["t"], out="o", lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    assert lr_at(0, config) < lr_at(5, config) < lr_at(10, config) == pytest.approx(1e-3)
    assert lr_at(60, config) == pytest.approx(5.5e-4) and lr_at(110, config) == pytest.approx(1e-4)
    with torch.device("meta"):  # shapes only: no memory, no time
        gpt2 = GPT(GPTConfig(vocab_size=50257, block_size=1024, **GPT_PRESETS["gpt2-124m"]))
    assert 120e6 < count_parameters(gpt2) < 128e6


def test_the_cli_module_does_not_import_torch():
    code = "import sys, training.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"

"""The model card an export writes (README.md): Hub metadata that parses, and numbers equal to the checkpoint's
config, the shards' meta.json and the training log, for a tiny GPT trained on a real run's shards."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

from refinery.pipelines.commands.card import write_card
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.training.config import TrainConfig
from refinery.training.export import export_llama
from refinery.training.model import GPT, GPTConfig, count_parameters
from refinery.training.model_card import MARKER
from refinery.training.train import train

huggingface_hub = pytest.importorskip("huggingface_hub")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(data: Path | list[str], out: Path, **options) -> TrainConfig:
    """A tiny GPT for a few tens of steps: checkpoints and validation every 10."""
    values = dict(data=data if isinstance(data, list) else [str(data)], out=str(out), seq_len=64, batch_size=8,
                  max_steps=30, lr=3e-3, eval_interval=10, eval_batches=2, checkpoint_interval=10, keep_checkpoints=0,
                  log_interval=5, device="cpu")
    return TrainConfig(**{**values, **options})


def log_records(out: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["kind"] == kind]


def split_card(path: Path) -> tuple[dict, str]:
    """The card's metadata (parsed) and its prose."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory) -> Path:
    """Tiny Shakespeare, one document per paragraph, language-identified and tokenized, with its dataset card."""
    folder = tmp_path_factory.mktemp("run")
    recipe = {"name": "shakespeare-en", "output": "out",
              "inputs": [{"path": str(data_dir / "text/tinyshakespeare.txt"), "unit": "paragraph"}],
              "stages": [{"langid": {"keep": ["en"]}}, {"tokenize": {"vocab_size": 512, "validation_fraction": 0.1}}]}
    (folder / "r.yaml").write_text(json.dumps(recipe))
    run_dir = run_recipe(load_recipe(folder / "r.yaml"), workers=2, progress=False).run_dir
    assert write_card(run_dir) == run_dir / "README.md"
    return run_dir


@pytest.fixture(scope="module")
def trained(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "gpt"
    train(tiny(run / "tokens", out), progress=False)
    return out


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    return export_llama(trained, tmp_path_factory.mktemp("export") / "gpt-tiny-hf")


def test_the_front_matter_carries_the_hub_metadata(exported, trained):
    meta, body = split_card(exported / "README.md")
    assert body.lstrip().startswith(MARKER)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert (meta["license"], meta["license_name"]) == ("other", "unknown")  # nobody gave one: said plainly
    assert meta["language"] == ["en"]  # from the run's dataset card (its langid stage)
    assert meta["datasets"] == ["shakespeare-en"] and meta["tags"] == ["refinery", "llama"]
    assert "base_model" not in meta  # trained from scratch
    [index] = meta["model-index"]
    [result] = index["results"]
    assert index["name"] == "gpt-tiny-hf" and result["task"]["type"] == "text-generation"
    assert result["dataset"] == {"name": "shakespeare-en (validation split)", "type": "shakespeare-en",
                                 "split": "validation"}
    val_loss = log_records(trained, "val")[-1]["val_loss"]
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"loss": round(val_loss, 4),
                                                                  "perplexity": round(math.exp(val_loss), 2)}


def test_the_numbers_are_the_checkpoints_the_shards_and_the_logs(exported, trained, run):
    _, body = split_card(exported / "README.md")
    config = json.loads((trained / "latest/config.json").read_text())
    model = config["model"]
    for row in (f"| layers × width (heads) | {model['n_layer']} × {model['n_embd']} ({model['n_head']}) |",
                f"| vocabulary | {model['vocab_size']:,} tokens |",
                f"| context length | {model['block_size']:,} tokens |",
                f"| MLP hidden size | {model['mlp_hidden']:,} |", "| checkpoint | step 30 of 30 |",
                f"| tokens seen | {config['tokens_seen']:,} ("):
        assert row in body, row
    assert f"| parameters | {count_parameters(GPT(GPTConfig(**model))):,} (" in body
    train_meta = json.loads((run / "tokens/train/meta.json").read_text())
    validation_meta = json.loads((run / "tokens/validation/meta.json").read_text())
    assert (f"| `shakespeare-en` | 1 | {train_meta['documents']:,} | {train_meta['tokens']:,} | "
            f"{validation_meta['documents']:,} | {validation_meta['tokens']:,} | "
            f"tinyshakespeare: {train_meta['tokens_per_source']['tinyshakespeare']:,} |") in body
    assert f"fingerprint `{train_meta['tokenizer_fingerprint']}`" in body
    last_train, last_val = log_records(trained, "train")[-1], log_records(trained, "val")[-1]
    unigram = log_records(trained, "end")[-1]["unigram_entropy"]
    assert f"| training loss (last logged) | {last_train['loss']:.4f} | 30 |" in body
    assert f"| validation loss | {last_val['val_loss']:.4f} (perplexity {math.exp(last_val['val_loss']):.2f}) | 30 |" \
        in body
    assert f"| unigram entropy of the training tokens | {unigram:.4f} |" in body
    assert "not for production" in body and "AutoModelForCausalLM.from_pretrained" in body


def test_the_run_is_named_and_its_dataset_card_linked(exported, run):
    _, body = split_card(exported / "README.md")
    assert "the Refinery run `shakespeare-en` (recipe stages: `langid`, `train_tokenizer`, `tokenize`)" in body
    [link] = [line.split("dataset card: ")[1] for line in body.splitlines() if "dataset card: [" in line]
    target = unquote(link[link.index("](") + 2:link.rindex(")")])
    assert not Path(target).is_absolute() and (exported / target).resolve() == (run / "README.md").resolve()


def test_huggingface_hub_loads_the_card(exported, trained):
    card = huggingface_hub.ModelCard.load(exported / "README.md")  # a local file: no network
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.license) == ("transformers", "text-generation", "other")
    assert data.license_name == "unknown" and data.language == ["en"] and data.datasets == ["shakespeare-en"]
    assert data.model_name == "gpt-tiny-hf"
    loss = next(r for r in data.eval_results if r.metric_type == "loss")
    assert loss.dataset_split == "validation"
    assert loss.metric_value == round(log_records(trained, "val")[-1]["val_loss"], 4)
    assert "## Training data" in card.text


def test_an_older_checkpoint_gets_the_losses_of_its_own_step(trained, tmp_path):
    folder = export_llama(trained / "step-000010", tmp_path / "hf")
    meta, body = split_card(folder / "README.md")
    at_10 = {r["kind"]: r for r in map(json.loads, (trained / "log.jsonl").read_text().splitlines())
             if r.get("step") == 10 and r["kind"] in ("train", "val")}
    assert "| checkpoint | step 10 of 30 |" in body
    assert f"| training loss (last logged) | {at_10['train']['loss']:.4f} | 10 |" in body
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == round(at_10["val"]["val_loss"], 4)


def test_a_readme_of_the_users_is_never_replaced(trained, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("# My model\n\nWritten by hand.\n")
    export_llama(trained, mine)
    assert (mine / "README.md").read_text() == "# My model\n\nWritten by hand.\n"
    assert "left as it is" in capsys.readouterr().out and (mine / "model.safetensors").exists()

    ours = tmp_path / "ours"
    mask = os.umask(0o027)  # a stricter umask than the usual: the card and every file must follow it
    try:
        export_llama(trained, ours)
        card = (ours / "README.md").read_text()
        (ours / "README.md").write_text(card.replace("## Model", "## Model (edited)"))  # the marker stays: ours
        export_llama(trained, ours)
    finally:
        os.umask(mask)
    assert (ours / "README.md").read_text() == card
    assert {path.name: path.stat().st_mode & 0o777 for path in ours.iterdir()} == \
        {name: 0o640 for name in ("README.md", "config.json", "generation_config.json", "model.safetensors",
                                  "tokenizer.json", "tokenizer_config.json")}
    assert not [path for path in ours.iterdir() if path.name.startswith(".")]  # no temp files left behind


def test_a_fine_tuned_model_names_its_base_model(trained, run, tmp_path):
    init = str(trained / "latest")
    train(tiny(run / "tokens", tmp_path / "sft", init=init, max_steps=4, eval_interval=0, checkpoint_interval=0),
          progress=False)
    folder = export_llama(tmp_path / "sft", tmp_path / "hf")
    meta, body = split_card(folder / "README.md")
    assert meta["base_model"] == init and f"| initialisation | the checkpoint `{init}` |" in body
    assert huggingface_hub.ModelCard.load(folder / "README.md").data.base_model == init


def test_a_checkpoint_away_from_its_data_and_log_still_gets_a_card(trained, tmp_path):
    moved = tmp_path / "moved" / "step-000030"
    shutil.copytree(trained / "step-000030", moved)
    config = json.loads((moved / "config.json").read_text())
    config["train"]["data"] = ["gone/tokens"]
    (moved / "config.json").write_text(json.dumps(config))
    meta, body = split_card(export_llama(moved, tmp_path / "hf") / "README.md")
    assert "`gone/tokens`: not found from" in body and "training loss (last logged)" not in body
    assert "was not found or does not record this checkpoint" in body
    assert f"| validation loss | {config['val_loss']:.4f} (" in body  # the checkpoint keeps its last one
    assert "datasets" not in meta and "language" not in meta
    assert huggingface_hub.ModelCard.load(tmp_path / "hf" / "README.md").data.eval_results


def test_a_mix_gets_each_folders_numbers_and_only_this_checkpoints_evaluation(run, data_dir, tmp_path):
    """Two runs with one tokenizer (the second without a dataset card), mixed 3:1; validated only at the end."""
    recipe = {"name": "wiki", "output": "out", "inputs": [{"path": str(data_dir / "text/wikitext-2-valid.txt"),
                                                           "unit": "paragraph"}],
              "stages": [{"tokenize": {"tokenizer": str(run / "tokens/tokenizer.json"), "validation_fraction": 0.1}}]}
    (tmp_path / "wiki.yaml").write_text(json.dumps(recipe))
    wiki = run_recipe(load_recipe(tmp_path / "wiki.yaml"), workers=2, progress=False).run_dir
    data = [str(run / "tokens"), str(wiki / "tokens")]
    out = tmp_path / "gpt"
    train(tiny(data, out, data_weights=[3, 1], max_steps=20, eval_interval=20), progress=False)
    meta, body = split_card(export_llama(out, tmp_path / "hf") / "README.md")
    last_val = log_records(out, "val")[-1]
    assert last_val["step"] == 20 and meta["datasets"] == ["shakespeare-en", "wiki"]
    assert [r["dataset"]["type"] for r in meta["model-index"][0]["results"]] == ["shakespeare-en", "wiki"]
    for folder in data:
        assert f"| validation loss of `{folder}` | {last_val['by_source'][folder]:.4f} (" in body
    assert f"| validation loss, mixed by weight | {last_val['val_loss']:.4f} | 20 |" in body
    assert "| `shakespeare-en` | 0.75 |" in body and "| `wiki` | 0.25 |" in body
    assert "the run has no dataset card" in body and "`wiki`: unknown (no dataset card)" in body

    meta, body = split_card(export_llama(out / "step-000010", tmp_path / "hf10") / "README.md")
    assert "model-index" not in meta  # the last validation before step 10 was at step 0: not this model's
    assert f"| validation loss, mixed by weight | {log_records(out, 'val')[0]['val_loss']:.4f} | 0 |" in body


def test_the_export_command_takes_the_licence_and_names_the_card(trained, tmp_path, capsys):
    from refinery.training.eval_cli import main as eval_main

    out = tmp_path / "hf"
    assert eval_main(["export", str(trained), str(out), "--license", "apache-2.0"]) == 0
    meta, _ = split_card(out / "README.md")
    assert meta["license"] == "apache-2.0" and "license_name" not in meta
    assert f"its model card is {out / 'README.md'}" in capsys.readouterr().out

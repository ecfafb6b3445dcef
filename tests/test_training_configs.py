"""The training config the docs show ships with Refinery: `refinery train gpt --data RUN --out OUT` uses it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.training.config import ConfigError, load_train_config


def test_the_shipped_config_is_found_by_name_and_flags_override_it():
    config = load_train_config("gpt", {"data": ["run/tokens"], "out": "out/gpt"})
    assert (config.model, config.size, config.seq_len, config.lr) == ("gpt", "small", 512, 6.0e-4)
    assert config.data == ["run/tokens"] and config.out == "out/gpt"  # from the flags, as the user typed them
    assert load_train_config("gpt.yaml", {"data": ["d"], "out": "o", "size": "tiny"}).size == "tiny"
    with pytest.raises(ConfigError, match=r"training config gtp does not exist \(the configs Refinery ships: gpt\)"):
        load_train_config("gtp", {"data": ["d"], "out": "o"})


def test_refinery_train_gpt_runs(data_dir, write_recipe, tmp_path):
    recipe = write_recipe([{"path": str(data_dir / "text/c4_demo.jsonl")}],
                          [{"tokenize": {"tokenizer": "train", "vocab_size": 300, "validation_fraction": 0.1}}])
    run_dir = run_recipe(load_recipe(recipe), workers=1, progress=False).run_dir
    done = subprocess.run([sys.executable, "-m", "refinery.pipelines", "train", "gpt", "--data", str(run_dir),
                           "--out", str(tmp_path / "gpt"), "--size", "tiny", "--max-steps", "2", "--seq-len", "32",
                           "--batch-size", "2", "--grad-accum", "1", "--device", "cpu", "--quiet",
                           "--set", "eval_interval=2", "--set", "eval_batches=1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "gpt" / "latest").exists()

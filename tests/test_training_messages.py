"""Messages of `refinery train` (and of the token tools it leans on) whose advice a first-time user follows:
each test checks the message, then does what it says and checks that it works."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from refinery.corpora.atomic import temp_name
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.tokenization.inspect import describe
from refinery.training.cli import interrupted_advice
from refinery.training.cli import main as train_main
from refinery.training.config import ConfigError, TrainConfig, load_train_config
from refinery.training.eval_cli import main as model_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]
# A tiny GPT that still takes a few seconds for 120 steps: long enough to be interrupted between checkpoints.
TINY = ["--device", "cpu", "-q", "--seq-len", "64", "--batch-size", "8", "--set", "model_args.n_layer=1", "--set",
        "log_interval=1"]


def wiki_recipe(folder: Path, data_dir: Path, **tokenize) -> Path:
    """30 real Wikipedia articles, one document each: a run small enough that 1% holds out no document."""
    recipe = {"name": "wiki", "output": "run", "inputs": [{"path": str(data_dir / "text/wiki_demo.txt"),
                                                            "unit": "line"}],
              "stages": [{"tokenize": {"vocab_size": 512, **tokenize}}]}
    (folder / "wiki.yaml").write_text(json.dumps(recipe))
    return folder / "wiki.yaml"


@pytest.fixture(scope="module")
def small_run(data_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    return run_recipe(load_recipe(wiki_recipe(folder, data_dir)), workers=1, progress=False).run_dir


def records(out: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_an_empty_validation_split_is_explained_and_training_goes_on_without_it(data_dir, tmp_path, capsys):
    small_run = run_recipe(load_recipe(wiki_recipe(tmp_path, data_dir)), workers=1, progress=False).run_dir
    described = describe(small_run / "tokens")
    assert "documents 30   tokens" in described  # the training split is still described
    assert ("the validation split " in described and "is empty: validation_fraction 0.01 of the run's 30 documents "
            "held out none" in described)
    assert "set validation_fraction: 0.2 in the recipe's tokenize stage" in described
    assert "kept no documents" not in described

    # No validation split: train evaluates nothing, says so and why, and finishes.
    command = ["--data", str(small_run / "tokens"), "--max-steps", "20", "--set", "eval_interval=10", *TINY]
    assert train_main([*command, "--out", str(tmp_path / "without")]) == 0
    printed = capsys.readouterr().out
    assert "no validation loss for" in printed and "held out none" in printed
    assert "training without validation: nothing is evaluated" in printed
    assert "set validation_fraction in the tokenize stage" not in printed  # the old advice: it was set
    assert records(tmp_path / "without", "val") == [] and records(tmp_path / "without", "end")[0]["val_loss"] is None

    # The advice: a larger fraction in the recipe's tokenize stage, rerun with --force.
    run_recipe(load_recipe(wiki_recipe(tmp_path, data_dir, validation_fraction=0.2)), workers=1, force=True,
               progress=False)
    assert "is empty" not in describe(small_run / "tokens")
    assert train_main([*command, "--out", str(tmp_path / "with")]) == 0
    printed = capsys.readouterr().out
    assert "no validation loss" not in printed and "done: step 20, validation loss" in printed
    assert [r["step"] for r in records(tmp_path / "with", "val")] == [0, 10, 20]


def refinery(*args: str, cwd: Path, **popen) -> subprocess.Popen:
    """`refinery ARGS` in a process of its own (one thread: other tests share the cores)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "refinery.pipelines", *args], cwd=cwd, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_ctrl_c_prints_the_command_that_resumes_and_it_resumes_exactly(small_run, tmp_path):
    command = ["--data", str(small_run / "tokens"), "--max-steps", "120", "--set", "checkpoint_interval=5", *TINY]
    run = refinery("train", *command, "--out", "gpt", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (tmp_path / "gpt/latest").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert "rerun the same command" not in stderr
    advice = stderr.strip().splitlines()
    assert advice[-2].startswith("interrupted: the last checkpoint is step ") and "Resume with:" in advice[-2]
    assert advice[-1] == "  refinery train --resume --out gpt"
    stopped_at = int(advice[-2].split("step ")[1].split()[0])
    assert 5 <= stopped_at < 120
    leftover = temp_name(tmp_path / "gpt/step-000999")  # as a run killed while writing a checkpoint leaves it
    leftover.mkdir()

    resumed = refinery(*shlex.split(advice[-1])[1:], cwd=tmp_path)
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert f"resuming from step {stopped_at} (gpt/step-{stopped_at:06d}); {120 - stopped_at} steps to go" in stdout
    assert not leftover.exists()

    # The same command never interrupted: the same losses and the same weights.
    assert train_main([*command, "--out", str(tmp_path / "whole")]) == 0
    losses = {r["step"]: r["loss"] for r in records(tmp_path / "gpt", "train")}
    assert sorted(losses) == list(range(1, 121))
    assert losses == {r["step"]: r["loss"] for r in records(tmp_path / "whole", "train")}
    weights = "step-000120/model.safetensors"
    assert (tmp_path / "gpt" / weights).read_bytes() == (tmp_path / "whole" / weights).read_bytes()


def test_resume_with_no_checkpoint_says_so_and_what_to_do(small_run, tmp_path, capsys):
    assert train_main(["--resume"]) == 2
    assert "--resume needs the run's output folder: add --out OUT" in capsys.readouterr().err
    assert train_main(["--resume", "--out", str(tmp_path / "gpt")]) == 2
    assert f"nothing to resume: {tmp_path / 'gpt'} does not exist; start the run without --resume" in \
        capsys.readouterr().err
    (tmp_path / "gpt").mkdir()  # as a run interrupted before its first checkpoint leaves it
    (tmp_path / "gpt/log.jsonl").write_text("")
    assert train_main(["--resume", "--out", str(tmp_path / "gpt")]) == 2
    assert "holds no checkpoint yet" in capsys.readouterr().err
    assert "nothing to resume; rerun the same command to start again" in interrupted_advice(tmp_path / "gpt")
    assert train_main(["--data", str(small_run / "tokens"), "--out", str(tmp_path / "gpt"), "--max-steps", "5",
                       *TINY]) == 0
    assert records(tmp_path / "gpt", "end")[0]["step"] == 5
    # A checkpoint given instead of OUT: its folder is the run's, and max_steps may be raised on the way.
    assert train_main(["--resume", str(tmp_path / "gpt/latest"), "--max-steps", "8", "-q"]) == 0
    assert "resuming from step 5" in capsys.readouterr().out
    assert records(tmp_path / "gpt", "end")[0]["step"] == 8


def test_warmup_follows_a_short_run_unless_set(tmp_path, capsys):
    assert TrainConfig(data=["t"], out="o", max_steps=20).warmup == 2
    assert TrainConfig(data=["t"], out="o").warmup == 100  # the default run warms up as it always did
    assert TrainConfig(data=["t"], out="o", max_steps=50_000).warmup == 100
    assert TrainConfig(data=["t"], out="o", max_steps=20, warmup_steps=0).warmup == 0
    with pytest.raises(ConfigError, match=r"warmup_steps 100 is longer than max_steps 20: lower it "
                                          r"\(--set warmup_steps=2\) or leave it out"):
        load_train_config(None, {"data": "t", "out": "o", "max_steps": 20, "warmup_steps": 100})
    assert load_train_config(None, {"data": "t", "out": "o", "max_steps": 20, "warmup_steps": 2}).warmup == 2


@pytest.mark.parametrize(("flags", "message"), [
    (["--max-steps", "0"], "command line (--max-steps): max_steps 0: Input should be greater than or equal to 1"),
    (["--batch-size", "0"], "command line (--batch-size): batch_size 0: Input should be greater than or equal to 1"),
    (["--lr", "-0.001"], "command line (--lr): lr -0.001: Input should be greater than 0"),
    (["--lr", "nan"], "command line (--lr): lr nan: Input should be a finite number"),
    (["--grad-accum", "0"], "command line (--grad-accum): grad_accum 0: Input should be greater than or equal to 1"),
    (["--seq-len", "1"], "command line (--seq-len): seq_len 1: Input should be greater than or equal to 2"),
    (["--seed", "-1"], "command line (--seed): seed -1: Input should be greater than or equal to 0"),
    (["--set", "eval_batches=0"], "command line (--set eval_batches): eval_batches 0: Input should be greater"),
])
def test_nonsensical_numbers_are_refused_naming_the_flag(flags, message, tmp_path, capsys):
    assert train_main(["--data", "tokens", "--out", str(tmp_path / "gpt"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "gpt").exists()


def test_checkpoints_and_exports_get_the_permissions_of_the_users_umask(small_run, tmp_path):
    umask = os.umask(0o027)
    try:
        assert train_main(["--data", str(small_run / "tokens"), "--out", str(tmp_path / "gpt"), "--max-steps", "4",
                           *TINY]) == 0
        assert model_main(["export", str(tmp_path / "gpt"), str(tmp_path / "hf")]) == 0
    finally:
        os.umask(umask)
    written = [p for folder in ("gpt", "hf") for p in (tmp_path / folder).rglob("*")]
    assert {p.name for p in written} >= {"model.safetensors", "train_state.pt", "config.json", "log.jsonl",
                                         "loss.png", "tokenizer_config.json", "generation_config.json"}
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in written if not p.is_symlink()}
    expected = {name: oct(0o750 if (tmp_path / name).is_dir() else 0o640) for name in modes}
    assert modes == expected
    assert not [p for p in written if ".tmp" in p.name]


def test_missing_test_data_stops_the_session_at_once_with_one_message(tmp_path):
    environment = {**os.environ, "REFINERY_SHARED_DATA": "/nonexistent"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "missing_test_data",
                             str(REPO / "tests")], cwd=tmp_path, env=environment, capture_output=True, text=True,
                            timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert output.count("the real test data is not at /nonexistent") == 1
    assert "shared/data beside the checkout" in output and "REFINERY_SHARED_DATA" in output
    assert "passed" not in output and "error" not in output.lower()
    assert time.monotonic() - started < 60

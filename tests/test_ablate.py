"""`refinery ablate` through the real CLI: the bundled ablation pair (by name, on two small real input files so
that it takes seconds), the report's structure, resumption (a finished ablation trains nothing; a lost result retrains
only that model, to the same figures), refused changes of settings, the repeat warning; and the t statistics."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from pathlib import Path

import pytest

from refinery.pipelines.commands.ablate_stats import interval, paired_test, t_p_value, t_quantile
from refinery.pipelines.commands.bundled import RECIPES_DIR, bundled_group
from refinery.pipelines.commands.cli import main

SEEDS = 2
OPTIONS = ["--tokens", "8k", "--seeds", str(SEEDS), "--mc-items", "8", "--eval-tokens", "1500",
           "--validation-fraction", "0.2", "-w", "2", "-q"]


@pytest.fixture(scope="module")
def inputs(data_dir) -> list[str]:
    """Two small real files, read by both bundled recipes instead of all the web data, so that the test takes
    seconds; the refined recipe keeps fewer tokens than the budget."""
    return ["--input", str(data_dir / "warc/wget-crawl-0001.warc.gz"),
            "--input", str(data_dir / "warc/cc-main-2024-22-whirlwind.warc.wet.gz")]


def ablate(inputs: list[str], out: Path, capsys, *extra: str) -> tuple[int, str]:
    code = main(["ablate", "ablation", *inputs, *OPTIONS, "--out", str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def finished(inputs, tmp_path_factory, one_torch_thread):
    """The bundled pair by its folder's name, as a user runs it (on the two files); nothing written in the package."""
    out = tmp_path_factory.mktemp("ablation")
    package = set(RECIPES_DIR.rglob("*"))
    buffer = io.StringIO()  # a module fixture has no capsys
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        code = main(["ablate", "ablation", *inputs, *OPTIONS, "--out", str(out)])
    assert set(RECIPES_DIR.rglob("*")) == package
    return code, buffer.getvalue(), out


def figures(out: Path) -> dict:
    report = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    return {name: {seed: result["figures"] for seed, result in recipe["results"].items()}
            for name, recipe in report["recipes"].items()}


def test_the_bundled_pair_is_listed_and_found_by_folder_name():
    assert [b.name for b in bundled_group("ablation")] == ["ablation/raw", "ablation/refined"]
    assert all(b.path.parent == RECIPES_DIR / "ablation" for b in bundled_group("ablation"))


def test_ablation_writes_every_figure_a_table_and_a_verdict(finished):
    code, output, out = finished
    assert code == 0, output
    report = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    assert list(report["recipes"]) == ["raw", "refined"]
    assert report["seeds"] == [0, 1] and report["settings"]["tokens"] == 8_000
    assert len(report["tokenizer"]["sha256"]) == 64
    for name, recipe in report["recipes"].items():
        assert recipe["train_tokens"] > 0 and recipe["kept_documents"] > 0
        for seed, result in recipe["results"].items():
            assert result["tokens_trained"] == report["tokens_trained"]
            sets = result["figures"]
            assert {"wikitext2", "gutenberg-1661-sherlock", "hellaswag", "arc_easy", "piqa", "val:raw",
                    "val:refined"} <= set(sets)
            numbers = [sets["wikitext2"]["mean_nll"], sets["wikitext2"]["bits_per_byte"],
                       sets["gutenberg-1661-sherlock"]["bits_per_byte"], sets["val:raw"]["mean_nll"],
                       *(sets[task]["acc_norm"] for task in ("hellaswag", "arc_easy", "piqa"))]
            assert all(math.isfinite(n) for n in numbers), (name, seed, sets)
            assert sets["hellaswag"]["items"] == 8
            assert [p["step"] for p in result["curve"]][0] == 0 and set(result["curve"][-1]["val_loss"]) == {
                "raw", "refined"}
    summary = report["summary"]["refined"]["WikiText-2 nats/token"]
    assert summary["n"] == SEEDS and summary["ci95"] >= 0
    assert len(report["verdicts"]) == 1
    assert re.match(r"(refined beats raw|raw beats refined|no significant difference between refined and raw) on "
                    r"WikiText-2", report["verdicts"][0])
    assert report["verdicts"][0] in output and f"{SEEDS} seeds" in report["verdicts"][0]
    table = (out / "ablation.md").read_text(encoding="utf-8")
    assert "|  | raw | refined |" in table and "| WikiText-2 nats/token ↓ |" in table and " ± " in table
    assert "|  | raw | refined |" in output
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    assert f"trained {2 * SEEDS} of {2 * SEEDS} models" in output


def test_short_data_is_repeated_with_a_warning_giving_the_epochs(finished):
    code, output, out = finished
    report = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    short = [name for name, recipe in report["recipes"].items() if recipe["train_tokens"] < report["tokens_trained"]]
    assert short, "the test's inputs should leave the refined recipe short of 8k tokens"
    for name in short:
        epochs = report["recipes"][name]["epochs"]
        assert f"warning: {name} has" in output and f"its data is repeated, {epochs:.2f} epochs" in output


def test_a_rerun_trains_nothing_and_a_lost_result_retrains_only_its_model_to_the_same_figures(
        finished, inputs, capsys):
    _, _, out = finished
    before = figures(out)
    code, output = ablate(inputs, out, capsys)
    assert code == 0, output
    assert f"trained 0 of {2 * SEEDS} models" in output and figures(out) == before

    checkpoints = {p: p.stat().st_mtime_ns for p in out.glob("models/*/seed-*/latest/model.safetensors")}
    (out / "results/refined/seed-1.json").unlink()  # as if the ablation was killed while training it
    code, output = ablate(inputs, out, capsys)
    assert code == 0, output
    assert f"trained 1 of {2 * SEEDS} models" in output
    changed = [p for p, mtime in checkpoints.items() if p.stat().st_mtime_ns != mtime]
    assert changed == [out / "models/refined/seed-1/latest/model.safetensors"]
    assert figures(out) == before  # same inputs and seed: the same figures, bit for bit


def test_other_settings_are_refused_not_mixed(finished, inputs, capsys):
    _, _, out = finished
    code, output = ablate(inputs, out, capsys, "--size", "tiny", "--mc-items", "9")
    assert code == 2
    assert "other settings" in output and "--force" in output and "mc_items" in output


def test_the_shared_tokenizer_is_trained_on_equal_shares_and_deterministically(finished):
    from refinery.pipelines.commands.ablate_data import train_shared_tokenizer
    from refinery.tokenization.tokenizer import fingerprint

    _, _, out = finished
    runs = {name: out / "runs" / name for name in ("raw", "refined")}
    first, used = train_shared_tokenizer(runs, 2048, 0.2)
    second, _ = train_shared_tokenizer(runs, 2048, 0.2)
    assert fingerprint(first) == fingerprint(second)
    assert used["raw"] == used["refined"] > 0
    report = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    assert report["tokenizer"]["sha256"] == fingerprint(first)


def test_t_statistics_match_the_tables():
    assert t_quantile(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(9) == pytest.approx(2.2622, abs=1e-4)
    assert t_p_value(2.0, 4) == pytest.approx(0.11612, abs=1e-5)
    assert t_p_value(3.0, 7) == pytest.approx(0.019942, abs=1e-5)
    single = interval([1.5])
    assert single.half_width is None and single.contains_zero()
    test = paired_test([3.0, 3.1, 3.2], [2.9, 3.0, 3.05])
    assert test.difference.mean == pytest.approx(0.11667, abs=1e-4) and 0 < test.p < 0.05

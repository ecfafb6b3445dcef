"""`refinery ablate` through the real CLI: the bundled ablation pair (by name, on two small real input files so
that it takes seconds), the report's structure, the word vectors (equal words, ρ on the real similarity sets), each
run's report showing the ablation, resumption (a finished ablation trains nothing; a lost result retrains only that
model, to the same figures), refused changes of settings, the repeat warning, a given tokenizer; and the t
statistics."""

from __future__ import annotations

import contextlib
import hashlib
import html
import io
import json
import math
import re
from pathlib import Path
from statistics import fmean

import pytest

from refinery.pipelines.commands.ablate_stats import interval, paired_test, t_p_value, t_quantile
from refinery.pipelines.commands.bundled import RECIPES_DIR, bundled_group
from refinery.pipelines.commands.cli import main
from refinery.pipelines.engine.layout import RunLayout
from refinery.tokenization.tokenizer import fingerprint, load_tokenizer

SEEDS = 2
# Word vectors of 16 dimensions in 3 epochs, and every word kept (min count 1): the two files hold about 2,700
# training words of refined, too few for a word seen 5 times to be in a similarity pair.
OPTIONS = ["--tokens", "8k", "--seeds", str(SEEDS), "--mc-items", "8", "--eval-tokens", "1500",
           "--validation-fraction", "0.2", "-w", "2", "-q", "--embedding-dim", "16", "--embedding-epochs", "3",
           "--embedding-min-count", "1"]
MEAN_RHO = re.compile(r"on word similarity \(Spearman's ρ, mean of (\d) sets, known pairs\)")


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
    """Every figure per recipe and seed: the proxy's, and the word vectors' scores."""
    report = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    return {name: {seed: {"proxy": result["figures"], "wordsim": recipe["embeddings"][seed]["wordsim"]}
                   for seed, result in recipe["results"].items()} for name, recipe in report["recipes"].items()}


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
    assert len(report["verdicts"]) == 2  # WikiText-2, then word similarity
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
    assert f"{2 * SEEDS} word-vector models (skipgram, dim 16, 3 epochs): {2 * SEEDS} done, 0 to train" in output

    checkpoints = {p: p.stat().st_mtime_ns for p in out.glob("models/*/seed-*/latest/model.safetensors")}
    vectors = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("embeddings/*/seed-*/skipgram.vec")}
    for lost in ("results/refined/seed-1.json", "embeddings/raw/seed-0.json"):  # as if killed while training them
        (out / lost).unlink()
    code, output = ablate(inputs, out, capsys)
    assert code == 0, output
    assert f"trained 1 of {2 * SEEDS} models" in output and ": 3 done, 1 to train" in output
    changed = [p for p, mtime in checkpoints.items() if p.stat().st_mtime_ns != mtime]
    assert changed == [out / "models/refined/seed-1/latest/model.safetensors"]
    changed = [p for p, (mtime, _) in vectors.items() if p.stat().st_mtime_ns != mtime]
    assert changed == [out / "embeddings/raw/seed-0/skipgram.vec"]
    assert all(p.read_bytes() == data for p, (_, data) in vectors.items())  # one thread: byte-identical vectors
    assert figures(out) == before  # same inputs and seed: the same figures, bit for bit


def test_other_settings_are_refused_not_mixed(finished, inputs, capsys):
    _, _, out = finished
    code, output = ablate(inputs, out, capsys, "--size", "tiny", "--mc-items", "9")
    assert code == 2
    assert "other settings" in output and "--force" in output and "mc_items" in output
    code, output = ablate(inputs, out, capsys, "--embedding-dim", "17")
    assert code == 2
    assert f"{out / 'embeddings'} holds word vectors made with other settings: dim 16 → 17" in output
    assert "--no-embeddings" in output and "trained 0 of" in output  # the models were all there


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


def test_word_vectors_train_on_the_same_words_of_every_recipe_and_are_scored_on_every_set(finished, data_dir):
    _, output, out = finished
    report = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    vectors = report["embeddings"]
    assert vectors["model"] == "skipgram" and vectors["dim"] == 16 and vectors["min_count"] == 1
    assert vectors["epochs"] == 3
    sets = sorted(p.stem for p in (data_dir / "wordsim").glob("*.txt"))
    assert sorted(vectors["wordsim"]) == sets and len(sets) == 5
    for name, recipe in report["recipes"].items():
        scores = [recipe["embeddings"][str(seed)] for seed in range(SEEDS)]
        assert all(s["words"] == vectors["words"] > 0 for s in scores), name  # the same budget for all
        assert sorted(scores[0]["wordsim"]) == sets
        for s in scores:  # the vocabulary, and so the known pairs, do not depend on the seed
            assert s["vocabulary"] == scores[0]["vocabulary"]
            assert {k: v["known_pairs"] for k, v in s["wordsim"].items()} == {
                k: v["known_pairs"] for k, v in scores[0]["wordsim"].items()}
        assert scores[0]["wordsim"] != scores[1]["wordsim"]  # the seeds train different vectors
        assert (out / "embeddings" / name / "seed-0/skipgram.bin").is_file()
    # The mean is over the sets scored for every recipe and seed: those with two known pairs or more.
    scored = vectors["scored_sets"]
    assert 1 <= len(scored) < 5 and "EN-RG-65" not in scored
    label = f"word similarity ρ, mean of {len(scored)} sets (known pairs)"
    for name, recipe in report["recipes"].items():
        per_seed = [fmean(recipe["embeddings"][str(seed)]["wordsim"][s]["rho_known"] for s in scored)
                    for seed in range(SEEDS)]
        assert report["summary"][name][label]["mean"] == pytest.approx(fmean(per_seed))
    assert MEAN_RHO.search(report["verdicts"][1]).group(1) == str(len(scored))
    assert report["verdicts"][1] in output
    table = (out / "ablation.md").read_text(encoding="utf-8")
    assert f"| {label} ↑ |" in table and "| EN-WS-353-ALL pairs known ↑ |" in table
    words = f"{vectors['words']:,}"
    assert re.search(rf"\| word vectors: training words \(vocabulary\) \| {words} \([\d,]+\) \| {words} ", table)


def test_automatic_epochs_give_a_small_budget_more_passes():
    from refinery.pipelines.commands.ablate_embeddings import auto_epochs

    assert [auto_epochs(words) for words in (2_672, 242_937, 600_000, 2_000_000)] == [25, 25, 10, 5]


def test_the_word_budget_is_the_smallest_recipes_training_words_taken_in_id_hash_order(finished):
    from refinery.pipelines.commands.ablate_data import training_texts
    from refinery.pipelines.commands.ablate_embeddings import budget_texts
    from refinery.pipelines.commands.word_vectors import words
    from refinery.tokenization.builder import SplitPlan

    _, _, out = finished
    runs = {name: out / "runs" / name for name in ("raw", "refined")}
    training = {name: [" ".join(words(t)) for t in training_texts(run, SplitPlan(0.2))] for name, run in runs.items()}
    texts, budget = budget_texts(runs, 0.2, 10**9)
    assert budget == min(sum(len(t.split()) for t in docs) for docs in training.values())
    texts, budget = budget_texts(runs, 0.2, 500)  # a cap below both
    assert budget == 500
    for name, docs in texts.items():
        assert sum(len(t.split()) for t in docs) == 500
        assert docs[:-1] == training[name][:len(docs) - 1]  # whole documents, the last one cut at a word
        assert training[name][len(docs) - 1].startswith(docs[-1])


def test_each_run_report_shows_the_ablation(finished):
    from test_report import Loads, Tables

    _, output, out = finished
    report = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    for name in ("raw", "refined"):
        layout = RunLayout(out / "runs" / name)
        assert layout.ablation in layout.entries()  # `refinery run --force` deletes it with the data
        summary = json.loads(layout.ablation.read_text(encoding="utf-8"))
        assert summary["recipe"] == name and summary["verdicts"] == report["verdicts"]
        page = layout.report.read_text(encoding="utf-8")
        assert f"run report of {name}, with the ablation: {layout.report}" in output
        header, *rows = Tables(page).tables["ablation"][0]
        assert header == ["", *(f"{n} (this run)" if n == name else n for n in ("raw", "refined"))]
        assert rows == summary["table"][1:]
        shown = next(row for row in rows if row[0] == "WikiText-2 nats/token ↓")
        wikitext = report["summary"][name]["WikiText-2 nats/token"]
        assert shown[header.index(f"{name} (this run)")] == f"{wikitext['mean']:.4f} ± {wikitext['ci95']:.4f}"
        assert all(f"<li>{html.escape(v)}</li>" in page for v in report["verdicts"])
        assert Loads(page).found == [] and str(out / "ablation.md") in page
        assert main(["report", str(layout.root), "-o", str(out / f"{name}-again.html")]) == 0
        assert (out / f"{name}-again.html").read_text(encoding="utf-8") == page  # `refinery report` shows it too


def test_a_given_tokenizer_encodes_every_recipe_and_no_run_report_or_vectors_when_told(finished, inputs,
                                                                                         tmp_path, capsys):
    _, _, first = finished
    given = tmp_path / "given-tokenizer.json"
    given.write_bytes((first / "tokenizer.json").read_bytes())
    out = tmp_path / "given"
    code, output = ablate(inputs, out, capsys, "--tokenizer", str(given), "--seeds", "1", "--no-embeddings",
                          "--no-report")
    assert code == 0, output
    assert "training the shared tokenizer" not in output and "word-vector" not in output
    assert fingerprint(load_tokenizer(out / "tokenizer.json")) == fingerprint(load_tokenizer(given))
    settings = json.loads((out / "settings.json").read_text(encoding="utf-8"))
    assert settings["tokenizer"] == {"file": str(given), "sha256": hashlib.sha256(given.read_bytes()).hexdigest()}
    report = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    assert report["tokenizer"]["sha256"] == fingerprint(load_tokenizer(given)) and "embeddings" not in report
    for name in ("raw", "refined"):  # the same tokenizer and documents: the same shards, token for token
        for split in ("train", "validation"):
            ours, theirs = (sorted((root / "tokens" / name / split).glob("*.bin")) for root in (out, first))
            assert [p.read_bytes() for p in ours] == [p.read_bytes() for p in theirs] != []
        assert not (out / "runs" / name / "report.html").exists() and (out / "runs" / name / "ablation.json").exists()
    assert not (out / "embeddings").exists()

    given.write_text(given.read_text(encoding="utf-8") + "\n", encoding="utf-8")  # another file, the same tokens
    code, output = ablate(inputs, out, capsys, "--tokenizer", str(given), "--seeds", "1", "--no-embeddings")
    assert code == 2 and "tokenizer" in output and "other settings" in output  # another file: refused


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

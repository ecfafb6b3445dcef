"""`refinery embeddings` on real text: a run built by the engine from C4 documents, word vectors trained on it
with fastText, their neighbours and analogies, and their scores on the real word-similarity sets."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from refinery.pipelines.commands.cli import main
from refinery.pipelines.commands.word_vectors import kept_texts, train_embeddings, words
from refinery.pipelines.commands.wordsim import average_ranks, spearman

# Tiny vectors: enough to check every file and number, a few seconds on a busy core.
TINY = ["--dim", "24", "--epochs", "3", "--min-count", "3", "--bucket", "20000", "--quiet"]
SETS = {"EN-WS-353-ALL": 353, "EN-SIMLEX-999": 999, "EN-MEN-TR-3k": 3000, "EN-MTurk-771": 771, "EN-RG-65": 65}


def make_run(folder: Path, inputs: list[dict]) -> Path:
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": folder.name, "inputs": inputs, "stages": [], "output": "run"}))
    assert main(["run", str(recipe), "--quiet", "--no-report", "--workers", "1"]) == 0
    return folder / "run"


@pytest.fixture(scope="module")
def c4_run(data_dir, tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("c4"), [{"path": str(data_dir / "text/c4_demo.jsonl")}])


@pytest.fixture(scope="module")
def trained(c4_run) -> Path:
    assert main(["embeddings", "train", str(c4_run), *TINY]) == 0
    return c4_run / "embeddings" / "skipgram.bin"


def vec_words(model: Path) -> list[str]:
    return [line.split(" ", 1)[0] for line in model.with_suffix(".vec").read_text(encoding="utf-8").splitlines()[1:]]


def test_words_are_lowercased_with_punctuation_stripped_at_their_ends_only():
    text = 'The dog, "barked" (LOUDLY) -- at U.S. e-mail @-@ <unk> don\'t = café… $5'
    assert words(text) == ["the", "dog", "barked", "loudly", "at", "u.s", "e-mail", "<unk>", "don't", "café", "$5"]


def test_spearman_ranks_ties_by_their_average():
    assert average_ranks([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert spearman([1, 2, 3], [5, 5, 5]) is None and spearman([1], [2]) is None
    stats = pytest.importorskip("scipy.stats")
    x, y = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3], [2, 7, 1, 8, 2, 8, 1, 8, 2, 8]
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_train_writes_the_model_and_vectors_of_every_word_seen_often_enough(trained, c4_run):
    assert trained.is_file() and trained.with_suffix(".json").is_file()
    lines = trained.with_suffix(".vec").read_text(encoding="utf-8").splitlines()
    count, dim = map(int, lines[0].split())
    assert dim == 24 and count == len(lines) - 1
    assert all(len(line.split()) == dim + 1 for line in lines[1:])
    # The vocabulary is exactly the prepared words seen 3 times or more, and fastText's end-of-line token.
    seen = Counter(word for text in kept_texts(c4_run) for word in words(text))
    assert set(vec_words(trained)) == {w for w, n in seen.items() if n >= 3} | {"</s>"}
    assert not list(trained.parent.glob(".*"))  # the training text (a temp file) is gone


def test_query_gives_k_neighbours_without_the_word(trained, capsys):
    assert main(["embeddings", "query", str(trained), "Water,", "--k", "7"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("nearest neighbours of 'water'")
    neighbours = re.findall(r"^\s+(-?[\d.]+)\s+(\S+)$", out, re.M)
    assert len(neighbours) == 7 and "water" not in [word for _, word in neighbours]
    scores = [float(score) for score, _ in neighbours]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)


def test_analogy_leaves_out_its_three_words(trained, c4_run, capsys):
    # MODEL may be the run folder: its one model in embeddings/ is used.
    assert main(["embeddings", "analogy", str(c4_run), "water", "hot", "cold", "--k", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("water - hot + cold (hot : water = cold : ?)")
    answers = re.findall(r"^\s+-?[\d.]+\s+(\S+)$", out, re.M)
    assert len(answers) == 5 and not {"water", "hot", "cold"} & set(answers)


def test_eval_scores_every_set_over_known_and_all_pairs(trained, data_dir, capsys):
    assert main(["embeddings", "eval", str(trained), "--sets", str(data_dir / "wordsim")]) == 0
    out = capsys.readouterr().out
    rows = {m[0]: m[1:] for m in re.findall(r"^(EN-\S+)\s+([\d,]+)/([\d,]+)\s+(\S+)\s+(\S+)$", out, re.M)}
    assert set(rows) == set(SETS)
    vocabulary = set(vec_words(trained))
    for name, (known, total, rho_known, rho_all) in rows.items():
        pairs = [line.lower().split()[:2] for line in (data_dir / "wordsim" / f"{name}.txt").read_text().splitlines()]
        assert int(total.replace(",", "")) == SETS[name] == len(pairs)
        assert int(known.replace(",", "")) == sum(a in vocabulary and b in vocabulary for a, b in pairs)
        for rho in (float(rho_known), float(rho_all)):
            assert math.isfinite(rho) and -1 <= rho <= 1


def test_one_thread_and_a_seed_give_byte_identical_vectors(c4_run, tmp_path):
    # Small matrices come from reused heap memory: before the zero-filling (word_vectors.FULL_INIT_THREADS) the
    # part fastText leaves uninitialised made these differ, or fail with "Encountered NaN".
    texts = list(kept_texts(c4_run))[:100]
    vectors = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        model = train_embeddings(texts, tmp_path / name, dim=16, epochs=2, min_count=3, bucket=10000, seed=seed)
        vectors.append(model.with_suffix(".vec").read_bytes())
    assert vectors[0] == vectors[1]
    assert vectors[0] != vectors[2]  # the seed reaches fastText's trainer (which alone takes 0 for 1)


def test_user_errors_say_what_to_do_and_exit_2(trained, tmp_path, capsys):
    assert main(["embeddings", "query", str(trained), "qzxvwq"]) == 2
    assert "not in the vocabulary" in capsys.readouterr().err
    assert main(["embeddings", "query", str(trained), "qzxvwq", "--oov", "--k", "3"]) == 0  # its n-grams' vector
    assert len(re.findall(r"^\s+-?[\d.]+\s+\S+$", capsys.readouterr().out, re.M)) == 3
    assert main(["embeddings", "train", str(tmp_path / "nothing")]) == 2
    assert "not a Refinery run folder" in capsys.readouterr().err and not (tmp_path / "nothing").exists()
    assert main(["embeddings", "eval", str(tmp_path / "missing.bin")]) == 2
    assert "refinery embeddings train RUN" in capsys.readouterr().err
    assert main(["embeddings", "eval", str(trained), "--sets", str(tmp_path)]) == 2
    assert "holds no .txt sets" in capsys.readouterr().err


def test_plain_word2vec_vectors_leave_sql_and_report_working_and_force_deletes_them(data_dir, tmp_path, capsys):
    run = make_run(tmp_path, [{"path": str(data_dir / "text/cc_en_head-0174.jsonl.gz")}])
    tiny = ["--dim", "10", "--epochs", "1", "--min-count", "2", "--quiet", "--model", "cbow", "--no-subwords"]
    assert main(["embeddings", "train", str(run), *tiny]) == 0
    model = run / "embeddings" / "cbow-nosubwords.bin"
    assert model.with_suffix(".vec").is_file()
    assert main(["embeddings", "query", str(model), "qzxvwq", "--oov"]) == 2  # no n-grams to build a vector from
    assert "trained without subwords" in capsys.readouterr().err
    assert main(["sql", str(run), "SELECT count(*) AS n FROM docs", "-f", "csv"]) == 0
    assert main(["report", str(run)]) == 0 and (run / "report.html").is_file()
    capsys.readouterr()
    assert main(["run", str(tmp_path / "recipe.yaml"), "--quiet", "--no-report", "--workers", "1", "--force"]) == 0
    assert not (run / "embeddings").exists()  # vectors of the old data go with it


def test_starting_the_cli_imports_neither_fasttext_nor_the_embeddings_work():
    probe = ("import sys; from refinery.pipelines.commands.cli import build_parser; build_parser(); "
             "print(sorted(m for m in ('fasttext', 'refinery.pipelines.commands.word_vectors') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

"""decontaminate: real benchmark items spliced into real documents are found; ordinary text is not flagged."""

from __future__ import annotations

import bz2
import json
import os
import time

import numpy as np
import pyarrow as pa
import pytest

from refinery.corpora.evalsets import EvalSetError, benchmark_name, load_eval_set
from refinery.pipelines.commands import sql
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.pipelines.stages.base import RunContext
from refinery.pipelines.stages.decontaminate import Decontaminate, DecontaminateConfig
from refinery.pipelines.stages.text.ngram_index import tokens


def _stage(data_dir, **options) -> Decontaminate:
    return Decontaminate(DecontaminateConfig(**{"evals": [str(data_dir / "evals")], **options}))


def _jsonl(path, index: int) -> dict:
    with open(path, encoding="utf-8") as file:
        return json.loads(file.readlines()[index])


@pytest.fixture(scope="module")
def articles(data_dir) -> list[str]:
    return [line for line in (data_dir / "text/wiki_demo.txt").read_text().split("\n") if line.strip()]


def test_items_spliced_into_wikipedia_articles_are_found_with_benchmark_and_item(data_dir, articles):
    evals = data_dir / "evals"
    lambada = _jsonl(evals / "language_understanding/lambada_openai.jsonl", 100)
    arc = _jsonl(evals / "world_knowledge/arc_easy.jsonl", 7)
    piqa = _jsonl(evals / "commonsense_reasoning/piqa.jsonl", 42)
    copa = _jsonl(evals / "commonsense_reasoning/copa.jsonl", 0)  # 12 words: a short item, matched whole
    with bz2.open(evals / "hellaswag_val_full.txt.bz2", "rt", encoding="utf-8") as file:
        activity_context, label, *endings = file.read().split("\n")[6 * 200:6 * 200 + 6]
    assert copa["query"].startswith("The man turned on the faucet")
    inserts = [
        (f"{lambada['context']} {lambada['continuation']}.", "lambada_openai", 100),
        (f"{activity_context.split(': ', 1)[1]} {endings[int(label)]}", "hellaswag", 200),
        (f"Q. {arc['query'].removeprefix('Question: ')} A. {arc['choices'][arc['gold']].upper()}!", "arc_easy", 7),
        (f"{piqa['query'].removeprefix('Question: ').strip()}\n{piqa['choices'][piqa['gold']]}", "piqa", 42),
        (f"{copa['query']} {copa['choices'][copa['gold']]}", "copa", 0),
    ]
    docs = [f"{a[:1500]}\n{text}\n{a[1500:3000]}" for a, (text, _, _) in zip(articles, inserts)] + articles[5:]
    result = _stage(data_dir).process(pa.table({"id": [str(i) for i in range(len(docs))], "text": docs}))
    removed = result.removed.to_pylist()
    assert [(r["id"], r["contaminated_by"], r["contaminated_item"]) for r in removed] == [
        (str(i), name, item) for i, (_, name, item) in enumerate(inserts)]
    assert {r["reason"] for r in removed} == {"contaminated"}
    assert removed[2]["contaminated_ngram"] == "students are investigating the effects of different fertilizers on " \
                                               "plant growth which units"
    assert removed[4]["contaminated_ngram"] == "the man turned on the faucet therefore water flowed from the spout"
    assert removed[0]["contamination_hits"] > 40  # the whole passage, not one stray phrase
    assert result.counts == {"lambada_openai": 1, "hellaswag": 1, "arc_easy": 1, "piqa": 1, "copa": 1}
    assert result.kept.num_rows == len(articles) - 5 and "contaminated_by" not in result.kept.column_names


def test_no_false_positive_on_wikipedia_and_c4(data_dir, articles):
    c4 = [json.loads(line)["text"] for line in (data_dir / "text/c4_demo.jsonl").open(encoding="utf-8")]
    texts = articles + c4  # 30 articles (1 MB, ~170k 13-word windows) and 300 C4 pages
    flagged = _stage(data_dir, action="flag").process(pa.table({"text": texts})).kept
    assert flagged.num_rows == len(texts)
    assert flagged.column("contaminated_by").null_count == len(texts)
    assert set(flagged.column("contamination_hits").to_pylist()) == {0}
    # With 8-word n-grams the same text matches stock phrases: the reason n is 13.
    loose = _stage(data_dir, action="flag", ngram=8).process(pa.table({"text": texts})).kept
    assert "listed on the national register of historic places" in loose.column("contaminated_ngram").to_pylist()


def test_prompt_templates_are_not_items(data_dir, articles):
    # Every bigbench_misconceptions item starts with this instruction: it names no item.
    template = "Is the following statement true or false? Output T for true and F for false."
    doc = f"{articles[0][:800]} {template} {articles[0][800:1600]}"
    assert not _stage(data_dir).process(pa.table({"text": [doc]})).removed.num_rows


def test_instruction_set_overlap_through_the_engine(data_dir, write_recipe, tmp_path):
    # alpaca_5000's answer about the First Amendment quotes the text a BoolQ passage quotes (measured: the only
    # match in that set).
    recipe = write_recipe([{"path": str(data_dir / "instructions/alpaca_5000.json")}],
                          [{"decontaminate": {"evals": [str(data_dir / "evals/reading_comprehension")]}}],
                          output=str(tmp_path / "out"), task_size="600KB")
    run = run_recipe(load_recipe(recipe), workers=2, progress=False).run_dir
    removed = sql.query(run, "SELECT id, reason, contaminated_by, contaminated_item, contaminated_ngram "
                             "FROM removed").to_pylist()
    assert removed == [{"id": "alpaca_5000.json:4247", "reason": "contaminated", "contaminated_by": "boolq",
                        "contaminated_item": 1791, "contaminated_ngram": "congress shall make no law respecting an "
                        "establishment of religion or prohibiting the"}]
    stats = sql.query(run, "SELECT docs_in, kept, removed, counts FROM stats WHERE stage = 'decontaminate'")
    assert stats.to_pylist() == [{"docs_in": 5000, "kept": 4999, "removed": 1,
                                  "counts": [{"name": "boolq", "count": 1}]}]


def test_chinese_items_use_character_ngrams(data_dir):
    belle = {"path": str(data_dir / "instructions/belle_eval_set_zh.json"), "fields": ["question", "std_answer"]}
    stage = Decontaminate(DecontaminateConfig(evals=[belle]))
    item = load_eval_set(belle["path"], fields=belle["fields"])[10]
    host = json.loads((data_dir / "instructions/alpaca_zh_demo.json").read_text(encoding="utf-8"))
    texts = [r["instruction"] + "\n" + r["output"] for r in host]
    spliced = texts[0] + "\n" + item.passages[1][:60] + "\n" + texts[1]
    result = stage.process(pa.table({"text": [spliced, *texts]}))
    assert result.removed.column("contaminated_by").to_pylist() == ["belle_eval_set_zh"]
    assert result.removed.column("contaminated_item").to_pylist() == [10]
    assert " " not in result.removed.column("contaminated_ngram")[0].as_py()[:20]  # Han characters run on
    assert result.kept.num_rows == len(texts)  # none of the 1,000 alpaca_zh conversations matches (20 chars)


def test_conversations_search_the_prompt_column(data_dir):
    boolq = _jsonl(data_dir / "evals/reading_comprehension/boolq.jsonl", 5)
    question = boolq["query"].split("\nQuestion: ")[1].split("\n")[0]
    table = pa.table({"prompt": [f"{question}? {boolq['choices'][boolq['gold']]}", None],
                      "text": ["User: hello", None]})
    stage = _stage(data_dir, action="flag", column="prompt", evals=[str(data_dir / "evals/reading_comprehension")])
    assert len(question.split()) < 13  # a short passage, indexed whole
    assert stage.process(table).kept.column("contaminated_item").to_pylist() == [5, None]


def test_normalisation_and_names():
    assert tokens(pa.array(["Don’t STOP—now, 3.5 我爱北京"])).to_pylist() == [
        ["don", "t", "stop", "now", "3", "5", "我", "爱", "北", "京"]]
    assert benchmark_name("world_knowledge/arc_easy.jsonl") == "arc_easy"
    assert benchmark_name("hellaswag_val_full.txt.bz2") == "hellaswag"


def test_errors_name_the_file_and_the_fix(data_dir, tmp_path):
    with pytest.raises(ValueError, match="no evaluation files at .*nowhere"):
        _stage(data_dir, evals=[str(tmp_path / "nowhere")])
    with pytest.raises(ValueError, match="name one file"):
        _stage(data_dir, evals=[{"path": str(data_dir / "evals/world_knowledge"), "name": "arc"}])
    with pytest.raises(ValueError, match="no column 'prompt'"):
        _stage(data_dir, column="prompt").process(pa.table({"text": ["x"]}))
    bad = tmp_path / "items.txt"
    bad.write_text("Activity: a context\nnot a label\n1\n2\n3\n4\n")
    with pytest.raises(EvalSetError, match="not the HellaSwag text format"):
        load_eval_set(bad)
    stage = Decontaminate(DecontaminateConfig(evals=["items.txt"]), RunContext(tmp_path, tmp_path))
    assert stage.resource_files == [bad]  # fingerprinted: a changed set reruns the stage


def test_the_index_is_built_once_then_loaded_from_the_users_cache(data_dir, articles, tmp_path, monkeypatch):
    import refinery.pipelines.stages.decontaminate as decontaminate
    from refinery.pipelines.stages.text.ngram_index import EvalIndex

    evals = tmp_path / "evals"
    evals.mkdir()
    for name in ("world_knowledge/arc_easy.jsonl", "commonsense_reasoning/copa.jsonl"):
        (evals / name.split("/")[1]).write_bytes((data_dir / "evals" / name).read_bytes())
    monkeypatch.setenv("REFINERY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(decontaminate, "_INDEXES", {})  # as a fresh process has it
    arc, copa = _jsonl(evals / "arc_easy.jsonl", 7), _jsonl(evals / "copa.jsonl", 0)
    docs = pa.table({"text": [f"{articles[0][:900]} {arc['query']} {arc['choices'][arc['gold']]}",
                              f"{articles[1][:900]} {copa['query']} {copa['choices'][copa['gold']]}", articles[2]]})
    built_stage = _stage(tmp_path)
    built, a = built_stage.process(docs).removed, built_stage.index
    assert built.column("contaminated_by").to_pylist() == ["arc_easy", "copa"]
    entries = list((tmp_path / "cache/eval-index").iterdir())
    assert len(entries) == 1 and (entries[0] / "index.json").exists()

    def no_build(*args, **kwargs):
        raise AssertionError("the index was built again instead of loaded")

    monkeypatch.setattr(decontaminate, "_INDEXES", {})
    monkeypatch.setattr(EvalIndex, "build", no_build)
    loaded_stage = _stage(tmp_path)
    assert loaded_stage.process(docs).removed.equals(built)
    b = loaded_stage.index
    assert a is not b and a.items == b.items and a.vocabulary.equals(b.vocabulary)
    assert (a.ngrams_per_benchmark, a.template_ngrams) == (b.ngrams_per_benchmark, b.template_ngrams)
    assert list(a.groups) == list(b.groups)
    pairs = [(a.ids, b.ids), (a.bitmap, b.bitmap)] + [
        (getattr(a.groups[n], f), getattr(b.groups[n], f)) for n in a.groups for f in ("hashes", "items", "starts")]
    for x, y in pairs:
        assert x.dtype == y.dtype and np.array_equal(x, y)

    # A damaged entry is rebuilt and replaced, with a warning; an edited evaluation file is a new entry.
    monkeypatch.undo()
    monkeypatch.setenv("REFINERY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(decontaminate, "_INDEXES", {})
    (entries[0] / "bitmap.npy").write_bytes(b"not an array")
    with pytest.warns(UserWarning, match="rebuilding the cached evaluation index"):
        assert _stage(tmp_path).process(docs).removed.equals(built)
    assert EvalIndex.load(entries[0]).items == a.items
    with open(evals / "copa.jsonl", "a", encoding="utf-8") as file:
        file.write(json.dumps({**copa, "query": articles[2][:400]}) + "\n")
    monkeypatch.setattr(decontaminate, "_INDEXES", {})
    assert _stage(tmp_path).process(docs).removed.column("contaminated_by").to_pylist() == ["arc_easy", "copa", "copa"]
    assert len(list((tmp_path / "cache/eval-index").iterdir())) == 2


def test_a_cache_another_process_filled_first_or_cannot_write_costs_nothing_else(data_dir, tmp_path, monkeypatch):
    import warnings

    import refinery.pipelines.stages.decontaminate as decontaminate
    from refinery.pipelines.stages.text import eval_cache
    from refinery.pipelines.stages.text.ngram_index import EvalIndex

    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "copa.jsonl").write_bytes((data_dir / "evals/commonsense_reasoning/copa.jsonl").read_bytes())
    cache = tmp_path / "cache"
    monkeypatch.setenv("REFINERY_CACHE", str(cache))
    monkeypatch.setattr(decontaminate, "_INDEXES", {})
    save = EvalIndex.save

    def another_process_saves_first(index, folder):  # the same entry appears while this one is being written
        save(index, folder)
        entry = folder.with_name(folder.name.split(".tmp")[0].lstrip("."))
        entry.mkdir()
        save(index, entry)

    monkeypatch.setattr(EvalIndex, "save", another_process_saves_first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the entry is there, only this copy is dropped
        assert _stage(tmp_path).index.ngrams_per_benchmark["copa"] > 0
    assert [p.name for p in (cache / "eval-index").iterdir()] == [eval_cache.entry_name(
        next(iter(decontaminate._INDEXES)))]  # no temp folder left behind
    monkeypatch.setattr(EvalIndex, "save", save)

    # A cache that cannot be written (here its folder is a file; permissions would not stop root): the index is
    # built and used, and the user is told.
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a user's file")
    monkeypatch.setenv("REFINERY_CACHE", str(blocked))
    monkeypatch.setattr(decontaminate, "_INDEXES", {})
    with pytest.warns(UserWarning, match="could not cache the evaluation index"):
        assert _stage(tmp_path).index.ngrams_per_benchmark["copa"] > 0
    assert blocked.read_text() == "a user's file"


def test_the_cache_keeps_the_most_recently_used_entries_and_nothing_else_is_touched(data_dir, tmp_path, monkeypatch):
    import refinery.pipelines.stages.decontaminate as decontaminate
    from refinery.pipelines.stages.text import eval_cache

    root = tmp_path / "cache/eval-index"
    root.mkdir(parents=True)
    for age in range(eval_cache.KEEP + 2):  # entries used 1..10 days ago, the oldest last
        entry = root / f"{age:024x}"
        entry.mkdir()
        (entry / "index.json").write_text("{}")
        os.utime(entry / "index.json", (0, time.time() - 86400 * (age + 1)))
    (root / "notes.txt").write_text("a user's file")
    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "copa.jsonl").write_bytes((data_dir / "evals/commonsense_reasoning/copa.jsonl").read_bytes())
    monkeypatch.setenv("REFINERY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(decontaminate, "_INDEXES", {})
    assert _stage(tmp_path).index.ngrams_per_benchmark["copa"] > 0  # built and cached: the most recent entry
    new = eval_cache.entry_name(next(iter(decontaminate._INDEXES)))
    kept = sorted(p.name for p in root.iterdir())
    assert kept == sorted([new, "notes.txt"] + [f"{age:024x}" for age in range(eval_cache.KEEP - 1)])
    # Loading an entry makes it the most recently used.
    oldest_kept = root / f"{eval_cache.KEEP - 2:024x}" / "index.json"
    monkeypatch.setattr(decontaminate, "_INDEXES", {})
    before = (root / new / "index.json").stat().st_mtime
    os.utime(root / new / "index.json", (0, before - 86400 * 30))
    assert _stage(tmp_path).index.ngrams_per_benchmark["copa"] > 0
    assert (root / new / "index.json").stat().st_mtime > oldest_kept.stat().st_mtime

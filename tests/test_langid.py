"""The langid stage on real text: UDHR translations, the Analects, C4 documents and an OASST/alpaca-CoT run."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from refinery.corpora.records import document_table
from refinery.pipelines.commands import sql
from refinery.pipelines.engine.recipe import RecipeError, load_recipe, parse_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.pipelines.stages import langid
from refinery.pipelines.stages.base import RunContext
from refinery.pipelines.stages.langid import LangId, LangIdConfig

# UDHR file → the lid.176 label its paragraphs must get.
UDHR = {"eng": "en", "deu": "de", "fra": "fr", "spa": "es", "rus": "ru", "cmn_hans": "zh", "jpn": "ja", "arb": "ar",
        "hin": "hi"}


def udhr_text(data_dir: Path, stem: str) -> str:
    with zipfile.ZipFile(data_dir / "text" / "udhr2.zip") as archive:
        return archive.read(f"udhr2/{stem}.txt").decode("utf-8")


def table(texts: list[str]) -> pa.Table:
    return document_table([f"doc-{i}" for i in range(len(texts))], texts, "test")


@pytest.fixture(scope="module")
def paragraphs(data_dir) -> dict[str, list[str]]:
    """UDHR lines of at least 40 characters (paragraphs, not headings), by UDHR file."""
    return {stem: [line for line in udhr_text(data_dir, stem).splitlines() if len(line.strip()) >= 40]
            for stem in UDHR}


def test_udhr_paragraphs_get_their_language(paragraphs):
    stems = [stem for stem, lines in paragraphs.items() for _ in lines]
    kept, removed, _ = LangId(LangIdConfig()).process(table([line for lines in paragraphs.values() for line in lines]))
    assert removed.num_rows == 0 and kept.num_rows == len(stems)  # no keep list, no threshold: labels only
    for stem, expected in UDHR.items():
        got = [lang for lang, s in zip(kept.column("lang").to_pylist(), stems) if s == stem]
        assert len(got) >= 10 and got.count(expected) / len(got) >= 0.95, (stem, got)
    scores = kept.column("lang_score")
    assert scores.type == pa.float32() and 0.0 < pc.min(scores).as_py() <= pc.max(scores).as_py() <= 1


def test_analects_are_chinese_and_c4_is_english(data_dir):
    analects = json.loads((data_dir / "text/chinese-poetry/论语/lunyu.json").read_text(encoding="utf-8"))
    chapters = ["\n".join(chapter["paragraphs"]) for chapter in analects]
    c4 = [json.loads(line)["text"] for line in (data_dir / "text/c4_demo.jsonl").open(encoding="utf-8")][:100]
    langs = LangId(LangIdConfig()).process(table(chapters + c4)).kept.column("lang").to_pylist()
    assert langs[: len(chapters)] == ["zh"] * len(chapters)
    assert langs[len(chapters):].count("en") >= 98


def test_keep_list_and_threshold_give_reasons(paragraphs, data_dir):
    headings = [line for line in udhr_text(data_dir, "eng").splitlines() if 0 < len(line.strip()) < 12]
    texts = paragraphs["eng"] + paragraphs["fra"] + paragraphs["deu"] + headings
    kept, removed, _ = LangId(LangIdConfig(keep=["en", "de"], min_score=0.5)).process(table(texts))
    assert kept.num_rows + removed.num_rows == len(texts)
    assert set(kept.column("lang").to_pylist()) == {"en", "de"}
    assert min(kept.column("lang_score").to_pylist()) >= 0.5
    rows = removed.select(["lang", "lang_score", "reason"]).to_pylist()
    assert {r["reason"] for r in rows} == {"language_not_kept", "low_language_score"}
    for row in rows:  # a low score is the reason first; a confident other language is not kept
        assert (row["reason"] == "low_language_score") == (row["lang_score"] < 0.5)
        assert row["reason"] == "low_language_score" or row["lang"] not in ("en", "de")
    assert sum(r["lang"] == "fr" and r["reason"] == "language_not_kept" for r in rows) >= len(paragraphs["fra"]) - 2


def test_newlines_blank_text_and_empty_batches(data_dir):
    whole = udhr_text(data_dir, "deu")  # a whole file: many lines, which fastText alone would refuse
    blank = next(line for line in udhr_text(data_dir, "eng").splitlines() if line and not line.strip())
    stage = LangId(LangIdConfig(keep=["de"]))
    kept, removed, _ = stage.process(table([whole, blank, ""]))
    assert kept.column("lang").to_pylist() == ["de"]
    assert removed.select(["lang", "lang_score", "reason"]).to_pylist() == [
        {"lang": None, "lang_score": None, "reason": "language_not_kept"}] * 2
    empty = stage.process(table([]))
    assert empty.kept.schema == kept.schema and empty.removed.schema == removed.schema


def test_model_file_is_found_or_the_error_says_how(tmp_path, monkeypatch, paragraphs):
    bundled = Path(LangIdConfig().model)
    assert bundled.name == "lid.176.ftz" and bundled.is_file()
    # A user's model is named relative to the recipe's folder (here: the bundled file, as lid.176.bin would be).
    relative = f"{bundled.parent.name}/{bundled.name}"
    named = LangId(LangIdConfig(model=relative), RunContext(tmp_path, bundled.parent.parent))
    assert named.process(table(paragraphs["fra"][:3])).kept.column("lang").to_pylist() == ["fr"] * 3
    with pytest.raises(ValueError, match=r"lid\.176\.bin' not found .*reinstall refinery"):
        LangId(LangIdConfig(model="lid.176.bin"), RunContext(tmp_path, tmp_path))
    monkeypatch.setattr(langid, "BUNDLED_MODEL", tmp_path / "no_such_folder" / "lid.176.ftz")
    with pytest.raises(RecipeError, match=r"r\.yaml:\d+: .*not found: reinstall refinery"):
        parse_recipe("name: r\ninputs: [{path: x}]\nstages:\n  - langid: {keep: [en]}\noutput: o\n", "r.yaml")


def test_recipe_run_labels_and_removes_by_language(data_dir, write_recipe):
    inputs = [{"path": str(data_dir / "text/c4_demo.jsonl")},
              {"path": str(data_dir / "text/redpajama-pile-samples/alpaca-cot.jsonl")}]
    recipe = write_recipe(inputs, [{"langid": {"keep": ["en"], "min_score": 0.3}}], task_size="256KB")
    summary = run_recipe(load_recipe(recipe), workers=2, progress=False)
    assert summary.read == summary.kept + summary.removed
    docs = pq.read_table(summary.run_dir / "data", columns=["lang", "lang_score"])
    assert set(docs.column("lang").to_pylist()) == {"en"} and docs.num_rows == summary.kept >= 290
    removed = sql.query(summary.run_dir, "SELECT source, lang, reason FROM removed").to_pylist()
    assert {"source": "alpaca-cot", "lang": "zh", "reason": "language_not_kept"} in removed

"""The langid stage on real text: UDHR translations, the Analects, C4 documents and an OASST/alpaca-CoT run."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from refinery.corpora.readers import plan_input, read_task
from refinery.corpora.records import document_table
from refinery.pipelines.commands import sql
from refinery.pipelines.engine.recipe import RecipeError, load_recipe, parse_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.pipelines.stages import langid
from refinery.pipelines.stages.base import RunContext
from refinery.pipelines.stages.extract import Extract, ExtractConfig
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


def instruction_prompts(data_dir: Path, name: str) -> list[str]:
    path = data_dir / "instructions" / name
    return [prompt for task in plan_input(str(path), path.parent, 1 << 25, "instructions")
            for batch in read_task(task) for prompt in batch.documents.column("prompt").to_pylist()]


def test_chinese_prompts_are_zh_with_the_script_correction_and_lids_labels_without(data_dir):
    """lid.176 calls short Chinese prompts `ja` and `wuu` (75 and 31 of these 2,000); Han without kana is `zh`."""
    prompts = instruction_prompts(data_dir, "belle_dev1k_zh.json") + instruction_prompts(data_dir,
                                                                                        "alpaca_zh_demo.json")
    docs = table(prompts)
    corrected = LangId(LangIdConfig()).process(docs)
    plain = LangId(LangIdConfig(script_correction=False)).process(docs)
    langs, lid = corrected.kept.column("lang").to_pylist(), plain.kept.column("lang").to_pylist()
    assert langs.count("zh") >= 0.99 * len(prompts) and langs[:1000].count("zh") == 1000
    assert lid.count("ja") >= 50 and lid.count("wuu") >= 20 and lid.count("zh") < 0.95 * len(prompts)
    assert plain.counts is None  # off: lid's labels, nothing counted
    changed = [(before, after) for before, after in zip(lid, langs) if before != after]
    assert corrected.counts["script_corrected"] == len(changed) == sum(
        n for key, n in corrected.counts.items() if key != "script_corrected")
    assert corrected.counts["ja_to_zh"] == changed.count(("ja", "zh")) >= 50
    # A corrected row's score is the Han share of its text; an untouched row keeps lid's probability.
    scores = corrected.kept.column("lang_score").to_pylist()
    lid_scores = plain.kept.column("lang_score").to_pylist()
    for before, after, score, lid_score in zip(lid, langs, scores, lid_scores):
        assert 0 < score <= 1 and (before != after or score == lid_score)
    assert min(s for s, b, a in zip(scores, lid, langs) if b != a) >= 0.5


def test_japanese_and_korean_stay_and_other_scripts_are_untouched(data_dir, paragraphs):
    pages = [b.documents for task in plan_input(str(data_dir / "warc/clueweb09-ja-quirk.warc.gz"),
                                                data_dir / "warc", 1 << 25) for b in read_task(task)]
    extracted = Extract(ExtractConfig()).process(pa.concat_tables(pages)).kept.column("text").to_pylist()
    korean = [line for line in udhr_text(data_dir, "kor").splitlines() if line.strip()]
    japanese = [line for line in udhr_text(data_dir, "jpn").splitlines() if len(line.strip()) >= 20]
    langs = LangId(LangIdConfig()).process(table(extracted + korean + japanese)).kept.column("lang").to_pylist()
    assert langs == ["ja"] * len(extracted) + ["ko"] * len(korean) + ["ja"] * len(japanese)
    # Every UDHR translation in another script gets exactly lid's label (here all of the zip's translations
    # that have no Han, kana or Hangul).
    with zipfile.ZipFile(data_dir / "text" / "udhr2.zip") as archive:
        lines = [line for name in sorted(archive.namelist())[::4] if name.endswith(".txt")
                 for line in archive.read(name).decode("utf-8", "replace").splitlines()[:30] if line.strip()]
    lines = [line for line in lines if not any("\u3040" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af" for c in line)]
    on, off = (LangId(LangIdConfig(script_correction=flag)).process(table(lines)) for flag in (True, False))
    assert len(lines) > 1000 and on.counts is None and on.kept.equals(off.kept)


def test_script_rule_on_mixed_and_short_text():
    texts = ["用“shimmer”、“keepsake”和“breadth”这三个词构造一个复杂句子。",  # English words quoted: zh
             "The main character of the novel is Romeo Montague, 罗密欧.",       # English with a name: lid's
             "東京の天気",                                                      # kana: ja
             "서울의 날씨는 어때요?",                                           # Hangul: ko
             "世界人権宣言",                                                    # lid's ja and a Japanese-only form
             "佢哋喺度食緊飯",                                                  # Cantonese characters: lid's yue
             "第十条"]                                                          # Han alone: zh
    langs = LangId(LangIdConfig()).process(table(texts)).kept.column("lang").to_pylist()
    lid = LangId(LangIdConfig(script_correction=False)).process(table(texts)).kept.column("lang").to_pylist()
    assert langs[:4] == ["zh", "en", "ja", "ko"] and langs[6] == "zh"
    assert lid[4] != "ja" or langs[4] == "ja"
    assert lid[5] != "yue" or langs[5] == "yue"


def test_recipe_counts_corrections_in_stats(data_dir, write_recipe):
    inputs = [{"path": str(data_dir / "instructions/alpaca_zh_demo.json")}]
    recipe = write_recipe(inputs, [{"langid": {"column": "prompt"}}])
    summary = run_recipe(load_recipe(recipe), workers=1, progress=False)
    counts = sql.query(summary.run_dir, "SELECT counts FROM stats WHERE stage = 'langid'").to_pylist()[0]["counts"]
    counts = {c["name"]: c["count"] for c in counts}
    assert counts["script_corrected"] >= 60 and counts["ja_to_zh"] >= 50
    langs = sql.query(summary.run_dir, "SELECT lang, count(*) AS n FROM docs GROUP BY ALL").to_pylist()
    assert {r["lang"]: r["n"] for r in langs}["zh"] >= 990

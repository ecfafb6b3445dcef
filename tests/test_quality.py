"""The heuristic quality filters (gopher_quality, gopher_repetition, c4_quality, fineweb_quality) on real text."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from refinery.corpora.readers import plan_input, read_task
from refinery.pipelines.commands import sql
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.pipelines.stages import STAGES
from refinery.pipelines.stages.text.textstats import split_lines, split_words

FILTERS = ["gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"]
POLICY = ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"]


def run(name: str, docs: pa.Table, **params) -> tuple[pa.Table, pa.Table]:
    stage = STAGES[name](STAGES[name].Config(**params))
    result = stage.process(docs)
    return result.kept, result.removed


def read(path: Path, fmt: str | None = None) -> pa.Table:
    tasks = plan_input(str(path), path.parent, 1 << 30, format=fmt)
    return pa.concat_tables([batch.documents for task in tasks for batch in read_task(task)])


@pytest.fixture(scope="module")
def cdc_page(data_dir) -> pa.Table:
    """A real boilerplate page: Common Crawl's WET text of a CDC 404 page, all navigation menus."""
    docs = read(data_dir / "warc/cc-main-2016-50-filter_test_1.wet.gz")
    return docs.filter(pa.compute.match_substring(docs.column("url"), "cdc.gov/tb/?404")).slice(0, 1)  # 3 copies


@pytest.fixture(scope="module")
def anarchism(data_dir) -> pa.Table:
    docs = read(data_dir / "wikipedia/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
                "wikipedia")
    return docs.filter(pa.compute.equal(docs.column("url"), "https://en.wikipedia.org/wiki/Anarchism"))


@pytest.fixture(scope="module")
def chinese_article(data_dir) -> str:
    """The longest reference answer of the BELLE evaluation set: an essay on language in the brain."""
    rows = [json.loads(line) for line in (data_dir / "instructions/belle_eval_set_zh.json").open(encoding="utf-8")]
    return max(rows, key=lambda r: len(r["std_answer"]))["std_answer"]


def test_boilerplate_page_is_removed(cdc_page):
    text = cdc_page.column("text")[0].as_py()
    assert cdc_page.num_rows == 1 and "Search The CDC" in text
    _, removed = run("c4_quality", cdc_page)
    lines = text.splitlines()
    unpunctuated = [x for x in lines if not x.strip().endswith((".", "?", "!", '"', "'")) or x.strip().endswith("...")]
    row = removed.to_pylist()[0]
    assert row["reason"] == "c4_too_few_sentences"
    assert row["c4_lines"] == len(lines) and row["c4_lines_no_terminal_punct"] == len(unpunctuated)
    assert row["c4_lines_javascript"] == 1  # "Note: Javascript is disabled or is not supported by your browser."
    _, removed = run("fineweb_quality", cdc_page)
    nonblank = [x for x in text.split("\n") if x.strip()]
    assert removed.column("reason").to_pylist() == ["fineweb_line_punct"]
    punctuated = sum(x.endswith((".", "!", "?")) for x in nonblank)
    assert removed.column("fineweb_line_punct_frac")[0].as_py() == pytest.approx(punctuated / len(nonblank))


def test_wikipedia_article_is_kept(anarchism):
    docs = anarchism
    for name in FILTERS:
        kept, removed = run(name, docs)
        assert removed.num_rows == 0, (name, removed.column("reason").to_pylist())
        docs = kept
    row = docs.to_pylist()[0]
    assert row["gopher_words"] > 1000 and 4 < row["gopher_mean_word_length"] < 6 and row["gopher_stop_words"] == 8
    assert row["c4_kept_lines"] >= 0.8 * row["c4_lines"] - row["c4_lines_no_terminal_punct"]
    assert row["text"].startswith("Anarchism is a political philosophy")


def test_chinese_article_is_kept_with_chinese_words(chinese_article):
    spaced = chinese_article.split()  # whitespace "words": 23 characters on average, Gopher would drop them
    assert sum(map(len, spaced)) / len(spaced) > 10
    for labels in ({"lang": ["zh"]}, {}):  # labelled by langid, or told by its script
        docs = pa.table({"text": [chinese_article], **labels})
        for name in FILTERS:
            kept, removed = run(name, docs)
            assert removed.num_rows == 0, (labels, name, removed.to_pylist())
            docs = kept
        row = docs.to_pylist()[0]
        assert row["gopher_words"] > 500 and 1 < row["gopher_mean_word_length"] < 3 and row["gopher_stop_words"] >= 5
        assert row["c4_sentences"] >= 5
    # English's rules on the same text: its words are short for English (and it has no English stop word).
    _, removed = run("gopher_quality", pa.table({"text": [chinese_article], "lang": ["en"]}))
    assert removed.column("reason").to_pylist() == ["gopher_short_words"]
    assert removed.column("gopher_stop_words").to_pylist() == [0]


def test_gutenberg_header_is_flagged(data_dir):
    book = (data_dir / "text/gutenberg-1661-sherlock.txt").read_text(encoding="utf-8-sig")
    header = book[: book.index("*** START OF THIS PROJECT GUTENBERG EBOOK")]
    docs = pa.table({"text": [header]})
    _, removed = run("c4_quality", docs)
    row = removed.to_pylist()[0]
    # Its lines are hard-wrapped or labels ("Title: ...", "Language: English"): none ends a sentence.
    assert row["reason"] == "c4_too_few_sentences" and row["c4_kept_lines"] == 0
    assert row["c4_lines"] == len(header.splitlines()) == row["c4_lines_no_terminal_punct"]
    _, removed = run("fineweb_quality", docs)
    assert removed.column("reason").to_pylist() == ["fineweb_line_punct"]
    assert removed.column("fineweb_line_punct_frac")[0].as_py() == 0


def test_words_follow_spacy_on_a_real_sentence(data_dir):
    book = (data_dir / "text/gutenberg-1661-sherlock.txt").read_text(encoding="utf-8-sig")
    sentence = re.search(r"I had seen little of Holmes lately\. My marriage had drifted us", book)
    assert sentence
    text = book[sentence.start(): book.index("\n", sentence.end())]
    words = split_words(pa.array([text])).values.to_pylist()
    # spaCy's English tokenizer (datatrove's word splitter) on the same line:
    assert words == ["I", "had", "seen", "little", "of", "Holmes", "lately", ".", "My", "marriage", "had", "drifted",
                     "us"]
    hand = pa.array(["It's 3.5 km... don't e.g. U.S. Mr. Smith (born 1990) -- said: \"yes\"."])
    assert split_words(hand).values.to_pylist() == [
        "It", "'s", "3.5", "km", "...", "do", "n't", "e.g.", "U.S.", "Mr.", "Smith", "(", "born", "1990", ")", "--",
        "said", ":", '"', "yes", '"', "."]


def test_gopher_quality_signals_match_hand_counts(data_dir):
    book = (data_dir / "text/gutenberg-1661-sherlock.txt").read_text(encoding="utf-8-sig")
    start = book.index("To Sherlock Holmes she is always THE woman.")
    first = book[start: book.index("\n\n", start)]  # the story's first paragraph, 7 lines
    kept, removed = run("gopher_quality", pa.table({"text": [first]}), min_words=None)
    row = (kept.to_pylist() + removed.to_pylist())[0]
    tokens = split_words(pa.array([first])).values.to_pylist()
    words = [t for t in tokens if any(c.isalnum() for c in t)]
    assert row["gopher_words"] == len(words)
    assert row["gopher_mean_word_length"] == pytest.approx(sum(map(len, words)) / len(words), rel=1e-6)
    assert row["gopher_alpha_words_frac"] == pytest.approx(
        sum(any(c.isalpha() for c in t) for t in tokens) / len(tokens), rel=1e-6)
    assert row["gopher_stop_words"] == len({"the", "be", "to", "of", "and", "that", "have", "with"} & set(tokens))
    assert row["gopher_bullet_lines_frac"] == 0 and row["gopher_hash_ratio"] == 0


def test_gopher_repetition_signals_match_a_plain_python_count(cdc_page):
    text = cdc_page.column("text")[0].as_py()
    kept, removed = run("gopher_repetition", cdc_page)
    row = (kept.to_pylist() + removed.to_pylist())[0]
    lines = re.split("\n+", text)
    seen, repeated, repeated_chars = set(), 0, 0
    for line in lines:
        if line in seen:
            repeated, repeated_chars = repeated + 1, repeated_chars + len(line)
        seen.add(line)
    assert row["gopher_rep_dup_line_frac"] == pytest.approx(repeated / len(lines), rel=1e-6)
    assert row["gopher_rep_dup_line_chars"] == pytest.approx(repeated_chars / len(text), rel=1e-6)
    words = split_words(pa.array([text])).values.to_pylist()
    bigrams = Counter(" ".join(words[i:i + 2]) for i in range(len(words) - 1))
    top, count = bigrams.most_common(1)[0]
    assert row["gopher_rep_top_2gram"] == pytest.approx(len(top) * count / len(text), rel=1e-6)
    for n in (5, 8):
        seen, duplicated, i = set(), 0, 0
        while i < len(words) - n + 1:
            gram = "".join(words[i:i + n])
            if gram in seen:
                duplicated, i = duplicated + len(gram), i + n
            else:
                seen.add(gram)
                i += 1
        assert duplicated > 0 and row[f"gopher_rep_dup_{n}gram"] == pytest.approx(duplicated / len(text), rel=1e-6)


def test_c4_drops_lines_and_rewrites_the_text(data_dir):
    # CCNet's Common Crawl text and Common Crawl's WET text (c4_demo.jsonl is C4's output: no line fails there).
    docs = pa.concat_tables([read(data_dir / "text/cc_en_head-0091.jsonl.gz").select(["text"]),
                             read(data_dir / "warc/cc-main-2016-50-filter_test_1.wet.gz").select(["text"])])
    texts = docs.column("text").to_pylist()
    kept, _ = run("c4_quality", docs.append_column("row", pa.array(range(docs.num_rows))))
    rewritten = dict(zip(kept.column("row").to_pylist(), kept.column("text").to_pylist()))
    checked = 0
    for row, text in rewritten.items():
        lines = [x.strip() for x in texts[row].splitlines()]
        # datatrove's C4QualityFilter line rules, written out: citation marks go, the line must end a sentence,
        # have 3 words, and mention neither javascript nor a policy phrase.
        good = []
        for line in lines:
            clean = re.sub(r"\[\d*]|\[edit]|\[citation needed]", "", line)
            if (clean.endswith((".", "?", "!", '"', "'")) and not clean.endswith("...") and len(line.split()) >= 3
                    and "javascript" not in clean.lower() and not any(p in clean.lower() for p in POLICY)):
                good.append(clean)
        if len(good) < len(lines):  # a document that lost lines: the text is exactly its good lines
            assert text == "\n".join(good).strip(), row
            checked += 1
    assert checked >= 15, checked  # 20 of the 25 documents kept lose lines
    # drop_lines: false keeps the text as it was.
    kept, _ = run("c4_quality", docs, drop_lines=False)
    assert set(kept.column("text").to_pylist()) <= set(texts)


def test_blank_and_null_texts_are_removed_with_a_reason():
    docs = pa.table({"text": pa.array([None, "", "  \n\t "], pa.string())})
    for name in FILTERS:
        kept, removed = run(name, docs)
        prefix = {"gopher_repetition": "gopher_rep"}.get(name, name.split("_")[0])
        assert kept.num_rows == 0 and removed.column("reason").to_pylist() == [f"{prefix}_no_text"] * 3


def test_signal_columns_exist_on_an_empty_table():
    empty = pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())})
    for name in FILTERS:
        stage = STAGES[name](STAGES[name].Config())
        kept, removed = run(name, empty)
        assert kept.schema.names == ["id", "text", *stage.signal_types]
        assert [kept.schema.field(c).type for c in stage.signal_types] == list(stage.signal_types.values())
        assert removed.schema.names[-1] == "reason"


def test_overrides_change_one_language_only(chinese_article, cdc_page):
    docs = pa.table({"text": [chinese_article, cdc_page.column("text")[0].as_py()], "lang": ["zh", "en"]})
    kept, removed = run("gopher_quality", docs, overrides={"zh": {"min_words": 5000}})
    assert removed.column("reason").to_pylist() == ["gopher_too_few_words"]
    assert removed.column("lang").to_pylist() == ["zh"] and kept.column("lang").to_pylist() == ["en"]
    with pytest.raises(ValueError, match="overrides for 'zh'.*min_wordz"):
        STAGES["gopher_quality"].Config(overrides={"zh": {"min_wordz": 3}})
    with pytest.raises(ValueError, match="max_dup_ngram_frac n-gram sizes"):
        STAGES["gopher_repetition"].Config(max_dup_ngram_frac={12: 0.1})


def test_split_lines_follows_str_splitlines(data_dir):
    book = (data_dir / "text/gutenberg-1661-sherlock.txt").read_bytes().decode("utf-8-sig")[:5000]  # CRLF
    texts = [book, "", "a\n", "a\n\nb\r\nc\x0bd"]
    lines = split_lines(pa.array(texts))
    got = [[] for _ in texts]
    for value, row in zip(lines.values.to_pylist(), lines.rows):
        got[row].append(value)
    assert got == [t.splitlines() for t in texts]


def test_recipe_shows_removals_and_signals_in_sql(data_dir, write_recipe):
    recipe = write_recipe([{"path": str(data_dir / "text/c4_demo.jsonl")}],
                          [{"langid": {}}] + [{name: {}} for name in FILTERS])
    run_dir = run_recipe(load_recipe(recipe), workers=2, progress=False).run_dir
    stats = {r["stage"]: r for r in sql.query(run_dir, "SELECT * FROM stats").to_pylist()}
    kept = sql.query(run_dir, "SELECT count(*) AS n FROM docs").column("n")[0].as_py()
    assert stats["read"]["docs_in"] == 300 == kept + sum(stats[name]["removed"] for name in FILTERS)
    # Every removed row carries its stage's signals, so a threshold can be re-tuned in SQL.
    retune = sql.query(run_dir, "SELECT count(*) AS n FROM removed WHERE stage = 'gopher_quality' "
                                "AND reason = 'gopher_alpha_words' AND gopher_alpha_words_frac >= 0.75").column("n")
    assert retune[0].as_py() > 0
    signals = sql.query(run_dir, "SELECT min(c4_sentences) AS s, max(gopher_rep_dup_5gram) AS d FROM docs").to_pylist()
    assert signals[0]["s"] >= 5 and signals[0]["d"] <= 0.15

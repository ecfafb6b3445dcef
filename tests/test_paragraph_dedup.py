"""paragraph_dedup on real crawl text: site navigation and footers go, article text stays, counts reconcile."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from refinery.pipelines.commands import sql
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.pipelines.stages.paragraphs import ParagraphDedup, ParagraphDedupConfig, rewrite

ABC_PAGE = "http://mobile.abc.net.au/news/2005-10-10/fire-crews-hopeful-of-relief-in-se-qld/2120904?pfm=sm"


def _key(line: str) -> str:
    """The stage's normalisation (dedup.normalise_text), restated: lowercase, ASCII whitespace runs, trimmed."""
    return re.sub(r"[ \t\n\f\r]+", " ", line.lower()).strip()


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory) -> dict[str, Path]:
    """The same crawl files extracted, without and with paragraph_dedup (1 and 2 workers)."""
    folder = tmp_path_factory.mktemp("paragraphs")
    warc = data_dir / "warc"
    inputs = [{"path": str(warc / name)} for name in ("wget-crawl-0001.warc.gz", "cc-main-2016-50-filter_test_1.wet.gz",
                                                      "cc-main-2024-22-whirlwind.warc.gz",
                                                      "cc-main-2024-22-whirlwind.warc.wet.gz")]
    runs = {}
    for name, stages, workers in (("extracted", [], 2), ("one", [{"paragraph_dedup": {}}], 1),
                                  ("two", [{"paragraph_dedup": {}}], 2)):
        recipe = folder / f"{name}.yaml"
        recipe.write_text(yaml.safe_dump({"name": name, "inputs": inputs,
                                          "stages": [{"extract": {"mode": "fast"}}, *stages],
                                          "output": str(folder / name)}))
        runs[name] = run_recipe(load_recipe(recipe), workers=workers, progress=False).run_dir
    return runs


def _docs(run: Path) -> dict[str, dict]:
    return {r["id"]: r for r in sql.query(run, "SELECT * FROM docs").to_pylist()}


def test_navigation_and_footers_repeated_across_a_site_are_removed(runs):
    page = next(d for d in _docs(runs["two"]).values() if d["url"] == ABC_PAGE)
    lines = page["text"].split("\n")
    for footer in ("Terms of Use", "Privacy Policy", "Contact Us", "© 2016 ABC", "Corrections & Clarifications",
                   "Change to standard view", "More from ABC News"):
        assert footer not in lines
    assert "Fire crews hopeful of relief in SE Qld" in lines  # the headline, and the article under it
    assert any(line.startswith("Fire authorities in Queensland's south-east say milder weather") for line in lines)
    assert "Just In" in lines  # 7 characters: under min_chars, never counted
    # The Aragonese Wikipedia page is in the WARC and its WET twin: two copies are under min_repeats (3), so the
    # article stays whole in both.
    escopete = [d for d in _docs(runs["two"]).values() if d["url"] == "https://an.wikipedia.org/wiki/Escopete"]
    assert len(escopete) == 2 and all(d["repeats_removed"] == 0 for d in escopete)


def test_output_is_the_input_less_lines_seen_in_three_documents(runs):
    before, after = _docs(runs["extracted"]), _docs(runs["two"])
    removed = {r["id"]: r for r in sql.query(runs["two"], "SELECT * FROM removed").to_pylist()}
    seen = Counter(k for d in before.values() for k in {_key(line) for line in d["text"].split("\n")})
    units = chars = changed = 0
    for doc_id, doc in before.items():
        lines = doc["text"].split("\n")
        drop = [n for n, line in enumerate(lines) if len(_key(line)) >= 10 and seen[_key(line)] >= 3]
        # Order and separators as they were; a text that ended without a newline still does.
        text = "\n".join(line for n, line in enumerate(lines) if n not in drop)
        if doc_id in removed:  # nothing left
            assert not text.strip() and removed[doc_id]["reason"] == "boilerplate_only"
            assert removed[doc_id]["text"] == doc["text"]
        else:
            assert after[doc_id]["text"] == text and after[doc_id]["repeats_removed"] == len(drop)
        units, chars, changed = units + len(drop), chars + len(doc["text"]) - len(text), changed + bool(drop)
    assert units > 500 and len(after) + len(removed) == len(before)
    stats = sql.query(runs["two"], "SELECT removed, counts FROM stats WHERE stage = 'paragraph_dedup'").to_pylist()[0]
    assert stats["removed"] == len(removed)
    assert {c["name"]: c["count"] for c in stats["counts"]} == {"units_removed": units, "chars_removed": chars,
                                                                "docs_changed": changed}
    read = sql.query(runs["two"], "SELECT docs_in, quarantined FROM stats WHERE stage = 'read'").to_pylist()[0]
    assert read["docs_in"] == len(after) + len(removed) + read["quarantined"]


def test_one_and_two_workers_write_identical_bytes(runs):
    one, two = runs["one"], runs["two"]
    parts = sorted(p.relative_to(one) for p in one.rglob("*.parquet") if "work" not in p.parts)
    assert parts and parts == sorted(p.relative_to(two) for p in two.rglob("*.parquet") if "work" not in p.parts)
    for part in parts:
        assert (one / part).read_bytes() == (two / part).read_bytes(), part


def test_documents_left_without_content_are_removed_as_boilerplate_only(data_dir, write_recipe, tmp_path):
    # Three near-identical CDC "page not found" records: once the shared menus go, a few dozen crumbs are left.
    recipe = write_recipe([{"path": str(data_dir / "warc/cc-main-2016-50-filter_test_1.wet.gz")}],
                          [{"paragraph_dedup": {"min_words_left": 100}}], output=str(tmp_path / "out"))
    run = run_recipe(load_recipe(recipe), workers=1, progress=False).run_dir
    removed = sql.query(run, "SELECT url, reason, repeats_removed, text FROM removed").to_pylist()
    cdc = [r for r in removed if r["url"].startswith("http://www.cdc.gov/tb/?404")]
    assert len(cdc) == 3 and {r["reason"] for r in removed} == {"boilerplate_only"}
    assert all(r["repeats_removed"] > 100 and "Search The CDC" in r["text"] for r in cdc)  # the original text


def test_keep_first_leaves_the_first_copy(data_dir, write_recipe, tmp_path):
    wet = [{"path": str(data_dir / "warc/cc-main-2016-50-filter_test_1.wet.gz")}]
    recipe = write_recipe(wet, [{"paragraph_dedup": {"keep_first": True}}], output=str(tmp_path / "out"))
    run = run_recipe(load_recipe(recipe), workers=1, progress=False).run_dir
    rows = pq.read_table(run / "data/part-00000.parquet").to_pylist()  # one task: rows in input order
    pages = [r["text"].split("\n") for r in rows if r["url"].startswith("http://mobile.abc.net.au/")]
    assert [lines.count("Corrections & Clarifications") for lines in pages] == [1, 0, 0, 0]
    assert sum("Privacy Policy" in r["text"].split("\n") for r in rows) == 1  # on 8 pages of 4 sites before


def test_rewrite_keeps_paragraph_separators(data_dir):
    # Project Gutenberg text: CRLF line ends, paragraphs between blank lines.
    text = (data_dir / "text/gutenberg-1661-sherlock.txt").read_bytes().decode("utf-8-sig")[:3000]
    pieces = re.split(r"(\r\n\s*\r\n)", text)  # paragraph, separator, paragraph, ...
    assert len(pieces) > 10 and "\r\n\r\n" in pieces[1::2]
    expected = "".join(p for n, p in enumerate(pieces) if n not in (2, 3, 6, 7))  # paragraphs 1 and 3, their gaps
    assert rewrite(text, "paragraph", {1, 3}) == expected
    last = len(pieces) // 2
    assert rewrite(text, "paragraph", {last}) == "".join(pieces[:-2])  # ends as the text ended: no separator


def test_empty_corpus_and_signatures(data_dir):
    stage = ParagraphDedup(ParagraphDedupConfig(unit="paragraph"))
    empty = stage.collect(pa.table({"text": pa.array([], pa.string())}), pa.array([], pa.int64()))
    assert empty.num_rows == 0
    text = (data_dir / "text/tinyshakespeare.txt").read_text()[:2000]
    sig = stage.collect(pa.table({"text": [text, None]}), pa.array([7, 8], pa.int64()))
    assert set(sig.column("ord").to_pylist()) == {7}  # a null text has no units
    assert sig.num_rows == sum(1 for p in re.split(r"\n\s*\n", text) if len(_key(p)) >= 10)

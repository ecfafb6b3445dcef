"""The Wikipedia XML reader and the wikitext cleaner on the real dumps in shared/data/wikipedia."""

from __future__ import annotations

import bz2
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from refinery.corpora.readers import InputError, ReadTask, infer_format, read_task
from refinery.corpora.readers.wikipedia import SCHEMA, _pieces
from refinery.pipelines.commands import sql
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import run_recipe

ENWIKI = "wikipedia/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
TABLES = "wikipedia/enwiki-table-markup.xml.bz2"
BGWIKI = "wikipedia/bgwiki-latest-pages-articles-shortened.xml.bz2"
# Wiki markup that must never survive into the text.
RESIDUE = ("[[", "]]", "<ref", "</ref", "{|", "|}", "'''", "''", "<!--", "&nbsp;", "&amp;", "thumb|", "px|")
LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")


class Read:
    """Everything one dump gives: documents, quarantined pages, records and skips."""

    def __init__(self, path: Path, batch_rows: int = 64):
        batches = list(read_task(ReadTask("wikipedia", str(path), "wiki"), batch_rows))
        self.docs = pa.concat_tables([b.documents for b in batches])
        self.bad = pa.concat_tables([b.quarantined for b in batches]).to_pylist()
        self.records = sum(b.records for b in batches)
        self.skipped = sum((Counter(b.skipped) for b in batches), Counter())
        self.by_title = {row["title"]: row for row in self.docs.to_pylist()}


@pytest.fixture(scope="module")
def enwiki(data_dir) -> Read:
    return Read(data_dir / ENWIKI)


def test_every_one_of_the_206_pages_is_a_document_or_a_counted_skip(enwiki):
    assert enwiki.docs.schema == SCHEMA
    assert enwiki.docs.num_rows == enwiki.records == 106
    assert enwiki.bad == []
    # 99 redirects in the main namespace; 'Wikipedia:Adding Wikipedia articles to Nupedia' is a project page.
    assert enwiki.skipped == {"redirect": 99, "other_namespace": 1}
    assert enwiki.docs.num_rows + sum(enwiki.skipped.values()) == 206
    assert "AccessibleComputing" not in enwiki.by_title  # the dump's first page, a redirect
    ids = enwiki.docs.column("id").to_pylist()
    assert ids[:3] == ["enwiki:12", "enwiki:25", "enwiki:39"]  # Anarchism, Autism, Albedo: dump order
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("title", "opening"),
    [
        ("Anarchism", "Anarchism is a political philosophy that advocates self-governed societies based on voluntary "
                      "institutions."),
        # {{IPAc-en}}, a <ref> holding {{cite book}} and {{IPA-de}} sat in these parentheses.
        ("Albert Einstein", "Albert Einstein (14 March 1879\xa0– 18 April 1955) was a German-born theoretical "
                            "physicist."),
        ("Aardvark", "The aardvark (Orycteropus afer) is a medium-sized, burrowing, nocturnal mammal native to Africa"),
        # {{convert|1300|mi|km}} keeps its words.
        ("Alabama", "Alabama is a state located in the southeastern region of the United States."),
    ],
)
def test_real_articles_open_as_the_rendered_page_does(enwiki, title, opening):
    text = enwiki.by_title[title]["text"]
    assert text.startswith(opening)
    assert not [mark for mark in RESIDUE + ("{{", "}}") if mark in text]


def test_no_article_keeps_markup_residue(enwiki):
    for row in enwiki.docs.to_pylist():
        text = row["text"]
        assert not [mark for mark in RESIDUE if mark in text], row["title"]
        for line in text.splitlines():
            assert not line.startswith(("|", "!", "=", "*", "#")), (row["title"], line)
            if "{{" in line or "}}" in line:  # only inside a <math> formula, kept as LaTeX
                assert LATEX_COMMAND.search(line), (row["title"], line)


def test_headings_links_lists_and_inline_templates(enwiki):
    anarchism = enwiki.by_title["Anarchism"]["text"]
    lines = anarchism.splitlines()
    assert "History" in lines and "Etymology and terminology" in lines  # "==History==" on its own line
    assert "References" not in lines  # its only content was {{Reflist}}: an empty section is dropped
    assert "Further reading" in lines and "External links" in lines
    # "* [[Harold Barclay|Barclay, Harold]], ''People Without Government''" -> a list item with the label.
    assert any(line.startswith("- Barclay, Harold, People Without Government") for line in lines)
    assert "Category:" not in anarchism and "Political ideologies" not in anarchism  # category links go
    assert "the Greek ἀναρχία" in anarchism
    assert "At 1300 mi, Alabama has one of the longest navigable inland waterways" in enwiki.by_title["Alabama"]["text"]
    # A file link whose caption holds links and a literal "[above]" goes whole, with the text around it kept.
    animal_farm = enwiki.by_title["Animal Farm"]["text"]
    assert "Front row (left to right)" not in animal_farm
    assert "the character [and] greatness of Stalin" in animal_farm


def test_inline_templates_keep_numbered_arguments_and_readable_units(enwiki):
    # {{nowrap|1=''E'' = ''mc''<sup>2</sup>}}: the argument is named "1" because it holds an "=".
    assert "equivalence formula E = mc2 (which has been dubbed" in enwiki.by_title["Albert Einstein"]["text"]
    assert "for a time t as Q = It." in enwiki.by_title["Ampere"]["text"]
    # {{convert|22|e6acre|...}} and {{convert|400000|oilbbl/d}}: the unit as the page shows it, not its code.
    assert "land consists of 22 million acres of forest" in enwiki.by_title["Alabama"]["text"]
    assert "typically producing about 400000 barrels per day" in enwiki.by_title["Alaska"]["text"]


def test_url_title_and_revision_timestamp_columns(enwiki):
    lincoln = enwiki.by_title["Abraham Lincoln"]
    assert lincoln["id"] == "enwiki:307"
    assert lincoln["url"] == "https://en.wikipedia.org/wiki/Abraham_Lincoln"
    assert lincoln["revision_timestamp"].isoformat() == "2016-04-30T11:58:04+00:00"
    assert enwiki.by_title["Animalia (book)"]["url"] == "https://en.wikipedia.org/wiki/Animalia_(book)"
    assert enwiki.docs.column("meta").null_count == enwiki.docs.num_rows


def test_utf16_bulgarian_dump_gives_cyrillic_text(data_dir):
    assert bz2.open(data_dir / BGWIKI).read(2) == b"\xff\xfe"  # the UTF-16 LE byte-order mark
    bg = Read(data_dir / BGWIKI)
    assert bg.skipped == {"other_namespace": 2}  # two "Уикипедия:" project pages
    [doc] = bg.docs.to_pylist()
    assert (doc["id"], doc["title"]) == ("bgwiki:558", "Григориански календар")
    assert doc["text"].startswith("Григорианският календар (понякога наричан и Грегориански календар")
    letters = [c for c in doc["text"] if c.isalpha()]
    assert sum("\u0400" <= c <= "\u04ff" for c in letters) / len(letters) > 0.9
    assert doc["url"].startswith("https://bg.wikipedia.org/wiki/%D0%93%D1%80%D0%B8")
    assert not [mark for mark in RESIDUE + ("{{", "}}") if mark in doc["text"]]


def test_heavy_table_markup_leaves_no_table_residue(data_dir):
    tables = Read(data_dir / TABLES)
    assert tables.docs.num_rows == 5 and tables.bad == []
    vote = tables.by_title["Constructive vote of no confidence"]
    # No <siteinfo> in this file: the bare page id, and no base URL to build a url from.
    assert (vote["id"], vote["url"]) == ("217916", None)
    assert vote["text"].startswith("The constructive vote of no confidence (in German: konstruktives "
                                   "Misstrauensvotum, in Spanish: moción de censura constructiva)")
    table_markup = re.compile(r"^\s*[|!]|\|\||\bcolspan=|\browspan=|\bstyle=|wikitable", re.M)
    for row in tables.docs.to_pylist():
        assert not table_markup.search(row["text"]), row["title"]
        assert not [mark for mark in RESIDUE + ("{{", "}}") if mark in row["text"]], row["title"]


def test_the_dump_is_streamed_page_by_page(data_dir):
    chunks_read = 0

    def counted_chunks():
        nonlocal chunks_read
        with bz2.open(data_dir / ENWIKI) as stream:
            while chunk := stream.read(1 << 16):
                chunks_read += 1
                yield chunk

    pieces = _pieces(counted_chunks())
    assert next(pieces)[0] == "header"
    kind, first = next(pieces)
    assert kind == "page" and b"<title>AccessibleComputing</title>" in first
    assert chunks_read == 1  # of the 93 chunks of the 6 MB dump


def test_a_cut_bz2_stream_keeps_the_pages_before_the_damage(data_dir, tmp_path, enwiki):
    cut = tmp_path / "enwiki-cut.xml.bz2"
    cut.write_bytes((data_dir / ENWIKI).read_bytes()[: 850_000])
    read = Read(cut)
    kept = read.docs.column("text").to_pylist()
    assert 0 < len(kept) < enwiki.docs.num_rows
    assert kept == enwiki.docs.column("text").to_pylist()[: len(kept)]
    [damage] = read.bad
    # Where the stream is cut (issue #15: reasons say where), not Python's EOFError text.
    assert damage["reason"] == ("truncated_stream: the bz2 stream is cut off 850000 bytes into the stream at "
                                "compressed byte 0")
    assert damage["raw"].startswith(b"<page>")  # the page the stream ends inside
    assert read.records == len(kept) + 1


def test_broken_pages_are_quarantined_and_the_rest_is_read(data_dir, tmp_path, enwiki):
    pages = bz2.open(data_dir / ENWIKI).read().split(b"<page>")  # pages[0] is the header
    pages[2] = pages[2].replace(b"</title>", b"</titel>", 1)  # Anarchism: mismatched tag
    pages[12] = pages[12].replace(b"</page>", b"", 1)  # Autism: its end is lost
    pages[18] = re.sub(rb"<text [^>]*>.*?</text>", b"", pages[18], flags=re.S)  # Albedo: no text
    dump = b"<page>".join(pages)
    broken = tmp_path / "enwiki-broken.xml"
    broken.write_bytes(dump[: dump.rfind(b"</text>")])  # and the file ends inside 'Algorithm'
    read = Read(broken, batch_rows=16)
    assert [(q["position"], q["id"], q["reason"]) for q in read.bad] == [
        (1, "enwiki-broken.xml:1", "malformed_xml: mismatched tag: line 2, column 22"),
        (11, "enwiki-broken.xml:11", "unterminated_page: no </page> before the next <page>"),
        (17, "enwiki:39", "missing_text: the last revision's text has no <text>"),
        (205, "enwiki-broken.xml:205", "truncated_page: the dump ends inside this page"),
    ]
    assert read.bad[0]["raw"] == (b"<page>" + pages[2]).rstrip()  # the page's XML, byte for byte
    assert read.docs.num_rows == enwiki.docs.num_rows - 4
    assert read.records == read.docs.num_rows + 4
    assert read.skipped == enwiki.skipped


def test_old_dumps_without_redirect_elements_still_skip_redirects(data_dir, tmp_path):
    pages = bz2.open(data_dir / ENWIKI).read().split(b"<page>")[:12]  # the header and the first 11 pages
    old_style = tmp_path / "enwiki-old.xml"
    old_style.write_bytes(re.sub(rb"<redirect [^>]*/>", b"", b"<page>".join(pages)) + b"</mediawiki>\n")
    read = Read(old_style)
    assert read.skipped == {"redirect": 10}  # known by their "#REDIRECT [[...]]" text alone
    assert read.docs.column("title").to_pylist() == ["Anarchism"]


def test_a_file_that_is_not_a_dump_is_refused_by_name(data_dir):
    with pytest.raises(InputError, match=r"c4_demo.jsonl is not a MediaWiki XML dump .* its own `format:`"):
        Read(data_dir / "text/c4_demo.jsonl")


def test_a_recipe_over_the_wikipedia_folder_reconciles(data_dir, write_recipe):
    assert infer_format(TABLES) == "wikipedia" and infer_format("dump.xml") == "wikipedia"
    recipe = write_recipe([{"path": str(data_dir / "wikipedia/*"), "format": "wikipedia"}],
                          [{"length_filter": {"min_words": 20}}])
    summary = run_recipe(load_recipe(recipe), workers=2, progress=False)
    stats = json.loads((summary.run_dir / "stats/read.json").read_text())
    assert stats["docs_in"] == 1 + 106 + 5 + 9  # bgwiki, enwiki, table markup, testcorpus
    assert stats["skipped"] == 102
    assert {r["reason"]: r["count"] for r in stats["reasons"]} == {"skipped_other_namespace": 3, "skipped_redirect": 99}
    removed = stats["docs_in"] - summary.kept - summary.quarantined
    assert summary.removed == removed > 0  # testcorpus's tiny articles are under 20 words
    assert summary.read == stats["docs_in"] == summary.kept + summary.removed + summary.quarantined
    row = sql.query(summary.run_dir, "SELECT title, url, year(revision_timestamp) AS y FROM docs "
                                     "WHERE id = 'enwiki:12'").to_pylist()
    assert row == [{"title": "Anarchism", "url": "https://en.wikipedia.org/wiki/Anarchism", "y": 2016}]

"""The extract stage on real pages of the trafilatura evaluation set (and C4 text for rows that are not HTML)."""

from __future__ import annotations

import gzip
import json
import signal
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.corpora.records import document_table
from refinery.pipelines.commands import sql
from refinery.pipelines.engine.recipe import RecipeError, load_recipe, parse_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.pipelines.stages.extract import Extract, ExtractConfig

# Pages whose evaldata title trafilatura finds exactly, and a German page (its <h1> is a comment form's).
ENGLISH_PAGES = ["flowfx.de.tmux.html", "hackernoon.com.scrape.html"]
GERMAN_PAGE = "bibliothek2null.de.mai.html"
LARGEST_PAGE = "nymag.com.polarization.html"  # 1.6 MB of HTML


@pytest.fixture(scope="module")
def evaldata(data_dir) -> dict[str, dict]:
    """evaldata.json keyed by page file name (with the URL added)."""
    by_url = json.loads((data_dir / "extraction/trafilatura-eval/evaldata.json").read_text(encoding="utf-8"))
    return {item["file"]: {**item, "url": url} for url, item in by_url.items()}


@pytest.fixture(scope="module")
def page(data_dir):
    def read(name: str) -> str:
        return gzip.decompress((data_dir / "extraction/trafilatura-eval/pages" / f"{name}.gz").read_bytes()).decode()

    return read


@pytest.fixture(scope="module")
def c4_texts(data_dir) -> list[str]:
    with open(data_dir / "text/c4_demo.jsonl", encoding="utf-8") as lines:
        return [json.loads(next(lines))["text"] for _ in range(2)]


def table(texts: list[str], content_types: list[str | None]) -> pa.Table:
    docs = document_table([f"doc-{i}" for i in range(len(texts))], texts, "test")
    return docs.append_column("content_type", pa.array(content_types, pa.string()))


def head_only(html: str) -> str:
    """A real page cut after its </head>: a title but no body text."""
    return html[: html.lower().index("</head>") + len("</head>")]


def test_main_text_and_title_of_real_pages(page, evaldata):
    names = [*ENGLISH_PAGES, GERMAN_PAGE]
    docs = table([page(n) for n in names], ["text/html", "text/html; charset=utf-8", "application/xhtml+xml"])
    kept, removed, _ = Extract(ExtractConfig()).process(docs)
    assert removed.num_rows == 0 and kept.column("id").to_pylist() == ["doc-0", "doc-1", "doc-2"]
    for name, text in zip(names, kept.column("text").to_pylist()):
        assert all(snippet in text for snippet in evaldata[name]["with"]), name
        assert not any(snippet in text for snippet in evaldata[name]["without"]), name
        assert "<" not in text[:200], name  # text, not markup
    assert kept.column("title").to_pylist()[:2] == [evaldata[n]["title"] for n in ENGLISH_PAGES]
    assert kept.schema.field("title").type == pa.string()
    # Deterministic: the same batch gives the same table.
    assert Extract(ExtractConfig()).process(docs).kept.equals(kept)


@pytest.mark.parametrize("mode", ["precision", "recall", "balanced"])
def test_every_mode_finds_the_main_text(page, evaldata, mode):
    name = ENGLISH_PAGES[0]
    kept = Extract(ExtractConfig(mode=mode)).process(table([page(name)], ["text/html"])).kept
    assert all(snippet in kept.column("text")[0].as_py() for snippet in evaldata[name]["with"])


def test_resiliparse_engine_finds_the_main_text_and_title_of_real_pages(page, evaldata, c4_texts):
    names = [*ENGLISH_PAGES, GERMAN_PAGE]
    docs = table([*(page(n) for n in names), c4_texts[0], head_only(page(ENGLISH_PAGES[0]))],
                 ["text/html", "text/html; charset=utf-8", "application/xhtml+xml", "text/plain", "text/html"])
    kept, removed, _ = Extract(ExtractConfig(engine="resiliparse")).process(docs)
    assert kept.column("id").to_pylist() == ["doc-0", "doc-1", "doc-2", "doc-3"]
    assert removed.column("reason").to_pylist() == ["extraction_empty"]  # a page cut after its </head>
    for name, text in zip(names, kept.column("text").to_pylist()):
        found = [snippet in text for snippet in evaldata[name]["with"]]
        assert sum(found) >= 0.8 * len(found), name  # main text (its trade-off: more boilerplate, see the docs)
        assert "<" not in text[:200], name
    assert kept.column("text")[3].as_py() == c4_texts[0]  # not HTML: passed through as with trafilatura
    titles = kept.column("title").to_pylist()
    assert titles[0] is not None and evaldata[ENGLISH_PAGES[0]]["title"] in titles[0]
    assert titles[3] is None
    assert Extract(ExtractConfig(engine="resiliparse")).process(docs).kept.equals(kept)  # deterministic


def test_rows_that_are_not_html_pass_unchanged(page, c4_texts):
    html = page(ENGLISH_PAGES[0])
    # WET text, HTML declared as plain text (the declared type wins), and C4 text without a content type.
    docs = table([c4_texts[0], html, c4_texts[1], html], ["text/plain", "text/plain", None, None])
    kept, removed, _ = Extract(ExtractConfig()).process(docs)
    assert removed.num_rows == 0
    assert kept.column("text").to_pylist()[:3] == [c4_texts[0], html, c4_texts[1]]
    assert kept.column("title").to_pylist()[:3] == [None, None, None]
    # Without a content type, text that starts with "<" is a page.
    assert kept.column("text")[3].as_py() != html and kept.column("title")[3].as_py() is not None


def test_a_documents_own_title_column_is_kept_for_rows_passed_through(page, c4_texts):
    docs = table([c4_texts[0], page(ENGLISH_PAGES[1])], ["text/plain", "text/html"])
    docs = docs.append_column("title", pa.array(["from the input", "replaced"]))
    kept = Extract(ExtractConfig()).process(docs).kept
    assert kept.column_names.count("title") == 1
    assert kept.column("title").to_pylist() == ["from the input", "How To Scrape Google With Python"]


def test_page_without_text_is_removed_as_empty_and_keeps_its_html(page):
    heads = [head_only(page(name)) for name in ENGLISH_PAGES]
    kept, removed, _ = Extract(ExtractConfig()).process(table(heads, ["text/html", "text/html"]))
    assert kept.num_rows == 0
    assert removed.column("reason").to_pylist() == ["extraction_empty"] * 2
    assert removed.column("text").to_pylist() == heads  # nothing disappears: the HTML stays for inspection
    assert removed.column("extraction_error").to_pylist() == [None, None]


def test_empty_table_has_the_columns_of_a_full_one(page):
    stage = Extract(ExtractConfig())
    full = stage.process(table([page(ENGLISH_PAGES[0]), head_only(page(ENGLISH_PAGES[1]))], ["text/html"] * 2))
    assert full.kept.num_rows == 1 and full.removed.num_rows == 1
    empty = stage.process(table([], []))
    assert empty.kept.schema == full.kept.schema and empty.removed.schema == full.removed.schema
    # Inputs without a content_type column (JSONL, Parquet) too.
    plain = stage.process(document_table([], [], "test"))
    assert plain.kept.column_names == ["id", "text", "source", "url", "meta", "title"]


def test_exception_is_removed_with_its_type(page, monkeypatch):
    def too_deep(html: str):
        raise RecursionError("maximum recursion depth exceeded")

    stage = Extract(ExtractConfig())
    monkeypatch.setattr(stage, "extract_page", too_deep)
    html = page(ENGLISH_PAGES[0])
    kept, removed, _ = stage.process(table([html], ["text/html"]))
    assert kept.num_rows == 0 and removed.column("reason").to_pylist() == ["extraction_failed"]
    assert removed.column("extraction_error").to_pylist() == ["RecursionError"]
    assert removed.column("text").to_pylist() == [html]


def test_large_page_times_out_and_the_alarm_is_restored(page):
    previous = signal.getsignal(signal.SIGALRM)
    kept, removed, _ = Extract(ExtractConfig(timeout_seconds=0.001)).process(table([page(LARGEST_PAGE)], ["text/html"]))
    assert kept.num_rows == 0 and removed.column("reason").to_pylist() == ["extraction_timeout"]
    assert signal.getsignal(signal.SIGALRM) is previous
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_hanging_page_costs_its_timeout_only(page, evaldata, monkeypatch):
    stage = Extract(ExtractConfig(timeout_seconds=0.2))
    hanging = head_only(page(ENGLISH_PAGES[1]))
    extract_page = stage.extract_page
    monkeypatch.setattr(stage, "extract_page", lambda html: time.sleep(30) if html == hanging else extract_page(html))
    started = time.perf_counter()
    kept, removed, _ = stage.process(table([hanging, page(ENGLISH_PAGES[0])], ["text/html"] * 2))
    assert time.perf_counter() - started < 5
    assert removed.column("reason").to_pylist() == ["extraction_timeout"]
    assert kept.column("title").to_pylist() == [evaldata[ENGLISH_PAGES[0]]["title"]]


def test_outside_the_main_thread_pages_run_without_a_limit(page):
    results = []
    stage, docs = Extract(ExtractConfig(timeout_seconds=0.001)), table([page(ENGLISH_PAGES[0])], ["text/html"])
    worker = threading.Thread(target=lambda: results.append(stage.process(docs)))
    worker.start()
    worker.join()
    assert results[0].kept.num_rows == 1 and results[0].removed.num_rows == 0


def test_recipe_parameters_are_checked():
    with pytest.raises(RecipeError, match=r"r\.yaml:4: .*mode"):
        parse_recipe("name: r\ninputs: [{path: x}]\nstages:\n  - extract: {mode: quick}\noutput: o\n", "r.yaml")
    with pytest.raises(RecipeError, match=r"r\.yaml:4: .*timeout"):
        parse_recipe("name: r\ninputs: [{path: x}]\nstages:\n  - extract: {timeout: 3}\noutput: o\n", "r.yaml")
    with pytest.raises(RecipeError, match=r"r\.yaml:4: .*mode: trafilatura's options, not resiliparse's"):
        parse_recipe("name: r\ninputs: [{path: x}]\nstages:\n  - extract: {engine: resiliparse, mode: fast}\n"
                     "output: o\n", "r.yaml")
    with pytest.raises(RecipeError, match=r"r\.yaml:4: .*engine"):
        parse_recipe("name: r\ninputs: [{path: x}]\nstages:\n  - extract: {engine: justext}\noutput: o\n", "r.yaml")


def test_recipe_run_in_worker_processes(tmp_path: Path, page, evaldata, c4_texts, write_recipe):
    # Two JSONL files (two tasks, two spawned workers); JSONL rows have no content_type column.
    rows = [[{"id": name, "url": evaldata[name]["url"], "text": page(name)} for name in ENGLISH_PAGES],
            [{"id": "c4", "text": c4_texts[0]}, {"id": "head", "text": head_only(page(GERMAN_PAGE))}]]
    inputs = []
    for i, part in enumerate(rows):
        path = tmp_path / f"pages-{i}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in part), encoding="utf-8")
        inputs.append({"path": str(path)})
    recipe = write_recipe(inputs, [{"extract": {"mode": "fast"}}])
    summary = run_recipe(load_recipe(recipe), workers=2, progress=False)
    assert (summary.read, summary.kept, summary.removed) == (4, 3, 1)
    docs = pq.read_table(summary.run_dir / "data").to_pydict()
    titles = dict(zip(docs["id"], docs["title"]))
    assert titles == {**{n: evaldata[n]["title"] for n in ENGLISH_PAGES}, "c4": None}
    assert dict(zip(docs["id"], docs["text"]))["c4"] == c4_texts[0]
    removed = sql.query(summary.run_dir, "SELECT id, stage, reason FROM removed").to_pylist()
    assert removed == [{"id": "head", "stage": "extract", "reason": "extraction_empty"}]

"""The url_filter stage on real URLs: the trafilatura evaluation pages and CCNet Common Crawl records."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.corpora.records import document_table
from refinery.pipelines.commands import sql
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.pipelines.stages.base import RunContext
from refinery.pipelines.stages.urls import DEFAULT_BLOCKLIST, UrlFilter, UrlFilterConfig, read_list


@pytest.fixture(scope="module")
def evaldata(data_dir) -> dict[str, dict]:
    """URL → {file, with, without} of the trafilatura evaluation set (990 pages, mostly German)."""
    return json.loads((data_dir / "extraction/trafilatura-eval/evaldata.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def urls(evaldata, data_dir) -> list[str]:
    """The evaluation URLs (some are not URLs at all: 'hard::site.com-page.html') and 20 CCNet ones."""
    ccnet = [json.loads(line)["metadata"]["url"]
             for name in ("cc_en_head-0091.jsonl.gz", "cc_en_head-0174.jsonl.gz")
             for line in gzip.open(data_dir / "text" / name, "rt", encoding="utf-8")]
    return list(evaldata) + ccnet


def url_table(urls: list[str | None], texts: list[str] | None = None) -> pa.Table:
    return document_table([f"doc-{i}" for i in range(len(urls))], texts or [u or "" for u in urls], "test", urls=urls)


def lists(folder: Path, **entries: list[str]) -> RunContext:
    """Write list files (name.txt, one entry a line) into `folder`; a context whose recipe folder it is."""
    for name, lines in entries.items():
        (folder / f"{name}.txt").write_text("# written by the test\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return RunContext(folder, folder)


def removed_by(result, column: str = "url") -> dict[str, tuple[str, str]]:
    rows = result.removed.select([column, "reason", "block_list"]).to_pylist()
    return {row[column]: (row["reason"], row["block_list"]) for row in rows}


def test_domain_covers_subdomains_and_allow_list_wins(urls, tmp_path):
    context = lists(tmp_path, blogs=["wordpress.com", "*.Blogspot.com."], friends=["denkanstoos.wordpress.com"])
    config = UrlFilterConfig(block_domains=["blogs.txt"], allow_domains=["friends.txt"], use_default_blocklist=False)
    result = UrlFilter(config, context).process(url_table(urls))
    hosts = {url: url.split("/")[2].lower() for url in urls if "://" in url}
    expected = {url for url, host in hosts.items() if host.endswith((".wordpress.com", ".blogspot.com"))
                and not host.startswith("denkanstoos.")}
    assert len(expected) >= 35
    assert removed_by(result) == {url: ("blocked_domain", "blogs") for url in expected}
    assert result.kept.num_rows == len(urls) - len(expected)  # incl. web.archive.org pages of wordpress blogs


def test_substrings_ignore_case_and_first_list_names_the_reason(urls, tmp_path):
    context = lists(tmp_path, archive=["WEB.ARCHIVE.ORG/web/2014", "wordpress"], years=["/2012/", "/2014/"],
                    blogs=["wordpress.com"])
    config = UrlFilterConfig(block_domains=["blogs.txt"], block_substrings=["archive.txt", "years.txt"],
                             use_default_blocklist=False)
    removed = removed_by(UrlFilter(config, context).process(url_table(urls)))
    for url in urls:
        on_blog = "://" in url and url.split("/")[2].endswith(".wordpress.com")
        in_archive = "web.archive.org/web/2014" in url.lower() or "wordpress" in url
        if on_blog:  # domains are checked before substrings
            assert removed[url] == ("blocked_domain", "blogs")
        elif in_archive:
            assert removed[url] == ("blocked_substring", "archive")
        elif "/2012/" in url or "/2014/" in url:
            assert removed[url] == ("blocked_substring", "years")
        else:
            assert url not in removed
    assert sum(reason == ("blocked_substring", "years") for reason in removed.values()) >= 5


def test_null_urls_and_strings_without_a_host_are_kept(urls, data_dir, tmp_path):
    no_host = [url for url in urls if url.startswith("hard::")]
    c4 = [json.loads(line)["text"] for line in (data_dir / "text/c4_demo.jsonl").open(encoding="utf-8")][:20]
    sites = [url.removeprefix("hard::").split("-")[0] for url in no_host]  # e.g. jamaicaobserver.com
    context = lists(tmp_path, sites=sites)
    stage = UrlFilter(UrlFilterConfig(block_domains=["sites.txt"]), context)
    result = stage.process(url_table(no_host + [None] * len(c4), [""] * len(no_host) + c4))
    assert len(no_host) >= 30 and result.removed.num_rows == 0
    assert result.kept.num_rows == len(no_host) + len(c4)
    empty = stage.process(url_table([]))
    assert empty.kept.schema == result.kept.schema and empty.removed.schema == result.removed.schema
    assert empty.removed.schema.names[-2:] == ["reason", "block_list"]


def test_default_list_blocks_its_own_domains_and_no_real_page(urls):
    shipped = read_list(DEFAULT_BLOCKLIST)
    assert 5 <= len(shipped) <= 50
    stage = UrlFilter(UrlFilterConfig())
    assert stage.process(url_table(urls)).removed.num_rows == 0
    pages = [f"https://www.{domain}/" for domain in shipped]
    assert set(removed_by(stage.process(url_table(pages))).values()) == {("blocked_domain", "default")}


def test_missing_or_clashing_list_files_fail_at_creation(tmp_path):
    with pytest.raises(ValueError, match=r"block_substrings file '.*spam\.txt' not found"):
        UrlFilter(UrlFilterConfig(block_substrings=["spam.txt"]), RunContext(tmp_path, tmp_path))
    context = lists(tmp_path, default=["wordpress.com"])
    with pytest.raises(ValueError, match="two block lists are named 'default'"):
        UrlFilter(UrlFilterConfig(block_domains=["default.txt"]), context)


def test_recipe_resolves_lists_against_its_folder(evaldata, tmp_path, write_recipe):
    """A JSONL of the evaluation pages (URL and the snippets their text must contain), through a run."""
    with open(tmp_path / "pages.jsonl", "w", encoding="utf-8") as out:
        for url, page in evaldata.items():
            out.write(json.dumps({"id": page["file"], "url": url, "text": " ".join(page["with"])}) + "\n")
    lists(tmp_path, blogs=["wordpress.com", "blogspot.com"])
    recipe = write_recipe([{"path": "pages.jsonl"}], [{"url_filter": {"block_domains": ["blogs.txt"]}}])
    summary = run_recipe(load_recipe(recipe), workers=1, progress=False)
    counts = sql.query(summary.run_dir, "SELECT reason, block_list, count(*) AS n FROM removed GROUP BY ALL")
    assert counts.to_pylist() == [{"reason": "blocked_domain", "block_list": "blogs", "n": summary.removed}]
    assert summary.removed >= 35 and summary.kept + summary.removed == len(evaldata)
    kept_hosts = [url.split("/")[2] for url in pq.read_table(summary.run_dir / "data").column("url").to_pylist()
                  if "://" in url]
    assert not [host for host in kept_hosts if host.endswith(("wordpress.com", "blogspot.com"))]

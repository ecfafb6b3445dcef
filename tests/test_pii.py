"""The pii stage on real text: contact details in crawled pages are replaced, dates, years, versions, postcodes
and prices in real text are not; counts per kind reach stats/pii.json."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest

from refinery.corpora.readers import plan_input, read_task
from refinery.corpora.records import document_table
from refinery.pipelines.commands import sql
from refinery.pipelines.engine.recipe import RecipeError, load_recipe, parse_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.pipelines.stages.pii import Pii, PiiConfig


def read_docs(path: Path, **options) -> pa.Table:
    batches = [b.documents for t in plan_input(str(path), Path("."), 1 << 30, None, None, options)
               for b in read_task(t)]
    return pa.concat_tables(batches, promote_options="default")


def one_doc(docs: pa.Table, needle: str) -> str:
    found = [t for t in docs.column("text").to_pylist() if needle in t]
    assert found, needle
    return found[0]


def scrub(texts: list[str], **config) -> tuple[list[str], dict[str, int], list[int]]:
    kept, removed, counts = Pii(PiiConfig(count_column="pii_count", **config)).process(
        document_table([str(i) for i in range(len(texts))], texts, "test"))
    assert removed.num_rows == 0
    return kept.column("text").to_pylist(), counts, kept.column("pii_count").to_pylist()


@pytest.fixture(scope="module")
def wet(data_dir) -> pa.Table:
    return read_docs(data_dir / "warc/cc-main-2016-50-filter_test_1.wet.gz")


def test_contact_details_in_crawled_pages_are_replaced(wet, data_dir):
    bios = one_doc(wet, "biosmanagement")  # an Italian company's offices: phones, emails, postcodes
    rescue = one_doc(read_docs(data_dir / "text/c4_demo.jsonl"), "rescuedtails")
    college = one_doc(wet, "SC 29829Phone: (803) 593-9231")
    aiken = one_doc(wet, "SC(803) 593-9231")
    (bios_out, rescue_out, college_out, aiken_out), counts, per_row = scrub([bios, rescue, college, aiken])
    assert "12051\nTel. <PHONE>\n<EMAIL>\nTORINO" in bios_out  # was: Tel. +39 0173.287371 alba@biosmanagement.it
    assert "BARCELONA C/Balmes 188, 6°2a - 08006\nTel. <PHONE>\n<EMAIL>" in bios_out  # postcodes stay
    assert "@" not in bios_out and "+39" not in bios_out
    assert "directly at <EMAIL> or <PHONE>." in rescue_out  # woof@rescuedtails.com or 951-704-3374
    assert "SC 29829Phone: <PHONE>Fax: <PHONE>" in college_out  # WET glues words to numbers
    assert "Graniteville, SC<PHONE> $ (low)" in aiken_out
    assert counts["email"] >= 6 and counts["phone"] >= 8 and sum(per_row) == sum(counts.values())


def test_real_addresses_public_replaced_private_kept(wet, data_dir):
    loopback = one_doc(wet, "127.0.0.1")
    crawl = one_doc(read_docs(data_dir / "warc/wget-crawl-0001.warc.gz"), "38.107.191.66")
    pages = data_dir / "extraction/trafilatura-eval/pages"
    ipv6 = [gzip.open(pages / name).read().decode("utf-8") for name in
            ("backenmachtgluecklich.de.zitronenkuchen.html.gz", "changenow.de.loibl.html.gz",
             "eltiempo.com-candidatos.html.gz")]
    (kept_loopback, crawl_out, *ipv6_out), counts, _ = scrub([loopback, crawl] + ipv6, kinds=["ipv6", "ipv4"])
    assert "Location: 127.0.0.1\nDonzo" in kept_loopback  # loopback identifies no one
    assert "used the IPs <IP_ADDRESS> through <IP_ADDRESS>." in crawl_out
    assert '"ip":"<IP_ADDRESS>"' in ipv6_out[0] and "2001:171b:227b" not in ipv6_out[0]
    assert '"ip":"<IP_ADDRESS>"' in ipv6_out[1] and '"ak.bpcip":"<IP_ADDRESS>"' in ipv6_out[2]
    assert counts["ipv6"] >= 3 and counts["ipv4"] >= 2
    (all_loopback,), counts, _ = scrub([loopback], kinds=["ipv4"], keep_private_ips=False)
    assert "Location: <IP_ADDRESS>\nDonzo" in all_loopback and counts == {"ipv4": 1}


def test_dates_years_versions_and_numbers_in_real_text_stay(data_dir, wet):
    """Wikipedia articles (dates, years, ranges, coordinates), the 9/11 timeline (times, dates), Shakespeare and
    the Russian listings (dates 02.01.2015) have nothing to replace; text comes back byte for byte."""
    texts = read_docs(data_dir / "text/wiki_demo.txt", unit="line").column("text").to_pylist()
    texts += read_docs(data_dir / "text/cc_en_head-*.jsonl.gz").column("text").to_pylist()
    texts += [(data_dir / "text/wikitext-2-valid.txt").read_text(encoding="utf-8"),
              (data_dir / "text/tinyshakespeare.txt").read_text(encoding="utf-8")]
    listings = one_doc(read_docs(data_dir / "warc/cc-main-2016-50-fragment3.wet.gz"), "02.01.2015")
    joined = "\n".join(texts)
    for real in ("1 January 1977", "1998-2017", "1808–1871", "9/14/2001", "9:25 a.m.", "9.2.1", "10,000",
                 "9780199734146.001.0001"):
        assert real in joined, real  # the shapes this test is about are really there
    out, counts, _ = scrub(texts + [listings], kinds=["phone", "ipv4", "ipv6"])
    assert out[:-1] == texts and counts == {"ipv6": 0, "ipv4": 0, "phone": 1}
    # The listings' one phone number is the advertising contact; their dates stay.
    assert "Выкуп 3 02.01.2015 в 16:43" in out[-1] and "Реклама на сайте - <PHONE>\n" in out[-1]


def test_international_formats_and_lookalikes():
    """Invented strings supplementing the real ones above: the issue's formats and the shapes that are not phones."""
    phones = ["+44 20 7946 0958", "(555) 123-4567", "+1-202-555-0143", "0049 30 1234567", "+49 (0)30 1234567",
              "+33 1 23 45 67 89", "020 7946 0958", "1-800-555-0199", "555.123.4567", "+441234567890"]
    others = ["2021-03-04", "03/04/2021", "12.05.2020", "1990-2000", "1990-2000-2010", "version 10.0.19041.1",
              "v2.3.4.5", "ISBN 978-3-16-148410-0", "ISBN 0-306-40615-2", "$1,234,567", "1 234 567 €",
              "12.500.000", "ZIP 12345-6789", "(2008) 256 pages", "00632000001783", "10:30:45",
              "00:1A:2B:3C:4D:5E", "std::vector", "14 16 18 20", "192.168.1.1", "fe80::1", "2001:db8::1"]
    out, counts, per_row = scrub([f"call {p} now" for p in phones] + others)
    assert out[:len(phones)] == ["call <PHONE> now"] * len(phones)
    assert out[len(phones):] == others and per_row == [1] * len(phones) + [0] * len(others)
    assert counts == {"email": 0, "ipv6": 0, "ipv4": 0, "phone": len(phones)}


def test_kinds_placeholders_nulls_and_empty_batches():
    text = "mail a.b@example.org from 8.8.8.8 or call +44 20 7946 0958"
    (out,), counts, _ = scrub([text], kinds=["phone", "email"], placeholders={"phone": "[tel]", "email": r"\1"})
    assert out == r"mail \1 from 8.8.8.8 or call [tel]" and counts == {"email": 1, "phone": 1}
    stage = Pii(PiiConfig(count_column="n"))
    docs = pa.table({"id": ["a", "b"], "text": pa.array([None, "x@y.com"], pa.string())})
    kept = stage.process(docs).kept
    assert kept.column("text").to_pylist() == [None, "<EMAIL>"] and kept.column("n").to_pylist() == [0, 1]
    empty = stage.process(docs.slice(0, 0))
    assert empty.kept.schema == kept.schema and empty.counts == {k: 0 for k in ("email", "ipv6", "ipv4", "phone")}
    with pytest.raises(RecipeError, match="kinds"):
        parse_recipe("name: r\ninputs: [{path: x}]\nstages:\n  - pii: {kinds: [ssn]}\noutput: o\n", "r.yaml")


def test_recipe_run_puts_counts_per_kind_in_stats(data_dir, write_recipe):
    inputs = [{"path": str(data_dir / "warc/*.wet.gz")}, {"path": str(data_dir / "text/c4_demo.jsonl")}]
    recipe = write_recipe(inputs, [{"pii": {"count_column": "pii_count"}}], task_size="128KB")
    summary = run_recipe(load_recipe(recipe), workers=2, progress=False)
    assert summary.read == summary.kept == 331
    stats = json.loads((summary.run_dir / "stats" / "pii.json").read_text())
    counts = {row["name"]: row["count"] for row in stats["counts"]}
    per_row = sql.query(summary.run_dir, "SELECT sum(pii_count) AS n, count(*) FILTER (WHERE text LIKE "
                                         "'%<PHONE>%') AS phones FROM docs").to_pylist()[0]
    assert sum(counts.values()) == per_row["n"] and counts["phone"] >= 30 and counts["email"] >= 15
    assert per_row["phones"] >= 8

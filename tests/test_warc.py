"""The WARC/WET reader on real crawl files: every file of warc/ (bad/ included), charsets, columns, damage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.corpora.readers import infer_format, warc
from refinery.corpora.readers.base import ReadBatch, ReadTask
from refinery.corpora.readers.warc import decode_page, python_codec
from refinery.pipelines.commands import sql
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import run_recipe

# For every file: (documents, quarantined, skipped by reason), worked out from the files' own structure
# (record headers, gzip members, where each file is cut or altered).
EXPECTED = {
    "bad/appended_zip_fragment_unexpected_eof.wet.gz": (15, 1, {"warcinfo": 1}),
    "bad/clipped-record.warc.gz": (0, 1, {}),
    "bad/corrupt_starts_with_conversion.wet.gz": (5, 0, {"warcinfo": 1}),
    "bad/corrupt_two_warcinfo.wet.gz": (5, 0, {"warcinfo": 2}),
    "bad/corrupt_warcconversion_1.wet.gz": (5, 0, {"warcinfo": 1}),
    "bad/corrupt_warcconversion_2.wet.gz": (1, 0, {"warcinfo": 1}),
    "bad/corrupt_warcinfo_1.wet.gz": (5, 0, {"warcinfo": 1}),
    "bad/example-trunc.warc": (0, 1, {"warcinfo": 2, "request": 1}),
    "bad/file_and_wet_headers_only.wet.gz": (0, 2, {}),
    "bad/file_headers_only.wet.gz": (0, 1, {}),
    "bad/fragment1_asthma_incomplete_last.wet.gz": (0, 2, {"warcinfo": 1}),
    "bad/fragment1_incomplete_last.wet.gz": (1, 1, {"warcinfo": 1}),
    "bad/fragment2_no_header.wet.gz": (1, 2, {}),
    "cc-main-2016-50-filter_test_1.wet.gz": (25, 0, {"warcinfo": 1}),
    "cc-main-2016-50-fragment3.wet.gz": (5, 0, {"warcinfo": 1}),
    "cc-main-2020-34-sample.warc.gz": (16, 0, {"warcinfo": 1, "request": 17, "metadata": 16}),
    "cc-main-2024-22-whirlwind.warc.gz": (1, 0, {"warcinfo": 1, "request": 1, "metadata": 1}),
    "cc-main-2024-22-whirlwind.warc.wat.gz": (0, 0, {"warcinfo": 1, "metadata": 1}),
    "cc-main-2024-22-whirlwind.warc.wet.gz": (1, 0, {"warcinfo": 1}),
    "cc-single-record.warc.gz": (1, 0, {}),
    "clueweb09-ja-quirk.warc.gz": (29, 0, {"warcinfo": 1}),
    "example-iana.org-chunked.warc": (1, 0, {"warcinfo": 1, "request": 1}),
    "example-resource.warc.gz": (0, 0, {"warcinfo": 2, "resource": 1}),
    "example-wget-bad-target-uri.warc.gz": (1, 0, {"warcinfo": 1, "request": 1, "metadata": 1, "resource": 2}),
    "example.warc.gz": (1, 0, {"warcinfo": 2, "request": 2, "revisit": 1}),
    "post-test.warc.gz": (0, 0, {"request": 3, "not_html": 3}),
    "wget-crawl-0000.warc.gz": (22, 0, {"warcinfo": 1, "request": 22, "metadata": 1, "resource": 2}),
    "wget-crawl-0001.warc.gz": (15, 0, {"warcinfo": 1, "request": 15, "metadata": 1, "resource": 2}),
}


def read_file(path: Path, batch_rows: int = 4096) -> tuple[pa.Table, pa.Table, Counter]:
    """(documents, quarantined, skipped) of one file, every batch checked for reconciling counts."""
    return joined_batches(warc.WarcReader().read(ReadTask("warc", str(path), path.name), batch_rows))


def joined_batches(read: Iterable[ReadBatch]) -> tuple[pa.Table, pa.Table, Counter]:
    """(documents, quarantined, skipped) of a read, every batch checked for reconciling counts and WARC columns
    (tests/test_arc.py reads ARC files with it: the ARC reader gives the WARC reader's columns)."""
    batches = list(read)
    for batch in batches:
        assert batch.records == batch.documents.num_rows + batch.quarantined.num_rows
        assert batch.documents.schema.equals(warc.SCHEMA)
    skipped = sum((Counter(b.skipped) for b in batches), Counter())
    return (pa.concat_tables([b.documents for b in batches]), pa.concat_tables([b.quarantined for b in batches]),
            skipped)


@pytest.fixture(scope="module")
def warc_dir(data_dir) -> Path:
    return data_dir / "warc"


@pytest.fixture(scope="module")
def sample(warc_dir) -> dict[str, dict]:
    """The documents of cc-main-2020-34-sample.warc.gz by URL."""
    docs, _, _ = read_file(warc_dir / "cc-main-2020-34-sample.warc.gz")
    return {row["url"]: row for row in docs.to_pylist()}


def test_the_table_covers_every_file_of_the_folder(warc_dir):
    on_disk = {str(p.relative_to(warc_dir)) for p in warc_dir.rglob("*") if p.is_file()}
    assert on_disk == set(EXPECTED)
    assert all(infer_format(warc_dir / name) == "warc" for name in EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_file_reads_with_the_expected_counts(warc_dir, name):
    docs, quarantined, skipped = read_file(warc_dir / name, batch_rows=4)
    assert (docs.num_rows, quarantined.num_rows, dict(skipped)) == EXPECTED[name]
    assert all(raw for raw in quarantined.column("raw").to_pylist())
    assert all(text.strip() for text in docs.column("text").to_pylist())


def test_chinese_pages_decode_as_chinese(sample):
    # gb2312 named in the HTTP header, gbk and gb2312 named only in <meta>: all read as GBK/GB18030.
    assert "三乡人才市场" in sample["http://0760.jxtdw.com/area/sanxiang/"]["text"]
    assert "深受网友喜爱" in sample["http://037426.cn/"]["text"]
    assert "<title>2018新老藏宝图纪录_主页</title>" in sample["http://0755krk.com/76104/list_4_1.html"]["text"]
    assert "转发给您的好友" in sample["http://096355.com/video/11073.html?11073-0-2"]["text"]
    assert '"charset_from": "http"' in sample["http://037426.cn/"]["meta"]
    assert '"charset_from": "meta"' in sample["http://0755krk.com/76104/list_4_1.html"]["meta"]


def test_russian_page_decodes_as_cyrillic(sample):
    page = sample["http://01spb.ru/company/"]
    assert "<title>О компании - Стратегия пожарной безопасности</title>" in page["text"]
    assert '"charset": "cp1251"' in page["meta"]


def test_no_page_of_the_sample_has_replacement_characters(sample):
    assert len(sample) == 16
    assert [url for url, row in sample.items() if "\ufffd" in row["text"]] == []


def test_columns_of_a_common_crawl_response(sample):
    page = sample["http://0900-hovenier.nl/gelderland/oosterbeek/"]
    assert page["content_type"] == "text/html"
    assert page["crawl_date"].isoformat() == "2020-08-08T18:02:09+00:00"
    assert page["id"] == page["warc_record_id"] and page["id"].startswith("<urn:uuid:")
    assert page["source"] == "cc-main-2020-34-sample.warc.gz"
    assert "Hovenier in Oosterbeek nodig?" in page["text"]


def test_wet_conversion_is_plain_text(warc_dir):
    docs, _, _ = read_file(warc_dir / "cc-main-2024-22-whirlwind.warc.wet.gz")
    row = docs.to_pylist()[0]
    assert (row["url"], row["content_type"]) == ("https://an.wikipedia.org/wiki/Escopete", "text/plain")
    assert row["text"].startswith("Escopete - Biquipedia, a enciclopedia libre")


def test_wget_quirks_and_chunked_transfer(warc_dir):
    docs, _, _ = read_file(warc_dir / "wget-crawl-0000.warc.gz")
    urls = docs.column("url").to_pylist()
    assert "https://soldaini.net/" in urls and not any(u.startswith("<") for u in urls)  # "<…>" unwrapped
    docs, _, _ = read_file(warc_dir / "example-iana.org-chunked.warc")
    assert docs.column("text")[0].as_py().startswith("<!doctype html>")  # not the chunk size "001c37"


def test_clueweb_quirks_keep_the_whole_page(warc_dir):
    # LF-only HTTP headers, `Content-Encoding: gzip` over a stored-decoded payload, an invalid WARC-Date.
    docs, _, _ = read_file(warc_dir / "clueweb09-ja-quirk.warc.gz")
    first = docs.to_pylist()[0]
    assert first["text"].startswith("<html>\n<head>\n<title>ブラウニー ブリーフケース【ヘッドポーター HEADPORTER")
    assert first["crawl_date"] is None and '"warc_date": "2008-10-294T05:21:46-0700"' in first["meta"]
    assert all('"charset": "euc_jp"' in m for m in docs.column("meta").to_pylist())


def test_damage_is_quarantined_and_good_records_around_it_are_kept(warc_dir):
    docs, bad, _ = read_file(warc_dir / "bad/fragment2_no_header.wet.gz")
    assert bad.select(["position", "reason"]).to_pylist() == [
        {"position": 0, "reason": "not_a_record: 7429 bytes without a WARC header"},
        {"position": 17004, "reason": "truncated_record: conversion block has 3124 of 9359 bytes"},
    ]
    assert docs.column("url").to_pylist() == ["http://03online.com/news/11253"]

    docs, bad, skipped = read_file(warc_dir / "bad/example-trunc.warc")
    assert bad.column("reason")[0].as_py().startswith("bad_content_length: the response record")
    assert bad.column("id")[0].as_py() == "<urn:uuid:a9c51e3e-0221-11e7-bf66-0242ac120005>"
    assert skipped["request"] == 1  # the request after the damaged response is still read

    docs, bad, _ = read_file(warc_dir / "bad/appended_zip_fragment_unexpected_eof.wet.gz")
    assert docs.column("url")[-1].as_py() == "http://08.od.ua/bereg_servis_farmacevticheskaya_kompaniya/main"
    assert bad.select(["id", "position"]).to_pylist() == [
        {"id": "<urn:uuid:f99fb8f7-f690-46e3-9182-44f21d5ceace>", "position": 129270}]
    assert bad.column("reason")[0].as_py() == (
        "truncated_record: conversion block has 3479 of 7758 bytes (the gzip stream is cut off)")


def test_a_corrupt_gzip_member_costs_only_its_record(warc_dir, tmp_path):
    original = (warc_dir / "cc-main-2020-34-sample.warc.gz").read_bytes()
    damaged = bytearray(original)
    damaged[20000:20016] = bytes(16)  # inside the gzip member at byte 12685, the response of 01spb.ru
    path = tmp_path / "damaged.warc.gz"
    path.write_bytes(damaged)
    docs, bad, _ = read_file(path)
    clean, _, _ = read_file(warc_dir / "cc-main-2020-34-sample.warc.gz")
    lost = set(clean.column("url").to_pylist()) - set(docs.column("url").to_pylist())
    assert lost == {"http://01spb.ru/company/"} and docs.num_rows == 15
    # What the damaged member decompresses to before the damage is read (issue #15 item 4, as gzip -d does): here
    # the record it cuts short, quarantined on its own row with its decompressed bytes.
    cut_short, row = bad.to_pylist()
    assert cut_short["reason"] == "truncated_record: response block has 104796 of 104911 bytes (gzip damage follows)"
    assert row["reason"].startswith("corrupt_gzip:") and "compressed byte 12685" in row["reason"]
    assert row["raw"] == damaged[12685:31493]  # the whole damaged member, up to the next one that inflates


def test_reading_twice_gives_identical_tables(warc_dir):
    for name in ("cc-main-2020-34-sample.warc.gz", "bad/fragment2_no_header.wet.gz"):
        assert read_file(warc_dir / name)[0].equals(read_file(warc_dir / name)[0])


def test_charset_labels_are_read_as_browsers_read_them():
    assert [python_codec(label) for label in ("GB2312", "gbk", "ISO-8859-1", "Shift_JIS", "utf8", "no-such")] == [
        "gb18030", "gb18030", "cp1252", "cp932", "utf-8", None]


def test_utf8_page_under_a_latin1_label_is_read_as_utf8(sample):
    page = sample["http://0615235.com/02mjqjo%7Bibotij2.btq?odmbtt=106&tdmbtt=121"]["text"].encode("utf-8")
    text, codec, how, _ = decode_page(page, http_charset="iso-8859-1")
    assert (codec, how) == ("utf-8", "utf-8") and "上海聚一行工艺礼品有限公司" in text


def test_recipe_over_every_warc_file_reconciles(warc_dir, write_recipe):
    recipe = write_recipe([{"path": str(warc_dir / "**" / "*")}], [{"length_filter": {"min_words": 5}}])
    summary = run_recipe(load_recipe(recipe), workers=2, progress=False)
    stats = {row["stage"]: row for row in sql.query(summary.run_dir, "SELECT * FROM stats").to_pylist()}
    read = stats["read"]
    kept = sql.query(summary.run_dir, "SELECT count(*) AS n FROM docs").column("n")[0].as_py()
    assert read["docs_in"] == kept + stats["length_filter"]["removed"] + read["quarantined"]
    assert (read["kept"], read["quarantined"]) == (sum(e[0] for e in EXPECTED.values()),
                                                   sum(e[1] for e in EXPECTED.values()))
    assert read["skipped"] == sum(sum(e[2].values()) for e in EXPECTED.values())
    for part in (summary.run_dir / "data").glob("part-*.parquet"):
        assert pq.read_schema(part).field("crawl_date").type == pa.timestamp("us", tz="UTC")
        assert {"content_type", "warc_record_id", "url"} <= set(pq.read_schema(part).names)


@pytest.mark.parametrize("read_bytes", [97, 1021])
def test_framing_does_not_depend_on_where_reads_end(warc_dir, monkeypatch, read_bytes):
    # Reads of a few bytes cut headers, blank lines and gzip members at every possible place.
    names = ["cc-main-2020-34-sample.warc.gz", "example-iana.org-chunked.warc"] + [n for n in EXPECTED if "bad/" in n]
    expected = {name: read_file(warc_dir / name) for name in names}
    monkeypatch.setattr("refinery.corpora.readers.base._READ_BYTES", read_bytes)
    for name in names:
        docs, bad, skipped = read_file(warc_dir / name)
        assert docs.equals(expected[name][0]) and bad.equals(expected[name][1]) and skipped == expected[name][2]


def test_blocks_too_large_for_a_document_are_streamed_past(warc_dir, monkeypatch):
    full, _, _ = read_file(warc_dir / "cc-main-2020-34-sample.warc.gz")
    monkeypatch.setattr("refinery.corpora.readers.warc_framing.MAX_SPAN", 20_000)
    docs, bad, skipped = read_file(warc_dir / "cc-main-2020-34-sample.warc.gz")
    assert (docs.num_rows, bad.num_rows, skipped["oversized"]) == (8, 0, 8)  # 8 responses have blocks > 20 KB
    kept = set(docs.column("id").to_pylist())
    assert docs.equals(full.filter(pa.array([i in kept for i in full.column("id").to_pylist()])))
    _, bad, _ = read_file(warc_dir / "bad/clipped-record.warc.gz")
    assert bad.column("reason")[0].as_py() == ("truncated_record: response block of 88275 bytes ends early"
                                               " (the gzip stream is cut off) (block not kept)")
    assert bad.column("raw")[0].as_py().endswith(b"WARC-Block-Digest: sha1:FG2VO675VIVY4YSJCHVLIJGWV272H7K4\r\n\r\n")


def test_a_content_length_past_the_end_loses_only_its_record(warc_dir, tmp_path):
    # The warcinfo record claims 137 bytes; claiming a million swallows the rest of the file unless reading
    # resumes at the next WARC/ line inside the claimed block.
    data = (warc_dir / "example-iana.org-chunked.warc").read_bytes()
    assert data.count(b"Content-Length: 137\r\n") == 1
    path = tmp_path / "long-warcinfo.warc"
    path.write_bytes(data.replace(b"Content-Length: 137\r\n", b"Content-Length: 1000000\r\n"))
    docs, bad, skipped = read_file(path)
    assert bad.select(["position", "reason"]).to_pylist() == [{"position": 0, "reason": (
        "bad_content_length: the warcinfo record does not end where its Content-Length (1000000) says")}]
    assert docs.column("url").to_pylist() == ["http://www.iana.org/"] and skipped == {"request": 1}

"""The ARC reader on the ARC files of the shared data (and damage made from them): the WARC reader's columns and
decisions, every record accounted for, damage quarantined with its reason and bytes, good records kept."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from test_warc import joined_batches  # tests/ is on sys.path (pytest's rootdir conftest)

from refinery.corpora.readers import infer_format, plan_input, read_task
from refinery.pipelines.commands import sql
from refinery.pipelines.commands.cli import main

SPACE_URL = "http://example.com/index.cfm?FuseAction=Email&EmailTitle=Examples From The Live Web&IsPopUp=False"
# For every file: (documents, quarantined, skipped by reason), worked out from the files themselves.
EXPECTED = {
    "example.arc": (1, 0, {"filedesc": 1}),
    "example.arc.gz": (1, 0, {"filedesc": 1}),
    # Its HTTP headers lost their CRs, so the block is 13 bytes shorter than its Archive-length says; the
    # response inside is complete by its own Content-Length, so it is kept (see test_url_with_a_space_survives).
    "example-space-in-url.arc": (1, 0, {"filedesc": 1}),
    # Archive-lengths -1 (the version block and a response) and 'abc'; the one well-framed record is a blank
    # text/plain block.
    "bad.arc": (0, 3, {"empty": 1}),
}


def read_file(path: Path) -> tuple[pa.Table, pa.Table, Counter]:
    """(documents, quarantined, skipped) of one file, every batch checked for reconciling counts."""
    (task,) = plan_input(str(path), path.parent, 1 << 30)
    return joined_batches(read_task(task, batch_rows=2))


@pytest.fixture(scope="module")
def arc_dir(data_dir) -> Path:
    return data_dir / "arc"


def test_the_table_covers_every_file_of_the_folder(arc_dir):
    assert {p.name for p in arc_dir.iterdir() if p.is_file()} == set(EXPECTED)
    assert all(infer_format(arc_dir / name) == "arc" for name in EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_file_reads_with_the_expected_counts(arc_dir, name):
    docs, bad, skipped = read_file(arc_dir / name)
    assert (docs.num_rows, bad.num_rows, dict(skipped)) == EXPECTED[name]
    assert all(reason.split(":")[0] and ": " in reason for reason in bad.column("reason").to_pylist())


def test_columns_of_an_arc_response(arc_dir):
    (row,) = read_file(arc_dir / "example.arc")[0].to_pylist()
    assert (row["id"], row["url"], row["source"], row["content_type"]) == (
        "example.arc:151", "http://example.com/", "example", "text/html")
    assert row["crawl_date"].isoformat() == "2014-02-16T05:02:21+00:00" and row["warc_record_id"] is None
    assert json.loads(row["meta"]) == {"charset": "utf-8", "charset_from": "meta"}
    assert row["text"].startswith("<!doctype html>") and "<h1>Example Domain</h1>" in row["text"]


def test_arc_and_arc_gz_give_the_same_documents(arc_dir):
    plain, _, skipped = read_file(arc_dir / "example.arc")
    gzipped, _, skipped_gz = read_file(arc_dir / "example.arc.gz")
    assert plain.drop_columns(["id"]).equals(gzipped.drop_columns(["id"])) and skipped == skipped_gz
    assert gzipped.column("id").to_pylist() == ["example.arc.gz:151"]  # positions in the decompressed stream


def test_url_with_a_space_survives(arc_dir):
    (row,) = read_file(arc_dir / "example-space-in-url.arc")[0].to_pylist()
    (same_page,) = read_file(arc_dir / "example.arc")[0].to_pylist()
    assert row["url"] == SPACE_URL and row["text"] == same_page["text"]
    assert json.loads(row["meta"])["arc_length_declared"] == 1591  # what the header line claimed


def test_bad_arc_quarantines_with_reasons_and_keeps_what_is_good(arc_dir, tmp_path):
    docs, bad, _ = read_file(arc_dir / "bad.arc")
    data = (arc_dir / "bad.arc").read_bytes()
    assert bad.select(["position", "reason"]).to_pylist() == [
        {"position": 0, "reason": "invalid_header: Archive-length '-1' is not a number of bytes"},
        {"position": 134, "reason": "invalid_header: Archive-length '-1' is not a number of bytes"},
        {"position": 262, "reason": "invalid_header: Archive-length 'abc' is not a number of bytes"},
    ]
    raws = bad.column("raw").to_pylist()
    assert b"".join(raws) == data[:202] + data[262:]  # every damaged byte kept; 202-262 is the good record
    assert bad.column("id").to_pylist() == ["bad.arc:0", "bad.arc:134", "bad.arc:262"]
    # The same damage between two good records costs only itself.
    example = (arc_dir / "example.arc").read_bytes()
    (tmp_path / "mixed.arc").write_bytes(example + data[134:] + example[151:])
    docs, bad, skipped = read_file(tmp_path / "mixed.arc")
    assert docs.column("url").to_pylist() == ["http://example.com/"] * 2
    assert bad.num_rows == 2 and skipped == {"filedesc": 1, "empty": 1}


def test_truncated_and_corrupt_gzip_members_are_reported(arc_dir, tmp_path):
    data = (arc_dir / "example.arc.gz").read_bytes()  # two gzip members: the version block (171 bytes), the page
    cuts = {500: "truncated_record: response block has 337 of 1591 bytes (the gzip stream is cut off)",
            190: "truncated_stream: the gzip stream is cut off after the last whole record",
            len(data) - 4: "truncated_stream: the gzip stream is cut off after the last whole record",
            100: "truncated_record: the data ends inside an ARC header line (the gzip stream is cut off)"}
    for cut, reason in cuts.items():
        (tmp_path / "cut.arc.gz").write_bytes(data[:cut])
        docs, bad, _ = read_file(tmp_path / "cut.arc.gz")
        assert bad.column("reason").to_pylist() == [reason]
        assert docs.num_rows == (1 if cut == len(data) - 4 else 0)  # the page is whole: only the trailer is cut
    damaged = bytearray(data)
    damaged[300:310] = bytes(10)
    (tmp_path / "corrupt.arc.gz").write_bytes(bytes(damaged) + data[171:])  # the page again, intact
    docs, bad, _ = read_file(tmp_path / "corrupt.arc.gz")
    # The damaged member's decompressed part is read (issue #15 item 4) and frames as no record: its own row first.
    assert bad.column("reason")[0].as_py() == (
        "bad_content_length: the response record does not end where its Archive-length (1591) says")
    assert docs.num_rows == 1 and bad.column("reason")[1].as_py().startswith("corrupt_gzip:")
    assert bad.column("raw")[1].as_py() == damaged[171:]


def test_damage_and_layouts_of_plain_files(arc_dir, tmp_path):
    example = (arc_dir / "example.arc").read_bytes()
    record = example[151:]
    layouts = {
        "cut.arc": (example[:1000], [(151, "truncated_record: response block has 784 of 1591 bytes")], 0),
        "junk-first.arc": (b"junk junk\n\n" + example, [(0, "not_a_record: 11 bytes without an ARC header line")], 1),
        # Heritrix writes no newline between records.
        "heritrix.arc": (example[:150] + example[151:-1] + record[:-1], [], 2),
        # Reading resumes at the next header line inside a claimed block that is too long, and a miscounted
        # length around a whole HTTP response keeps the response.
        "long.arc": (example + record.replace(b" 1591\n", b" 1600\n") + record, [], 3),
        # Garbage after a record whose Archive-length and HTTP Content-Length agree costs only itself (issue #15
        # item 6: good records are not lost beside damage; it used to cost the record before it).
        "junk-after.arc": (example + record + b"junk\n" + record, [(3465, (
            "not_a_record: 5 bytes without an ARC header line"))], 3),
    }
    for name, (data, quarantined, documents) in layouts.items():
        (tmp_path / name).write_bytes(data)
        docs, bad, _ = read_file(tmp_path / name)
        assert bad.select(["position", "reason"]).to_pylist() == [{"position": p, "reason": r} for p, r in quarantined]
        assert docs.num_rows == documents, name


def test_a_dns_record_and_a_version_2_file(arc_dir, tmp_path):
    example = (arc_dir / "example.arc").read_bytes()
    body = b"20140216050221\n93.184.216.119\n"
    (tmp_path / "dns.arc").write_bytes(example + b"dns:example.com 1.2.3.4 20140216050221 text/dns %d\n" % len(body)
                                       + body + b"\n")
    docs, bad, skipped = read_file(tmp_path / "dns.arc")
    assert (docs.num_rows, bad.num_rows, skipped) == (1, 0, {"filedesc": 1, "not_http": 1})
    version = b"2 0 x\nURL IP-address Archive-date Content-type Result-code Checksum Location Offset Filename " \
              b"Archive-length\n"
    v2 = (b"filedesc://x.arc 0.0.0.0 20140216050221 text/plain 200 - - 0 x.arc %d\n" % len(version) + version + b"\n"
          + example[151:].replace(b"text/html 1591", b"text/html 200 sha1:X - 151 x.arc 1591"))
    (tmp_path / "v2.arc").write_bytes(v2)
    docs, bad, _ = read_file(tmp_path / "v2.arc")
    columns = ["url", "crawl_date", "text"]
    assert bad.num_rows == 0 and docs.select(columns).equals(read_file(arc_dir / "example.arc")[0].select(columns))


@pytest.mark.parametrize("read_bytes", [7, 97])
def test_framing_does_not_depend_on_where_reads_end(arc_dir, monkeypatch, read_bytes):
    expected = {name: read_file(arc_dir / name) for name in EXPECTED}
    monkeypatch.setattr("refinery.corpora.readers.base._READ_BYTES", read_bytes)
    for name in EXPECTED:
        docs, bad, skipped = read_file(arc_dir / name)
        assert docs.equals(expected[name][0]) and bad.equals(expected[name][1]) and skipped == expected[name][2]


def test_a_refinery_run_over_every_arc_file(arc_dir, write_recipe):
    recipe = write_recipe([{"path": str(arc_dir / "*")}], [{"extract": {}}])  # each file's format from its name
    assert main(["run", str(recipe), "--workers", "2", "--quiet"]) == 0
    run_dir = recipe.parent / "out"
    stats = {row["stage"]: row for row in sql.query(run_dir, "SELECT * FROM stats").to_pylist()}
    read, extract = stats["read"], stats["extract"]
    kept = sql.query(run_dir, "SELECT count(*) AS n FROM docs").column("n")[0].as_py()
    assert read["docs_in"] == kept + extract["removed"] + read["quarantined"]
    assert (read["kept"], read["quarantined"], read["skipped"]) == (3, 3, 4)
    texts = sql.query(run_dir, "SELECT url, text FROM docs ORDER BY url").to_pylist()
    assert [row["url"] for row in texts] == ["http://example.com/", "http://example.com/", SPACE_URL]
    assert all(row["text"].startswith("This domain is") for row in texts)  # extracted from the HTML

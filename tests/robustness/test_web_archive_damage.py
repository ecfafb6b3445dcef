"""Damaged WARC, WET and ARC files, made from real crawls, each run beside an undamaged real file.

The good records are counted by the test from the undamaged crawl: a plain header scan finds every record, its
length and whether it is a document (a 2xx HTML response, a WET conversion); the damage touches known records, and
the count is the documents of the records it left alone. Where a gzip member is damaged, its part before the
damage is decompressed by zlib alone, a byte at a time, and the records that lie whole in it are counted.
"""

from __future__ import annotations

import gzip
import json
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from refinery.pipelines.commands import sql

from .counting import WarcRecord, framed_documents, gzip_members, inflate_prefix, warc_records
from .harness import Damage, check, flip, run_refinery

HIT = 6  # the response record the damage is done to (records 0-5: warcinfo, requests and two responses)


@dataclass
class Crawl:
    gz: bytes  # a real wget crawl: one gzip member per record
    plain: bytes
    records: list[WarcRecord]
    members: list[tuple[int, int]]
    wet: bytes  # a real Common Crawl WET file: one gzip stream for all its records
    arc: bytes  # a real ARC file: its version block, then its response four times
    garbage: bytes

    def documents(self, records: range | None = None) -> int:
        chosen = self.records if records is None else [self.records[i] for i in records]
        return sum(r.document for r in chosen)


@pytest.fixture(scope="module")
def crawl(data_dir: Path, garbage: bytes) -> Crawl:
    gz = (data_dir / "warc/wget-crawl-0001.warc.gz").read_bytes()
    plain = gzip.decompress(gz)
    records = warc_records(plain)
    assert records[HIT].type == "response" and records[HIT].document
    example = (data_dir / "arc/example.arc").read_bytes()
    return Crawl(gz, plain, records, gzip_members(gz), (data_dir / "warc/cc-main-2016-50-filter_test_1.wet.gz")
                 .read_bytes(), example[:151] + example[151:] * 4, garbage)


def _plain(c: Crawl, edit: Callable[[bytes, WarcRecord], bytes], kept: int, reasons: list[str]) -> Damage:
    """The crawl decompressed, record HIT edited."""
    return Damage("damaged.warc", edit(c.plain, c.records[HIT]), kept, reasons)


def _length(c: Crawl, value: bytes) -> bytes:
    start, end = c.records[HIT].length_field
    return c.plain[:start] + value + c.plain[end:]


def _gz_cut(c: Crawl, at: int, kept: int, reason: str) -> Damage:
    return Damage("damaged.warc.gz", c.gz[:at], kept, [reason])


def _gz_flipped(c: Crawl) -> Damage:
    """The member of record HIT damaged: what zlib alone gets of it is the record cut short, then the damage."""
    start, end = c.members[HIT]
    damaged = flip(c.gz, (start + end) // 2)
    salvaged = inflate_prefix(damaged[start:end], "gzip")
    assert 0 < len(salvaged) < c.records[HIT].end - c.records[HIT].start  # the record is cut short
    return Damage("damaged.warc.gz", damaged, c.documents() - 1, ["truncated_record", "corrupt_gzip"])


def _per_record_gzip(plain: bytes, records: list[WarcRecord]) -> bytes:
    return b"".join(gzip.compress(plain[r.start : r.end], mtime=0) for r in records)


def _wet_damaged(c: Crawl, data: bytes, reasons: list[str]) -> Damage:
    """The WET stream damaged: the records lying whole in what zlib gets of it. Where that differs from the
    undamaged stream (a flip garbles what follows it until zlib notices), the records from the one the first
    difference falls in on may be quarantined as they come."""
    salvaged, clean = inflate_prefix(data, "gzip"), zlib.decompress(c.wet, 31)
    differs = next((i for i, (a, b) in enumerate(zip(salvaged, clean)) if a != b), None)
    damage = Damage("damaged.warc.wet.gz", data, framed_documents(salvaged), reasons)
    if differs is not None:
        damage.garbled, damage.garbled_from = None, clean.rfind(b"WARC/1.0\r\n", 0, differs)
    return damage


def _arc_records(c: Crawl) -> list[int]:
    """Offsets of the ARC file's header lines (the version block's, then four responses')."""
    starts, pos = [], 0
    while (found := c.arc.find(b"\nhttp://example.com/ ", pos)) >= 0:
        starts.append(found + 1)
        pos = found + 1
    return [0, *starts]


def _arc_length(c: Crawl, record: int, value: bytes) -> bytes:
    start = _arc_records(c)[record]
    line_end = c.arc.index(b"\n", start)
    head, _, _ = c.arc[start:line_end].rpartition(b" ")
    return c.arc[:start] + head + b" " + value + c.arc[line_end:]


KINDS: dict[str, Callable[[Crawl], Damage]] = {
    # gzip damage in a crawl of one member per record
    "warc_gz_flipped_bytes_in_a_member": _gz_flipped,
    "warc_gz_garbage_between_members": lambda c: Damage("damaged.warc.gz", c.gz[: c.members[HIT][0]] + c.garbage
                                                        + c.gz[c.members[HIT][0] :], c.documents(), ["corrupt_gzip"]),
    "warc_gz_cut_mid_member": lambda c: _gz_cut(c, sum(c.members[HIT]) // 2, c.documents(range(HIT)),
                                                "truncated_record"),
    "warc_gz_cut_19_bytes_into_a_member": lambda c: _gz_cut(c, c.members[HIT][0] + 19, c.documents(range(HIT)),
                                                            "truncated_stream"),
    "warc_gz_cut_in_the_trailer": lambda c: _gz_cut(c, len(c.gz) - 4, c.documents(), "truncated_stream"),
    "warc_gz_zero_length": lambda c: _gz_cut(c, 0, 0, "truncated_stream"),
    "warc_gz_content_length_of_1_gb": lambda c: Damage(
        "damaged.warc.gz", _per_record_gzip(_length(c, b"1000000000"), warc_records(_length(c, b"1000000000"))[:HIT]
                                            ) + gzip.compress(_length(c, b"1000000000")[c.records[HIT].start :]),
        c.documents() - 1, ["bad_content_length"]),
    # framing damage in the plain crawl
    "warc_content_length_of_1_gb": lambda c: Damage("damaged.warc", _length(c, b"1000000000"), c.documents() - 1,
                                                    ["bad_content_length"]),
    "warc_content_length_too_short": lambda c: Damage("damaged.warc", _length(c, b"1000"), c.documents() - 1,
                                                      ["bad_content_length"]),
    "warc_content_length_not_a_number": lambda c: Damage("damaged.warc", _length(c, b"4o592"), c.documents() - 1,
                                                         ["invalid_header"]),
    "warc_record_cut_in_half": lambda c: _plain(c, lambda p, r: p[: (r.start + r.end) // 2] + p[r.end - 4 :],
                                                c.documents() - 1, ["bad_content_length"]),
    "warc_garbage_between_records": lambda c: _plain(c, lambda p, r: p[: r.start] + c.garbage + p[r.start :],
                                                     c.documents(), ["not_a_record"]),
    "warc_missing_version_line": lambda c: _plain(c, lambda p, r: p[: r.start] + p[r.start + 10 :],
                                                  c.documents() - 1, ["invalid_header"]),
    "warc_two_records_glued_together": lambda c: _plain(c, lambda p, r: p[: r.start - 4] + p[r.start :],
                                                        c.documents(), ["missing_record_end"]),
    "warc_cut_mid_record": lambda c: _plain(c, lambda p, r: p[: (r.start + r.end) // 2], c.documents(range(HIT)),
                                            ["truncated_record"]),
    "warc_cut_after_a_header": lambda c: _plain(c, lambda p, r: p[: p.index(b"\r\n\r\n", r.start) + 4],
                                                c.documents(range(HIT)), ["truncated_record"]),
    "warc_empty_file": lambda c: Damage("damaged.warc", b"", 0, []),
    # a WET file gzipped as one stream
    "wet_gz_cut_mid_stream": lambda c: _wet_damaged(c, c.wet[: len(c.wet) // 2], ["truncated_record"]),
    "wet_gz_flipped_bytes": lambda c: _wet_damaged(c, flip(c.wet, len(c.wet) // 2), ["corrupt_gzip"]),
    "wet_gz_trailing_garbage": lambda c: Damage("damaged.warc.wet.gz", c.wet + c.garbage, 25, ["corrupt_gzip"]),
    # ARC: a version block and four responses
    "arc_archive_length_not_a_number": lambda c: Damage("damaged.arc", _arc_length(c, 2, b"15x1"), 3,
                                                        ["invalid_header"]),
    "arc_cut_mid_record": lambda c: Damage("damaged.arc", c.arc[: _arc_records(c)[3] + 900], 2, ["truncated_record"]),
    "arc_garbage_between_records": lambda c: Damage(
        "damaged.arc", c.arc[: _arc_records(c)[2]] + c.garbage + b"\n" + c.arc[_arc_records(c)[2] :], 4,
        ["not_a_record"]),
    "arc_gz_cut_in_the_trailer": lambda c: Damage(
        "damaged.arc.gz", b"".join(gzip.compress(c.arc[a:b], mtime=0) for a, b in zip(
            _arc_records(c), [*_arc_records(c)[1:], len(c.arc)]))[:-4], 4, ["truncated_stream"]),
}


@pytest.fixture(scope="module")
def neighbours(data_dir: Path) -> dict[str, Damage]:
    single = (data_dir / "warc/cc-single-record.warc.gz").read_bytes()
    return {"warc": Damage("neighbour.warc.gz", single, 1, []),
            "arc": Damage("neighbour.arc.gz", (data_dir / "arc/example.arc.gz").read_bytes(), 1, [])}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_damaged_web_archives_lose_nothing_and_say_what_happened(kind, crawl, neighbours, tmp_path):
    check(tmp_path, KINDS[kind](crawl), neighbours["arc" if kind.startswith("arc") else "warc"])


def test_a_false_content_length_keeps_the_record_bytes_and_the_next_records(crawl, neighbours, tmp_path):
    """A gigabyte claimed: reading goes back to the next WARC/ line inside the claim; the record keeps its bytes."""
    outcome = check(tmp_path, KINDS["warc_content_length_of_1_gb"](crawl), neighbours["warc"])
    (row,) = [r for r in outcome.quarantine if r["source"] == "damaged"]
    hit, damaged = crawl.records[HIT], _length(crawl, b"1000000000")
    after = crawl.records[HIT + 1].start + len(damaged) - len(crawl.plain)  # the longer length moved it on
    assert row["position"] == hit.start and row["raw"] == damaged[hit.start : after]
    block = damaged.index(b"\r\n\r\n", hit.start) + 4
    assert row["reason"] == ("bad_content_length: the response record does not end where its Content-Length "
                             f"(1000000000) says; the next record starts {after - block} bytes into the block")


def test_an_arc_length_that_miscounts_a_whole_response_is_kept_and_noted(crawl, neighbours, tmp_path):
    """ARC's one leniency (see corpora/readers/arc.py): the response is whole by its own Content-Length, so it is
    kept, and `meta` says what the Archive-length claimed instead of a quarantine row."""
    start = _arc_records(crawl)[2]
    declared = int(crawl.arc[start : crawl.arc.index(b"\n", start)].rsplit(b" ", 1)[1])
    damage = Damage("damaged.arc", _arc_length(crawl, 2, b"%d" % (declared + 40)), 4, [])
    outcome = check(tmp_path, damage, neighbours["arc"])
    metas = sql.query(outcome.run_dir, "SELECT meta FROM docs WHERE source = 'damaged'").column("meta").to_pylist()
    assert [json.loads(m).get("arc_length_declared") for m in metas].count(declared + 40) == 1


@pytest.mark.parametrize("kind", ["warc_content_length_of_1_gb", "warc_gz_cut_19_bytes_into_a_member"])
def test_through_the_command_line(kind, crawl, neighbours, tmp_path):
    check(tmp_path, KINDS[kind](crawl), neighbours["warc"], cli=True)


@pytest.fixture(scope="module")
def sample(data_dir: Path) -> tuple[bytes, list[WarcRecord]]:
    plain = gzip.decompress((data_dir / "warc/cc-main-2020-34-sample.warc.gz").read_bytes())
    return plain, warc_records(plain)


def _page(plain: bytes, record: WarcRecord) -> tuple[int, bytes]:
    """Where a response's HTML starts, and the HTML."""
    body = plain.index(b"\r\n\r\n", plain.index(b"\r\n\r\n", record.start) + 4) + 4
    return body, plain[body : record.end - 4]


def _read_one(tmp_path: Path, plain: bytes, neighbours: dict[str, Damage]) -> dict:
    outcome = check(tmp_path, Damage("damaged.warc", plain, 16, []), neighbours["warc"])
    rows = sql.query(outcome.run_dir, "SELECT url, text, meta FROM docs WHERE source = 'damaged'").to_pylist()
    return {row["url"]: row for row in rows}


def test_declared_utf8_with_invalid_bytes_stays_utf8(sample, neighbours, tmp_path):
    """Issue #15 item 8: a UTF-8 page (so declared) with 40 bytes broken keeps its charset, each broken sequence a
    U+FFFD, instead of being read as windows-1251 mojibake; meta counts the replacements."""
    plain, records = sample
    body, html = _page(plain, records[20])
    assert b"charset=utf-8" in plain[records[20].start : body] and html.decode("utf-8")
    broken = bytearray(html)
    leads = [i for i, b in enumerate(html) if b >= 0xE0][:400:10]  # lead bytes of 40 three-byte characters
    for i in leads:
        broken[i] = 0xFF
    pages = _read_one(tmp_path, plain[:body] + bytes(broken) + plain[body + len(html) :], neighbours)
    url = next(url for url, row in pages.items() if "\ufffd" in row["text"])
    text, meta = pages[url]["text"], json.loads(pages[url]["meta"])
    assert (meta["charset"], meta["charset_from"], meta["charset_errors"]) == ("utf-8", "http", text.count("\ufffd"))
    intact = html[leads[-1] + 3 :].decode("utf-8", "ignore")[:200]
    assert intact in text and len(text) > len(html) / 3  # the rest of the page as it was, not mojibake


def test_a_wrong_utf8_label_is_passed_over_and_said_why(sample, neighbours, tmp_path):
    """A windows-1251 page whose HTTP header says UTF-8: its bytes are no UTF-8 (almost no valid multi-byte
    sequence), so the label is rejected, meta says why, and its <meta> charset decodes it."""
    plain, records = sample
    start, end = records[5].start, records[5].end
    relabelled = plain[start:end].replace(b"charset=windows-1251\r\n", b"charset=utf-8       \r\n", 1)
    assert len(relabelled) == end - start and relabelled != plain[start:end]
    pages = _read_one(tmp_path, plain[:start] + relabelled + plain[end:], neighbours)
    meta = json.loads(pages["http://01spb.ru/company/"]["meta"])
    assert (meta["charset"], meta["charset_from"]) == ("cp1251", "meta")
    assert meta["charset_rejected"].startswith("utf-8 (http): ") and "О компании" in pages[
        "http://01spb.ru/company/"]["text"]


def test_output_is_the_same_whatever_the_worker_count(crawl, data_dir, tmp_path):
    """Damaged inputs (a WARC with a false length, a cut WET) read by one worker and by two: the same bytes."""
    files = {"warc": KINDS["warc_content_length_of_1_gb"](crawl), "wet": KINDS["wet_gz_cut_mid_stream"](crawl),
             "arc": KINDS["arc_garbage_between_records"](crawl)}
    for label, damage in files.items():  # distinct names, so that every file is an input of its own
        damage.name = f"{label}-{damage.name}"
    parts = []
    for workers in (1, 2):  # the same folder both times: `file` in the quarantine is the input's path
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        outcome = run_refinery(tmp_path, files, workers=workers)
        parts.append({p.relative_to(outcome.run_dir): p.read_bytes() for sub in ("data", "quarantine")
                      for p in sorted((outcome.run_dir / sub).glob("*.parquet"))})
    assert parts[0] == parts[1] and len(parts[0]) >= 4

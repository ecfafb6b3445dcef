"""Damaged Wikipedia dumps and instruction sets (Alpaca, ShareGPT), made from real files, each run beside an
undamaged real file.

Wikipedia: the dump is cut into bz2 streams at page boundaries, as multistream dumps are; the good pages are the
`<page>…</page>` that lie whole in what the standard library's bz2 (or zlib) gets of the damaged file. Instruction
sets: the good records are the array elements that json's own decoder parses whole and that hold the fields of
their format; a damaged element is one the test damaged.
"""

from __future__ import annotations

import bz2
import gzip
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .counting import array_elements, inflate_prefix, whole_pages
from .harness import Damage, check, flip


@dataclass
class Material:
    xml: bytes  # a real MediaWiki dump, decompressed
    pages: list[tuple[int, int]]  # where its pages lie
    streams: list[bytes]  # it as three bz2 streams (header and pages 0-2, pages 3-5, pages 6-8 and the footer)
    alpaca: list[dict]  # real Alpaca records
    sharegpt: list[dict]  # real ShareGPT conversations
    garbage: bytes


@pytest.fixture(scope="module")
def material(data_dir: Path, garbage: bytes) -> Material:
    xml = bz2.decompress((data_dir / "wikipedia/testcorpus.xml.bz2").read_bytes())
    pages = [m.span() for m in re.finditer(rb"<page>.*?</page>", xml, re.S)]
    cuts = [0, pages[3][0], pages[6][0], len(xml)]
    streams = [bz2.compress(xml[a:b]) for a, b in zip(cuts, cuts[1:])]
    alpaca = json.loads((data_dir / "instructions/alpaca_en_demo.json").read_bytes())[:50]
    sharegpt = json.loads((data_dir / "instructions/sharegpt_dummy_conversation.json").read_bytes())[:40]
    return Material(xml, pages, streams, alpaca, sharegpt, garbage)


def _documents(xml: bytes) -> int:
    """Pages lying whole in `xml` that are articles: the main namespace, with text, no redirect."""
    pages = re.findall(rb"<page>.*?</page>", xml, re.S)
    return sum(1 for p in pages if b"<ns>0</ns>" in p and b"<redirect" not in p and re.search(rb"<text[^>]*>\s*\S", p))


def _dump(name: str, data: bytes, xml_read: bytes, reasons: list[str]) -> Damage:
    assert len(whole_pages(xml_read)) == _documents(xml_read)  # every page of this dump is an article
    return Damage(name, data, _documents(xml_read), reasons)


def _cut_stream(m: Material, codec: str, whole: bytes) -> Damage:
    """The dump as one compressed stream cut in half: the pages whole in what it decompresses to up to the cut."""
    cut = whole[: len(whole) // 2]
    return _dump("damaged.xml.bz2" if codec == "bz2" else "damaged.xml.gz", cut, inflate_prefix(cut, codec),
                 ["truncated_stream"])


def _page_edit(m: Material, page: int, edit: Callable[[bytes], bytes], reason: str) -> Damage:
    start, end = m.pages[page]
    xml = m.xml[:start] + edit(m.xml[start:end]) + m.xml[end:]
    return Damage("damaged.xml", xml, _documents(m.xml) - 1, [reason])


def _is_alpaca(record: Any) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("instruction"), str)
            and isinstance(record.get("output"), str) and isinstance(record.get("input", ""), str))


def _array(records: list, name: str = "damaged.json") -> bytes:
    return json.dumps(records, ensure_ascii=False, indent=2).encode()


def _records(m: Material, which: str, index: int, change: Callable[[dict], Any], reason: str) -> Damage:
    """One element of the set changed: it is quarantined with `reason`, the others kept."""
    records = json.loads(json.dumps(getattr(m, which)))
    records[index] = change(records[index])
    return Damage("damaged.json", _array(records), len(records) - 1, [reason])


def _cut_array(data: bytes, keep: Callable[[Any], bool]) -> Damage:
    return Damage("damaged.json", data, array_elements(data.decode("utf-8", "ignore"), keep), ["truncated_stream"])


def _without(record: dict, key: str) -> dict:
    return {k: v for k, v in record.items() if k != key}


def _turn(record: dict, index: int, turn: Any) -> dict:
    record["conversations"][index] = turn(record["conversations"][index])
    return record


KINDS: dict[str, Callable[[Material], Damage]] = {
    # Wikipedia dumps
    "wiki_bz2_cut_mid_stream": lambda m: _dump("damaged.xml.bz2", m.streams[0] + m.streams[1][:200],
                                               bz2.decompress(m.streams[0]), ["truncated_stream"]),
    "wiki_bz2_trailing_garbage": lambda m: _dump("damaged.xml.bz2", b"".join(m.streams) + m.garbage, m.xml,
                                                 ["corrupt_bz2"]),
    "wiki_bz2_corrupt_stream": lambda m: _dump(
        "damaged.xml.bz2", m.streams[0] + flip(m.streams[1], 100) + m.streams[2],
        bz2.decompress(m.streams[0]) + bz2.decompress(m.streams[2]), ["corrupt_bz2"]),
    "wiki_bz2_single_stream_cut": lambda m: _cut_stream(m, "bz2", bz2.compress(m.xml)),
    "wiki_bz2_zero_length": lambda m: Damage("damaged.xml.bz2", b"", 0, ["truncated_stream"]),
    "wiki_gz_cut_mid_page": lambda m: _cut_stream(m, "gzip", gzip.compress(m.xml, mtime=0)),
    "wiki_cut_mid_page": lambda m: _dump("damaged.xml", m.xml[: sum(m.pages[5]) // 2],
                                         m.xml[: sum(m.pages[5]) // 2], ["truncated_page"]),
    "wiki_broken_xml_tag": lambda m: _page_edit(m, 3, lambda p: p.replace(b"</title>", b"</titel>", 1),
                                                "malformed_xml"),
    "wiki_unterminated_page": lambda m: _page_edit(m, 4, lambda p: p.replace(b"</page>", b""), "unterminated_page"),
    "wiki_page_without_text": lambda m: _page_edit(m, 2, lambda p: re.sub(rb"<text[^>]*>.*?</text>", b"", p,
                                                                          flags=re.S), "missing_text"),
    "wiki_page_without_title": lambda m: _page_edit(m, 7, lambda p: re.sub(rb"<title>.*?</title>", b"", p),
                                                    "missing_title"),
    # Alpaca
    "alpaca_cut_mid_array": lambda m: _cut_array(_array(m.alpaca)[: len(_array(m.alpaca)) // 2], _is_alpaca),
    "alpaca_nul_bytes_mid_array": lambda m: Damage(
        "damaged.json", _array(m.alpaca)[:30000] + bytes(512) + _array(m.alpaca)[30512:],
        array_elements(_array(m.alpaca)[:30000].decode(), _is_alpaca), ["malformed_json"]),
    "alpaca_missing_output": lambda m: _records(m, "alpaca", 7, lambda r: _without(r, "output"), "missing_field"),
    "alpaca_element_is_a_string": lambda m: _records(m, "alpaca", 8, lambda r: r["instruction"], "not_an_object"),
    "alpaca_output_is_a_list": lambda m: _records(m, "alpaca", 9, lambda r: {**r, "output": [r["output"]]},
                                                  "field_not_string"),
    "alpaca_invalid_utf8_in_an_element": lambda m: Damage(
        "damaged.json", _array(m.alpaca).replace(m.alpaca[10]["instruction"].encode(),
                                                 m.alpaca[10]["instruction"].encode()[:5] + b"\xff"
                                                 + m.alpaca[10]["instruction"].encode()[5:], 1),
        49, ["invalid_utf8"]),
    "alpaca_garbage_after_the_array": lambda m: Damage("damaged.json", _array(m.alpaca) + b"\n" + m.garbage, 50,
                                                       ["malformed_json"]),
    "alpaca_empty_file": lambda m: Damage("damaged.json", b"", 0, []),
    # ShareGPT
    "sharegpt_object_where_a_list_is_expected": lambda m: _records(
        m, "sharegpt", 5, lambda r: {**r, "conversations": r["conversations"][0]}, "missing_field"),
    "sharegpt_turn_without_a_role": lambda m: _records(m, "sharegpt", 6, lambda r: _turn(
        r, 1, lambda t: _without(t, "from")), "unknown_role"),
    "sharegpt_turn_is_not_an_object": lambda m: _records(m, "sharegpt", 7, lambda r: _turn(
        r, 0, lambda t: t["value"]), "bad_turn"),
    "sharegpt_value_is_a_number": lambda m: _records(m, "sharegpt", 8, lambda r: _turn(
        r, 0, lambda t: {**t, "value": 42}), "content_not_string"),
    "sharegpt_cut_mid_array": lambda m: _cut_array(_array(m.sharegpt)[: len(_array(m.sharegpt)) // 3],
                                                   lambda r: isinstance(r, dict)),
}


@pytest.fixture(scope="module")
def neighbours(data_dir: Path) -> dict[str, Damage]:
    dump = (data_dir / "wikipedia/testcorpus.xml.bz2").read_bytes()
    identity = (data_dir / "instructions/identity.json").read_bytes()
    return {"wiki": Damage("neighbour.xml.bz2", dump, _documents(bz2.decompress(dump)), []),
            "set": Damage("neighbour.json", identity, array_elements(identity.decode(), _is_alpaca), [])}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_damaged_dumps_and_sets_lose_nothing_and_say_what_happened(kind, material, neighbours, tmp_path):
    check(tmp_path, KINDS[kind](material), neighbours["wiki" if kind.startswith("wiki") else "set"])


def test_trailing_garbage_after_a_dump_keeps_its_bytes(material, neighbours, tmp_path):
    outcome = check(tmp_path, KINDS["wiki_bz2_trailing_garbage"](material), neighbours["wiki"])
    (row,) = [r for r in outcome.quarantine if r["source"] == "damaged"]
    assert row["raw"] == material.garbage and row["reason"].startswith("corrupt_bz2: ")
    assert f"at compressed byte {sum(map(len, material.streams))}" in row["reason"]

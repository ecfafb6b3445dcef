"""Damaged JSON Lines (plain, .gz, .zst) and bz2 text, made from real files, each run beside an undamaged real file.

Each kind is one test id. The good records are counted by the test: json.loads line by line over the pieces the
file was built from, each damaged compressed member decompressed by itself, a byte at a time, as far as it goes.
"""

from __future__ import annotations

import bz2
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from .counting import inflate_prefix, json_lines, unusable_lines, whole_lines
from .harness import Damage, check, flip


@dataclass
class Material:
    lines: list[bytes]  # 60 real C4 documents, one JSON line each (newline included)
    gzip_members: list[bytes]  # the lines in three gzip members of 20
    zstd_frames: list[bytes]  # ... and in three zstd frames
    cc: bytes  # a real single-member .jsonl.gz
    verses: list[bytes]  # real lines of plain text
    garbage: bytes


@pytest.fixture(scope="module")
def material(data_dir: Path, garbage: bytes) -> Material:
    lines = (data_dir / "text/c4_demo.jsonl").read_bytes().splitlines(keepends=True)[:60]
    groups = [b"".join(lines[i : i + 20]) for i in (0, 20, 40)]
    verses = (data_dir / "text/tinyshakespeare.txt").read_bytes().splitlines(keepends=True)[:600]
    return Material(lines, [gzip.compress(g, mtime=0) for g in groups],
                    [zstandard.ZstdCompressor().compress(g) for g in groups],
                    (data_dir / "text/cc_en_head-0091.jsonl.gz").read_bytes(), verses, garbage)


def _edit(material: Material, index: int, line: bytes, reason: str | None) -> Damage:
    """Line `index` of the plain file replaced: one quarantine row with `reason`, or none when it is still good."""
    lines = list(material.lines)
    lines[index] = line
    data = b"".join(lines)
    return Damage("damaged.jsonl", data, json_lines(data), [reason] if reason else [])


def _record(material: Material, index: int) -> dict:
    return json.loads(material.lines[index])


def _members(material: Material, codec: str) -> tuple[list[bytes], int]:
    pieces = material.gzip_members if codec == "gzip" else material.zstd_frames
    return list(pieces), 20  # documents per piece: every C4 line is one


def _damaged_piece(material: Material, codec: str, damage: Callable[[bytes], bytes], reason: str) -> Damage:
    """The middle member (or frame) damaged: the ones around it whole, it as far as it decompresses."""
    pieces, per_piece = _members(material, codec)
    broken = damage(pieces[1])
    salvaged = whole_lines(inflate_prefix(broken, codec))
    suffix = ".jsonl.gz" if codec == "gzip" else ".jsonl.zst"
    return Damage("damaged" + suffix, pieces[0] + broken + pieces[2], 2 * per_piece + json_lines(salvaged), [reason],
                  garbled=unusable_lines(salvaged))


def _damaged_file(name: str, data: bytes, codec: str, reason: str) -> Damage:
    """A file of one member damaged: the lines it decompresses to before the damage."""
    salvaged = whole_lines(inflate_prefix(data, codec))
    return Damage(name, data, json_lines(salvaged), [reason], garbled=unusable_lines(salvaged))


def _cut(name: str, codec: str, whole: list[bytes], cut: bytes) -> Damage:
    """Whole members, then one cut off: the whole members' lines, and the cut one's whole lines up to the cut."""
    before = sum(json_lines(inflate_prefix(piece, codec)) for piece in whole)
    return Damage(name, b"".join(whole) + cut, before + json_lines(whole_lines(inflate_prefix(cut, codec))),
                  ["truncated_stream"])


def _bz2_text(material: Material, streams: list[bytes], tail: bytes, kept_lines: list[bytes], reason: str) -> Damage:
    kept = sum(1 for line in kept_lines if line.strip())
    return Damage("damaged.txt.bz2", b"".join(streams) + tail, kept, [reason], {"unit": "line"})


def _verse_streams(material: Material) -> list[bytes]:
    return [bz2.compress(b"".join(material.verses[i : i + 200])) for i in (0, 200, 400)]


KINDS: dict[str, Callable[[Material], Damage]] = {
    # plain JSON Lines: one bad line costs itself; what is no damage costs nothing
    "jsonl_invalid_utf8": lambda m: _edit(m, 5, m.lines[5][:40] + b"\xff\xfe" + m.lines[5][42:], "invalid_utf8"),
    "jsonl_nul_bytes": lambda m: _edit(m, 7, m.lines[7][:50] + bytes(64) + m.lines[7][114:], "malformed_json"),
    "jsonl_huge_line": lambda m: _edit(m, 9, json.dumps({**_record(m, 9), "text": "\n".join(
        json.loads(line)["text"] for line in m.lines) * 12}).encode() + b"\n", None),
    "jsonl_line_is_an_array": lambda m: _edit(m, 3, json.dumps([_record(m, 3)]).encode() + b"\n", "not_an_object"),
    "jsonl_line_is_a_number": lambda m: _edit(m, 3, b"%d\n" % len(_record(m, 3)["text"]), "not_an_object"),
    "jsonl_missing_text": lambda m: _edit(m, 11, m.lines[11].replace(b'"text":', b'"body":', 1), "missing_text"),
    "jsonl_text_not_a_string": lambda m: _edit(m, 12, json.dumps({**_record(m, 12), "text": [_record(m, 12)["text"]]})
                                               .encode() + b"\n", "text_not_string"),
    "jsonl_lone_surrogate": lambda m: _edit(m, 13, m.lines[13].replace(b'"text":"', b'"text":"\\ud800', 1)
                                            .replace(b'"text": "', b'"text": "\\ud800', 1), "invalid_unicode"),
    "jsonl_line_cut_short": lambda m: _edit(m, 14, m.lines[14][: len(m.lines[14]) // 2] + b"\n", "malformed_json"),
    "jsonl_bom": lambda m: Damage("damaged.jsonl", b"\xef\xbb\xbf" + b"".join(m.lines), 60, []),
    "jsonl_crlf": lambda m: Damage("damaged.jsonl", b"".join(line.replace(b"\n", b"\r\n") for line in m.lines), 60, []),
    "jsonl_no_final_newline": lambda m: Damage("damaged.jsonl", b"".join(m.lines).rstrip(b"\n"), 60, []),
    "jsonl_empty_file": lambda m: Damage("damaged.jsonl", b"", 0, []),
    # gzip: a damaged member costs what follows its damage; reading resumes at the next member
    "gz_flipped_bytes_in_a_member": lambda m: _damaged_piece(m, "gzip", lambda b: flip(b, len(b) // 2),
                                                             "corrupt_gzip"),
    "gz_flipped_bytes_single_member": lambda m: _damaged_file("damaged.jsonl.gz", flip(m.cc, len(m.cc) // 2), "gzip",
                                                              "corrupt_gzip"),
    "gz_garbage_between_members": lambda m: Damage("damaged.jsonl.gz", m.gzip_members[0] + m.garbage
                                                   + b"".join(m.gzip_members[1:]), 60, ["corrupt_gzip"]),
    "gz_garbage_before_the_first_member": lambda m: Damage("damaged.jsonl.gz", m.garbage + b"".join(m.gzip_members),
                                                           60, ["corrupt_gzip"]),
    "gz_trailing_garbage": lambda m: Damage("damaged.jsonl.gz", b"".join(m.gzip_members) + m.garbage, 60,
                                            ["corrupt_gzip"]),
    "gz_cut_mid_member": lambda m: _cut("damaged.jsonl.gz", "gzip", m.gzip_members[:1],
                                        m.gzip_members[1][: len(m.gzip_members[1]) // 2]),
    "gz_cut_19_bytes_into_a_member": lambda m: _cut("damaged.jsonl.gz", "gzip", m.gzip_members[:2],
                                                    m.gzip_members[2][:19]),
    "gz_cut_in_the_trailer": lambda m: _cut("damaged.jsonl.gz", "gzip", m.gzip_members[:2], m.gzip_members[2][:-4]),
    "gz_zero_length": lambda m: Damage("damaged.jsonl.gz", b"", 0, ["truncated_stream"]),
    "gz_zero_padding_is_no_damage": lambda m: Damage("damaged.jsonl.gz", b"".join(m.gzip_members) + bytes(1024),
                                                     60, []),
    # zstd: frames as gzip members
    "zst_garbage": lambda m: Damage("damaged.jsonl.zst", m.garbage, 0, ["corrupt_zstd"]),
    "zst_corrupt_frame": lambda m: _damaged_piece(m, "zstd", lambda b: flip(b, len(b) // 2), "corrupt_zstd"),
    "zst_garbage_between_frames": lambda m: Damage("damaged.jsonl.zst", m.zstd_frames[0] + m.garbage
                                                   + b"".join(m.zstd_frames[1:]), 60, ["corrupt_zstd"]),
    "zst_cut_to_20_bytes": lambda m: _cut("damaged.jsonl.zst", "zstd", [], m.zstd_frames[0][:20]),
    "zst_cut_mid_file": lambda m: _cut("damaged.jsonl.zst", "zstd", m.zstd_frames[:1],
                                       m.zstd_frames[1][: len(m.zstd_frames[1]) // 2]),
    "zst_zero_length": lambda m: Damage("damaged.jsonl.zst", b"", 0, ["truncated_stream"]),
    # bz2 (plain text, a document per line): streams as gzip members
    "bz2_trailing_garbage": lambda m: _bz2_text(m, _verse_streams(m), m.garbage, m.verses, "corrupt_bz2"),
    "bz2_cut_mid_stream": lambda m: _bz2_text(m, _verse_streams(m)[:1], _verse_streams(m)[1][:300],
                                              m.verses[:200], "truncated_stream"),
    "bz2_corrupt_stream": lambda m: _bz2_text(m, [_verse_streams(m)[0], flip(_verse_streams(m)[1], 400)],
                                              _verse_streams(m)[2], m.verses[:200] + m.verses[400:], "corrupt_bz2"),
}


@pytest.fixture(scope="module")
def neighbours(material: Material, data_dir: Path) -> dict[str, Damage]:
    """An undamaged real file beside each damaged one: a .jsonl.gz for JSON Lines, a .txt for text."""
    cc = (data_dir / "text/cc_en_head-0174.jsonl.gz").read_bytes()
    text = (data_dir / "text/wiki_demo.txt").read_bytes()
    return {"jsonl": Damage("neighbour.jsonl.gz", cc, json_lines(gzip.decompress(cc)), []),
            "text": Damage("neighbour.txt", text, sum(1 for line in text.splitlines() if line.strip()), [],
                           {"unit": "line"})}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_damaged_lines_lose_nothing_and_say_what_happened(kind, material, neighbours, tmp_path):
    damage = KINDS[kind](material)
    check(tmp_path, damage, neighbours["text" if kind.startswith("bz2") else "jsonl"])


def test_the_raw_bytes_of_a_quarantined_line_are_the_input_line(material, neighbours, tmp_path):
    """A lone surrogate (invalid_unicode) and invalid UTF-8 keep the line as it was in the file, not re-encoded."""
    surrogate = KINDS["jsonl_lone_surrogate"](material)
    outcome = check(tmp_path, surrogate, neighbours["jsonl"])
    (row,) = [r for r in outcome.quarantine if r["source"] == "damaged"]
    assert row["raw"] + b"\n" in surrogate.data and b"\\ud800" in row["raw"]


@pytest.mark.parametrize("kind", ["gz_garbage_between_members", "zst_cut_mid_file"])
def test_through_the_command_line(kind, material, neighbours, tmp_path):
    check(tmp_path, KINDS[kind](material), neighbours["jsonl"], cli=True)

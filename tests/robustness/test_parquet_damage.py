"""Damaged Parquet files, written from real C4 documents in several row groups, each run beside an undamaged one.

The good rows are counted by the test: pyarrow reads every row group that the damage left alone (a damaged file's
footer, when it still reads, tells which), and the damaged group is checked to be unreadable by pyarrow itself.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .harness import Damage, check

ROWS, GROUP = 60, 15  # four row groups


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=GROUP, compression="snappy")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def records(data_dir: Path) -> list[dict]:
    lines = (data_dir / "text/c4_demo.jsonl").read_bytes().splitlines()
    return [json.loads(line) for line in lines[: ROWS + 30]]


@pytest.fixture(scope="module")
def clean(records: list[dict]) -> bytes:
    return _parquet(pa.Table.from_pylist(records[:ROWS]))


def _readable_rows(data: bytes, skip: int) -> int:
    """Rows of the row groups other than `skip`, read by pyarrow; and `skip` must not read at all."""
    parquet = pq.ParquetFile(io.BytesIO(data))
    with pytest.raises(OSError):
        parquet.read_row_group(skip)
    return sum(parquet.read_row_group(g).num_rows for g in range(parquet.num_row_groups) if g != skip)


def _corrupt_row_group(data: bytes, group: int) -> bytes:
    """Eight bytes in the middle of the group's text column chunk overwritten (its snappy data no longer decodes)."""
    column = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(group).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    at = start + column.total_compressed_size // 2
    return data[:at] + b"\xff" * 8 + data[at + 8 :]


def _footer_start(data: bytes) -> int:
    return len(data) - 8 - int.from_bytes(data[-8:-4], "little")


def _with_bad_string(records: list[dict], row: int) -> bytes:
    """The text of one row replaced by bytes that are not UTF-8 (its first character as Latin-1), written as a
    string column: Parquet declares such a column UTF-8 and does not check."""
    texts = [r["text"].encode() for r in records[:ROWS]]
    texts[row] = texts[row][:20] + "é".encode("latin-1") + texts[row][20:]
    return _parquet(pa.table({"text": pa.array(texts, pa.binary()).view(pa.string()), "row": range(ROWS)}))


KINDS: dict[str, Callable[[bytes, list[dict]], Damage]] = {
    "parquet_cut_in_half": lambda data, _: Damage("damaged.parquet", data[: len(data) // 2], 0, ["corrupt_parquet"]),
    "parquet_footer_missing": lambda data, _: Damage("damaged.parquet", data[: _footer_start(data)], 0,
                                                     ["corrupt_parquet"]),
    "parquet_garbage_after_the_footer": lambda data, _: Damage("damaged.parquet", data + data[100:400], 0,
                                                               ["corrupt_parquet"]),
    "parquet_not_parquet_at_all": lambda data, records: Damage(
        "damaged.parquet", "".join(json.dumps(r) + "\n" for r in records).encode(), 0, ["not_parquet"]),
    "parquet_empty_file": lambda data, _: Damage("damaged.parquet", b"", 0, ["not_parquet"]),
    "parquet_one_corrupt_row_group": lambda data, _: Damage(
        "damaged.parquet", _corrupt_row_group(data, 2), _readable_rows(_corrupt_row_group(data, 2), 2),
        ["corrupt_parquet"]),
    "parquet_first_row_group_corrupt": lambda data, _: Damage(
        "damaged.parquet", _corrupt_row_group(data, 0), _readable_rows(_corrupt_row_group(data, 0), 0),
        ["corrupt_parquet"]),
    "parquet_text_not_utf8": lambda data, records: Damage("damaged.parquet", _with_bad_string(records, 7), ROWS - 1,
                                                          ["invalid_utf8"]),
    "parquet_null_text": lambda data, records: Damage(
        "damaged.parquet", _parquet(pa.Table.from_pylist([{**r, "text": None} if i == 4 else r
                                                          for i, r in enumerate(records[:ROWS])])),
        ROWS - 1, ["missing_text"]),
}


@pytest.fixture(scope="module")
def neighbour(records: list[dict]) -> Damage:
    return Damage("neighbour.parquet", _parquet(pa.Table.from_pylist(records[ROWS:])), len(records) - ROWS, [])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_damaged_parquet_loses_nothing_and_says_what_happened(kind, clean, records, neighbour, tmp_path):
    check(tmp_path, KINDS[kind](clean, records), neighbour)


def test_a_corrupt_row_group_is_named_with_its_rows_and_kept_as_its_bytes(clean, records, neighbour, tmp_path):
    damaged = _corrupt_row_group(clean, 2)
    outcome = check(tmp_path, Damage("damaged.parquet", damaged, _readable_rows(damaged, 2), ["corrupt_parquet"]),
                    neighbour)
    (row,) = [r for r in outcome.quarantine if r["source"] == "damaged"]
    assert row["position"] == 2 * GROUP and row["reason"].startswith(
        f"corrupt_parquet: row group 2 (rows {2 * GROUP}-{3 * GROUP - 1}) does not decode from row {2 * GROUP} on")
    column = pq.ParquetFile(io.BytesIO(clean)).metadata.row_group(2).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    assert row["raw"] == damaged[start : start + column.total_compressed_size]


def test_a_string_that_is_not_utf8_keeps_the_files_bytes(records, neighbour, tmp_path):
    outcome = check(tmp_path, KINDS["parquet_text_not_utf8"](b"", records), neighbour)
    (row,) = [r for r in outcome.quarantine if r["source"] == "damaged"]
    assert row["position"] == 7 and row["raw"] == records[7]["text"].encode()[:20] + b"\xe9" + records[7][
        "text"].encode()[20:]

"""Readers on real files: every record read once, bad records quarantined with a reason."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.corpora.readers import InputError, infer_format, plan_input, read_task
from refinery.corpora.records import DOCUMENT_SCHEMA


def read_all(pattern: str, base: Path, task_size: int = 1 << 30, **kwargs) -> tuple[pa.Table, pa.Table, int]:
    docs, bad, records = [], [], 0
    for task in plan_input(pattern, base, task_size, **kwargs):
        for batch in read_task(task, batch_rows=64):
            docs.append(batch.documents)
            bad.append(batch.quarantined)
            records += batch.records
    return pa.concat_tables(docs), pa.concat_tables(bad), records


def test_jsonl_byte_ranges_read_every_line_exactly_once(data_dir):
    whole, _, _ = read_all("text/c4_demo.jsonl", data_dir)
    tasks = plan_input("text/c4_demo.jsonl", data_dir, 10_000)
    assert len(tasks) > 50  # the file really is split
    split, _, _ = read_all("text/c4_demo.jsonl", data_dir, task_size=10_000)
    assert whole.num_rows == 300
    assert split.column("id").to_pylist() == whole.column("id").to_pylist()
    assert split.column("text").to_pylist() == whole.column("text").to_pylist()
    original = [json.loads(line)["text"] for line in (data_dir / "text/c4_demo.jsonl").open(encoding="utf-8")]
    assert whole.column("text").to_pylist() == original


def test_jsonl_gz_keeps_own_ids_and_puts_extras_in_meta(data_dir):
    docs, bad, records = read_all("text/cc_en_head-*.jsonl.gz", data_dir)
    assert docs.schema == DOCUMENT_SCHEMA
    assert bad.num_rows == 0 and records == docs.num_rows > 0
    first = json.loads(gzip.open(data_dir / "text/cc_en_head-0091.jsonl.gz", "rt").readline())
    row = docs.slice(0, 1).to_pylist()[0]
    assert row["id"] == first["id"] and row["text"] == first["text"]
    assert row["source"] == "cc_en_head-0091"
    assert json.loads(row["meta"])["metadata"] == first["metadata"]


def test_malformed_and_invalid_utf8_lines_are_quarantined(data_dir, tmp_path):
    lines = (data_dir / "text/c4_demo.jsonl").read_bytes().splitlines()[:5]
    too_deep = b'{"a": ' * 5000 + b"1" + b"}" * 5000
    broken = [lines[0], b'{"text": "unterminated', too_deep, lines[1], b'{"text": "caf\xe9 latin-1"}', lines[2],
              b"[1, 2]", b'{"title": "no text"}', b'{"text": 42}', b"", lines[3], b'{"text": "\\ud800"}', lines[4]]
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"\n".join(broken) + b"\n")
    docs, bad, records = read_all(str(path), tmp_path)
    assert docs.num_rows == 5
    assert records == 5 + bad.num_rows == 12  # the blank line is not a record
    reasons = [r.split(":")[0] for r in bad.column("reason").to_pylist()]
    assert reasons == ["malformed_json", "malformed_json", "invalid_utf8", "not_an_object", "missing_text",
                       "text_not_string", "invalid_unicode"]
    assert "nested too deeply" in bad.column("reason")[1].as_py()
    assert bad.column("raw").to_pylist()[2] == b'{"text": "caf\xe9 latin-1"}'
    offsets = bad.column("position").to_pylist()
    assert offsets[0] == len(lines[0]) + 1


def test_empty_file_gives_no_records(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    docs, bad, records = read_all("empty.jsonl", tmp_path)
    assert (docs.num_rows, bad.num_rows, records) == (0, 0, 0)


def test_missing_input_and_unknown_format_are_clear_errors(tmp_path, data_dir):
    with pytest.raises(InputError, match="does not exist"):
        plan_input("nope.jsonl", tmp_path, 1000)
    with pytest.raises(InputError, match="no file matches"):
        plan_input("nope/*.jsonl", tmp_path, 1000)
    with pytest.raises(InputError, match="add `format:`"):
        infer_format(data_dir / "text/udhr2.zip")


def test_text_units_on_real_files(data_dir):
    sherlock, _, _ = read_all("text/gutenberg-1661-sherlock.txt", data_dir)
    assert sherlock.num_rows == 1
    text = sherlock.column("text")[0].as_py()
    assert not text.startswith("\ufeff") and "\r" not in text and "Sherlock Holmes" in text
    lines, _, _ = read_all("text/wiki_demo.txt", data_dir, task_size=100_000, options={"unit": "line"})
    raw_lines = (data_dir / "text/wiki_demo.txt").read_text(encoding="utf-8").split("\n")
    expected = [line for line in raw_lines if line.strip()]
    assert lines.column("text").to_pylist() == expected
    paragraphs, _, _ = read_all("text/gutenberg-1661-sherlock.txt", data_dir, options={"unit": "paragraph"})
    assert paragraphs.num_rows > 1000
    assert all(t.strip() for t in paragraphs.column("text").to_pylist())


def test_parquet_split_by_row_groups(data_dir, tmp_path):
    docs, _, _ = read_all("text/c4_demo.jsonl", data_dir)
    source = pa.table({"text": docs.column("text"), "url": docs.column("url"), "score": list(range(docs.num_rows))})
    pq.write_table(source, tmp_path / "c4.parquet", row_group_size=20)
    tasks = plan_input("c4.parquet", tmp_path, 40_000)
    assert len(tasks) > 5
    read, _, _ = read_all("c4.parquet", tmp_path, task_size=40_000)
    assert read.column("text").to_pylist() == docs.column("text").to_pylist()
    assert read.column("id").to_pylist()[:2] == ["c4.parquet:0", "c4.parquet:1"]
    assert json.loads(read.column("meta")[299].as_py()) == {"score": 299}


def test_parquet_without_text_column_names_the_fix(tmp_path):
    pq.write_table(pa.table({"content": ["a"]}), tmp_path / "x.parquet")
    with pytest.raises(InputError, match="text_field"):
        read_all("x.parquet", tmp_path)


def test_hugging_face_dataset_folder(data_dir, tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(line) for line in (data_dir / "text/redpajama-pile-samples/the-pile-nih-refined.jsonl").open()]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "nih"))
    assert infer_format(tmp_path / "nih") == "hf"
    docs, _, _ = read_all("nih", tmp_path)
    assert docs.column("text").to_pylist() == [r["text"] for r in rows]
    shutil.rmtree(tmp_path / "nih")


def test_truncated_compressed_files_keep_what_came_before(data_dir, tmp_path):
    whole = (data_dir / "text/cc_en_head-0091.jsonl.gz").read_bytes()
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) * 6 // 10])
    complete, _, _ = read_all("text/cc_en_head-0091.jsonl.gz", data_dir)
    docs, bad, records = read_all("cut.jsonl.gz", tmp_path)
    assert 0 < docs.num_rows < complete.num_rows
    assert docs.column("text").to_pylist() == complete.column("text").to_pylist()[: docs.num_rows]
    # Where the stream is cut (issue #15: a reason says what was wrong and where), not Python's EOFError text.
    assert bad.num_rows == 1 and bad.column("reason")[0].as_py() == (
        f"truncated_stream: the gzip stream is cut off {len(whole) * 6 // 10} bytes into the member at compressed "
        "byte 0")
    assert records == docs.num_rows + 1

    sherlock = gzip.compress((data_dir / "text/gutenberg-1661-sherlock.txt").read_bytes())
    (tmp_path / "cut.txt.gz").write_bytes(sherlock[: len(sherlock) // 2])
    paragraphs, bad, _ = read_all("cut.txt.gz", tmp_path, options={"unit": "paragraph"})
    assert paragraphs.num_rows > 500 and bad.column("reason")[0].as_py().startswith("truncated_stream")
    whole_file, bad, _ = read_all("cut.txt.gz", tmp_path)
    assert whole_file.num_rows == 0 and bad.num_rows == 1  # a file cut short is not a document

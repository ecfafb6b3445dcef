"""`fields:` on a record input: declared fields of real Dolma-format CCNet records become typed columns and leave
`meta`; a value of another type stays in `meta`, named in `fields_invalid`; mistakes are refused up front."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.corpora.readers import InputError
from refinery.pipelines.engine.recipe import RecipeError, load_recipe
from refinery.pipelines.engine.run import run_recipe

CCNET = "text/cc_en_head-*.jsonl.gz"
DECLARED = {"created": "timestamp", "metadata.language_score": "float", "metadata.nlines": "int",
            "metadata.line_ids": "json"}


def records(data_dir: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(data_dir.glob(CCNET))
            for line in gzip.open(path, "rt", encoding="utf-8") if line.strip()]


def run(write_recipe, inputs: list[dict], name: str = "test") -> pa.Table:
    summary = run_recipe(load_recipe(write_recipe(inputs, name=name, output=name)), workers=1, progress=False)
    assert summary.read == summary.kept + summary.removed + summary.quarantined and summary.quarantined == 0
    return pq.read_table(summary.run_dir / "data")


def test_declared_fields_become_typed_columns_and_leave_meta(data_dir, write_recipe):
    docs = run(write_recipe, [{"path": str(data_dir / CCNET), "fields": DECLARED}])
    source = {r["id"]: r for r in records(data_dir)}
    assert docs.num_rows == len(source) > 10
    types = {name: docs.schema.field(name).type for name in docs.column_names}
    assert types["created"] == pa.timestamp("us", tz="UTC") and types["metadata_language_score"] == pa.float64()
    assert types["metadata_nlines"] == pa.int64() and types["metadata_line_ids"] == pa.string()
    for row in docs.to_pylist():
        record = source[row["id"]]
        assert row["created"].isoformat().replace("+00:00", "Z") == record["created"]
        assert row["metadata_language_score"] == record["metadata"]["language_score"]
        assert row["metadata_nlines"] == record["metadata"]["nlines"]
        assert json.loads(row["metadata_line_ids"]) == record["metadata"]["line_ids"]
        meta = json.loads(row["meta"])
        # What was not declared stays in meta, as it was; what was declared left it.
        assert meta["added"] == record["added"] and meta["source"] == record["source"]
        assert meta["metadata"]["cc_segment"] == record["metadata"]["cc_segment"]
        assert "created" not in meta and not {"language_score", "nlines", "line_ids"} & set(meta["metadata"])


def test_a_value_of_another_type_stays_in_meta_and_is_named(data_dir, write_recipe):
    docs = run(write_recipe, [{"path": str(data_dir / CCNET), "fields": {"metadata.bucket": "int"}}])
    assert docs.column("metadata_bucket").null_count == docs.num_rows  # "head" is no int
    for meta in map(json.loads, docs.column("meta").to_pylist()):
        assert meta["metadata"]["bucket"] == "head" and meta["fields_invalid"] == ["metadata.bucket"]


def test_parquet_rows_read_into_the_same_typed_columns(data_dir, write_recipe, tmp_path):
    rows = records(data_dir)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ccnet.parquet", row_group_size=7)
    from_parquet = run(write_recipe, [{"path": str(tmp_path / "ccnet.parquet"), "fields": DECLARED}], "parquet")
    from_json = run(write_recipe, [{"path": str(data_dir / CCNET), "fields": DECLARED}])
    columns = ["id", "created", "metadata_language_score", "metadata_nlines", "metadata_line_ids"]
    assert from_parquet.select(columns).sort_by("id").equals(from_json.select(columns).sort_by("id"))


@pytest.mark.parametrize(("fields", "message"), [
    ({"text": "string"}, "text cannot be declared"),
    ({"source": "string"}, "source cannot be declared"),
    ({"url": "string"}, "url cannot be declared"),
    ({"created": "date"}, "Input should be 'string', 'int', 'float', 'bool', 'timestamp' or 'json'"),
])
def test_a_field_that_cannot_be_declared_is_refused_naming_it(data_dir, write_recipe, fields, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write_recipe([{"path": str(data_dir / CCNET), "fields": fields}]))


def test_two_inputs_giving_one_column_two_types_are_refused(data_dir, write_recipe):
    inputs = [{"path": str(data_dir / CCNET), "fields": {"created": "timestamp"}},
              {"path": str(data_dir / "text/c4_demo.jsonl"), "fields": {"created": "string"}}]
    with pytest.raises(InputError, match="disagree on a type"):
        run_recipe(load_recipe(write_recipe(inputs)), progress=False)

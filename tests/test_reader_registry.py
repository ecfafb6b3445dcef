"""The reader registry: a new format is one class under @register; recipe inputs are checked by their reader's
Options (errors name the recipe line and suggest); file-name inference is what it always was."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import Field

from refinery.corpora.readers import (
    READERS,
    InputError,
    ReadBatch,
    Reader,
    ReaderOptions,
    ReadTask,
    infer_format,
    plan_input,
    read_task,
    register,
)
from refinery.corpora.readers.builder import RecordBuilder
from refinery.corpora.readers.text import TextOptions
from refinery.pipelines.commands import sql
from refinery.pipelines.commands.cli import main
from refinery.pipelines.engine.recipe import RecipeError, load_recipe, parse_recipe, recipe_json_schema
from refinery.pipelines.engine.run import plan_tasks, run_recipe

# What each file name was read as before readers had a registry (corpora/readers/__init__.py's suffix table).
INFERRED = {
    "a.jsonl": "jsonl", "a.ndjson": "jsonl", "a.jsonl.gz": "jsonl", "a.ndjson.gz": "jsonl", "a.jsonl.zst": "jsonl",
    "a.jsonl.zstd": "jsonl", "a.json.gz": "jsonl", "A.JSONL": "jsonl", "a.parquet": "parquet", "a.txt": "text",
    "a.txt.gz": "text", "a.txt.zst": "text", "a.txt.bz2": "text", "a.text": "text", "a.arrow": "hf",
    "a.xml.bz2": "wikipedia", "a.xml": "wikipedia", "a.xml.gz": "wikipedia", "a.warc": "warc", "a.warc.gz": "warc",
    "a.wet": "warc", "a.wet.gz": "warc", "a.wat": "warc", "a.wat.gz": "warc", "a.warc.wet.gz": "warc",
    "a.warc.wat.gz": "warc", "a.json": "instructions", "a.tar.json": "instructions", "a.txt.json": "instructions",
    "crawl/*.warc.gz": "warc",
}
GOOD = """\
name: t
inputs:
  - path: text/c4_demo.jsonl
    text_field: text
  - path: text/wiki_demo.txt
output: out/t
"""


@pytest.mark.parametrize("name, fmt", sorted(INFERRED.items()))
def test_format_inference_is_unchanged(name, fmt):
    assert infer_format(name) == fmt


def test_names_that_tell_no_format_and_folders(data_dir, tmp_path):
    for name in ("a.gz", "a.zip", "a.csv", "data/*.jsonl*", "a.jsonl.tar"):
        with pytest.raises(InputError, match="add `format:`"):
            infer_format(name)
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{"text": "x"}]).save_to_disk(str(tmp_path / "corpus.json"))
    assert infer_format(tmp_path / "corpus.json") == "hf"  # what a folder is beats what its name says


def test_every_format_and_named_instruction_set_is_registered():
    assert set(READERS) >= {"jsonl", "parquet", "text", "hf", "wikipedia", "warc", "arc", "instructions", "alpaca",
                            "dolly", "sharegpt", "openai", "oasst", "oasst_best", "self_instruct", "qa"}
    assert all(READERS[name].suffixes == () for name in ("alpaca", "sharegpt", "qa"))  # chosen by `format:` only
    with pytest.raises(ValueError, match="two readers are named 'jsonl'"):
        register(type("Again", (Reader,), {"name": "jsonl"}))
    with pytest.raises(ValueError, match="'text' and 'mine' both claim the suffix '.txt'"):
        register(type("Mine", (Reader,), {"name": "mine", "suffixes": (".txt",)}))
    assert "mine" not in READERS


def test_a_reader_in_one_new_file_is_usable_from_a_recipe(write_recipe, tmp_path):
    """The whole of a new format: this class. No other file is edited."""

    class ShoutOptions(ReaderOptions):
        marks: int = Field(1, ge=0, description="exclamation marks after each line")

    @register
    class ShoutReader(Reader):
        """Lines, shouted: one document per line, upper-cased."""

        name = "shout"
        suffixes = (".shout",)
        Options = ShoutOptions

        def read(self, task: ReadTask, batch_rows: int = 4096) -> Iterator[ReadBatch]:
            builder = RecordBuilder(task)
            marks = "!" * self.options_of(task).marks
            with open(task.path, "rb") as file:
                for position, line in enumerate(file):
                    try:
                        builder.add_text(line.decode("utf-8").strip().upper() + marks, position)
                    except UnicodeDecodeError as err:
                        builder.quarantine(position, f"invalid_utf8: byte {err.start} of the line", line)
            yield builder.flush()

    try:
        (tmp_path / "calls.shout").write_bytes(b"hello\nbad \xff byte\nworld\n")
        recipe = write_recipe([{"path": "calls.shout", "marks": 3}, {"path": "calls.shout", "format": "shout"}])
        summary = run_recipe(load_recipe(recipe), workers=1, progress=False)
        assert (summary.read, summary.kept, summary.quarantined) == (6, 4, 2)
        texts = sql.query(summary.run_dir, "SELECT text FROM docs").column("text").to_pylist()
        assert texts == ["HELLO!!!", "WORLD!!!", "HELLO!", "WORLD!"]
        with pytest.raises(RecipeError, match=r"inputs\.0\.mark: unknown option 'mark' for format shout — did you"):
            parse_recipe("name: t\ninputs:\n  - path: x.shout\n    mark: 2\noutput: o\n", "r.yaml")
        assert "shout_input" in recipe_json_schema()["$defs"]
    finally:
        READERS.pop("shout")


@pytest.mark.parametrize("line, expected", [
    ("    text_feild: text", "r.yaml:4: inputs.0.text_feild: unknown option 'text_feild' for format jsonl — did you "
                           "mean 'text_field'?"),
    ("    fromat: jsonl", "r.yaml:4: inputs.0.fromat: unknown parameter 'fromat' — did you mean 'format'?"),
    ("    format: jsnol", "r.yaml:4: inputs.0.format: unknown format 'jsnol' — did you mean 'jsonl'?"),
    ("    unit: line", "r.yaml:4: inputs.0.unit: option 'unit' is not for format jsonl (formats that take it: text)"),
    ("    split: train", "r.yaml:4: inputs.0.split: option 'split' is not for format jsonl (formats that take it: hf)"),
    ("    text_field: [a]", "r.yaml:4: inputs.0.text_field: option 'text_field' of format jsonl: Input should be a "
                          "valid string"),
    ("    options: {unit: line}", "r.yaml:4: inputs.0.options: unknown option 'options' for format jsonl (valid: "
                                "fields, format, id_field, path, source, text_field)"),
])
def test_reader_options_are_checked_with_the_recipe_line(line, expected):
    with pytest.raises(RecipeError) as err:
        parse_recipe(GOOD.replace("    text_field: text", line), "r.yaml")
    assert expected in str(err.value)


def test_options_of_another_format_and_bad_values_are_refused(data_dir):
    text_input = GOOD.replace("  - path: text/wiki_demo.txt", "  - path: text/wiki_demo.txt\n    {}")
    for option, expected in [("text_field: content", "r.yaml:6: inputs.1.text_field: option 'text_field' is not "
                                                     "for format text (formats that take it: hf, jsonl, parquet)"),
                             ("unit: lines", "r.yaml:6: inputs.1.unit: option 'unit' of format text: Input should be "
                                             "'file', 'line' or 'paragraph'"),
                             ("unti: line", "r.yaml:6: inputs.1.unti: unknown option 'unti' for format text — did "
                                            "you mean 'unit'?")]:
        with pytest.raises(RecipeError) as err:
            parse_recipe(text_input.format(option), "r.yaml")
        assert expected in str(err.value)
    # Where the name tells no format, each file is checked when the input is planned, naming the recipe line.
    globbed = "name: t\ninputs:\n  - path: text/*_demo.*\n    unit: line\noutput: o\n"
    with pytest.raises(InputError, match=r"^r\.yaml:3: \S+c4_demo\.jsonl: option 'unit' is not for format jsonl"):
        plan_tasks(parse_recipe(globbed, "r.yaml", data_dir))
    with pytest.raises(RecipeError, match="r.yaml:4: inputs.0.untt: unknown option 'untt' — did you mean 'unit'"):
        parse_recipe(globbed.replace("unit:", "untt:"), "r.yaml")


def test_tasks_hold_the_validated_options(data_dir):
    (task,) = plan_input("text/wiki_demo.txt", data_dir, 1 << 30, options={"unit": "line"})
    assert task.options == TextOptions(unit="line") and task.to_dict()["options"] == {"unit": "line"}
    (task,) = plan_input("text/wiki_demo.txt", data_dir, 1 << 30)
    assert task.options == TextOptions(unit="file")  # the defaults, spelt out
    with pytest.raises(InputError, match="wiki_demo.txt: option 'unit' of format text: Input should be"):
        plan_input("text/wiki_demo.txt", data_dir, 1 << 30, options={"unit": "page"})
    by_hand = ReadTask("text", str(data_dir / "text/wiki_demo.txt"), "wiki")  # no options: the reader's defaults
    assert next(read_task(by_hand)).documents.num_rows == 1


def test_named_instruction_formats_are_chosen_by_format(data_dir):
    path = data_dir / "instructions/oasst_en_100_tree.jsonl"
    for fmt, read_as in (("oasst", "oasst"), ("oasst_best", "oasst_best"), ("instructions", "oasst")):  # detected
        (task,) = plan_input(str(path), path.parent, 1 << 30, fmt)
        assert task.format == fmt
        assert next(read_task(task)).documents.column("format")[0].as_py() == read_as
    with pytest.raises(RecipeError, match="inputs.0.text_field: option 'text_field' is not for format sharegpt"):
        parse_recipe("name: t\ninputs:\n  - path: x.json\n    format: sharegpt\n    text_field: t\noutput: o\n",
                     "r.yaml")


def test_classifier_inputs_are_checked_like_recipe_inputs(data_dir, tmp_path, capsys):
    base = ["classifier", "train", "--negative", str(data_dir / "text/c4_demo.jsonl"), "--output",
            str(tmp_path / "m.bin"), "--positive", str(data_dir / "text/wiki_demo.txt")]
    assert main(base + ["--positive-option", "unit=lines"]) == 2
    where = f"--positive {data_dir / 'text/wiki_demo.txt'}"
    assert f"{where}: unit: option 'unit' of format text: Input should be" in capsys.readouterr().err
    assert main(base + ["--positive-option", "text_feild=x", "--positive-format", "jsonl"]) == 2
    assert "text_feild: unknown option 'text_feild' for format jsonl — did you mean 'text_field'?" in (
        capsys.readouterr().err)

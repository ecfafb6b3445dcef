"""Recipes: validated, and errors that name the line and suggest the fix."""

from __future__ import annotations

import pytest

from refinery.pipelines.engine.recipe import RecipeError, load_recipe, parse_recipe, parse_size, recipe_json_schema

GOOD = """\
name: t
inputs:
  - path: text/c4_demo.jsonl
stages:
  - length_filter: {min_words: 5}
  - exact_dedup:
  - length_filter: {max_chars: 100000}
output: out/t
"""


def test_valid_recipe_gives_stage_keys_and_lines():
    loaded = parse_recipe(GOOD, "r.yaml")
    assert [(s.key, s.line) for s in loaded.stages] == [("length_filter", 5), ("exact_dedup", 6),
                                                        ("length_filter_2", 7)]
    assert loaded.stages[0].config.min_words == 5
    assert loaded.input_location(0) == "r.yaml:3"


@pytest.mark.parametrize(
    "replace, expected",
    [
        (("- length_filter: {min_words: 5}", "- lenght_filter: {min_words: 5}"),
         "r.yaml:5: stages.0: unknown stage 'lenght_filter' — did you mean 'length_filter'?"),
        (("{min_words: 5}", "{min_word: 5}"),
         "r.yaml:5: stages.0.length_filter.min_word: unknown parameter 'min_word' — did you mean 'min_words'?"),
        (("  - path: text/c4_demo.jsonl", "  - path: text/c4_demo.jsonl\n    fromat: jsonl"),
         "r.yaml:4: inputs.0.fromat: unknown parameter 'fromat' — did you mean 'format'?"),
        (("output: out/t", "outptu: out/t"), "r.yaml:8: outptu: unknown parameter 'outptu' — did you mean 'output'?"),
        (("{min_words: 5}", "{min_words: -1}"), "r.yaml:5: stages.0.length_filter.min_words: Input should be"),
        (("{min_words: 5}", "{min_words: 9, max_words: 2}"), "min_words (9) is larger than max_words (2)"),
    ],
)
def test_errors_name_the_line_and_suggest(replace, expected):
    with pytest.raises(RecipeError) as err:
        parse_recipe(GOOD.replace(*replace), "r.yaml")
    assert expected in str(err.value)


def test_recipes_cannot_execute_code():
    evil = GOOD.replace("name: t", "name: !!python/object/apply:os.system ['echo pwned']")
    with pytest.raises(RecipeError, match="not valid YAML"):
        parse_recipe(evil, "r.yaml")


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_sizes():
    assert parse_size("64MB") == 64_000_000
    assert parse_size("16KiB") == 16384
    assert parse_size(2048) == 2048
    with pytest.raises(ValueError):
        parse_size("lots")


def test_json_schema_lists_every_stage_and_its_parameters():
    schema = recipe_json_schema()
    text = str(schema)
    assert "length_filter" in text and "exact_dedup" in text and "min_words" in text
    assert schema["additionalProperties"] is False


def test_every_mistake_is_reported_at_once(data_dir, tmp_path):
    from refinery.corpora.readers import InputError
    from refinery.pipelines.engine.run import run_recipe

    text = f"""\
name: t
inputs:
  - path: {data_dir / "text/c4_demo.jsonl"}
    text_feild: content
  - path: missing/*.jsonl
stages:
  - lenght_filter: {{min_words: 5}}
  - exact_dedup: {{normalise: true}}
  - minhash_dedup: {{}}
output: out/t
colour: blue
"""
    with pytest.raises(RecipeError) as err:
        parse_recipe(text, "r.yaml")
    lines = str(err.value).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("r.yaml:4:") and "did you mean 'text_field'" in lines[0]
    assert lines[1].startswith("r.yaml:11:") and "unknown parameter 'colour'" in lines[1]
    assert lines[2].startswith("r.yaml:7:") and "did you mean 'length_filter'" in lines[2]
    assert lines[3].startswith("r.yaml:8:") and "did you mean 'normalize'" in lines[3]

    # Past parsing: a missing input and a missing stage file, both in one message.
    recipe = text.replace("    text_feild: content\n", "").replace("lenght_filter", "length_filter")
    recipe = recipe.replace("{normalise: true}", "{}").replace("colour: blue\n", "")
    recipe = recipe.replace("minhash_dedup: {}", "quality_classifier: {model: nowhere.bin}")
    loaded = parse_recipe(recipe, str(tmp_path / "r.yaml"), tmp_path)
    with pytest.raises(InputError) as err:  # the first problem's kind; the CLI prints each line
        run_recipe(loaded, workers=1, progress=False)
    first, second = str(err.value).splitlines()
    assert first.endswith("r.yaml:4: no file matches 'missing/*.jsonl' (looked in " + str(tmp_path) + ")")
    assert second.startswith(str(tmp_path / "r.yaml") + ":8: quality_classifier: model file")
    assert "nowhere.bin" in second

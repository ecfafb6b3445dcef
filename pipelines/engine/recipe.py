"""Recipes: YAML in, a validated Recipe out, or an error that names the recipe line and what to do.

YAML is read with the safe loader only, and no field names code to import or run: a recipe is data.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from refinery.pipelines.stages import STAGES, StageConfig

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "KIB": 1024, "M": 1e6, "MB": 1e6, "MIB": 1024**2,
          "G": 1e9, "GB": 1e9, "GIB": 1024**3, "T": 1e12, "TB": 1e12, "TIB": 1024**4}


def parse_size(value: int | str) -> int:
    """'64MB', '16 KiB' or a plain number of bytes."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(f"'{value}' is not a size: write bytes or e.g. '64MB', '512KiB'")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the file and line."""


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="file, folder or glob, relative to the recipe's folder")
    format: Literal["jsonl", "parquet", "text", "hf", "wikipedia", "warc", "instructions", "alpaca", "dolly",
                    "sharegpt", "openai", "oasst", "oasst_best", "self_instruct", "qa"] | None = Field(
        None, description="reader; inferred from the file name when left out"
    )
    source: str | None = Field(None, description="label for the `source` column (default: the file name)")
    text_field: str = Field("text", description="field holding the document text (jsonl, parquet, hf)")
    id_field: str = Field("id", description="field holding the record's own id, if any")
    unit: Literal["file", "line", "paragraph"] = Field("file", description="text: what one document is")
    split: str | None = Field(None, description="hf: which split of a DatasetDict folder")


class StageSpec(BaseModel):
    """One validated stage of a recipe: its registered name, the key it is known by in the run, its config."""

    name: str
    key: str
    config: StageConfig
    line: int | None = None


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the run's name")
    inputs: list[InputSpec] = Field(min_length=1, description="one or more inputs, read in this order")
    stages: list[dict[str, dict[str, Any] | None]] = Field(
        default_factory=list, description="in order; each item is {stage_name: {parameters}}"
    )
    output: str = Field(description="the run folder, relative to the recipe's folder")
    task_size: int | str = Field(
        "32MB", validate_default=True, description="input bytes per task; large files are split"
    )
    batch_rows: int = Field(4096, ge=1, description="documents per batch inside a task")

    @field_validator("task_size")
    @classmethod
    def _size(cls, value: int | str) -> int:
        size = parse_size(value)
        if size < 1024:
            raise ValueError("task_size must be at least 1KB")
        return size


class LoadedRecipe(BaseModel):
    """A recipe with its stages validated and its paths resolved against the recipe's folder."""

    recipe: Recipe
    stages: list[StageSpec]
    base_dir: Path
    source_file: str
    input_lines: list[int | None] = []

    def input_location(self, index: int) -> str:
        """'recipe.yaml:4' for the recipe line of input `index` (for error messages)."""
        line = self.input_lines[index] if index < len(self.input_lines) else None
        return f"{self.source_file}:{line}" if line else self.source_file

    @property
    def output_dir(self) -> Path:
        out = Path(self.recipe.output)
        return out if out.is_absolute() else self.base_dir / out


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.5)
    return f" — did you mean '{close[0]}'?" if close else f" (valid: {', '.join(sorted(choices))})"


def _node_at(node: yaml.Node | None, loc: tuple) -> yaml.Node | None:
    """The YAML node at a pydantic error location, as deep as the path goes (for its line number).

    The last step of the path returns the key node, so an unknown parameter points at its own line.
    """
    for depth, part in enumerate(loc):
        last = depth == len(loc) - 1
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                return node
            node = match[0] if last else match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def _line(root: yaml.Node | None, loc: tuple) -> int | None:
    node = _node_at(root, loc)
    return node.start_mark.line + 1 if node is not None else None


def _format_error(source: str, root: yaml.Node | None, loc: tuple, message: str) -> str:
    line = _line(root, loc)
    where = f"{source}:{line}" if line else source
    field = ".".join(str(p) for p in loc)
    return f"{where}: {field + ': ' if field else ''}{message}"


def _explain(err: dict, model: type[BaseModel]) -> str:
    if err["type"] == "extra_forbidden":
        return f"unknown parameter '{err['loc'][-1]}'{_suggest(err['loc'][-1], list(model.model_fields))}"
    return err["msg"]


def load_recipe(path: str | Path) -> LoadedRecipe:
    """Read and validate a recipe file; raise RecipeError naming the line of the first problem."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"recipe {path} does not exist")
    return parse_recipe(path.read_text(encoding="utf-8"), str(path), path.resolve().parent)


def parse_recipe(text: str, source: str = "<recipe>", base_dir: Path | None = None) -> LoadedRecipe:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RecipeError(f"{source}: not valid YAML (recipes are plain data, no tags): {err}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a mapping with name, inputs, stages and output")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        messages = [_format_error(source, root, e["loc"], _explain(e, _model_for(e["loc"]))) for e in exc.errors()]
        raise RecipeError("\n".join(messages)) from None
    stages = []
    for index, item in enumerate(recipe.stages):
        spec = _validate_stage(item, index, source, root)
        for name, config in STAGES[spec.name].prerequisites(spec.config):
            stages.append(StageSpec(name=name, key=name, config=config, line=spec.line))
        stages.append(spec)
    keys = [s.key for s in stages]
    for i, spec in enumerate(stages):  # a stage used twice gets a numbered key: length_filter, length_filter_2
        if keys[:i].count(spec.name):
            spec.key = f"{spec.name}_{keys[: i + 1].count(spec.name)}"
    input_lines = [_line(root, ("inputs", i)) for i in range(len(recipe.inputs))]
    return LoadedRecipe(
        recipe=recipe, stages=stages, base_dir=base_dir or Path.cwd(), source_file=source, input_lines=input_lines
    )


def _model_for(loc: tuple) -> type[BaseModel]:
    return InputSpec if loc and loc[0] == "inputs" else Recipe


def _validate_stage(item: dict, index: int, source: str, root: yaml.Node | None) -> StageSpec:
    loc: tuple = ("stages", index)
    if len(item) != 1:
        raise RecipeError(_format_error(source, root, loc, "each stage is one mapping {stage_name: {parameters}}"))
    name, params = next(iter(item.items()))
    line = _line(root, loc)
    if name not in STAGES:
        raise RecipeError(_format_error(source, root, loc, f"unknown stage '{name}'{_suggest(name, list(STAGES))}"))
    config_model = STAGES[name].Config
    try:
        config = config_model.model_validate(params or {})
    except ValidationError as exc:
        messages = [
            _format_error(source, root, (*loc, name, *e["loc"]), _explain(e, config_model)) for e in exc.errors()
        ]
        raise RecipeError("\n".join(messages)) from None
    return StageSpec(name=name, key=name, config=config, line=line)


def recipe_json_schema() -> dict[str, Any]:
    """JSON schema of recipes, with every registered stage and its parameters."""
    items = [
        create_model(f"{name}_stage", __config__=ConfigDict(extra="forbid"), **{name: (cls.Config, ...)})
        for name, cls in sorted(STAGES.items())
    ]
    stage_item = items[0]
    for model in items[1:]:
        stage_item = stage_item | model  # type: ignore[assignment]
    schema_model = create_model("RecipeSchema", __base__=Recipe, stages=(list[stage_item], Field(default_factory=list)))
    return schema_model.model_json_schema()

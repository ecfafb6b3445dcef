"""Recipes: YAML in, a validated Recipe out, or an error that names the recipe line and what to do.

YAML is read with the safe loader only, and no field names code to import or run: a recipe is data.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from refinery.corpora import storage
from refinery.corpora.readers import (
    READERS,
    InputError,
    ReadTask,
    expand_paths,
    format_from_name,
    option_problems,
    plan_input,
)
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


# The keys of a recipe input that are not reader options.
INPUT_KEYS = ("path", "format", "source")


class InputSpec(BaseModel):
    """One input: which files, read by which reader, labelled how, with that reader's options.

    Recipes write the options flat beside `path:` (`text_field: content`); the reader's Options model checks
    them. Where `format:` is left out, the path's name tells the reader when it can (`crawl/*.warc.gz`);
    otherwise each file's options are checked when the input is planned.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="file, folder or glob, relative to the recipe's folder")
    format: str | None = Field(None, description="reader; inferred from the file name when left out")
    source: str | None = Field(None, description="label for the `source` column (default: the file name)")
    options: dict[str, Any] = Field(default_factory=dict, description="the reader's options, as written")

    @model_validator(mode="before")
    @classmethod
    def _reader_options(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        entry = {k: v for k, v in data.items() if k in INPUT_KEYS}
        options = {k: v for k, v in data.items() if k not in INPUT_KEYS}
        errors = _input_errors(entry, options)
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, [
                InitErrorDetails(type=PydanticCustomError("input_option", message), loc=(key,), input=data.get(key))
                for key, message in errors])
        return {**entry, "options": options}

    def plan(self, base_dir: Path, task_size: int, limit: int | None = None) -> list[ReadTask]:
        """The input's read tasks: its files (relative to base_dir), each read by its reader (with a `limit`,
        one task per file that reads its first `limit` records)."""
        return plan_input(self.path, base_dir, task_size, self.format, self.source, self.options, limit)


def _input_errors(entry: dict[str, Any], options: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for each key of an input that its reader (named, or told by the path's name) refuses."""
    fmt = entry.get("format")
    if fmt is not None and (not isinstance(fmt, str) or fmt not in READERS):
        return [("format", f"unknown format '{fmt}'{_suggest(fmt, list(READERS))}")]
    path = entry.get("path")
    fmt = fmt or (format_from_name(path) if isinstance(path, str) else None)
    every_option = {key for reader in READERS.values() for key in reader.Options.model_fields}
    own = list(READERS[fmt].Options.model_fields) if fmt else sorted(every_option)
    errors = []
    for key in options:
        if key in every_option:
            continue  # another format's option: the reader's check below names the formats that take it
        close = difflib.get_close_matches(str(key), [*INPUT_KEYS, *own], n=1, cutoff=0.5)
        if close and close[0] in INPUT_KEYS:
            errors.append((key, f"unknown parameter '{key}' — did you mean '{close[0]}'?"))
        else:
            for_format = f" for format {fmt}" if fmt else ""
            errors.append((key, f"unknown option '{key}'{for_format}{_suggest(key, [*INPUT_KEYS, *own])}"))
    if errors or fmt is None:
        return errors
    return option_problems(fmt, options)


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
    limit: int | None = Field(
        None, ge=1, description="read only the first N records of each input file, in file order (a quick look; "
                                "each file is then one task); default: every record"
    )

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
    input_labels: list[str] = []  # where each input was given when not in the file: "--input 'crawl/*.gz'"

    def input_location(self, index: int) -> str:
        """'recipe.yaml:4' for the recipe line of input `index` (for error messages), or the flag that gave it."""
        if index < len(self.input_labels):
            return self.input_labels[index]
        line = self.input_lines[index] if index < len(self.input_lines) else None
        return f"{self.source_file}:{line}" if line else self.source_file

    def plan_input(self, index: int) -> list[ReadTask]:
        """The read tasks of input `index`, as a run reads them (InputError when it cannot be planned)."""
        spec = self.recipe.inputs[index]
        return spec.plan(self.base_dir, self.recipe.task_size, self.recipe.limit)

    @property
    def output_url(self) -> str | None:
        """The object-storage URL the run is published to (`output: s3://...`); None for a local output."""
        return self.recipe.output if storage.is_remote(self.recipe.output) else None

    @property
    def output_dir(self) -> Path:
        """The folder the run is built in: the output itself, or for a remote output its staging folder."""
        if self.output_url is not None:
            from refinery.corpora.remote_folder import staging_folder

            return staging_folder(self.output_url)
        out = Path(storage.local_path(self.recipe.output) or self.recipe.output)
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
    # Every mistake at once, in recipe order: the top-level fields and inputs, then each stage.
    problems: list[str] = []
    recipe = None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems += [_format_error(source, root, e["loc"], _explain(e, _model_for(e["loc"]))) for e in exc.errors()]
    items = data.get("stages") if isinstance(data.get("stages"), list) else []
    stages = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue  # the recipe-level check above reported it
        try:
            spec = _validate_stage(item, index, source, root)
        except RecipeError as err:
            problems.append(str(err))
            continue
        for name, config in STAGES[spec.name].prerequisites(spec.config):
            stages.append(StageSpec(name=name, key=name, config=config, line=spec.line))
        stages.append(spec)
    if problems or recipe is None:
        raise RecipeError("\n".join(problems))
    keys = [s.key for s in stages]
    for i, spec in enumerate(stages):  # a stage used twice gets a numbered key: length_filter, length_filter_2
        if keys[:i].count(spec.name):
            spec.key = f"{spec.name}_{keys[: i + 1].count(spec.name)}"
    input_lines = [_line(root, ("inputs", i)) for i in range(len(recipe.inputs))]
    return LoadedRecipe(
        recipe=recipe, stages=stages, base_dir=base_dir or Path.cwd(), source_file=source, input_lines=input_lines
    )


def input_spec(entry: dict[str, Any], where: str) -> InputSpec:
    """An input given outside a recipe file (a command's arguments), validated as a recipe's inputs are;
    RecipeError naming `where` and the key that is wrong."""
    try:
        return InputSpec.model_validate(entry)
    except ValidationError as exc:
        messages = [_format_error(where, None, e["loc"], _explain(e, InputSpec)) for e in exc.errors()]
        raise RecipeError("\n".join(messages)) from None


def with_overrides(loaded: LoadedRecipe, inputs: list[tuple[str, str]] | None = None,
                   output: str | None = None, cwd: Path | None = None, limit: int | None = None) -> LoadedRecipe:
    """The recipe with its inputs, output and/or limit replaced by ones given on a command line.

    `inputs` are (path, label) pairs, the label naming the flag in errors ("--input 'crawl/*.warc.gz'"); each is
    validated as a recipe input (format inferred from the name) and must match a file. Relative paths start at
    `cwd` (default: the current folder) and are made absolute, so the recipe's own relative paths (its stages'
    files) still start at the recipe's folder. RecipeError or InputError naming the flag.
    """
    cwd = (cwd or Path.cwd()).absolute()
    update: dict[str, Any] = {}
    if inputs:
        specs, problems = [], []
        for path, label in inputs:
            spec = input_spec({"path": path}, label)
            try:
                expand_paths(spec.path, cwd)  # files only: the run plans them (and reports a reader's problem)
            except InputError as err:
                problems.append(f"{label}: {err}")
                continue
            local = storage.local_path(path)
            if local is not None and not Path(local).is_absolute():
                spec = spec.model_copy(update={"path": path[: len(path) - len(local)] + str(cwd / local)})
            specs.append(spec)
        if problems:
            raise InputError("\n".join(problems))
        update["inputs"] = specs
    if output is not None:
        remote = storage.local_path(output) is None
        update["output"] = output if remote or Path(output).is_absolute() else str(cwd / output)
    if limit is not None:
        update["limit"] = limit
    if not update:
        return loaded
    recipe = loaded.recipe.model_copy(update=update)
    labels = [label for _, label in inputs] if inputs else loaded.input_labels
    return loaded.model_copy(update={"recipe": recipe, "input_labels": labels})


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


def _input_models() -> list[type[BaseModel]]:
    """One schema per registered reader (its `format` and its options beside `path`), and one for an input
    whose format comes from its file names (any reader's options)."""
    path, source = ((InputSpec.model_fields[k].annotation, InputSpec.model_fields[k]) for k in ("path", "source"))
    models = []
    any_option: dict[str, Any] = {}
    for name, reader in sorted(READERS.items()):
        options = {key: (field.annotation, field) for key, field in reader.Options.model_fields.items()}
        any_option = {**options, **any_option}
        about = (reader.__doc__ or name).strip().splitlines()[0]
        fmt = (Literal[name], Field(description=about))  # type: ignore[valid-type]
        models.append(create_model(f"{name}_input", __config__=ConfigDict(extra="forbid"), path=path, format=fmt,
                                   source=source, **options))
    models.append(create_model("input_by_name", __config__=ConfigDict(extra="forbid"), path=path, source=source,
                               **any_option))
    return models


def _union(models: list[type[BaseModel]]) -> Any:
    union = models[0]
    for model in models[1:]:
        union = union | model  # type: ignore[assignment]
    return union


def recipe_json_schema() -> dict[str, Any]:
    """JSON schema of recipes, with every registered reader and its options, and every stage and its parameters."""
    stage_items = [
        create_model(f"{name}_stage", __config__=ConfigDict(extra="forbid"), **{name: (cls.Config, ...)})
        for name, cls in sorted(STAGES.items())
    ]
    schema_model = create_model(
        "RecipeSchema", __base__=Recipe,
        inputs=(list[_union(_input_models())], Recipe.model_fields["inputs"]),
        stages=(list[_union(stage_items)], Field(default_factory=list)),
    )
    return schema_model.model_json_schema()

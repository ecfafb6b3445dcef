"""Bundled recipes (pipelines/recipes/NAME.yaml), run by name, and `refinery run`'s --input, --output, --dry-run.

A recipe argument that is a file is that recipe; one that is not but names a bundled recipe (`web`,
`instructions`) is the bundled one. The recipe's own relative paths (inputs, stages' files) start at its file's
folder, bundled or not; what a user types (--input, --output) starts at the current folder. A bundled recipe run
by name never writes inside the installed package: without --output it writes to ./out/NAME.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from refinery.corpora.readers import InputError
from refinery.pipelines.engine.recipe import LoadedRecipe, RecipeError, load_recipe, with_overrides

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


@dataclass
class Bundled:
    name: str
    path: Path
    about: str


def bundled_recipes() -> list[Bundled]:
    """The bundled recipes, by name (one in a folder is FOLDER/NAME: ablation/raw), each with its first comment
    line (what it does)."""
    found = []
    for path in sorted(RECIPES_DIR.rglob("*.yaml")):
        lines = path.read_text(encoding="utf-8").splitlines()
        about = next((line.lstrip("#").strip() for line in lines if line.startswith("#")), "")
        found.append(Bundled(path.relative_to(RECIPES_DIR).with_suffix("").as_posix(), path, about))
    return found


def bundled_group(name: str) -> list[Bundled]:
    """The recipes of a bundled folder (`ablation`: ablation/raw, ablation/refined), for `refinery ablate`."""
    return [r for r in bundled_recipes() if r.name.startswith(name.rstrip("/") + "/")]


def describe_bundled() -> str:
    """`refinery recipes`: one line per bundled recipe, and its file (to copy and change)."""
    recipes = bundled_recipes()
    width = max((len(r.name) for r in recipes), default=0)
    lines = ["bundled recipes (run one by name: refinery run NAME --input FILES --output DIR;",
             "copy its file to change its stages, then: refinery run my-copy.yaml)", ""]
    for recipe in recipes:
        lines += [f"  {recipe.name:{width}}  {recipe.about}", f"  {'':{width}}  {recipe.path}"]
    if bundled_group("ablation"):
        lines += ["", "compare recipes by training models on their data: refinery ablate ablation --tokens 2M "
                  "(ablation/raw against ablation/refined; docs/ablation.md)"]
    return "\n".join(lines)


def find_bundled(name: str) -> Bundled | None:
    return next((r for r in bundled_recipes() if r.name == name), None)


def resolve_recipe(argument: str, inputs: list[str], output: str | None,
                   limit: int | None = None) -> tuple[LoadedRecipe, str | None]:
    """The recipe a `refinery run` argument names, with --input, --output and --limit applied; and, for a bundled
    recipe run by name without --output, a line saying where it writes."""
    bundled = None if Path(argument).is_file() else find_bundled(argument)
    if bundled is None and not Path(argument).exists():
        names = ", ".join(r.name for r in bundled_recipes())
        raise RecipeError(f"recipe {argument} does not exist: give a recipe file, or the name of a bundled recipe "
                          f"({names}; `refinery recipes` lists them)")
    loaded = load_recipe(bundled.path if bundled else argument)
    note = None
    if bundled is not None and output is None:
        output = str(Path("out") / bundled.name)
        note = (f"bundled recipe {bundled.name} ({bundled.path}) writes to ./{output} in the current folder; "
                "--output DIR to change")
    labels = [(path, f"--input '{path}'") for path in inputs]
    if output is not None and not output.strip():
        raise RecipeError("--output: give a folder, e.g. --output out/web")
    return with_overrides(loaded, labels or None, output, limit=limit), note


def _shown(path: str) -> str:
    return path if "://" in path else os.path.normpath(path)


def dry_run(loaded: LoadedRecipe) -> tuple[str, bool]:
    """The plan (as `refinery plan` prints it) and the files each input would read; whether every input planned."""
    from refinery.pipelines.commands import plan_view

    limit = loaded.recipe.limit
    lines = [plan_view.to_text(plan_view.plan_recipe(loaded)), "",
             "would read" + (f" the first {limit:,} records of each file (--limit)" if limit else "")]
    ok = True
    for index, spec in enumerate(loaded.recipe.inputs):
        try:
            tasks = loaded.plan_input(index)
        except InputError as err:
            lines.append(f"  {loaded.input_location(index)}: {err}")
            ok = False
            continue
        files: dict[str, list[str]] = {}
        for task in tasks:
            files.setdefault(task.path, []).append(task.format)
        lines.append(f"  {spec.path}  ({len(files):,} file{'s' * (len(files) != 1)}, {len(tasks):,} "
                     f"task{'s' * (len(tasks) != 1)})")
        shown = list(files.items())
        lines += [f"    {_shown(path)}  {formats[0]} · {len(formats)} task{'s' * (len(formats) != 1)}"
                  for path, formats in shown[:20]]
        if len(shown) > 20:
            lines.append(f"    ... and {len(shown) - 20:,} more")
    lines += ["", f"dry run: nothing written; `refinery run` without --dry-run writes to {loaded.output_dir}"]
    return "\n".join(lines), ok

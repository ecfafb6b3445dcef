"""The house: the installed names, one-way imports with no circle, file sizes, the executor contract (a new
executor is one new class), and the pass plan around global and producer stages."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import tomllib

from refinery.pipelines.engine.executors import EXECUTORS, Executor, TaskFailed, create_executor, guarded, register
from refinery.pipelines.engine.recipe import load_recipe, parse_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.pipelines.engine.segments import TaskJob, plan_segments

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("corpora", "pipelines", "tokenization", "training")
# What each package may import: pipelines → corpora, tokenization; training → tokenization, corpora. The
# commands (the `refinery` CLI and the demo) hand `train`, `eval` and `generate` to training, lazily.
MAY_IMPORT = {"corpora": {"corpora"}, "tokenization": {"tokenization", "corpora"},
              "training": {"training", "tokenization", "corpora"},
              "pipelines": {"pipelines", "corpora", "tokenization"},
              "pipelines/commands": {"pipelines", "corpora", "tokenization", "training"}}


def source_files() -> list[Path]:
    return sorted(p for top in PACKAGES for p in (REPO / top).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return "refinery." + ".".join(parts)


def imports(path: Path, top_level_only: bool, modules: frozenset[str] = frozenset()) -> Iterator[str]:
    """Modules a file imports: `from x import y` is x.y where that is one of `modules` (a submodule), else x."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                yield name if name in modules else node.module


def test_the_installed_package_claims_only_the_refinery_name():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = sorted("refinery." + str(p.parent.relative_to(REPO)).replace(os.sep, ".")
                     for top in PACKAGES for p in (REPO / top).rglob("__init__.py"))
    assert sorted(config["packages"]) == folders
    assert config["package-dir"] == {f"refinery.{top}": top for top in PACKAGES}
    # From a folder outside the checkout, the generic names are not importable and ours are.
    probe = "import importlib.util as u; print([u.find_spec(n) is None for n in " + repr(PACKAGES) + "])"
    done = subprocess.run([sys.executable, "-c", probe + "; import refinery.pipelines.engine.run"],
                          cwd="/", capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str([True] * len(PACKAGES))


def test_code_imports_only_refinery_names_and_points_one_way():
    for path in source_files() + sorted((REPO / "tests").rglob("*.py")):
        parts = path.relative_to(REPO).parts
        package = "/".join(parts[:2]) if "/".join(parts[:2]) in MAY_IMPORT else parts[0]
        for name in imports(path, top_level_only=False):
            root = name.split(".")[0]
            assert root not in PACKAGES, f"{path}: imports {name}; write refinery.{name}"
            if root == "refinery" and package in MAY_IMPORT:
                target = name.split(".")[1]
                assert target in MAY_IMPORT[package], f"{path}: {package} must not import {name}"


def test_no_import_circle():
    modules = {module_name(p): p for p in source_files()}
    known = frozenset(modules)
    graph = {name: {m for m in imports(path, top_level_only=True, modules=known) if m in modules and m != name}
             for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for following in sorted(graph[node]):
            if state.get(following) == 1:
                cycle = trail[trail.index(following):] + [following] if following in trail else [node, following]
                pytest.fail("import circle: " + " → ".join(cycle))
            if following not in state:
                visit(following, trail + [following])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_file_over_400_lines():
    long = {str(p.relative_to(REPO)): n for p in source_files() + sorted((REPO / "tests").rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long


@register
class ThreadExecutor(Executor):
    """A second executor, defined in this one file: threads of this process, finishing in reverse order."""

    name = "test-threads"

    def __init__(self, workers: int | None = None):
        self.workers = workers or 2
        self.ran: list[int] = []

    def map(self, fn: Callable, jobs: Sequence[Any], on_progress: Callable[[int], None],
            describe: Callable[[Any], str]) -> Iterator[tuple[Any, Any]]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.workers) as pool:
            futures = [(job, pool.submit(fn, job, on_progress)) for job in reversed(jobs)]
            for job, future in futures:
                if isinstance(job, TaskJob):  # (a partitioned finish hands it FinishJobs too)
                    self.ran.append(job.task_index)
                yield job, guarded(future.result, job, describe)


class InterruptingExecutor(Executor):
    """Runs the first task of each pass, then behaves as if the user pressed Ctrl-C."""

    name = "test-interrupt"

    def map(self, fn, jobs, on_progress, describe):
        for job in jobs[:1]:
            yield job, fn(job, on_progress)
        raise KeyboardInterrupt


def output_files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes()
            for folder in ("data", "removed", "quarantine", "tokens") for p in sorted((run_dir / folder).rglob("*"))
            if p.is_file()}


@pytest.fixture
def recipe(data_dir, write_recipe) -> Path:
    inputs = [{"path": str(data_dir / "text/c4_demo.jsonl")}, {"path": str(data_dir / "text/cc_en_head-*.jsonl.gz")}]
    stages = [{"length_filter": {"min_words": 5}}, {"exact_dedup": {}},
              {"tokenize": {"tokenizer": "train", "vocab_size": 400, "validation_fraction": 0.1}}]
    return write_recipe(inputs, stages, task_size="64KB")


def test_a_new_executor_is_one_class_and_gives_identical_output(recipe, tmp_path):
    assert EXECUTORS["test-threads"] is ThreadExecutor
    local = run_recipe(load_recipe(recipe), progress=False, executor=create_executor("local", workers=2))
    reference = output_files(local.run_dir)
    loaded = load_recipe(recipe)
    loaded.recipe.output = str(tmp_path / "threads")
    threads = ThreadExecutor(workers=3)
    summary = run_recipe(loaded, progress=False, executor=threads)
    assert threads.ran and threads.ran != sorted(threads.ran)  # tasks really finished out of order
    assert output_files(summary.run_dir) == reference
    assert (summary.read, summary.kept, summary.removed) == (local.read, local.kept, local.removed)


def test_an_unknown_executor_suggests_the_closest_name():
    with pytest.raises(ValueError, match="did you mean 'local'"):
        create_executor("locl")


def test_interrupted_run_says_so_in_the_manifest_and_resumes(recipe):
    from refinery.corpora.atomic import read_json

    with pytest.raises(KeyboardInterrupt):
        run_recipe(load_recipe(recipe), progress=False, executor=InterruptingExecutor())
    run_dir = recipe.parent / "out"
    assert read_json(run_dir / "manifest.json")["status"] == "interrupted"
    summary = run_recipe(load_recipe(recipe), workers=2, progress=False)
    assert summary.resumed_tasks == 1
    assert read_json(run_dir / "manifest.json")["status"] == "complete"


def test_a_failing_task_names_itself(recipe):
    class Failing(Executor):
        name = "test-failing"

        def map(self, fn, jobs, on_progress, describe):
            for job in jobs:
                yield job, guarded(lambda: 1 / 0, job, describe)

    named = r"task 0 of pass 1 \(.*c4_demo.jsonl, bytes/rows 0-\d+\) failed: ZeroDivisionError"
    with pytest.raises(TaskFailed, match=named):
        run_recipe(load_recipe(recipe), progress=False, executor=Failing())


def test_passes_around_global_and_producer_stages():
    text = """name: plan
inputs: [{path: x.jsonl}]
stages:
  - length_filter: {}
  - exact_dedup: {}
  - pii: {}
  - tokenize: {tokenizer: train}
output: out
"""
    segments = plan_segments(parse_recipe(text).stages)
    shape = [(s.head.key if s.head else None, [m.key for m in s.maps], s.tail.key if s.tail else None, s.source,
              s.final) for s in segments]
    assert shape == [
        (None, ["length_filter"], "exact_dedup", None, False),   # read, filter, collect hashes
        ("exact_dedup", ["pii"], "train_tokenizer", 0, True),    # apply, pii: the last change writes data/
        (None, [], "tokenize", 1, False),                        # collect tokens from data/, write nothing
    ]


def test_a_new_stage_is_one_class(data_dir, write_recipe):
    from refinery.pipelines.stages import STAGES, register
    from refinery.pipelines.stages.base import FilterStage, StageConfig

    class QuestionConfig(StageConfig):
        keep: bool = True

    @register
    class QuestionsOnly(FilterStage):
        """Keep documents that ask something (a stage defined in one place, used by a recipe as it is)."""

        name = "test_questions_only"
        Config = QuestionConfig

        def reasons(self, docs):
            import pyarrow.compute as pc

            asks = pc.match_substring(docs.column("text"), "?")
            return pc.if_else(asks, None, "no_question")

    try:
        recipe = write_recipe([{"path": str(data_dir / "text/c4_demo.jsonl")}], [{"test_questions_only": {}}])
        # One worker: the stage runs in this process, where this test registered it (a stage shipped with
        # Refinery is a module of pipelines/stages/, which every worker imports).
        summary = run_recipe(load_recipe(recipe), workers=1, progress=False)
        texts = (data_dir / "text/c4_demo.jsonl").read_text(encoding="utf-8").splitlines()
        import json

        assert summary.kept == sum("?" in json.loads(line)["text"] for line in texts) > 0
        assert summary.removed == len(texts) - summary.kept
    finally:
        STAGES.pop("test_questions_only", None)

"""The engine: plans a recipe into tasks and segments, runs them, resumes, and writes stats and the manifest."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from refinery.corpora import storage
from refinery.corpora.atomic import read_json, write_json
from refinery.corpora.readers import InputError, ReadTask, tasks_schema
from refinery.pipelines.engine.executors import Executor, create_executor
from refinery.pipelines.engine.layout import RunLayout, RunLock, RunLocked
from refinery.pipelines.engine.progress import PassProgress, input_bytes_per_task
from refinery.pipelines.engine.publish import PublishError, check_remote_output, publish_run
from refinery.pipelines.engine.recipe import LoadedRecipe
from refinery.pipelines.engine.segments import (
    FinishJob,
    Segment,
    TaskJob,
    collected_part,
    plan_segments,
    run_finish,
    run_task,
)
from refinery.pipelines.engine.stats import merge
from refinery.pipelines.stages import STAGES, build_stage
from refinery.pipelines.stages.base import RunContext

# 2: passes planned around producer stages, global stages' rows in work/<stage>/collected/.
FORMAT_VERSION = 2


class RunError(RuntimeError):
    """The run cannot go on; the message says why and what to do."""


@dataclass
class RunSummary:
    run_dir: Path
    read: int
    kept: int
    removed: int
    quarantined: int
    seconds: float
    resumed_tasks: int
    limit: int | None = None  # the run read only the first `limit` records of each input file
    published_to: str | None = None  # the object-storage URL of the run; run_dir is then its staging folder


def plan_tasks(loaded: LoadedRecipe) -> list[ReadTask]:
    """Every input expanded into read tasks, in recipe order then file order then range order."""
    tasks: list[ReadTask] = []
    problems = []  # every input's problem at once, not one per run
    for index in range(len(loaded.recipe.inputs)):
        try:
            tasks += loaded.plan_input(index)
        except InputError as err:
            problems.append(f"{loaded.input_location(index)}: {err}")
    if problems:
        raise InputError("\n".join(problems))
    return tasks


def _versions() -> dict[str, str]:
    import duckdb
    import pyarrow

    from refinery.pipelines import __version__

    return {"refinery": __version__, "python": platform.python_version(), "pyarrow": pyarrow.__version__,
            "duckdb": duckdb.__version__}


def _input_fingerprints(tasks: list[ReadTask]) -> list[dict[str, Any]]:
    """Each input file once, as written (a URL stays a URL), with what tells a changed file: size and mtime, or
    for an object on a store its size and ETag (or the store's own version)."""
    seen: dict[str, dict[str, Any]] = {}
    for task in tasks:
        if task.path not in seen:
            seen[task.path] = {"path": task.path, **storage.fingerprint(task.path)}
    return list(seen.values())


def _check_stages(loaded: LoadedRecipe, context: RunContext) -> list[dict[str, str]]:
    """Build every stage once before any work, so a missing model or list fails at once, naming the recipe line;
    return the content hashes of the files the stages read (they decide the output as much as the inputs)."""
    resources, problems = [], []
    for spec in loaded.stages:
        try:
            stage = build_stage(spec, context)
        except ValueError as err:
            problems.append(f"{loaded.source_file}:{spec.line}: {err}")
            continue
        for path in stage.resource_files:
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            resources.append({"stage": spec.key, "path": str(path), "sha256": digest})
    if problems:
        raise RunError("\n".join(problems))
    return resources


def _prepare(loaded: LoadedRecipe, context: RunContext) -> tuple[list[ReadTask], list[dict[str, str]]]:
    """The read tasks and the stages' resource files; every problem of inputs and stages reported together."""
    tasks: list[ReadTask] = []
    resources: list[dict[str, str]] = []
    problems: list[Exception] = []
    try:
        tasks = plan_tasks(loaded)
    except InputError as err:
        problems.append(err)
    try:
        resources = _check_stages(loaded, context)
    except RunError as err:
        problems.append(err)
    if problems:
        raise type(problems[0])("\n".join(str(p) for p in problems))
    return tasks, resources


def _fingerprint(loaded: LoadedRecipe, inputs: list[dict[str, Any]], resources: list[dict[str, str]]) -> str:
    """What decides the output: the recipe (less its output folder), the input files and the stages' files."""
    # stages: validated, below. A run without a limit keeps the fingerprint it had before limits existed.
    recipe = loaded.recipe.model_dump(exclude={"output", "name", "stages"} | ({"limit"} if loaded.recipe.limit is None
                                                                              else set()))
    stages = [{"name": s.name, "config": s.config.fingerprinted()} for s in loaded.stages]
    blob = json.dumps({"recipe": recipe, "stages": stages, "inputs": inputs, "resources": resources},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _open_manifest(
    layout: RunLayout, loaded: LoadedRecipe, tasks: list[ReadTask], resources: list[dict[str, str]], force: bool
) -> dict:
    inputs = _input_fingerprints(tasks)
    fingerprint = _fingerprint(loaded, inputs, resources)
    if force and layout.is_run():
        layout.remove_run()
    if layout.manifest.exists():
        manifest = read_json(layout.manifest)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise RunError(
                f"{layout.root} holds a run made by another version of Refinery (run format "
                f"{manifest.get('format_version')}, this one writes {FORMAT_VERSION}); rerun with --force to redo it"
            )
        if manifest.get("fingerprint") != fingerprint:
            raise RunError(
                f"{layout.root} holds a run of a different recipe or different inputs"
                f"{_limit_change(manifest.get('recipe', {}).get('limit'), loaded.recipe.limit)}; "
                "rerun with --force to start it over, or set another `output:` (--output DIR)"
            )
        return manifest
    return {
        "format_version": FORMAT_VERSION,
        "name": loaded.recipe.name,
        "recipe_file": loaded.source_file,
        "recipe": loaded.recipe.model_dump(),
        "stages": [{"key": s.key, "name": s.name, "config": s.config.model_dump()} for s in loaded.stages],
        "inputs": inputs,
        "resources": resources,
        "tasks": [t.to_dict() for t in tasks],
        "fingerprint": fingerprint,
        "versions": _versions(),
        "phases": {},
        "status": "running",
    }


def records_read(limit: int | None) -> str:
    """How much of each input a run reads, in words."""
    return "every record" if limit is None else f"the first {limit:,} records of each input file"


def _limit_change(before: int | None, now: int | None) -> str:
    """Why a rerun differs when only --limit changed (a limited run is no full run, nor another limit's run)."""
    return "" if before == now else f" (it read {records_read(before)}; this run reads {records_read(now)})"


def _describe(job: TaskJob) -> str:
    read = job.read
    span = f", bytes/rows {read.start}-{read.end if read.end is not None else 'end'}" if read.start or read.end else ""
    # "pass N" as the progress bar names it ("pass N/M: what it does").
    return f"task {job.task_index} of pass {job.segment + 1} ({read.path}{span})"


def _describe_finish(job: FinishJob) -> str:
    part = "partition" if job.step == "partition" else f"part of step '{job.step}'"
    return f"{part} {job.part} of {job.stage.key}'s finish"


def _run_segment(segment: Segment, passes: int, jobs: list[TaskJob], layout: RunLayout, executor: Executor,
                 task_bytes: list[int], limit: int | None, show: bool) -> int:
    pending = [j for j in jobs if not layout.segment_done(segment.index, j.task_index).exists()]
    with PassProgress(segment, passes, jobs, pending, layout, task_bytes, limit, show) as progress:
        for job, result in executor.map(run_task, pending, progress.read, _describe):
            progress.task_done(job, result)
    return len(jobs) - len(pending)


def _finish(segment: Segment, layout: RunLayout, manifest: dict, context: RunContext, executor: Executor,
            show: bool) -> None:
    """The barrier after a pass: the global stage's `finish` over every task's collected rows (once), or, for a
    stage that partitions it, one task per partition on the executor."""
    spec = segment.tail
    phase = f"{spec.key}.finish"
    if manifest["phases"].get(phase) == "done":
        return
    started = time.perf_counter()
    workdir = layout.stage_work(spec.key)
    workdir.mkdir(parents=True, exist_ok=True)
    files = sorted(collected_part(layout, spec.key, 0).parent.glob("part-*.parquet"))
    stage = build_stage(spec, context)
    steps = stage.finish_steps()
    if not steps:
        stage.finish(files, workdir)
    # Named as the pass before it names its collect ("find duplicates"), which this finishes.
    words = STAGES[spec.name].collect_does or f"{spec.key} finish"
    with tqdm(desc=f"{words} ({spec.key})", total=0, unit=" parts", disable=None if show and steps else True,
              dynamic_ncols=True, mininterval=0.5) as bar:
        for step in steps:  # one after another; the parts of a step in parallel
            jobs = [FinishJob(str(layout.root), spec, str(context.recipe_dir), part, [str(f) for f in files], step)
                    for part in range(stage.step_parts(step, files, workdir))]
            done = _finished(layout, spec.key)
            pending = [job for job in jobs if job.marker(layout).name not in done]
            bar.set_description(f"{words} ({spec.key}, {'by partition' if step == 'partition' else step})")
            bar.total += len(jobs)
            bar.update(len(jobs) - len(pending))
            for _job, _result in executor.map(run_finish, pending, bar.update, _describe_finish):
                pass
    manifest["phases"][phase] = "done"
    manifest["finish_seconds"] = {**manifest.get("finish_seconds", {}), spec.key: time.perf_counter() - started}
    write_json(layout.manifest, manifest)


def _finished(layout: RunLayout, stage_key: str) -> set[str]:
    """The names of a finish's part markers, listed at once (one listing, not a question per part)."""
    folder = layout.stage_work(stage_key) / "finished"
    return set(os.listdir(folder)) if folder.is_dir() else set()


def _write_stats(layout: RunLayout, loaded: LoadedRecipe, segments: list[Segment], n_tasks: int, manifest: dict):
    per_key: dict[str, list[dict]] = {}
    for segment in segments:
        for task_index in range(n_tasks):
            marker = read_json(layout.segment_done(segment.index, task_index))
            for key, counts in marker["stats"].items():
                per_key.setdefault(key, []).append(counts)
    kinds = {s.key: (s.name, STAGES[s.name].kind) for s in loaded.stages}
    finish_seconds = manifest.get("finish_seconds", {})
    order = ["read"] + [s.key for s in loaded.stages]
    totals = {}
    for position, key in enumerate(order):
        counts = merge(per_key.get(key, []))
        counts["seconds"] = round(counts["seconds"] + finish_seconds.get(key, 0.0), 3)
        name, kind = kinds.get(key, ("read", "read"))
        # Lists of rows rather than maps, so that DuckDB reads every stage's file with one schema.
        counts["reasons"] = [{"reason": r, "count": c} for r, c in counts["reasons"].items()]
        counts["counts"] = [{"name": n, "count": c} for n, c in counts["counts"].items()]
        totals[key] = counts
        write_json(layout.stats / f"{key}.json", {"stage": key, "name": name, "kind": kind, "position": position,
                                                   **counts})
    return totals


def run_recipe(
    loaded: LoadedRecipe, workers: int | None = None, force: bool = False, progress: bool = True,
    executor: Executor | None = None,
) -> RunSummary:
    """Run (or resume) a recipe with `executor` (default: local processes, `workers` of them); return the
    reconciled counts."""
    started = time.perf_counter()
    executor = executor or create_executor(workers=workers)
    layout = RunLayout(loaded.output_dir)
    context = RunContext(layout.root, loaded.base_dir)
    tasks, resources = _prepare(loaded, context)
    _check_output(layout, loaded, tasks, force)
    try:
        with RunLock(layout):
            manifest = _open_manifest(layout, loaded, tasks, resources, force)
            if loaded.output_url is not None:
                _check_remote(loaded.output_url, manifest["fingerprint"], force)
            layout.remove_temp_files()
            manifest.update(executor=executor.name, workers=getattr(executor, "workers", None))
            write_json(layout.manifest, manifest)
            try:
                summary = _run(loaded, layout, manifest, tasks, context, executor, progress, started)
                if loaded.output_url is not None:
                    publish_run(layout, loaded.output_url, progress)
                    summary.published_to = loaded.output_url
                return summary
            except BaseException as err:
                # The manifest says what happened; a rerun resumes either way.
                manifest["status"] = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
                write_json(layout.manifest, manifest)
                raise
    except RunLocked as err:
        raise RunError(str(err)) from None


def _check_remote(url: str, fingerprint: str, force: bool) -> None:
    try:
        check_remote_output(url, fingerprint, force)
    except PublishError as err:
        raise RunError(str(err)) from None


def _check_output(layout: RunLayout, loaded: LoadedRecipe, tasks: list[ReadTask], force: bool) -> None:
    """Refuse an output folder the run must not write into or delete: one holding the recipe or an input, a
    file, or a folder with someone else's files in it."""
    root = layout.root.resolve()
    recipe = Path(loaded.source_file)
    owned = [("the recipe", recipe)] if recipe.is_file() else []
    # A remote input can never lie inside a local output folder; a file:// one is checked as its local path.
    on_disk = [storage.local_path(path) for path in dict.fromkeys(task.path for task in tasks)]
    for what, path in owned + [("the input", Path(local)) for local in on_disk if local is not None]:
        if path.resolve().is_relative_to(root):
            raise RunError(f"output {layout.root} contains {what} {path}: a run writes (and --force deletes) "
                           "inside its output folder; set `output:` to a folder of its own, e.g. out/<name>")
    if layout.root.exists() and not layout.root.is_dir():
        raise RunError(f"output {layout.root} is a file, not a folder; set another `output:`")
    foreign = layout.root.is_dir() and not layout.is_run() and any(
        p.name != layout.lock.name for p in layout.root.iterdir())
    if foreign:
        advice = "--force deletes only a Refinery run folder (one with manifest.json); " if force else ""
        raise RunError(f"{layout.root} exists and is not a Refinery run; {advice}choose another `output:` or empty "
                       "it yourself")


def _run(
    loaded: LoadedRecipe, layout: RunLayout, manifest: dict, tasks: list[ReadTask], context: RunContext,
    executor: Executor, progress: bool, started: float,
) -> RunSummary:
    segments = plan_segments(loaded.stages)
    schema = tasks_schema(tasks)
    task_bytes = input_bytes_per_task(tasks, manifest["inputs"])
    resumed = 0
    if manifest["status"] != "complete":
        for segment in segments:
            jobs = [
                TaskJob(str(layout.root), segment.index, i, task, loaded.stages, loaded.recipe.batch_rows, schema,
                        str(loaded.base_dir), loaded.output_url)
                for i, task in enumerate(tasks)
            ]
            resumed += _run_segment(segment, len(segments), jobs, layout, executor, task_bytes, loaded.recipe.limit,
                                    progress)
            manifest["phases"][f"segment-{segment.index}"] = "done"
            write_json(layout.manifest, manifest)
            if segment.tail is not None:
                _finish(segment, layout, manifest, context, executor, progress)
    totals = _write_stats(layout, loaded, segments, len(tasks), manifest)
    # The intermediate copies between passes are no longer needed once the final pass is done.
    for segment in segments:
        for part in [] if segment.final else layout.segment(segment.index).glob("part-*.parquet"):
            part.unlink()
    manifest["status"] = "complete"
    write_json(layout.manifest, manifest)
    layout.remove_temp_files()  # what attempts killed mid-task (a lost node, a retry) left: never a real name
    final_key = loaded.stages[-1].key if loaded.stages else "read"
    return RunSummary(
        run_dir=layout.root,
        read=totals["read"]["docs_in"],
        kept=totals[final_key]["kept"],
        removed=sum(t["removed"] for t in totals.values()),
        quarantined=totals["read"]["quarantined"],
        seconds=time.perf_counter() - started,
        resumed_tasks=resumed,
        limit=loaded.recipe.limit,
    )


def describe_summary(summary: RunSummary) -> str:
    ok = summary.read == summary.kept + summary.removed + summary.quarantined
    lines = [
        f"read {summary.read:,} records → kept {summary.kept:,}, removed {summary.removed:,}, "
        f"quarantined {summary.quarantined:,}" + ("" if ok else "  (counts do NOT reconcile: please report)"),
        *([f"limited to the first {summary.limit:,} records of each input: a quick look, not the whole data "
           "(for all of it, rerun without --limit, with --force or another --output)"] if summary.limit else []),
        f"output: {summary.published_to or summary.run_dir}  ({summary.seconds:.1f}s"
        + (f", {summary.resumed_tasks} tasks already done" if summary.resumed_tasks else "")
        + ")",
        *([f"built in {summary.run_dir} (the staging folder: a rerun resumes from it; delete it once published)"]
          if summary.published_to else []),
    ]
    return "\n".join(lines)

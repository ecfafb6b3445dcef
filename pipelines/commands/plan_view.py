"""`refinery plan`: what the engine will do with a recipe, as text, as a Mermaid flowchart (GitHub renders it) and
as an inline SVG for the run report.

The plan is the engine's own: the read tasks come from the readers' `plan` (`InputSpec.plan`, as
`engine.run.plan_tasks` does) and the passes from `engine.segments.plan_segments`; this module only describes
them. A run's plan is rebuilt from its manifest (stages and read tasks as they ran), so a report needs no recipe.
"""

from __future__ import annotations

import html
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refinery.corpora.readers import InputError
from refinery.pipelines.commands.charts import SVG_NS, fmt_bytes
from refinery.pipelines.engine.layout import RunLayout
from refinery.pipelines.engine.recipe import LoadedRecipe, StageSpec
from refinery.pipelines.engine.segments import Segment, pass_words, plan_segments
from refinery.pipelines.stages import STAGES, StageConfig

# Paths relative to the run folder, named by RunLayout (the only code that knows the layout).
_HERE = RunLayout(Path())


def _folder(path: Path) -> str:
    return f"{path.as_posix()}/"


# What a producer's finish writes, where it is not its working folder (the tokenization stages write tokens/).
_PRODUCES = {
    "train_tokenizer": _HERE.tokens.tokenizer.as_posix(),
    "tokenize": f"{_folder(_HERE.tokens.split('train'))}, {_folder(_HERE.tokens.split('validation'))}",
}


@dataclass
class InputNode:
    label: str  # the recipe's path pattern, or a format when rebuilt from a run
    formats: list[str]
    files: int
    tasks: int
    problem: str | None = None  # why it could not be planned (a missing file, ...)


@dataclass
class Barrier:
    stage: str  # its key in the run
    producer: bool  # collect → finish only, keeps every document
    writes: str


@dataclass
class PassNode:
    number: int  # 1-based, as the progress bar names passes
    reads: str
    writes: str
    words: str = ""  # what it does in plain words, as the progress bar says it ("read, extract text, ...")
    apply: str | None = None
    maps: list[str] = field(default_factory=list)
    collect: str | None = None
    barrier: Barrier | None = None

    @property
    def may_remove(self) -> bool:
        """Map stages and applied global decisions may remove documents; reading may quarantine records."""
        return bool(self.maps) or self.apply is not None

    def steps(self) -> list[tuple[str, str]]:
        """(verb, what) lines: apply, map, collect."""
        lines = [("apply", self.apply)] if self.apply else []
        lines += [("map", " → ".join(self.maps))] if self.maps else []
        return lines + ([("collect", self.collect)] if self.collect else [])


@dataclass
class Plan:
    name: str
    source: str  # the recipe file
    output: str
    task_size: int
    inputs: list[InputNode]
    passes: list[PassNode]
    removing_stages: list[str]
    globals: list[tuple[str, str]]  # (stage key, its phases in words)
    limit: int | None = None  # only the first `limit` records of each input file are read

    @property
    def tasks(self) -> int:
        return sum(i.tasks for i in self.inputs)

    def outputs(self) -> list[tuple[str, str, str]]:
        """(folder, what it holds, the same in a few words) for every output of the run."""
        final = next((p.number for p in self.passes if p.writes == _folder(_HERE.data)), None)
        removed = ", ".join(self.removing_stages) or "none"
        rows = [(_folder(_HERE.data), f"kept documents (Parquet), written by pass {final}", "kept documents"),
                (_folder(_HERE.root / "removed"), f"removed documents with their reason, a folder per stage (stages "
                                                  f"that can remove: {removed})", "removed documents, with reasons"),
                (_folder(_HERE.quarantine), "input records that could not be read, with their reason and raw bytes",
                 "unreadable input records")]
        if any(p.barrier and p.barrier.stage in _PRODUCES for p in self.passes):
            rows.append((_folder(_HERE.tokens.root), "the tokenizer and token shards per split",
                         "tokenizer and token shards"))
        return rows + [(f"{_folder(_HERE.stats)}, {_HERE.manifest.as_posix()}",
                        "counts per stage; the recipe, inputs and completed phases", "")]


def _passes(stages: list[StageSpec]) -> tuple[list[PassNode], list[tuple[str, str]]]:
    segments = plan_segments(stages)
    by_index = {s.index: s for s in segments}
    passes, phases = [], {}
    for segment in segments:
        number = segment.index + 1
        node = PassNode(number, _reads(segment, by_index), _writes(segment), pass_words(segment),
                        maps=[m.key for m in segment.maps],
                        apply=segment.head.key if segment.head else None,
                        collect=segment.tail.key if segment.tail else None)
        if segment.head:
            phases[segment.head.key] += f" → apply (pass {number})"
        if segment.tail:
            key = segment.tail.key
            producer = not STAGES[segment.tail.name].applies
            writes = _PRODUCES.get(segment.tail.name, _folder(_HERE.stage_work(key)))
            node.barrier = Barrier(key, producer, writes)
            phases[key] = (f"{'producer: ' if producer else ''}collect (pass {number}) → finish → {writes}"
                           + ("; keeps every document" if producer else ""))
        passes.append(node)
    return passes, list(phases.items())


def _reads(segment: Segment, by_index: dict[int, Segment]) -> str:
    if segment.source is None:
        return "the inputs"
    source = by_index[segment.source]
    return _folder(_HERE.data) if source.final else f"pass {source.index + 1}'s parts"


def _writes(segment: Segment) -> str:
    if not segment.writes_documents:
        return "no documents"
    return _folder(_HERE.data) if segment.final else _folder(_HERE.segment(segment.index))


def _plan(name: str, source: str, output: str, task_size: int, inputs: list[InputNode],
          stages: list[StageSpec], limit: int | None) -> Plan:
    passes, phases = _passes(stages)
    removing = [s.key for s in stages if STAGES[s.name].kind == "map" or getattr(STAGES[s.name], "applies", False)]
    return Plan(name, source, output, task_size, inputs, passes, removing, phases, limit)


def plan_recipe(loaded: LoadedRecipe) -> Plan:
    """The plan of a recipe: each input planned into read tasks by its reader (a problem is shown, not raised)."""
    inputs = []
    for index, spec in enumerate(loaded.recipe.inputs):
        try:
            tasks = loaded.plan_input(index)
        except InputError as err:
            inputs.append(InputNode(spec.path, [], 0, 0, f"{loaded.input_location(index)}: {err}"))
            continue
        formats = sorted({t.format for t in tasks})
        inputs.append(InputNode(spec.path, formats, len({t.path for t in tasks}), len(tasks)))
    return _plan(loaded.recipe.name, loaded.source_file, str(loaded.output_dir), loaded.recipe.task_size, inputs,
                 loaded.stages, loaded.recipe.limit)


def plan_run(manifest: dict[str, Any], output: str) -> Plan:
    """The plan of a finished (or started) run, from its manifest: the stages and read tasks as they ran."""
    # plan_segments only needs each stage's registered name; the configs are in the manifest for whoever reads it.
    stages = [StageSpec(name=s["name"], key=s["key"], config=StageConfig()) for s in manifest["stages"]]
    by_format: dict[str, list[dict]] = defaultdict(list)
    for task in manifest["tasks"]:
        by_format[task["format"]].append(task)
    inputs = [InputNode(f"{fmt} input", [fmt], len({t["path"] for t in tasks}), len(tasks))
              for fmt, tasks in by_format.items()]
    recipe = manifest["recipe"]
    return _plan(manifest["name"], manifest.get("recipe_file", ""), output, recipe["task_size"], inputs, stages,
                 recipe.get("limit"))


def _describe_input(node: InputNode) -> str:
    if node.problem:
        return f"not planned: {node.problem}"
    return f"{'/'.join(node.formats) or '-'} · {node.files:,} file{'s' * (node.files != 1)} · " \
           f"{node.tasks:,} task{'s' * (node.tasks != 1)}"


def to_text(plan: Plan) -> str:
    """The plan as aligned plain text."""
    tasks = (f"{plan.tasks:,} read tasks of at most {fmt_bytes(plan.task_size)}" if plan.limit is None else
             f"{plan.tasks:,} read tasks, one per file, each reading its first {plan.limit:,} records (--limit)")
    lines = [f"plan of {plan.name}  (recipe {plan.source} → output {plan.output})", "", f"inputs  {tasks}"]
    width = max((len(i.label) for i in plan.inputs), default=0)
    lines += [f"  {i.label:{width}}  {_describe_input(i)}" for i in plan.inputs]
    lines += ["", "passes  (as the progress bar names them)"]
    lines += [f"  {node.number}/{len(plan.passes)}  {node.words}" for node in plan.passes]
    for node in plan.passes:
        lines += ["", f"pass {node.number}  reads {node.reads} → writes {node.writes}"]
        lines += [f"        {verb:8} {what}" for verb, what in node.steps()]
        if node.barrier:
            lines.append(f"  barrier  {node.barrier.stage} finish → {node.barrier.writes}")
    if plan.globals:
        lines += ["", "global stages (a barrier each: every task of the pass before it has finished)"]
        width = max(len(key) for key, _ in plan.globals)
        lines += [f"  {key:{width}}  {phases}" for key, phases in plan.globals]
    lines += ["", "outputs"]
    width = max(len(folder) for folder, _, _ in plan.outputs())
    lines += [f"  {folder:{width}}  {what}" for folder, what, _ in plan.outputs()]
    return "\n".join(lines)


def _mermaid_label(*lines: str) -> str:
    """A quoted Mermaid label: '#' and '"' written as entity codes (Mermaid reads '#...;' as an entity)."""
    escaped = [line.replace("#", "#35;").replace('"', "#quot;") for line in lines]
    return '"' + "<br/>".join(escaped) + '"'


def to_mermaid(plan: Plan) -> str:
    """The plan as a Mermaid flowchart (top-down). Node ids are plain words; every label is quoted."""
    out = ["flowchart TD"]
    for n, node in enumerate(plan.inputs, 1):
        out.append(f"  in{n}[/{_mermaid_label(node.label, _describe_input(node))}/]")
        out.append(f"  in{n} --> pass1")
    previous = None
    for node in plan.passes:
        # Long stage lists wrapped, so that GitHub's rendering stays narrow enough to read.
        steps = [line for verb, what in node.steps() for line in textwrap.wrap(f"{verb}: {what}", 36)]
        out.append(f"  pass{node.number}[{_mermaid_label(f'pass {node.number}', *steps, f'writes {node.writes}')}]")
        if previous:
            out.append(f"  {previous} --> pass{node.number}")
        if node.reads == _folder(_HERE.data):
            out.append(f"  out_data -.->|read| pass{node.number}")
        if node.writes == _folder(_HERE.data):
            out.append(f"  pass{node.number} --> out_data")
        if node.may_remove:
            out.append(f"  pass{node.number} -.-> out_removed")
        previous = f"pass{node.number}"
        if node.barrier:
            barrier = f"barrier{node.number}"
            out.append(f"  {barrier}{{{{{_mermaid_label('barrier', f'{node.barrier.stage} finish')}}}}}")
            out.append(f"  {previous} --> {barrier}")
            if node.barrier.stage in _PRODUCES:
                out.append(f"  {barrier} --> out_tokens")
            previous = barrier
    out.append("  pass1 -.-> out_quarantine")
    for folder, _, short in plan.outputs()[:-1]:
        out.append(f"  out_{folder.rstrip('/')}[({_mermaid_label(folder, short)})]")
    return "\n".join(out) + "\n"


# --- the plan as an inline SVG (monospace text, so that widths are known without a browser) -------------------

_CHAR = 7.2  # px per character of 12px monospace
_LINE = 16
_WIDTH = 760


def _box(x: float, y: float, w: float, lines: list[str], css: str, bold_first: bool = True) -> tuple[str, float]:
    h = 10 + _LINE * len(lines)
    parts = [f'<rect class="{css}" x="{x:.0f}" y="{y:.0f}" width="{w:.0f}" height="{h}" rx="6"/>']
    for i, line in enumerate(lines):
        weight = ' font-weight="bold"' if bold_first and i == 0 else ""
        parts.append(f'<text x="{x + 8:.0f}" y="{y + 18 + i * _LINE:.0f}"{weight}>{html.escape(line)}</text>')
    return "".join(parts), h


def _wrap(text: str, width: float) -> list[str]:
    return textwrap.wrap(text, max(10, int((width - 16) / _CHAR)), break_on_hyphens=False) or [""]


def _arrow(x1: float, y1: float, x2: float, y2: float) -> str:
    return f'<line class="plan-edge" x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2 - 2:.0f}" ' \
           'marker-end="url(#plan-arrow)"/>'


def to_svg(plan: Plan) -> str:
    """Inputs, then each pass and its barrier (joined by arrows), then the run's outputs, top to bottom. The outputs
    get no arrows: several passes write them (the text plan says which)."""
    parts: list[str] = []
    gap = 26
    above: list[tuple[float, float]] = []  # (x centre, bottom) of each box of the row above: arrows start there

    def row(boxes: list[list[str]], css: str, top: float) -> float:
        n = max(1, len(boxes))
        w = (_WIDTH - 16 - 12 * (n - 1)) / n
        heights = []
        for i, lines in enumerate(boxes):
            x = 8 + i * (w + 12)
            wrapped = [piece for line in lines for piece in _wrap(line, w)]
            svg, h = _box(x, top, w, wrapped, css)
            parts.append(svg)
            heights.append((x + w / 2, h))
            parts.extend(_arrow(cx, bottom, x + w / 2, top) for cx, bottom in above)
        above[:] = [(cx, top + h) for cx, h in heights]
        return top + max(h for _, h in heights)

    y = row([[i.label, _describe_input(i)] for i in plan.inputs], "plan-input", 8) + gap
    for node in plan.passes:
        lines = [f"pass {node.number} · reads {node.reads} · writes {node.writes}"]
        lines += [f"{verb} {what}" for verb, what in node.steps()]
        y = row([lines], "plan-pass", y) + gap
        if node.barrier:
            y = row([[f"barrier: {node.barrier.stage} finish → {node.barrier.writes}"]], "plan-barrier", y) + gap
    above.clear()
    parts.append(f'<text x="8" y="{y + 2:.0f}" font-weight="bold">outputs</text>')
    y = row([[folder, short] for folder, _, short in plan.outputs()[:-1]], "plan-output", y + 10) + 8
    defs = ('<defs><marker id="plan-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>')
    return (f'<svg xmlns="{SVG_NS}" class="plan" viewBox="0 0 {_WIDTH} {y:.0f}" width="{_WIDTH}" height="{y:.0f}" '
            'role="img" '
            f'aria-label="the passes of the run">{defs}{"".join(parts)}</svg>')

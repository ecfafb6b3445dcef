"""refinery plan: the engine's own plan (read tasks from the readers, passes from plan_segments) as text, as a
Mermaid flowchart and as the report's SVG."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from refinery.pipelines.commands import plan_view
from refinery.pipelines.commands.cli import main
from refinery.pipelines.commands.demo import RECIPE, SFT_RECIPE
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import plan_tasks
from refinery.pipelines.engine.segments import plan_segments

WEB = Path(__file__).parents[1] / "pipelines/recipes/web.yaml"


def test_demo_plan_is_the_engines(capsys):
    loaded = load_recipe(RECIPE)
    plan = plan_view.plan_recipe(loaded)
    segments = plan_segments(loaded.stages)
    assert [p.number for p in plan.passes] == [s.index + 1 for s in segments]
    assert [p.maps for p in plan.passes] == [[m.key for m in s.maps] for s in segments]
    assert [p.collect for p in plan.passes] == [s.tail.key if s.tail else None for s in segments]
    assert plan.tasks == len(plan_tasks(loaded))
    assert [(i.label, i.formats, i.files) for i in plan.inputs] == [("data/*.warc.gz", ["warc"], 2),
                                                                     ("data/*.jsonl*", ["jsonl"], 3)]
    assert main(["plan", str(RECIPE)]) == 0
    text = capsys.readouterr().out
    assert "map      url_filter → extract → langid → gopher_repetition → gopher_quality → c4_quality → " \
           "fineweb_quality\n        collect  exact_dedup\n  barrier  exact_dedup finish → work/exact_dedup/" in text
    assert "pass 3  reads pass 2's parts → writes data/\n        apply    minhash_dedup\n        map      pii" in text
    assert "barrier  train_tokenizer finish → tokens/tokenizer.json" in text  # tokenize's prerequisite
    assert "pass 4  reads data/ → writes no documents\n        collect  tokenize" in text
    assert "tokenize         producer: collect (pass 4) → finish → tokens/train/, tokens/validation/" in text
    assert "exact_dedup      collect (pass 1) → finish → work/exact_dedup/ → apply (pass 2)" in text


def _mermaid_nodes_and_edges(source: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Node id → shape+label, and edges, of the flowchart subset plan_view writes; fails on anything else."""
    lines = source.splitlines()
    assert lines[0] == "flowchart TD"
    nodes, edges = {}, []
    shapes = r'(\[/"[^"]*"/\]|\["[^"]*"\]|\{\{"[^"]*"\}\}|\[\("[^"]*"\)\])'
    for line in lines[1:]:
        if node := re.fullmatch(rf"  (\w+){shapes}", line):
            assert node.group(1) not in nodes, f"node defined twice: {line}"
            nodes[node.group(1)] = node.group(2)
        elif edge := re.fullmatch(r"  (\w+) (-->|-\.->|-\.->\|\w+\|) (\w+)", line):
            edges.append((edge.group(1), edge.group(3)))
        else:
            raise AssertionError(f"not a node or an edge: {line!r}")
    return nodes, edges


@pytest.mark.parametrize("recipe", [RECIPE, SFT_RECIPE, WEB], ids=["demo", "sft", "web"])
def test_mermaid_is_a_well_formed_flowchart(recipe, capsys):
    assert main(["plan", str(recipe), "--format", "mermaid"]) == 0
    nodes, edges = _mermaid_nodes_and_edges(capsys.readouterr().out)
    assert {a for a, b in edges} | {b for a, b in edges} <= set(nodes)  # every edge joins defined nodes
    assert not {"end", "graph", "subgraph", "style", "class"} & {n.lower() for n in nodes}  # Mermaid keywords
    for label in nodes.values():  # quoted labels, with nothing inside that ends the quote or starts an entity
        inner = label.split('"')[1]
        assert '"' not in inner and not re.search(r"#(?!35;|quot;)", inner)
    plan = plan_view.plan_recipe(load_recipe(recipe))
    assert sum(n.startswith("pass") for n in nodes) == len(plan.passes)
    assert ("out_data" in nodes) and ("out_tokens" in nodes) == any(p.barrier and p.barrier.producer
                                                                   for p in plan.passes)


def test_labels_are_escaped_and_input_problems_are_shown(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\ninputs:\n  - path: 'say \"hi\" #1/*.jsonl'\nstages:\n  - exact_dedup: {}\n"
                      "output: out\n")
    assert main(["plan", str(recipe), "--format", "mermaid"]) == 0  # a plan shows problems, it does not run
    source = capsys.readouterr().out
    assert "say #quot;hi#quot; #35;1/*.jsonl" in source and "not planned: " in source
    _mermaid_nodes_and_edges(source)
    assert main(["plan", str(recipe)]) == 0
    assert "no file matches" in capsys.readouterr().out


def test_plan_of_a_run_matches_its_recipe_and_draws_as_svg(data_dir, write_recipe):
    stages = [{"length_filter": {"min_words": 20}}, {"exact_dedup": {}}, {"tokenize": {"vocab_size": 300}}]
    recipe = write_recipe([{"path": str(data_dir / "text/c4_demo.jsonl")}], stages)
    assert main(["run", str(recipe), "--quiet", "--no-report"]) == 0
    loaded = load_recipe(recipe)
    manifest = json.loads((loaded.output_dir / "manifest.json").read_text())
    from_run = plan_view.plan_run(manifest, str(loaded.output_dir))
    from_recipe = plan_view.plan_recipe(loaded)
    assert from_run.passes == from_recipe.passes and from_run.globals == from_recipe.globals
    assert [(i.formats, i.files, i.tasks) for i in from_run.inputs] == [(i.formats, i.files, i.tasks)
                                                                       for i in from_recipe.inputs]
    svg = ElementTree.fromstring(plan_view.to_svg(from_run))  # well-formed XML
    rects = svg.findall("{http://www.w3.org/2000/svg}rect")
    barriers = sum(1 for p in from_run.passes if p.barrier)
    outputs = len(from_run.outputs()) - 1
    assert len(rects) == len(from_run.inputs) + len(from_run.passes) + barriers + outputs
    texts = " ".join(t.text or "" for t in svg.iter() if t.tag.endswith("text"))
    assert "barrier: exact_dedup finish" in texts and "map length_filter" in texts


def test_the_docs_show_the_demos_plan_as_it_is():
    docs = (Path(__file__).parents[1] / "docs/report.md").read_text(encoding="utf-8")
    assert "```mermaid\n" + plan_view.to_mermaid(plan_view.plan_recipe(load_recipe(RECIPE))) + "```" in docs

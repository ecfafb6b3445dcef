"""The run report's later sections: duplicates, tokens, training curves, the ablation, the plan and the recipe
(report.py holds the page, the funnel, the removals and the signals)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import yaml

from refinery.pipelines.commands import charts, plan_view
from refinery.pipelines.commands.charts import Bar
from refinery.pipelines.commands.run_facts import RunFacts, Training, recipe_yaml

DEDUP_STAGES = ("exact_dedup", "minhash_dedup", "paragraph_dedup")


def esc(value: object) -> str:
    """Any value as HTML text."""
    return html.escape(str(value))



def _n(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; columns whose index is in `numeric` are right-aligned (ints get thousands separators)."""
    def cell(i: int, value: object, tag: str = "td") -> str:
        if i not in numeric:
            return f"<{tag}>{esc(value)}</{tag}>"
        shown = _n(value) if isinstance(value, int | float) and tag == "td" else esc(value)
        return f'<{tag} class="n">{shown}</{tag}>'

    head = "".join(cell(i, h, "th") for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell(i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(svg: str, caption: str, name: str) -> str:
    """A chart with its caption; `data-chart` names it (the browser test checks each one is drawn, not blank)."""
    return f'<figure data-chart="{esc(name)}">{svg}<figcaption>{caption}</figcaption></figure>'


def duplicates_section(facts: RunFacts) -> str:
    stages = [s for s in facts.stages if s.name in DEDUP_STAGES]
    if not stages:
        return '<section id="duplicates"><h2>Duplicates</h2><p>No deduplication stage in this recipe.</p></section>'
    rows = [(s.key, s.docs_in, s.removed, f"{s.removed / s.docs_in:.1%}" if s.docs_in else "–",
             ", ".join(f"{r} {c:,}" for r, c in s.reasons.items()) or "–") for s in stages]
    parts = [table(["stage", "documents in", "removed", "share", "reasons"], rows, numeric=(1, 2, 3))]
    sizes, example = facts.clusters()
    if sizes:
        bars = [Bar(f"{row['size']:,} documents", [(row["clusters"], "kept")],
                    f"{row['clusters']:,} clusters ({row['docs']:,} documents)") for row in sizes]
        unique = facts.final.kept - sum(row["clusters"] for row in sizes)
        parts.append(figure(charts.bars(bars, "near-duplicate clusters by size"),
                             "Near-duplicate clusters (minhash_dedup's <code>dup_cluster_size</code>) by their number "
                             f"of documents; one document of each stays. Kept documents in no cluster: {unique:,}.",
                             "dup-clusters"))
    if example:
        parts.append("<h3>The largest cluster</h3>")
        parts.append(table(["id", "fate", "text (first 200 characters)"],
                            [(r["id"], r["fate"], r["text"]) for r in example]))
    elif any(s.name == "minhash_dedup" for s in stages):
        parts.append("<p>No near-duplicate clusters: every document is unlike the others.</p>")
    return '<section id="duplicates"><h2>Duplicates</h2>' + "".join(parts) + "</section>"


def tokens_section(facts: RunFacts) -> str:
    splits = facts.token_splits()
    if not splits:
        return '<section id="tokens"><h2>Tokens</h2><p>No token shards: the recipe has no <code>tokenize</code> ' \
               "stage.</p></section>"
    tokenizer = facts.tokenizer()
    config = next((facts.configs[s.key] for s in facts.stages if s.name == "tokenize"), {})
    origin = "trained on this run" if config.get("tokenizer", "train") == "train" else f"from {config['tokenizer']}"
    about = (f"{tokenizer['type']} tokenizer, vocabulary {tokenizer['vocab_size']:,} tokens ({origin}; "
             f"<code>{esc(tokenizer['path'])}</code>)" if tokenizer else
             f"vocabulary {splits[0]['vocab_size']:,} tokens")
    split_rows = [(s["split"], s["documents"], s["tokens"], len(s["shards"]), s["dtype"], s["vocab_size"],
                   "yes" if s.get("has_mask") else "no") for s in splits]
    sources = sorted({source for s in splits for source in s["tokens_per_source"]})
    weights = config.get("weights") or splits[0].get("weights") or {}
    bars, rows = [], []
    for source in sources:
        counts = [s["tokens_per_source"].get(source, 0) for s in splits]
        epochs = splits[0].get("effective_epochs", {}).get(source)
        weight = weights.get(source, 1.0)
        styles = ["split1", "split2"] + ["other"] * len(splits)
        bars.append(Bar(source, list(zip(counts, styles)), f"{sum(counts):,} tokens · weight {weight:g}"))
        rows.append((source, *counts, f"{weight:g}", "–" if epochs is None else f"{epochs:g}"))
    legend = charts.legend([(style, f"{s['split']} tokens") for style, s in zip(["split1", "split2", "other"], splits)])
    return ('<section id="tokens"><h2>Tokens</h2>'
            f"<p>{about}. Documents go to a split by a hash of their id (validation fraction "
            f"{config.get('validation_fraction', '?')}); mix weights come from the tokenize stage's "
            "<code>weights</code> (1 when not set).</p>"
            + table(["split", "documents", "tokens", "shards", "dtype", "vocabulary", "loss mask"], split_rows,
                     numeric=(1, 2, 3, 5))
            + legend + figure(charts.bars(bars, "tokens per source"), "Tokens per source and split.", "tokens")
            + table(["source", *(f"{s['split']} tokens" for s in splits), "mix weight",
                      f"effective epochs ({splits[0]['split']})"], rows, numeric=tuple(range(1, len(splits) + 3)))
            + "</section>")


def training_section(trainings: Sequence[Training]) -> str:
    if not trainings:
        return ('<section id="training"><h2>Training</h2><p>No training run found for these shards. Train one with '
                "<code>refinery train --data RUN/tokens --out OUT</code>, then <code>refinery report RUN "
                "--training OUT</code> (a folder inside or beside RUN is found by itself).</p></section>")
    parts = []
    for run in trainings:
        baseline = run.start.get("unigram_entropy")
        hlines = [(baseline, f"unigram baseline {baseline:.3f}")] if baseline is not None else []
        svg = charts.lines([("train loss", run.train, "train"), ("validation loss", run.val, "val")], "step",
                           "loss (nats per token)", hlines)
        legend = charts.legend([("l-train", "training loss"), ("l-val", "validation loss"),
                                ("l-base", "unigram baseline (the data's token entropy)")])
        parts.append(f"<h3><code>{esc(run.folder)}</code></h3>{legend}"
                     + figure(svg, "Loss per step; the dotted line is the loss of a model that ignores context.",
                               f"training-{run.folder.name}")
                     + table(["measure", "value"], _metrics(run)))
    return '<section id="training"><h2>Training</h2>' + "".join(parts) + "</section>"


def _metrics(run: Training) -> list[tuple[str, str]]:
    start, config = run.start, run.start.get("config", {})
    model = start.get("model", {})
    steps = run.end["step"] if run.end else (run.train[-1][0] if run.train else 0)
    rows = [("model", f"{config.get('model', '?')} {config.get('size') or ''}: {start.get('parameters', 0):,} "
                      f"parameters, {model.get('n_layer', '?')} layers, width {model.get('n_embd', '?')}"),
            ("steps", f"{steps:,}" + ("" if run.end else " (not finished)")),
            ("tokens seen", f"{steps * start.get('tokens_per_step', 0):,} tokens "
                            f"({start.get('tokens_per_step', 0):,} per step)"),
            ("data", ", ".join(config.get("data", [])))]
    if run.val:
        loss = run.val[-1][1]
        rows.append(("final validation loss", f"{loss:.4f} nats/token (perplexity {math.exp(loss):,.1f})"))
        baseline = start.get("unigram_entropy")
        if baseline is not None:
            gap = loss - baseline
            rows.append(("against the unigram baseline", f"{baseline:.4f} nats/token: the model is {abs(gap):.4f} "
                                                         f"{'below (better)' if gap < 0 else 'above (worse)'}"))
    return rows


def ablation_section(summary: dict[str, Any] | None) -> str:
    """The table and verdicts of the ablation this run is a recipe of (RUN/ablation.json, from refinery ablate)."""
    if summary is None:
        return ('<section id="ablation"><h2>Ablation</h2><p>This run is in no ablation. <code>refinery ablate '
                "RECIPE OTHER.yaml --tokens 2M</code> compares recipes by the proxy models and word vectors their "
                "data trains (docs/ablation.md).</p></section>")
    header, *rows = summary["table"]
    ours = header.index(summary["recipe"])
    header = [f"{name} (this run)" if i == ours else name for i, name in enumerate(header)]
    verdicts = "".join(f"<li>{esc(line)}</li>" for line in summary["verdicts"])
    pair_header, *pairs = summary["pairs"]
    files = ", ".join(f"<code>{esc(path)}</code>" for path in summary["files"])
    return ('<section id="ablation"><h2>Ablation</h2>'
            f"<p>This run is recipe <b>{esc(summary['recipe'])}</b> of the ablation in <code>{esc(summary['ablation'])}"
            f"</code>: <code>{esc(summary['command'])}</code>. {esc(summary['intro'])}.</p>"
            + table(header, rows, numeric=tuple(range(1, len(header))))
            + f"<h3>Verdicts (paired t-test over seeds)</h3><ul>{verdicts}</ul>"
            + "<details><summary>Every paired difference</summary>" + table(pair_header, pairs, numeric=(2, 3))
            + f"</details><p class=\"muted\">The ablation's files: {files}.</p></section>")


def plan_section(plan: plan_view.Plan) -> str:
    return ('<section id="plan"><h2>Plan: passes and barriers</h2>'
            + figure(plan_view.to_svg(plan), "The engine's passes over the data: map stages fuse into one streaming "
                      "pass; every global stage ends a pass at a barrier (collect → finish → apply); producers "
                      "(tokenizer, shards) collect and finish, keeping every document.", "plan")
            + f'<pre class="block">{esc(plan_view.to_text(plan))}</pre>'
            + "<details><summary>Mermaid source (paste into a GitHub comment or README to draw it there)</summary>"
            + f'<pre class="block">```mermaid\n{esc(plan_view.to_mermaid(plan))}```</pre></details></section>')


def recipe_section(manifest: dict[str, Any]) -> str:
    recipe = recipe_yaml(manifest)
    configs = "".join(f"<h3>{esc(s['key'])} <span class=\"muted\">({esc(s['name'])})</span></h3><pre class=\"block\">"
                      f"{esc(yaml.safe_dump(s['config'], sort_keys=False, allow_unicode=True))}</pre>"
                      for s in manifest["stages"])
    return (f'<section id="recipe"><h2>Recipe</h2><p>As run (from manifest.json); the file was '
            f"<code>{esc(manifest.get('recipe_file', ''))}</code>.</p><pre class=\"block\">{esc(recipe)}</pre>"
            "<details><summary>Every stage's configuration, defaults included</summary>"
            f"{configs}</details></section>")

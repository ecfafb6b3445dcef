"""`refinery report RUN`: one self-contained HTML page that shows a run — the funnel, what was removed and why, the
signals against their thresholds, languages, duplicates, tokens, training curves, the ablation the run is a recipe
of (refinery ablate), the plan and the recipe.

The page opens offline and never asks anything of the network: inline SVG drawn in Python (charts.py), inline CSS,
no script, and a Content-Security-Policy that forbids every fetch. The facts come from run_facts.py (SQL over the
run's read-only views); the sections that need more room live in report_sections.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from refinery.corpora.atomic import write_text
from refinery.pipelines.commands import charts, plan_view
from refinery.pipelines.commands.card import write_card
from refinery.pipelines.commands.charts import Bar, fmt_bytes
from refinery.pipelines.commands.report_sections import (
    ablation_section,
    duplicates_section,
    esc,
    figure,
    plan_section,
    recipe_section,
    table,
    tokens_section,
    training_section,
)
from refinery.pipelines.commands.run_facts import LENGTH, WORDS, RunFacts, slug
from refinery.pipelines.engine.layout import RunLayout

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1a1a1a; max-width: 1100px;
       margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 26px; margin: 8px 0 4px; } h2 { font-size: 20px; border-bottom: 2px solid #1f4a75;
     padding-bottom: 2px; margin-top: 36px; } h3 { font-size: 16px; margin: 22px 0 6px; }
p.lead { font-size: 17px; margin: 6px 0 12px; } .muted { color: #555; }
code, pre { font: 12px ui-monospace, monospace; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.tile { border: 1px solid #bbb; border-radius: 6px; padding: 8px 14px; min-width: 130px; }
.tile b { display: block; font-size: 20px; } .tile span { color: #444; font-size: 12px; }
nav a { margin-right: 12px; } table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 8px 0; break-inside: avoid; } figcaption { font-size: 12px; color: #333; max-width: 760px; }
.grid { display: flex; flex-wrap: wrap; gap: 14px 18px; } .grid figure { width: 340px; }
.example { border-left: 3px solid #b0b0b0; padding: 2px 10px; margin: 6px 0; break-inside: avoid; }
.example pre { white-space: pre-wrap; word-break: break-word; margin: 2px 0; }
pre.block { background: #f4f4f4; padding: 10px; overflow-x: auto; white-space: pre; }
svg.plan { font: 12px ui-monospace, monospace; max-width: 100%; height: auto; }
svg.plan text { fill: #111; } svg.plan .plan-edge { stroke: #444; stroke-width: 1.4; }
.plan-input { fill: #fff; stroke: #1f4a75; stroke-width: 1.5; } .plan-pass { fill: #e4ecf4; stroke: #1f4a75; }
.plan-barrier { fill: #fff; stroke: #000; stroke-width: 1.5; stroke-dasharray: 6 3; }
.plan-output { fill: #f3f3f3; stroke: #555; } svg.defs { position: absolute; }
@media print { body { max-width: none; padding: 0; font-size: 11px; } nav { display: none; }
  pre.block { white-space: pre-wrap; }
  h2 { break-after: avoid; } }
"""
# The page may load nothing at all: styles are inline and there is no script, image or font to fetch.
CSP = "default-src 'none'; style-src 'unsafe-inline'"
SECTIONS = ("funnel", "removed", "signals", "languages", "sources", "duplicates", "tokens", "training", "ablation",
            "plan", "recipe")


def _header(facts: RunFacts) -> str:
    read, final = facts.read, facts.final
    removed = sum(s.removed for s in facts.stages)
    removing = sum(1 for s in facts.stages if s.removed)
    tokens = sum(split["tokens"] for split in facts.token_splits())
    share = final.kept / read.docs_in if read.docs_in else 0
    lead = (f"<b>{read.docs_in:,}</b> records read → <b>{final.kept:,}</b> documents kept ({share:.0%}), "
            f"<b>{removed:,}</b> removed by {removing} stage{'s' * (removing != 1)}, <b>{read.quarantined:,}</b> "
            f"quarantined; {fmt_bytes(read.bytes_out)} of text in, {fmt_bytes(final.bytes_out)} out"
            + (f"; <b>{tokens:,}</b> tokens" if tokens else "") + ".")
    tiles = [(f"{read.docs_in:,}", "records read"), (f"{final.kept:,}", "documents kept"),
             (f"{removed:,}", "documents removed"), (f"{read.quarantined:,}", "records quarantined"),
             (fmt_bytes(final.bytes_out), "kept text")]
    if tokens:
        tiles.append((f"{tokens:,}", "tokens in shards"))
    manifest = facts.manifest
    meta = (f"recipe <code>{esc(manifest.get('recipe_file', ''))}</code> · output "
            f"<code>{esc(facts.layout.root)}</code> · Refinery {esc(manifest['versions']['refinery'])} · executor "
            f"{esc(manifest.get('executor', 'local'))} · fingerprint <code>{esc(manifest['fingerprint'][:16])}</code>")
    ok = read.docs_in == final.kept + removed + read.quarantined
    check = ("read = kept + removed + quarantined: the counts reconcile." if ok else
             "<b>The counts do NOT reconcile (read ≠ kept + removed + quarantined): please report this.</b>")
    nav = " ".join(f'<a href="#{s}">{s}</a>' for s in SECTIONS)
    return (f"<header><h1>{esc(manifest['name'])} — run report</h1><p class=\"lead\">{lead}</p>"
            '<div class="tiles">' + "".join(f"<div class=\"tile\"><b>{v}</b><span>{esc(k)}</span></div>"
                                            for v, k in tiles)
            + f'</div><p class="muted">{meta}<br>{check}</p><nav>{nav}</nav></header>')


def _funnel(facts: RunFacts) -> str:
    docs, sizes = [], []
    for s in facts.stages:
        gone = s.removed or s.quarantined
        docs.append(Bar(s.key, [(s.kept, "kept"), (s.removed, "removed"), (s.quarantined, "quarantined")],
                        f"{s.kept:,} of {s.docs_in:,} docs" + (f" (−{gone:,})" if gone else "")))
        before = s.bytes_in or s.bytes_out  # the read stage has no bytes in: its output is the text read
        sizes.append(Bar(s.key, [(s.bytes_out, "kept"), (max(before - s.bytes_out, 0), "removed")],
                         f"{fmt_bytes(s.bytes_out)} of {fmt_bytes(before)}"))
    legend = charts.legend([("kept", "kept (passed on)"), ("removed", "removed"),
                            ("quarantined", "quarantined (unreadable input)")])
    rows = [(s.key, s.kind, s.docs_in, s.kept, s.removed, s.quarantined, s.skipped, fmt_bytes(s.bytes_in),
             fmt_bytes(s.bytes_out), f"{s.seconds:.2f} s",
             ", ".join(f"{k} {v:,}" for k, v in s.counts.items())) for s in facts.stages]
    return ('<section id="funnel"><h2>Funnel: documents and bytes through every stage</h2>' + legend
            + figure(charts.bars(docs, "documents per stage"),
                     "Documents into each stage (bar length) and what it kept, removed or quarantined.", "funnel-docs")
            + figure(charts.bars(sizes, "bytes per stage"),
                     "UTF-8 bytes of text into and out of each stage: removal and rewriting (extraction, C4's line "
                     "dropping, PII placeholders) both shrink it.", "funnel-bytes")
            + table(["stage", "kind", "docs in", "kept", "removed", "quarantined", "skipped", "bytes in", "bytes out",
                     "time", "tallies"], rows, numeric=(2, 3, 4, 5, 6, 7, 8, 9))
            + '<p class="muted">Skipped records are not documents by design (a WARC request, an image), counted '
              "apart. Times include a global stage's finish.</p></section>")


def _removed(facts: RunFacts) -> str:
    rows, blocks = [], []
    for s in facts.stages:
        for reason, count in sorted(s.reasons.items(), key=lambda item: (-item[1], item[0])):
            if reason.startswith("skipped_"):
                continue
            share = count / s.docs_in if s.docs_in else 0
            rows.append((s.key, reason, count, f"{share:.1%}"))
            quarantined = s.kind == "read"
            examples = facts.quarantine_examples(reason) if quarantined else facts.removed_examples(s.key, reason)
            items = "".join(_example(row, quarantined) for row in examples)
            anchor = slug(f"reason-{s.key}-{reason}")
            blocks.append(f'<h3 id="{anchor}">{esc(s.key)} · {esc(reason)} <span class="muted">({count:,} '
                          f"{'records' if quarantined else 'documents'})</span></h3>{items}")
    if not rows:
        return '<section id="removed"><h2>Removed and quarantined</h2><p>Nothing was removed or quarantined.</p>' \
               "</section>"
    return ('<section id="removed"><h2>Removed and quarantined, by reason</h2>'
            + table(["stage", "reason", "documents", "share of the stage's input"], rows, numeric=(2, 3))
            + '<p class="muted">A few examples of each reason (the first 300 characters, with their ids; '
              '<code>refinery sql RUN "SELECT * FROM removed WHERE reason = \'…\'"</code> lists them all).</p>'
            + "".join(blocks) + "</section>")


def _excerpt(text: str, lines: int = 6) -> str:
    """At most `lines` lines as they are, the rest run together (a list of 100 short lines stays short)."""
    parts = text.split("\n")
    return "\n".join(parts[:lines]) + (" ↵ " + " ↵ ".join(parts[lines:]) if len(parts) > lines else "")


def _example(row: dict, quarantined: bool) -> str:
    if quarantined:
        where = f"{esc(row['file'])} at {row['position']:,} · {esc(row['reason'])}"
        return f'<div class="example"><code>{esc(row["id"])}</code> <span class="muted">{where}</span>' \
               f"<pre>{esc(_excerpt(row['raw']))}</pre></div>"
    duplicate = f" · duplicate of <code>{esc(row['duplicate_of'])}</code>" if row.get("duplicate_of") else ""
    detail = f" · {esc(row['reason'])}" if ":" in row["reason"] else ""
    return (f'<div class="example"><code>{esc(row["id"])}</code> <span class="muted">{esc(row["source"])}{detail}'
            f"{duplicate}</span><pre>{esc(_excerpt(row['text']))}</pre></div>")


def _signals(facts: RunFacts) -> str:
    measured = [(LENGTH, None, "characters")] + ([(WORDS, None, "words")] if facts.bounds_words() else [])
    columns = [*measured, *facts.signal_columns()]
    groups: dict[str, list[str]] = {}
    for column, stage, unit in columns:
        hist = facts.histogram(column, stage, unit)
        if hist is None:
            continue
        owner = stage.key if stage else "text length"
        series = [("kept", hist.passed), ("removed", hist.removed)]
        label = f"{column} ({unit})" if stage else f"length of the text ({unit})"
        svg = charts.histogram(hist.edges, series, label, hist.thresholds, clipped=hist.clipped)
        passed, removed = sum(hist.passed), sum(hist.removed)
        limits = "; ".join(text for _, text in hist.thresholds) or "no threshold"
        caption = (f"<b>{esc(column)}</b>: {passed:,} passed, {removed:,} removed by "
                   f"{esc(stage.key) if stage else 'any stage'}; {esc(limits)}"
                   + (f"; {hist.missing:,} without a value" if hist.missing else ""))
        groups.setdefault(owner, []).append(figure(svg, caption, f"signal-{column}"))
    legend = charts.legend([("kept", "passed the stage (kept, or removed by a later stage)"),
                            ("removed", "removed by this stage"), ("l-threshold", "threshold (dashed)")])
    note = ("Rows that reached each stage, binned by the signal it wrote; the dashed line is the stage's threshold "
            "from the run's configuration (per-language values, e.g. built-in Chinese and Japanese defaults or "
            "`overrides`, apply to those rows). A row is removed by the first rule it fails, so some removed rows lie "
            "inside a threshold they did not fail. The text-length chart compares kept documents with every removed "
            "one.")
    body = "".join(f"<h3>{esc(owner)}</h3><div class=\"grid\">{''.join(figs)}</div>" for owner, figs in groups.items())
    return f'<section id="signals"><h2>Signals against thresholds</h2>{legend}<p class="muted">{note}</p>{body}' \
           "</section>"


def _languages(facts: RunFacts) -> str:
    langs = facts.languages()
    if not langs:
        return ('<section id="languages"><h2>Languages</h2><p>No language labels: the recipe has no '
                "<code>langid</code> stage.</p></section>")
    total = sum(row["docs"] for row in langs) or 1
    bars = [Bar(row["lang"], [(row["docs"], "kept")], f"{row['docs']:,} docs ({row['docs'] / total:.1%}), "
                f"{fmt_bytes(row['bytes'] or 0)}") for row in langs[:25]]
    more = f" The {len(langs) - 25} rarer languages are left out of the chart." if len(langs) > 25 else ""
    return ('<section id="languages"><h2>Languages of the kept documents</h2>'
            + figure(charts.bars(bars, "documents per language"),
                     f"fastText lid.176 labels (ISO 639 codes) of the kept documents.{more}", "languages")
            + "</section>")


def _sources(facts: RunFacts) -> str:
    rows = [(r["source"], r["kept"], r["removed"], fmt_bytes(r["bytes"] or 0)) for r in facts.sources()]
    return ('<section id="sources"><h2>Sources</h2><p class="muted">A source is an input file\'s name; '
            "quarantined records are counted in the funnel.</p>"
            + table(["source", "kept documents", "removed documents", "kept text"], rows, numeric=(1, 2, 3))
            + "</section>")


def render(facts: RunFacts, trainings: Sequence[str | Path] = ()) -> str:
    """The whole page."""
    plan = plan_view.plan_run(facts.manifest, str(facts.layout.root))
    body = [_header(facts), _funnel(facts), _removed(facts), _signals(facts), _languages(facts), _sources(facts),
            duplicates_section(facts), tokens_section(facts), training_section(facts.trainings(trainings)),
            ablation_section(facts.ablation()), plan_section(plan), recipe_section(facts.manifest)]
    footer = ('<footer class="muted"><p>Written by <code>refinery report</code> from the run folder alone (stats, '
              "manifest.json and the Parquet parts, through the read-only views of <code>refinery sql</code>).</p>"
              "</footer>")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(facts.manifest['name'])} — Refinery run report</title>"
            f"<style>{CSS}{charts.CSS}</style></head><body>{charts.PATTERNS}{''.join(body)}{footer}</body></html>\n")


def write_report(run_dir: str | Path, output: str | Path | None = None,
                 trainings: Sequence[str | Path] = ()) -> Path:
    """Write the report of a finished run (default RUN/report.html) and return its path."""
    with RunFacts(run_dir) as facts:
        target = Path(output) if output else facts.layout.report
        write_text(target, render(facts, trainings))
    return target


def write_outputs(run_dir: str | Path, report: bool = True, output: str | Path | None = None,
                  trainings: Sequence[str | Path] = ()) -> str:
    """After a run: write its report (unless `report` is False) and its dataset card; lines saying where they are."""
    lines = [f"report: {write_report(run_dir, output, trainings)}  (open it in a browser)"] if report else []
    card = write_card(run_dir)
    lines.append(f"dataset card: {card}" if card else
                 f"dataset card: not written, {RunLayout(run_dir).card} is your own (it lacks Refinery's marker line)")
    return "\n".join(lines)

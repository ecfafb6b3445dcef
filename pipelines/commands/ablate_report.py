"""The report of `refinery ablate`: every figure as mean ± 95 % t-interval over seeds, paired t-tests between
recipes with a verdict line per pair on each headline figure, ablation.json, ablation.md, ablation.png (the
validation curves), and in each recipe's run folder a summary (RUN/ablation.json) that its run report shows."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from refinery.corpora.atomic import write_json, write_text
from refinery.pipelines.commands.ablate_stats import Interval, interval, paired_test
from refinery.pipelines.engine.layout import RunLayout

Results = dict[str, dict[int, dict[str, Any]]]  # recipe → seed → what training/proxy.py's train_and_evaluate returns


@dataclass(frozen=True)
class Metric:
    label: str
    figure: str  # a key of a result's group
    field: str  # inside that figure
    lower_is_better: bool
    digits: int = 4
    group: str = "figures"  # the proxy's figures, or another group of a seed's result (the word vectors' scores)
    verdict_on: str | None = None  # a headline: one verdict per pair of recipes, "B beats A on <this> by …"
    unit: str = ""

    def values(self, by_seed: dict[int, dict[str, Any]], seeds: list[int]) -> list[float]:
        return [by_seed[seed][self.group][self.figure][self.field] for seed in seeds]


HEADLINE = Metric("WikiText-2 nats/token", "wikitext2", "mean_nll", True, verdict_on="WikiText-2", unit="nats/token")


def metrics(recipes: list[str], clean_name: str) -> list[Metric]:
    """What the table shows, the verdict's figure first."""
    return [HEADLINE, Metric("WikiText-2 bits/byte", "wikitext2", "bits_per_byte", True),
            Metric(f"{clean_name} bits/byte", clean_name, "bits_per_byte", True),
            Metric(f"{clean_name} nats/token", clean_name, "mean_nll", True),
            Metric("HellaSwag acc_norm", "hellaswag", "acc_norm", False, digits=3),
            Metric("ARC-Easy acc_norm", "arc_easy", "acc_norm", False, digits=3),
            Metric("PIQA acc_norm", "piqa", "acc_norm", False, digits=3),
            *(Metric(f"{name} validation nats/token", f"val:{name}", "mean_nll", True) for name in recipes)]


def summarize(results: Results, seeds: list[int], columns: list[Metric]) -> dict[str, dict[str, Interval]]:
    return {name: {m.label: interval(m.values(by_seed, seeds)) for m in columns} for name, by_seed in results.items()}


def compare(results: Results, seeds: list[int], columns: list[Metric]) -> list[dict[str, Any]]:
    """For each pair (A before B) and metric, the paired test of B's improvement over A ("better" > 0: B better)."""
    pairs = []
    for a, b in combinations(results, 2):
        for metric in columns:
            test = paired_test(metric.values(results[a], seeds), metric.values(results[b], seeds))
            sign = 1 if metric.lower_is_better else -1  # A − B for a loss, B − A for an accuracy
            better = Interval(sign * test.difference.mean, test.difference.half_width, test.difference.n)
            pairs.append({"a": a, "b": b, "metric": metric.label, "b_better_by": better.as_dict(), "p": test.p})
    return pairs


def verdict(pair: dict[str, Any], unit: str = "nats/token", on: str = "WikiText-2") -> str:
    """"B beats A on WikiText-2 by x ± y nats/token (p=…, n seeds)", or no significant difference."""
    a, b, better = pair["a"], pair["b"], pair["b_better_by"]
    x, y, n = better["mean"], better["ci95"], better["n"]
    if y is None:
        return (f"{b} vs {a} on {on}: {b} better by {x:+.4f} {unit} with one seed, no interval; use --seeds 2 or "
                "more for a verdict")
    stats = f"(p={pair['p']:.3g}, {n} seeds)"
    if abs(x) <= y:
        return (f"no significant difference between {b} and {a} on {on}: {b} better by {x:+.4f} ± {y:.4f} {unit}, "
                f"an interval that contains 0 {stats}")
    winner, loser = (b, a) if x > 0 else (a, b)
    return f"{winner} beats {loser} on {on} by {abs(x):.4f} ± {y:.4f} {unit} {stats}"


def _cell(value: Interval, digits: int) -> str:
    return f"{value.mean:.{digits}f}" + ("" if value.half_width is None else f" ± {value.half_width:.{digits}f}")


def table_rows(summary: dict[str, dict[str, Interval]], columns: list[Metric], facts: dict[str, dict[str, Any]],
               extra: list[list[str]] = ()) -> list[list[str]]:
    """The table, one column per recipe (the header row first): its data, each metric as mean ± 95 % t-interval,
    then the `extra` rows (facts of the word vectors)."""
    names = list(summary)
    rows = [["", *names], ["kept documents", *(f"{facts[n]['kept_documents']:,}" for n in names)],
            ["train split tokens (epochs at the budget)",
             *(f"{facts[n]['train_tokens']:,} ({facts[n]['epochs']:.2f})" for n in names)]]
    for metric in columns:
        arrow = "↓" if metric.lower_is_better else "↑"
        rows.append([f"{metric.label} {arrow}", *(_cell(summary[n][metric.label], metric.digits) for n in names)])
    return rows + [list(row) for row in extra]


def markdown(rows: list[list[str]]) -> str:
    """Rows as a Markdown table, the first one its header."""
    lines = [rows[0], ["---"] * len(rows[0]), *rows[1:]]
    return "\n".join("| " + " | ".join(row) + " |" for row in lines)


def table(summary: dict[str, dict[str, Interval]], columns: list[Metric], facts: dict[str, dict[str, Any]],
          extra: list[list[str]] = ()) -> str:
    """The table (table_rows) in Markdown."""
    return markdown(table_rows(summary, columns, facts, extra))


def pair_rows(pairs: list[dict[str, Any]]) -> list[list[str]]:
    """Every paired difference (the header row first): how much better B is than A on each metric, its interval
    and p-value."""
    rows = [["A → B", "metric", "B better by (95 % t-interval)", "p"]]
    for pair in pairs:
        better = pair["b_better_by"]
        spread = "" if better["ci95"] is None else f" ± {better['ci95']:.4f}"
        p = "" if pair["p"] is None else f"{pair['p']:.3g}"
        rows.append([f"{pair['a']} → {pair['b']}", pair["metric"], f"{better['mean']:+.4f}{spread}", p])
    return rows


def pair_table(pairs: list[dict[str, Any]]) -> str:
    return markdown(pair_rows(pairs))


def plot_curves(results: Results, seeds: list[int], path: Path) -> None:
    """Validation loss against tokens trained, one panel per validation set, one line per recipe (mean over
    seeds; each seed faint behind it)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    sets = list(next(iter(results.values()))[seeds[0]]["curve"][0]["val_loss"])
    figure, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.2), squeeze=False)
    styles = ["-", "--", "-.", ":"]
    for panel, name in zip(axes[0], sets):
        for index, (recipe, by_seed) in enumerate(results.items()):
            curves = [[(p["tokens"], p["val_loss"][name]) for p in by_seed[seed]["curve"]] for seed in seeds]
            colour = f"C{index}"
            for curve in curves:
                panel.plot(*zip(*curve), color=colour, alpha=0.25, linewidth=0.8)
            tokens = [t for t, _ in curves[0]]
            means = [sum(c[i][1] for c in curves) / len(curves) for i in range(len(tokens))]
            panel.plot(tokens, means, styles[index % len(styles)], color=colour, linewidth=1.8, marker="o",
                       markersize=3, label=f"trained on {recipe}")
        panel.set_title(f"{name} validation split")
        panel.set_xlabel("training tokens")
        panel.set_ylabel("validation loss (nats per token)")
        panel.grid(alpha=0.3)
        panel.legend()
    from refinery.training.logs import save_png  # no torch: the training log's own plotting

    save_png(figure, path)


def write_report(out: Path, payload: dict[str, Any], results: Results, seeds: list[int], columns: list[Metric],
                 command: str, extra: list[list[str]] = (), runs: dict[str, Path] | None = None) -> str:
    """ablation.json (payload + summary, pairs, verdicts), ablation.md, ablation.png and each run's summary
    (RUN/ablation.json, for its run report); returns the text to print."""
    summary = summarize(results, seeds, columns)
    pairs = compare(results, seeds, columns)
    verdicts = [verdict(p, m.unit, m.verdict_on) for m in columns if m.verdict_on
                for p in pairs if p["metric"] == m.label]
    facts = payload["recipes"]
    payload = {**payload, "summary": {n: {k: v.as_dict() for k, v in s.items()} for n, s in summary.items()},
               "pairs": pairs, "verdicts": verdicts}
    write_json(out / "ablation.json", payload)
    plot_curves(results, seeds, out / "ablation.png")
    rows = table_rows(summary, columns, facts, extra)
    settings = payload["settings"]
    seeds_text = f"{len(seeds)} seed{'s' * (len(seeds) > 1)} ({', '.join(map(str, seeds))})"
    intro = (f"{len(results)} recipes × {seeds_text}, {settings['size']} GPT, {payload['tokens_trained']:,} "
             f"training tokens each (budget {settings['tokens']:,}); mean ± 95 % "
             f"t-interval over seeds; ↓ lower is better, ↑ higher. Tokenizer sha256 {payload['tokenizer']['sha256']}")
    if vectors := payload.get("embeddings"):
        intro += (f". Word vectors: fastText {vectors['model']}, dim {vectors['dim']}, {vectors['epochs']} epochs, "
                  f"on {vectors['words']:,} words of each recipe (one model per recipe and seed)")
    write_text(out / "ablation.md", "\n\n".join([
        "# Ablation", f"`{command}`", intro, markdown(rows), "## Verdicts (paired t-test over seeds)",
        "\n".join(f"- {line}" for line in verdicts), "## Every paired difference", pair_table(pairs),
        "Validation curves: ablation.png. Every figure, per seed: ablation.json.",
    ]) + "\n")
    for name, run_dir in (runs or {}).items():
        write_json(RunLayout(run_dir).ablation, {
            "recipe": name, "ablation": str(out), "command": command, "intro": intro, "table": rows,
            "verdicts": verdicts, "pairs": pair_rows(pairs),
            "files": [str(out / f) for f in ("ablation.md", "ablation.json", "ablation.png")]})
    return "\n".join([intro, "", markdown(rows), "", *verdicts])

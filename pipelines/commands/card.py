"""The dataset card: RUN/README.md by the Hugging Face Hub's conventions (YAML metadata, then prose), so that a run
folder can be pushed to the Hub as it is and `datasets.load_dataset(RUN)` loads the kept documents.

The metadata's `configs` names `data/*.parquet` as the one split, so `datasets` reads only the kept documents,
never removed/, quarantine/, work/ or tokens/. A README.md that a person wrote (without the marker line below) is
never overwritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from refinery.corpora.atomic import write_text
from refinery.pipelines import __version__
from refinery.pipelines.commands.charts import fmt_bytes
from refinery.pipelines.commands.run_facts import RunFacts, recipe_yaml
from refinery.pipelines.engine.layout import RunLayout

# Written under the metadata of every card Refinery writes: a README.md without it is the user's and stays.
MARKER = "<!-- Written by Refinery (refinery report); edit freely, but delete this line or a rerun replaces it. -->"
DATA_FILES = f"{RunLayout(Path()).data.as_posix()}/*.parquet"
# The Hub's size buckets, by number of examples.
SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
         (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T")]
MIN_LANGUAGE_SHARE = 0.01  # languages in the metadata: those of at least 1% of the documents (langid is noisy)


def size_category(n: int) -> str:
    return next((label for limit, label in SIZES if n < limit), "n>1T")


def _md_row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _md_table(headers: list[str], rows: list[list[object]]) -> str:
    return "\n".join([_md_row(headers), _md_row(["---"] * len(headers)), *(_md_row(r) for r in rows)])


def metadata(facts: RunFacts) -> dict[str, Any]:
    """The YAML front matter: licence, languages, size, tasks, and the `configs` that `datasets` loads."""
    licence = facts.manifest["recipe"].get("license")  # recipes have no such field today; honoured if one appears
    conversational = "messages" in facts.columns["docs"]
    meta: dict[str, Any] = {"pretty_name": facts.manifest["name"]}
    meta.update({"license": licence} if licence else {"license": "other", "license_name": "unknown"})
    languages = _languages(facts)
    if languages:
        meta["language"] = languages
    meta["size_categories"] = [size_category(facts.final.kept)]
    meta["task_categories"] = ["text-generation"]
    meta["tags"] = ["refinery"] + (["conversational", "instruction-tuning"] if conversational else [])
    meta["configs"] = [{"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILES}]}]
    return meta


def _languages(facts: RunFacts) -> list[str]:
    rows = facts.languages()
    total = sum(r["docs"] for r in rows) or 1
    return [r["lang"] for r in rows if r["lang"] != "(none)" and r["docs"] / total >= MIN_LANGUAGE_SHARE]


def card_text(facts: RunFacts) -> str:
    manifest, read, final = facts.manifest, facts.read, facts.final
    meta = metadata(facts)
    name = manifest["name"]
    stage_names = ", ".join(f"`{s.key}`" for s in facts.stages[1:]) or "none"
    removed = sum(s.removed for s in facts.stages)
    tokens = facts.token_splits()
    read_only = f" (only {_read_only(manifest)})" if _read_only(manifest) else ""
    parts = [
        "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---", MARKER, f"# {name}",
        f"{final.kept:,} documents ({fmt_bytes(final.bytes_out)} of UTF-8 text) kept from {read.docs_in:,} records "
        f"read from {len(manifest['inputs'])} input files{read_only}, made by the Refinery recipe "
        f"`{name}` with the stages {stage_names}. {removed:,} documents were removed (each with its reason, in "
        f"`removed/`) and {read.quarantined:,} unreadable records quarantined (in `quarantine/`): "
        f"read = kept + removed + quarantined.",
        "## Loading\n\n```python\nfrom datasets import load_dataset\n\n"
        f'documents = load_dataset("path/to/{name}")["train"]   # this folder: {DATA_FILES}\n```\n\n'
        "Only the kept documents load: the metadata above names them as the one split (`train`). "
        + ("The token shards in `tokens/` are for `refinery train`, not for `datasets`. " if tokens else "")
        + "`refinery sql` queries every part of the folder (kept, removed, quarantined, stats) with SQL; "
        "`report.html` beside this card shows the run.",
        "## Data fields\n\n" + _md_table(["column", "type"], [[f"`{c}`", t] for c, t in facts.types.items()]),
        "## How it was made\n\n### Recipe\n\n```yaml\n" + recipe_yaml(manifest) + "```",
        "### Stages\n\n" + _md_table(
            ["stage", "kind", "documents in", "kept", "removed", "quarantined", "text out"],
            [[s.key, s.kind, f"{s.docs_in:,}", f"{s.kept:,}", f"{s.removed:,}", f"{s.quarantined:,}",
              fmt_bytes(s.bytes_out)] for s in facts.stages]),
        _reasons(facts), _sources(facts, tokens), _language_table(facts), _licence(meta),
        "## Known limitations\n\n" + "\n".join(f"- {line}" for line in _limitations(facts)),
        _citation(facts),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _reasons(facts: RunFacts) -> str:
    rows = [[s.key, f"`{reason}`", f"{count:,}"] for s in facts.stages for reason, count in s.reasons.items()
            if not reason.startswith("skipped_")]
    if not rows:
        return ""
    return "### Removed and quarantined, by reason\n\n" + _md_table(["stage", "reason", "documents"], rows)


def _sources(facts: RunFacts, tokens: list[dict[str, Any]]) -> str:
    per_source: dict[str, int] = {}
    for split in tokens:
        for source, count in split["tokens_per_source"].items():
            per_source[source] = per_source.get(source, 0) + count
    rows = [[r["source"], f"{r['kept']:,}", f"{r['removed']:,}", fmt_bytes(r["bytes"] or 0)]
            + ([f"{per_source.get(r['source'], 0):,}"] if tokens else []) for r in facts.sources()]
    files = "\n".join(f"- `{Path(entry['path']).name}` ({fmt_bytes(entry['bytes'])})"
                      for entry in facts.manifest["inputs"])
    headers = ["source", "kept documents", "removed documents", "kept text"] + (["tokens"] if tokens else [])
    return f"## Sources\n\nThe input files:\n\n{files}\n\n" + _md_table(headers, rows)


def _language_table(facts: RunFacts) -> str:
    rows = facts.languages()
    if not rows:
        return ("## Languages\n\nNot identified: the recipe has no `langid` stage, so the metadata names no "
                "language.")
    total = sum(r["docs"] for r in rows) or 1
    return ("## Languages\n\nfastText lid.176 labels of the kept documents (the metadata lists those of at least "
            f"{MIN_LANGUAGE_SHARE:.0%}).\n\n"
            + _md_table(["language", "documents", "share"],
                        [[r["lang"], f"{r['docs']:,}", f"{r['docs'] / total:.1%}"] for r in rows]))


def _licence(meta: dict[str, Any]) -> str:
    if meta["license"] != "other":
        return f"## Licence\n\n`{meta['license']}`, as the recipe states."
    return ("## Licence\n\n**Unknown.** The recipe states no licence (Refinery recipes have no licence field), so "
            "the metadata says `other`. Each document keeps the terms of its source (listed above): check them "
            "before you redistribute this dataset or train on it.")


def _read_only(manifest: dict[str, Any]) -> str | None:
    """What a run read of its inputs when it did not read them whole (`refinery run --limit N`)."""
    limit = manifest["recipe"].get("limit")
    return f"the first {limit:,} records of each, a quick look made with --limit {limit}" if limit else None


def _limitations(facts: RunFacts) -> list[str]:
    names = {s.name for s in facts.stages}
    read_only = _read_only(facts.manifest)
    lines = [f"Not the whole input: the run read only {read_only}."] if read_only else []
    lines += ["The filters are heuristics with fixed thresholds (see the recipe): they remove some good documents "
             "and keep some bad ones; `report.html` shows each signal against its threshold."]
    if "langid" in names:
        lines.append("Language labels come from fastText lid.176, which errs on short and mixed-language texts.")
    lines.append("PII scrubbing replaces emails, IP addresses and phone numbers found by patterns; names, "
                 "addresses and other personal data remain." if "pii" in names else
                 "No PII scrubbing was done: the documents may contain personal data.")
    if not names & {"exact_dedup", "minhash_dedup"}:
        lines.append("No deduplication was done: the documents may repeat.")
    else:
        lines.append("Duplicates were removed within this run only, not against other datasets.")
    if "decontaminate" not in names:
        lines.append("No decontamination against evaluation sets was done: benchmark text may be present.")
    lines.append("The token shards (if any) split documents into train and validation by a hash of their id; the "
                 "Parquet data has one split, `train`.")
    return lines


def _citation(facts: RunFacts) -> str:
    name, manifest = facts.manifest["name"], facts.manifest
    key = "".join(c if c.isalnum() else "_" for c in name)
    return ("## Citation\n\nCite the sources above, and this dataset as:\n\n```bibtex\n"
            f"@misc{{{key},\n  title = {{{name}}},\n  note = {{Built with Refinery {__version__}; recipe "
            f"fingerprint {manifest['fingerprint'][:16]}}}\n}}\n```")


def write_card(run_dir: str | Path) -> Path | None:
    """Write RUN/README.md; None, writing nothing, when a README.md without the marker (a person's) is there."""
    with RunFacts(run_dir) as facts:
        target = facts.layout.card
        if target.exists() and MARKER not in target.read_text(encoding="utf-8", errors="replace"):
            return None
        write_text(target, card_text(facts))
    return target

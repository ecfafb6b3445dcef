#!/usr/bin/env python3
"""The heuristic filter chain against datatrove's, side by side: docs/s and the same keep/remove decisions.

    python tests/benchmarks/bench_quality.py --datatrove-python /tmp/dtvenv/bin/python [--runs 3] [--workers 2]
        [--docs /tmp/refinery-bench/docs.jsonl] [--decisions PATH] [--skip-speed] [--skip-agreement]

Documents: the ~11,800 real documents of ../shared/bench/make_bench_docs.py (built when missing), cut into the two
JSONL shards that ../shared/bench/datatrove_baseline.py uses (so each side runs two tasks).

Speed: datatrove's chain (JsonlReader -> LanguageFilter(en) -> GopherRepetition -> GopherQuality -> C4Quality ->
JsonlWriter) is timed by datatrove_baseline.py --parts b (its executor.run(), tasks=2/workers=2 and 1/1); ours is
the recipe jsonl -> langid {keep: [en], min_score: 0.65} (datatrove's LanguageFilter threshold) ->
gopher_repetition -> gopher_quality -> c4_quality -> Parquet, timed around pipelines.engine.run_recipe in this
process with --workers 2 and 1. Rounds alternate the two sides; medians of --runs rounds.

Agreement: datatrove's filters are applied one by one to every document in the datatrove venv (this file runs
itself there with --child; each filter sees the original text), and ours in this process on the same documents
(langid labels first, then each stage on every document). Reported: the chain's keep/remove decision on all
documents, each filter's decision on the documents both sides call English (the rules are the same there), C4's
rewritten text on documents both keep, and the disagreements by (datatrove reason, our reason).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT.parent / "shared" / "bench"
FILTERS = ["gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"]
CHAIN = FILTERS[:3]  # datatrove's benchmark chain has no FineWeb filter


def child_decisions(docs_path: str, lid_model: str, out_path: str) -> None:
    """(datatrove venv) Each filter's verdict on every document: null (kept) or datatrove's reason."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
    )

    language = LanguageFilter(languages=["en"])
    language.model.MODEL_URL = os.path.abspath(lid_model)  # a local file instead of the download (see baseline)
    filters = dict(zip(FILTERS, (GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(),
                                 FineWebQualityFilter())))
    with open(docs_path, encoding="utf-8") as source, open(out_path, "w", encoding="utf-8") as out:
        for line in source:
            record = json.loads(line)
            verdicts = {"id": record["id"]}
            verdicts["langid"] = None if language.filter(Document(text=record["text"], id=record["id"])) else "not_en"
            for name, rule in filters.items():
                doc = Document(text=record["text"], id=record["id"])
                try:
                    result = rule.filter(doc)
                except ZeroDivisionError:  # FineWeb divides by the word count
                    result = (False, "zero_division")
                verdicts[name] = None if result is True else result[1]
                if name == "c4_quality" and result is True:
                    verdicts["c4_text"] = doc.text
            out.write(json.dumps(verdicts) + "\n")


def datatrove_decisions(args: argparse.Namespace, work: Path) -> list[dict]:
    if args.decisions and Path(args.decisions).exists():
        path = Path(args.decisions)
    else:
        path = Path(args.decisions) if args.decisions else work / "datatrove-decisions.jsonl"
        shards = sorted((work / "shards").glob("part-*.jsonl"))
        parts = [work / f"decisions-{i}.jsonl" for i in range(len(shards))]
        print(f"datatrove's verdicts on every document ({len(shards)} processes, a few minutes) ...", flush=True)
        procs = [subprocess.Popen([args.datatrove_python, __file__, "--child", str(shard), args.lid_model,
                                   str(part)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for shard, part in zip(shards, parts)]
        if any(p.wait() for p in procs):
            raise SystemExit("the datatrove child failed: run it by hand to see why: "
                             f"{args.datatrove_python} {__file__} --child SHARD {args.lid_model} OUT")
        with open(path, "w", encoding="utf-8") as out:
            for part in parts:
                out.write(part.read_text(encoding="utf-8"))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def our_decisions(texts: list[str]) -> tuple[list[bool], dict[str, list[str | None]], dict[int, str], dict]:
    """Our langid verdict (en, score >= 0.65), each filter's reason per document, C4's rewritten texts, timings."""
    import pyarrow as pa

    from refinery.pipelines.stages import STAGES

    table = pa.table({"text": pa.array(texts, pa.string()), "row": pa.array(range(len(texts)), pa.int64())})
    labelled = STAGES["langid"](STAGES["langid"].Config()).process(table).kept
    english = [lang == "en" and score >= 0.65 for lang, score in
               zip(labelled.column("lang").to_pylist(), labelled.column("lang_score").to_pylist())]
    reasons, timings, c4_text = {}, {}, {}
    for name in FILTERS:
        stage = STAGES[name](STAGES[name].Config())
        started = time.perf_counter()
        result = stage.process(labelled)
        timings[name] = time.perf_counter() - started
        verdict: list[str | None] = [None] * len(texts)
        for row, reason in zip(result.removed.column("row").to_pylist(), result.removed.column("reason").to_pylist()):
            verdict[row] = reason
        reasons[name] = verdict
        if name == "c4_quality":
            c4_text = dict(zip(result.kept.column("row").to_pylist(), result.kept.column("text").to_pylist()))
    return english, reasons, c4_text, timings


def agreement(theirs: list[dict], texts: list[str]) -> dict:
    english, ours, c4_text, timings = our_decisions(texts)
    report: dict = {"docs": len(texts), "stage_seconds_all_docs_one_process": timings}
    same_chain = 0
    both_english = [i for i, d in enumerate(theirs) if d["langid"] is None and english[i]]
    report["langid_same"] = sum((d["langid"] is None) == english[i] for i, d in enumerate(theirs))
    for i, d in enumerate(theirs):
        dt_keeps = d["langid"] is None and all(d[f] is None for f in CHAIN)
        we_keep = english[i] and all(ours[f][i] is None for f in CHAIN)
        same_chain += dt_keeps == we_keep
    report["chain_same"] = same_chain
    report["english_docs"] = len(both_english)
    for name in FILTERS:
        confusion: Counter = Counter()
        same = 0
        for i in both_english:
            dt_keeps, we_keep = theirs[i][name] is None, ours[name][i] is None
            same += dt_keeps == we_keep
            if dt_keeps != we_keep:
                confusion[f"{theirs[i][name]} / {ours[name][i]}"] += 1
        report[name] = {"same": same, "removed_datatrove": sum(theirs[i][name] is not None for i in both_english),
                        "removed_ours": sum(ours[name][i] is not None for i in both_english),
                        "disagreements": dict(confusion.most_common())}
    both_kept = [i for i in both_english if theirs[i]["c4_quality"] is None and ours["c4_quality"][i] is None]
    report["c4_text_same"] = [sum(theirs[i]["c4_text"] == c4_text[i] for i in both_kept), len(both_kept)]
    return report


def write_inputs(docs: Path, work: Path) -> list[str]:
    """The two shards datatrove_baseline.py cuts (contiguous halves); returns the texts in order."""
    lines = docs.read_text(encoding="utf-8").splitlines(keepends=True)
    (work / "shards").mkdir(parents=True, exist_ok=True)
    half = -(-len(lines) // 2)
    for i in range(2):
        (work / "shards" / f"part-{i:05d}.jsonl").write_text("".join(lines[i * half:(i + 1) * half]),
                                                             encoding="utf-8")
    return [json.loads(line)["text"] for line in lines]


def run_ours(work: Path, workers: int) -> float:
    import yaml

    from refinery.pipelines.engine.recipe import load_recipe
    from refinery.pipelines.engine.run import run_recipe

    recipe = {"name": "quality-bench", "inputs": [{"path": str(work / "shards" / "*.jsonl")}],
              "stages": [{"langid": {"keep": ["en"], "min_score": 0.65}}, {"gopher_repetition": {}},
                         {"gopher_quality": {}}, {"c4_quality": {}}],
              "output": str(work / "ours")}
    path = work / "quality-bench.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    started = time.perf_counter()
    run_recipe(load_recipe(path), workers=workers, force=True, progress=False)
    return time.perf_counter() - started


def run_datatrove(args: argparse.Namespace, work: Path) -> dict[str, float]:
    out = work / "datatrove-results"
    subprocess.run([sys.executable, str(BENCH / "datatrove_baseline.py"), "--python", args.datatrove_python,
                    "--docs", str(args.docs), "--lid-model", args.lid_model, "--parts", "b", "--runs-filters", "1",
                    "--work", str(work / "datatrove-work"), "--out", str(out), "--fresh"],
                   check=True, stdout=subprocess.DEVNULL)
    configs = json.loads((out / "results.json").read_text())["parts"]["b"]["configs"]
    return {key: c["run_s_median"] for key, c in configs.items()}


def speed(args: argparse.Namespace, work: Path, n_docs: int) -> dict:
    times: dict[str, list[float]] = defaultdict(list)
    for round_ in range(args.runs):
        order = ["ours", "datatrove"] if round_ % 2 == 0 else ["datatrove", "ours"]
        for side in order:
            if side == "ours":
                for workers in (2, 1):
                    times[f"ours, workers={workers}"].append(run_ours(work, workers))
            else:
                for key, seconds in run_datatrove(args, work).items():
                    times[f"datatrove, {key}"].append(seconds)
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()), flush=True)
    return {k: {"seconds": v, "median_s": statistics.median(v), "docs_per_s": n_docs / statistics.median(v)}
            for k, v in times.items()}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_decisions(*sys.argv[2:5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datatrove-python", required=True, help="python of a venv with datatrove[processing] "
                        "and spacy (see ../shared/bench/datatrove_baseline.py)")
    parser.add_argument("--docs", type=Path, default=Path(tempfile.gettempdir()) / "refinery-bench" / "docs.jsonl")
    parser.add_argument("--lid-model", default=None, help="lid.176.ftz (default: the one langid uses)")
    parser.add_argument("--runs", type=int, default=3, help="rounds of the speed comparison (median)")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench" / "quality")
    parser.add_argument("--decisions", help="datatrove's verdicts file: reused when it exists, else written there")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-agreement", action="store_true")
    args = parser.parse_args()
    if args.lid_model is None:
        from refinery.pipelines.stages.langid import bundled_model_path

        args.lid_model = str(bundled_model_path())
    if not args.docs.exists():
        print(f"building {args.docs} with make_bench_docs.py ...", flush=True)
        subprocess.run([sys.executable, str(BENCH / "make_bench_docs.py"), str(args.docs)], check=True,
                       stdout=subprocess.DEVNULL)
    args.work.mkdir(parents=True, exist_ok=True)
    texts = write_inputs(args.docs, args.work)
    report: dict = {"docs": len(texts), "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}
    if not args.skip_agreement:
        theirs = datatrove_decisions(args, args.work)
        assert [d["id"] for d in theirs] == [json.loads(x)["id"] for x in args.docs.read_text().splitlines()]
        report["agreement"] = agreement(theirs, texts)
    if not args.skip_speed:
        report["speed"] = speed(args, args.work, len(texts))
        ours, theirs_s = report["speed"]["ours, workers=2"], report["speed"]["datatrove, tasks=2,workers=2"]
        report["speed_ratio_2_workers"] = ours["docs_per_s"] / theirs_s["docs_per_s"]
    report["load_average_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=1, ensure_ascii=False))
    (args.work / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

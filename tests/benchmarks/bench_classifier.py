#!/usr/bin/env python3
"""The quality classifier: training time and held-out figures on the shared data, and the scoring stage's
throughput side by side with a bare fastText predict loop over the same normalised texts (the anchor).

    python tests/benchmarks/bench_classifier.py [--repeat 3] [--data ../shared/data] [--work DIR]

Training: the inputs docs/recipes.md shows (Wikipedia dump + wiki_demo articles + English instruction answers
against CCNet, WET and C4 text), --repeat times, each a fresh model (Hogwild makes them differ a little).
Scoring: `QualityClassifier.process` on the 300 C4 documents copied 10 times, in batches of 4,096, one process;
the anchor is `model.predict(text, k=-1)` per text on the already normalised texts. Medians of --repeat rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from refinery.corpora.records import document_table
from refinery.pipelines.commands.classifier_train import train
from refinery.pipelines.stages.langid import load_model
from refinery.pipelines.stages.quality_classifier import QualityClassifier, QualityClassifierConfig, classifier_text

ROOT = Path(__file__).resolve().parents[2]


def inputs(data: Path) -> tuple[list[dict], list[dict]]:
    """The two classes' inputs, written as a recipe's `inputs:` items."""
    positives = [{"path": str(data / "wikipedia/enwiki-*.bz2"), "format": "wikipedia"},
                 {"path": str(data / "text/wiki_demo.txt"), "unit": "line"},
                 {"path": str(data / "instructions/alpaca_en_demo.json")},
                 {"path": str(data / "instructions/oasst_en_100_tree.jsonl"), "format": "instructions"}]
    negatives = [{"path": str(data / "text/cc_en_head-*.jsonl.gz")}, {"path": str(data / "warc/*.wet.gz")},
                 {"path": str(data / "text/c4_demo.jsonl")}]
    return positives, negatives


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=None, help="where models go (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-classifier-"))
    model_path = work / "quality.bin"
    reports = [train(*inputs(args.data), model_path) for _ in range(args.repeat)]
    for name in ("auc", "f1", "precision", "recall"):
        values = [r["heldout"][name] for r in reports]
        print(f"held-out {name:<9} median {statistics.median(values):.4f}  (runs: {', '.join(map(str, values))})")
    for name in ("read", "train", "total"):
        values = [r["seconds"][name] for r in reports]
        print(f"seconds {name:<6} median {statistics.median(values):.2f}  (runs: {', '.join(map(str, values))})")
    held = reports[-1]["heldout"]["documents"]
    print(f"held-out documents: {held}; model {model_path.stat().st_size / 1e6:.1f} MB")

    lines = (args.data / "text/c4_demo.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines] * 10
    docs = document_table([str(i) for i in range(len(texts))], texts, "c4")
    stage = QualityClassifier(QualityClassifierConfig(model=str(model_path)))
    model = load_model(str(model_path))
    normalised = classifier_text(docs.column("text"))
    stage_times, anchor_times = [], []
    for _ in range(args.repeat):
        started = time.perf_counter()
        for start in range(0, docs.num_rows, 4096):
            stage.process(docs.slice(start, 4096))
        stage_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        for text in normalised:
            model.predict(text, k=-1)
        anchor_times.append(time.perf_counter() - started)
    stage_s, anchor_s = statistics.median(stage_times), statistics.median(anchor_times)
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"scoring {len(texts):,} C4 documents ({megabytes:.1f} MB): stage {len(texts) / stage_s:,.0f} docs/s, "
          f"bare predict loop {len(texts) / anchor_s:,.0f} docs/s (normalisation not included): "
          f"{anchor_s / stage_s:.2f}x")


if __name__ == "__main__":
    main()

"""`refinery classifier train`: a fastText quality classifier (DCLM style) from two datasets a recipe can read.

Positives (e.g. Wikipedia articles, instruction answers) and negatives (raw crawl text) are read with the
corpora readers, so any input format works; conversations contribute their assistant answers. The larger class
is capped to the smaller (and both to `--max-docs`, keeping the documents whose key hashes lowest, so the sample
is spread over every input and is the same on every run); a held-out split is chosen by the hash of each
document's key. Texts are normalised as the `quality_classifier` stage normalises them when it scores.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from refinery.corpora.atomic import atomic_path, write_json
from refinery.corpora.readers import ReadBatch, read_task
from refinery.pipelines.engine.recipe import InputSpec, input_spec
from refinery.pipelines.stages.quality_classifier import LABEL_PREFIX, classifier_text, positive_probabilities

POSITIVE_LABEL, NEGATIVE_LABEL = "hq", "lq"
# Fixed hyper-parameters. fastText 0.9.2 initialises its input matrix in ten blocks, one per thread: fewer than
# ten threads leave up to 90% of it as whatever memory held, and a matrix whose size is not a multiple of ten
# leaves its last few values so (facebookresearch/fastText#1061). That, not the learning rate, is the sporadic
# "Encountered NaN": training always runs MIN_THREADS or more threads and `dim` is a multiple of ten. The price
# is Hogwild's run-to-run variation (the held-out AUC moved in the third decimal over repeated runs). On a few
# hundred documents per class, 5 epochs underfit (held-out AUC 0.71-0.79, varying from run to run) and 25 give
# 0.89-0.90 (docs/performance.md); wordNgrams=2 as DCLM's classifier; dim 20 did as well as 50 or 100.
MIN_THREADS = 10
HYPERPARAMETERS = {"lr": 0.5, "epoch": 25, "wordNgrams": 2, "dim": 20, "bucket": 200_000, "minCount": 2,
                   "loss": "softmax", "seed": 0}
READ_TASK_BYTES = 1 << 30  # one read task per file: the trainer reads in one process


@dataclass
class ClassReport:
    """How many documents one class read, dropped and used."""

    read: int = 0
    empty: int = 0  # blank after normalisation, or a conversation without an assistant answer
    quarantined: int = 0
    used: int = 0
    train: int = 0
    heldout: int = 0
    by_source: dict[str, int] = field(default_factory=dict)  # used documents per source


def texts_of(docs: pa.Table) -> pa.Array:
    """The text a classifier learns from: a conversation's assistant answers, else the `text` column."""
    if "messages" not in docs.column_names:
        return pc.fill_null(docs.column("text"), "").combine_chunks()
    answers = []
    for messages, text in zip(docs.column("messages").to_pylist(), docs.column("text").to_pylist()):
        if messages is None:
            answers.append(text or "")
        else:
            answers.append("\n\n".join(m["content"] or "" for m in messages if m["role"] == "assistant"))
    return pa.array(answers, pa.string())


def _keys(batch: pa.Table) -> list[bytes]:
    """A 16-byte BLAKE2b digest per document of (source, id): bytes 0-7 order the sample, bytes 8-15 split it."""
    return [hashlib.blake2b(f"{s}\x00{i}".encode(), digest_size=16).digest()
            for s, i in zip(batch.column("source").to_pylist(), batch.column("id").to_pylist())]


def read_class(inputs: list[InputSpec], base_dir: Path, max_docs: int, report: ClassReport) -> list[tuple]:
    """The `max_docs` documents with the lowest key hashes, as (key, source, normalised text), in key order.

    A bounded heap keeps memory to `max_docs` texts however large the inputs are.
    """
    heap: list[tuple[bytes, str, str]] = []  # a max-heap on the key, through negated bytes
    for spec in inputs:
        for task in spec.plan(base_dir, READ_TASK_BYTES):
            for batch in read_task(task):
                _take(batch, heap, max_docs, report)
    return sorted((_flip(flipped), source, text) for flipped, source, text in heap)


def _flip(key: bytes) -> bytes:
    """The key with every byte inverted: heapq's min-heap then keeps the highest key on top (and back again)."""
    return bytes(255 - b for b in key)


def _take(batch: ReadBatch, heap: list[tuple[bytes, str, str]], max_docs: int, report: ClassReport) -> None:
    report.quarantined += batch.quarantined.num_rows
    docs = batch.documents
    report.read += docs.num_rows
    if not docs.num_rows:
        return
    texts = classifier_text(texts_of(docs))
    for key, source, text in zip(_keys(docs), docs.column("source").to_pylist(), texts):
        if not text or text.isspace():
            report.empty += 1
            continue
        item = (_flip(key), source, text)
        if len(heap) < max_docs:
            heapq.heappush(heap, item)
        elif item > heap[0]:  # a lower key than the highest kept
            heapq.heapreplace(heap, item)


def is_heldout(key: bytes, fraction: float) -> bool:
    return int.from_bytes(key[8:], "little") / 2**64 < fraction


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney rank statistic (tied scores share their mean rank)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return math.nan
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    mean_rank = np.bincount(inverse, weights=ranks) / counts  # average rank of each distinct score
    ranks = mean_rank[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _metric(value: float) -> float | None:
    """Rounded for the report; None where undefined (JSON has no NaN)."""
    return None if math.isnan(value) else round(value, 4)


def evaluate(scores: np.ndarray, positive: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    predicted = scores >= threshold
    tp = int((predicted & positive).sum())
    fp = int((predicted & ~positive).sum())
    fn = int((~predicted & positive).sum())
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else math.nan
    return {"threshold": threshold, "precision": _metric(precision), "recall": _metric(recall), "f1": _metric(f1),
            "auc": _metric(roc_auc(scores, positive)), "documents": len(scores),
            "true_positives": tp, "false_positives": fp, "false_negatives": fn,
            "true_negatives": int(len(scores) - tp - fp - fn)}


def train(positives: list[dict[str, Any]], negatives: list[dict[str, Any]], output: Path, base_dir: Path = Path("."),
          max_docs: int = 100_000, heldout: float = 0.2, threads: int = MIN_THREADS) -> dict[str, Any]:
    """Train, evaluate on the held-out split, save `output` and its report (`output` with a .json suffix).

    `positives` and `negatives` are inputs as a recipe writes them ({"path": ..., "format": ..., "unit": ...}),
    paths relative to `base_dir`; every one is checked before anything is read.
    """
    specs = {side: [input_spec(entry, f"--{side} {entry.get('path')}") for entry in entries]
             for side, entries in (("positive", positives), ("negative", negatives))}
    import fasttext  # the training build (fasttext-numpy2-wheel); imported only here

    started = time.perf_counter()
    reports = {POSITIVE_LABEL: ClassReport(), NEGATIVE_LABEL: ClassReport()}
    classes = {POSITIVE_LABEL: read_class(specs["positive"], base_dir, max_docs, reports[POSITIVE_LABEL]),
               NEGATIVE_LABEL: read_class(specs["negative"], base_dir, max_docs, reports[NEGATIVE_LABEL])}
    size = min(len(docs) for docs in classes.values())
    if size == 0:
        empty = [label for label, docs in classes.items() if not docs]
        raise ValueError(f"no usable {' or '.join('positive' if e == POSITIVE_LABEL else 'negative' for e in empty)} "
                         "documents: check the paths and formats (every document was blank or quarantined)")
    read_seconds = time.perf_counter() - started
    train_rows, test_rows = [], []
    for label, docs in classes.items():
        report = reports[label]
        for key, source, text in docs[:size]:  # balanced: the larger class is cut to the smaller
            (test_rows if is_heldout(key, heldout) else train_rows).append((key, label, text))
            report.by_source[source] = report.by_source.get(source, 0) + 1
        report.used = size
        report.heldout = sum(1 for row in test_rows if row[1] == label)
        report.train = size - report.heldout
    for label, report in reports.items():
        if not report.train or not report.heldout:
            raise ValueError(f"too few documents to train and evaluate: {size} per class after balancing left "
                             f"{report.train} to train and {report.heldout} to hold out for '{label}'; add "
                             "documents (or raise --max-docs), or change --heldout")
    train_rows.sort()  # key order interleaves the classes, as SGD wants, and is the same on every run
    output.parent.mkdir(parents=True, exist_ok=True)
    threads = max(threads, MIN_THREADS)
    fit_started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="refinery-classifier-") as workdir:
        train_file = Path(workdir) / "train.txt"
        train_file.write_text("".join(f"{LABEL_PREFIX}{label} {text}\n" for _, label, text in train_rows),
                              encoding="utf-8")
        model = fasttext.train_supervised(input=str(train_file), thread=threads, verbose=0, **HYPERPARAMETERS)
    fit_seconds = time.perf_counter() - fit_started
    with atomic_path(output) as tmp:
        model.save_model(str(tmp))
    scores = positive_probabilities(model, [text for _, _, text in test_rows], POSITIVE_LABEL)
    positive = np.array([label == POSITIVE_LABEL for _, label, _ in test_rows], dtype=bool)
    result = {
        "model": str(output), "labels": {"positive": POSITIVE_LABEL, "negative": NEGATIVE_LABEL},
        "heldout": evaluate(np.asarray(scores, dtype=np.float64), positive),
        "heldout_fraction": heldout, "max_docs": max_docs,
        "classes": {"positive": vars(reports[POSITIVE_LABEL]), "negative": vars(reports[NEGATIVE_LABEL])},
        "inputs": {side: [spec.model_dump() for spec in side_specs] for side, side_specs in specs.items()},
        "hyperparameters": {**HYPERPARAMETERS, "thread": threads},
        "seconds": {"read": round(read_seconds, 2), "train": round(fit_seconds, 2),
                    "total": round(time.perf_counter() - started, 2)},
    }
    write_json(output.with_suffix(".json"), result)
    return result


def describe(report: dict[str, Any]) -> str:
    held, classes = report["heldout"], report["classes"]
    lines = [f"model: {report['model']}  (report: {Path(report['model']).with_suffix('.json')})"]
    for side in ("positive", "negative"):
        c = classes[side]
        lines.append(f"{side}: read {c['read']:,}, quarantined {c['quarantined']:,}, empty {c['empty']:,}, "
                     f"used {c['used']:,} (train {c['train']:,}, held out {c['heldout']:,})")
    shown = {k: "n/a" if held[k] is None else f"{held[k]:.4f}" for k in ("precision", "recall", "f1", "auc")}
    lines.append(f"held out ({held['documents']:,} documents): precision {shown['precision']}  recall "
                 f"{shown['recall']}  F1 {shown['f1']} at {held['threshold']}  ROC AUC {shown['auc']}")
    seconds = report["seconds"]
    lines.append(f"seconds: read {seconds['read']}, train {seconds['train']}, total {seconds['total']}")
    return "\n".join(lines)


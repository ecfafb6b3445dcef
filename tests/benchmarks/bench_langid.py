#!/usr/bin/env python3
"""The langid stage: accuracy on the UDHR in many languages, and throughput on UDHR paragraphs and C4 documents.

    python tests/benchmarks/bench_langid.py [--model PATH] [--min-chars 20] [--repeat 3] [--data ../shared/data]

Accuracy: every non-blank line of `text/udhr2.zip` (one paragraph, heading or article title a line) of the
UDHR translations whose language lid.176 knows (UDHR_LABELS below) is one document; a document is right when
`lang` equals the expected label. Reported overall for lines of at least `--min-chars` characters, by line
length, and per language (worst and a few well-known ones).
Throughput: `LangId.process` in this process (one core, which is what each engine worker gets), batches of
4,096, model load excluded (reported apart); median of `--repeat` rounds, on the UDHR lines and on the 300 C4
documents of `text/c4_demo.jsonl` copied 10 times.
CJK (`--cjk`): a confusion table (true language → labels) with the script correction off (lid.176 alone) and
on, over the Chinese, Japanese and Korean text of the shared data (`cjk_sets`), and the UDHR accuracy both ways.

    python tests/benchmarks/bench_langid.py --cjk
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

import pyarrow as pa

from refinery.corpora.readers import plan_input, read_task
from refinery.corpora.records import document_table
from refinery.pipelines.stages.langid import LangId, LangIdConfig, load_model

ROOT = Path(__file__).resolve().parents[2]
BATCH_ROWS = 4096

# UDHR file (ISO 639-3 code, with script or variant) → lid.176 label. Only translations whose language lid.176
# was trained on, in the script it mostly saw; ISO 639-3 individual languages go to lid.176's macrolanguage or
# Wikipedia code (arb → ar, cmn → zh, pes → fa, als = Tosk Albanian → sq, bho → bh, prv = Provençal → oc).
UDHR_LABELS = {
    "afr": "af", "als": "sq", "amh": "am", "arb": "ar", "ast": "ast", "azj_latn": "az", "bcl": "bcl", "bel": "be",
    "ben": "bn", "bho": "bh", "bod": "bo", "bos_latn": "bs", "bre": "br", "bul": "bg", "cat": "ca", "ceb": "ceb",
    "ces": "cs", "ckb": "ckb", "cmn_hans": "zh", "cmn_hant": "zh", "cos": "co", "cym": "cy", "dan": "da",
    "deu": "de", "deu_1901": "de", "div": "dv", "ell_monotonic": "el", "ell_polytonic": "el", "eml": "eml",
    "eng": "en", "epo": "eo", "est": "et", "eus": "eu", "fin": "fi", "fra": "fr", "fri": "fy", "gla": "gd",
    "gle": "ga", "glg": "gl", "gug": "gn", "guj": "gu", "hat_kreyol": "ht", "hat_popular": "ht", "heb": "he",
    "hin": "hi", "hrv": "hr", "hsb": "hsb", "hun": "hu", "hye": "hy", "ido": "io", "ilo": "ilo", "ina": "ia",
    "ind": "id", "isl": "is", "ita": "it", "jav": "jv", "jpn": "ja", "kan": "kn", "kat": "ka", "kaz": "kk",
    "khk": "mn", "khm": "km", "kir": "ky", "kor": "ko", "lao": "lo", "lat": "la", "lat_1": "la", "lav": "lv",
    "lit": "lt", "ltz": "lb", "mai": "mai", "mal": "ml", "mar": "mr", "min": "min", "mkd": "mk", "mlt": "mt",
    "mly_latn": "ms", "mya": "my", "nds": "nds", "nep": "ne", "nld": "nl", "nno": "nn", "nob": "no", "oss": "os",
    "pam": "pam", "pan": "pa", "pbu": "ps", "pes_1": "fa", "pes_2": "fa", "plt": "mg", "pnb": "pnb", "pol": "pl",
    "por_BR": "pt", "por_PT": "pt", "prv": "oc", "quy": "qu", "quz": "qu", "roh": "rm", "ron": "ro",
    "ron_1953": "ro", "ron_1993": "ro", "rus": "ru", "sah": "sah", "san": "sa", "sco": "sco", "slk": "sk",
    "slv": "sl", "som": "so", "spa": "es", "srp_cyrl": "sr", "sun": "su", "swe": "sv", "swh": "sw", "tam": "ta",
    "tat": "tt", "tgk": "tg", "tgl": "tl", "tha": "th", "tuk_latn": "tk", "tur": "tr", "tyv": "tyv",
    "uig_arab": "ug", "ukr": "uk", "urd": "ur", "uzn_latn": "uz", "vec": "vec", "vep": "vep", "vie": "vi",
    "war": "war", "wln": "wa", "ydd": "yi", "yor": "yo",
}
SHOWN = ["eng", "deu", "fra", "spa", "rus", "cmn_hans", "jpn", "arb", "hin", "swh", "yor", "nno", "bos_latn"]
LENGTH_BUCKETS = [(1, 20), (20, 100), (100, 10**9)]


def udhr_lines(zip_path: Path) -> tuple[list[str], list[str], list[str]]:
    """(texts, UDHR file stems, expected labels) for every non-blank line of the mapped translations."""
    texts, stems, expected = [], [], []
    with zipfile.ZipFile(zip_path) as archive:
        for stem, label in sorted(UDHR_LABELS.items()):
            for line in archive.read(f"udhr2/{stem}.txt").decode("utf-8").splitlines():
                if line.strip():
                    texts.append(line.strip())
                    stems.append(stem)
                    expected.append(label)
    return texts, stems, expected


def label_all(stage: LangId, texts: list[str]) -> tuple[list[str | None], float]:
    """Every text's `lang` through the stage, in batches; returns (labels, seconds)."""
    table = document_table([str(i) for i in range(len(texts))], texts, "bench")
    started = time.perf_counter()
    labels: list[str | None] = []
    for start in range(0, table.num_rows, BATCH_ROWS):
        labels += stage.process(table.slice(start, BATCH_ROWS)).kept.column("lang").to_pylist()
    return labels, time.perf_counter() - started


def throughput(stage: LangId, name: str, texts: list[str], repeat: int) -> None:
    seconds = statistics.median(label_all(stage, texts)[1] for _ in range(repeat))
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{name:<28} {len(texts):>7,} docs {megabytes:6.2f} MB  {seconds:6.2f} s  "
          f"{len(texts) / seconds:>9,.0f} docs/s  {megabytes / seconds:5.2f} MB/s")


def accuracy(right: int, total: int) -> str:
    return f"{right / total:6.1%} ({right:,}/{total:,})" if total else "     - (0)"


def read_column(path: Path, column: str, fmt: str | None = None, stage=None) -> list[str]:
    """One column of every document the readers (and an optional stage, e.g. extract) make of a file."""
    values: list[str] = []
    for task in plan_input(str(path), path.parent, 1 << 25, fmt):
        for batch in read_task(task):
            docs = stage.process(batch.documents).kept if stage else batch.documents
            values += [v for v in docs.column(column).to_pylist() if v and v.strip()]
    return values


def cjk_sets(data: Path) -> dict[tuple[str, str], list[str]]:
    """(true language, set name) → texts: the Chinese, Japanese and Korean text of the shared data."""
    from refinery.pipelines.stages.extract import Extract, ExtractConfig

    sets: dict[tuple[str, str], list[str]] = {}
    for name in ("belle_dev1k_zh", "alpaca_zh_demo", "glaive_toolcall_zh_demo"):
        sets["zh", f"{name} prompts"] = read_column(data / "instructions" / f"{name}.json", "prompt", "instructions")
    with zipfile.ZipFile(data / "text" / "udhr2.zip") as archive:
        for stem, lang in (("cmn_hans", "zh"), ("cmn_hant", "zh"), ("jpn", "ja"), ("kor", "ko")):
            text = archive.read(f"udhr2/{stem}.txt").decode("utf-8")
            sets[lang, f"UDHR {stem} lines"] = [line.strip() for line in text.splitlines() if line.strip()]
    poetry = data / "text" / "chinese-poetry"
    sets["zh", "Analects chapters"] = ["\n".join(c["paragraphs"]) for c in
                                       json.loads((poetry / "论语/lunyu.json").read_text(encoding="utf-8"))]
    sets["zh", "Shijing poems"] = ["\n".join(p["content"]) for p in
                                   json.loads((poetry / "诗经/shijing.json").read_text(encoding="utf-8"))]
    for folder, file, name in (("全唐诗", "poet.tang.0.json", "Tang poems"), ("宋词", "ci.song.0.json", "Song ci")):
        poems = json.loads((poetry / folder / file).read_text(encoding="utf-8"))[:500]
        sets["zh", f"{name} (first 500)"] = ["\n".join(p["paragraphs"]) for p in poems]
    extract = Extract(ExtractConfig())
    sets["ja", "clueweb09-ja pages (extract)"] = read_column(data / "warc" / "clueweb09-ja-quirk.warc.gz", "text",
                                                            stage=extract)
    pages = read_column(data / "warc" / "cc-main-2020-34-sample.warc.gz", "text", stage=extract)
    # Its Chinese pages (by reading them): the ones whose text is mostly Han; the rest are ru, de, nl, en.
    sets["zh", "cc-main-2020-34 Chinese pages (extract)"] = [
        t for t in pages if sum("\u4e00" <= c <= "\u9fff" for c in t) > 0.3 * sum(c.isalpha() for c in t)]
    return sets


def cjk_report(data: Path, model: str | None) -> None:
    sets = cjk_sets(data)
    for correction in (False, True):
        stage = LangId(LangIdConfig(model=model, script_correction=correction))
        print(f"\nscript_correction: {str(correction).lower()}")
        for (lang, name), texts in sets.items():
            labels, _ = label_all(stage, texts)
            counts = Counter(labels).most_common()
            right = dict(counts).get(lang, 0)
            print(f"  {lang}  {name:<40} {accuracy(right, len(texts))}  "
                  + ", ".join(f"{label} {n}" for label, n in counts[:6]))
        texts, stems, expected = udhr_lines(data / "text" / "udhr2.zip")
        labels, _ = label_all(stage, texts)
        ok = [got == want for got, want, t in zip(labels, expected, texts) if len(t) >= 20]
        other = [got == want for got, want, t, s in zip(labels, expected, texts, stems)
                 if len(t) >= 20 and s not in ("cmn_hans", "cmn_hant", "jpn", "kor")]
        print(f"  UDHR lines >= 20 chars: {accuracy(sum(ok), len(ok))}; "
              f"without zh/ja/ko: {accuracy(sum(other), len(other))}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="fastText model file (default: the lid.176.ftz refinery ships)")
    parser.add_argument("--min-chars", type=int, default=20, help="shortest line in the overall accuracy (20)")
    parser.add_argument("--repeat", type=int, default=3, help="throughput rounds; the median is reported (3)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="the shared data")
    parser.add_argument("--cjk", action="store_true", help="only the CJK confusion table, correction off and on")
    args = parser.parse_args()
    if args.cjk:
        cjk_report(args.data, args.model)
        return 0

    stage = LangId(LangIdConfig(model=args.model))
    started = time.perf_counter()
    load_model(str(stage.model_path))
    print(f"model: {stage.model_path} (loaded in {time.perf_counter() - started:.2f} s)")

    texts, stems, expected = udhr_lines(args.data / "text" / "udhr2.zip")
    labels, _ = label_all(stage, texts)
    right = [got == want for got, want in zip(labels, expected)]
    lengths = [len(t) for t in texts]
    counted = [ok for ok, n in zip(right, lengths) if n >= args.min_chars]
    print(f"\nUDHR: {len(UDHR_LABELS)} translations in {len(set(expected))} lid.176 languages, {len(texts):,} lines")
    print(f"accuracy, lines >= {args.min_chars} chars: {accuracy(sum(counted), len(counted))}")
    for low, high in LENGTH_BUCKETS:
        bucket = [ok for ok, n in zip(right, lengths) if low <= n < high]
        print(f"  lines of {low}-{high - 1 if high < 10**9 else '...'} chars: {accuracy(sum(bucket), len(bucket))}")

    per_stem: dict[str, list[bool]] = {}
    for stem, ok, n in zip(stems, right, lengths):
        if n >= args.min_chars:
            per_stem.setdefault(stem, []).append(ok)
    confusions = Counter((s, g) for s, g, ok, n in zip(stems, labels, right, lengths) if not ok and n >= args.min_chars)
    worst = sorted(per_stem, key=lambda s: sum(per_stem[s]) / len(per_stem[s]))[:10]
    good = sum(sum(oks) >= 0.9 * len(oks) for oks in per_stem.values())
    print(f"translations with >= 90% of their lines right: {good}/{len(per_stem)}")
    print(f"\nper translation (lines >= {args.min_chars} chars; most common wrong label):")
    for stem in SHOWN + [s for s in worst if s not in SHOWN]:
        oks = per_stem[stem]
        wrong = [(g, c) for (s, g), c in confusions.most_common() if s == stem][:1]
        note = f"  mostly wrong as {wrong[0][0]} ({wrong[0][1]})" if wrong else ""
        print(f"  {stem:<14} {UDHR_LABELS[stem]:<4} {accuracy(sum(oks), len(oks))}{note}")

    print("\nthroughput (one process):")
    throughput(stage, "UDHR lines", texts, args.repeat)
    c4 = [json.loads(line)["text"] for line in (args.data / "text" / "c4_demo.jsonl").open(encoding="utf-8")]
    throughput(stage, "C4 documents (c4_demo x10)", c4 * 10, args.repeat)
    return 0


if __name__ == "__main__":
    pa.set_cpu_count(1)
    sys.exit(main())

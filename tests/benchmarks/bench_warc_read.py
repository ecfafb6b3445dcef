#!/usr/bin/env python3
"""Side-by-side benchmark: WARC read records/s, Refinery's reader against bare FastWARC and warcio.

    python tests/benchmarks/bench_warc_read.py [--repeat 3] [--copies 3] [--workers 2] [--skip-cli]

Input: shared/bench/make_bench_warc.py with `--repeat COPIES` (923 real trafilatura-eval pages per copy as
HTTP responses, one gzip member per record, about 27 MB compressed and 135 MB of HTML per copy).

Each round runs, one after the other (the order rotates between rounds):
  fastwarc     FastWARC's ArchiveIterator over the file, HTTP headers parsed, every payload read (the floor:
               no damage checks, no charset decoding, no Arrow)
  warcio       warcio's ArchiveIterator, every response's content_stream() read
  reader       corpora.readers.warc.WarcReader.read in this process: framing checks, FastWARC parsing, charset
               decoding, Arrow tables (what one worker does per task)
  refinery     `refinery run` of a recipe without stages (--workers N, the CLI as a subprocess: start-up,
               Parquet writing and the manifest included; one file is one task, so one worker reads)
Reported: median seconds, response records/s, compressed MB/s, and each contender's speed relative to
fastwarc. `--robustness` instead reads every file of shared/data/warc with each library and Refinery and
prints what each one gets out of it. Machines are noisy: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"


def fastwarc_read(path: Path, **options) -> int:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    records = 0
    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream, record_types=WarcRecordType.response, **options):
            record.reader.read()
            records += 1
    return records


def warcio_read(path: Path) -> int:
    from warcio.archiveiterator import ArchiveIterator

    records = 0
    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream):
            if record.rec_type in ("response", "conversion"):
                record.content_stream().read()
                records += 1
    return records


def refinery_read(path: Path) -> int:
    from refinery.corpora.readers import warc
    from refinery.corpora.readers.base import ReadTask

    return sum(batch.documents.num_rows for batch in warc.WarcReader().read(ReadTask("warc", str(path), path.name)))


def robustness(data: Path) -> None:
    """What each reader gets from every file of shared/data/warc: records with a block (responses and
    conversions; for Refinery: documents, which are HTML responses and conversions, and quarantined records)."""
    contenders = {
        "fastwarc": lambda p: library_count(fastwarc_records(p)),
        "fastwarc quirks": lambda p: library_count(fastwarc_records(p, quirks_mode=True, strict_mode=False)),
        "warcio": lambda p: library_count(warcio_records(p)),
        "refinery": refinery_counts,
    }
    print(f"{'file':<46}" + "".join(f"{name:>26}" for name in contenders))
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        stderr, sys.stderr = sys.stderr, io.StringIO()  # warcio prints a warning for each damaged record
        try:
            cells = [read(path) for read in contenders.values()]
        finally:
            sys.stderr = stderr
        print(f"{str(path.relative_to(data)):<46}" + "".join(f"{c:>26}" for c in cells))


def fastwarc_records(path: Path, **options) -> Iterator[bool]:
    """True for each response or conversion whose block is complete, False for one that comes back short."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    with open(path, "rb") as stream:
        wanted = WarcRecordType.response | WarcRecordType.conversion
        for record in ArchiveIterator(stream, record_types=wanted, parse_http=False, **options):
            yield len(record.reader.read()) == record.content_length


def warcio_records(path: Path) -> Iterator[bool]:
    """True for each response or conversion (warcio does not say whether a block came back short)."""
    from warcio.archiveiterator import ArchiveIterator

    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream):
            if record.rec_type in ("response", "conversion"):
                record.content_stream().read()
                yield True


def library_count(records: Iterator[bool]) -> str:
    """'N' records, '(k short)' of them with a short block, ', then Error' where the library gave up."""
    complete = short = 0
    try:
        for whole in records:
            complete, short = complete + whole, short + (not whole)
    except Exception as err:  # noqa: BLE001 - the point is to show which reader stops where
        return f"{complete + short}, then {type(err).__name__}"
    return f"{complete + short} ({short} short)" if short else str(complete)


def refinery_counts(path: Path) -> str:
    from refinery.corpora.readers import warc
    from refinery.corpora.readers.base import ReadTask

    docs = bad = 0
    for batch in warc.WarcReader().read(ReadTask("warc", str(path), path.name)):
        docs, bad = docs + batch.documents.num_rows, bad + batch.quarantined.num_rows
    return f"{docs} + {bad} quarantined" if bad else str(docs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported (default 3)")
    parser.add_argument("--copies", type=int, default=3, help="copies of the 923 pages (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="workers of `refinery run` (default 2)")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench" / "warc",
                        help="folder for the WARC and the run (default out/bench/warc, git-ignored)")
    parser.add_argument("--skip-cli", action="store_true", help="do not time `refinery run`")
    parser.add_argument("--robustness", action="store_true", help="only the per-file table of shared/data/warc")
    args = parser.parse_args()

    if args.robustness:
        robustness(SHARED / "data" / "warc")
        return 0
    path = args.work / f"pages-x{args.copies}.warc.gz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"building {path} ...", flush=True)
        subprocess.run([sys.executable, str(SHARED / "bench" / "make_bench_warc.py"), str(path),
                        "--repeat", str(args.copies)], check=True, stdout=subprocess.DEVNULL)
    mb = path.stat().st_size / 1e6
    expected = refinery_read(path)
    print(f"input: {path} ({mb:.1f} MB, {expected:,} responses); cpus: {os.cpu_count()}", flush=True)

    recipe = args.work / "identity.yaml"
    recipe.write_text(f"name: bench-warc\ninputs:\n  - path: {path}\nstages: []\noutput: {args.work / 'run'}\n")
    command = shutil.which("refinery") or shutil.which("refinery", path=str(Path(sys.executable).parent))
    cli = [command] if command else [sys.executable, "-m", "refinery.pipelines"]
    cli += ["run", str(recipe), "--workers", str(args.workers), "--force", "--quiet"]

    def refinery_cli() -> int:
        import pyarrow.parquet as pq

        subprocess.run(cli, check=True, stdout=subprocess.DEVNULL)
        return sum(pq.ParquetFile(p).metadata.num_rows for p in (args.work / "run" / "data").glob("*.parquet"))

    contenders = {"fastwarc": lambda: fastwarc_read(path), "warcio": lambda: warcio_read(path),
                  "reader": lambda: refinery_read(path)}
    if not args.skip_cli:
        contenders["refinery"] = refinery_cli
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.repeat):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            started = time.perf_counter()
            records = contenders[name]()
            times[name].append(time.perf_counter() - started)
            if records != expected:
                raise SystemExit(f"{name} read {records:,} records, expected {expected:,}")
            print(f"  round {round_ + 1} {name:<10} {times[name][-1]:7.2f} s", flush=True)

    base = statistics.median(times["fastwarc"])
    print(f"\n{'contender':<10} {'median s':>9} {'records/s':>10} {'MB/s':>7} {'vs fastwarc':>12}")
    for name in names:
        median = statistics.median(times[name])
        print(f"{name:<10} {median:9.2f} {expected / median:10,.0f} {mb / median:7.1f} {base / median:11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

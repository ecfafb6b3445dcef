"""`refinery fetch`: its arguments and what it prints (the downloading itself is corpora.fetch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from refinery.corpora.fetch import DEFAULT_PREFIX, fetch, read_checksums


def add_fetch_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `refinery fetch`."""
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help=(
        "an http(s):// or file:// URL, a local path, or a *.paths[.gz] list (local or a URL; Common Crawl's "
        "warc.paths.gz, wet.paths.gz, ...) whose lines are paths under --prefix"))
    parser.add_argument("--dest", "-d", required=True, metavar="DIR",
                        help="the folder the files are saved in (created if missing)")
    parser.add_argument("--workers", "-w", type=int, default=4, metavar="N",
                        help="parallel downloads (default: %(default)s)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, metavar="URL", help=(
        "what the relative lines of a paths list are joined to: a URL or a local folder (default: %(default)s)"))
    parser.add_argument("--checksums", "-c", action="append", default=[], metavar="FILE", help=(
        "a '<hex digest>  <file name>' list, local or a URL (Wikipedia's *-sha1sums.txt, *-md5sums.txt; "
        "md5, sha1, sha256 told apart by length); repeatable"))
    parser.add_argument("--retries", type=int, default=5, metavar="N", help=(
        "retries per file after a dropped connection, a timeout or a 5xx answer, with backoff "
        "(default: %(default)s); a 4xx is not retried"))
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def run_fetch(args: argparse.Namespace) -> int:
    """Run `refinery fetch`: 0 when every file is in place, 1 when some failed (they are listed)."""
    expected: dict[str, str] = {}
    for checksums in args.checksums:
        expected.update(read_checksums(checksums))
    report = fetch(args.sources, Path(args.dest), workers=args.workers, retries=args.retries, prefix=args.prefix,
                   expected=expected, progress=not args.quiet)
    print(report.describe())
    return 0 if report.ok else 1

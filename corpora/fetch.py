"""Download raw dumps: URLs, `file://` URLs, local paths and Common Crawl `*.paths.gz` lists.

Each file streams into `<dest>/<name>.part`, is checked (size from the server, checksum where one is
known) and only then renamed to `<dest>/<name>`, so a file under its final name is always whole. A `.part`
left by a dropped connection or an interrupted run resumes with an HTTP Range request.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import random
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from refinery.corpora.atomic import commit

DEFAULT_PREFIX = "https://data.commoncrawl.org/"
USER_AGENT = "refinery-fetch/0.1"
CHUNK_BYTES = 1 << 20
MAX_BACKOFF_SECONDS = 60.0
DIGEST_BY_LENGTH = {32: "md5", 40: "sha1", 64: "sha256"}  # hex length -> algorithm
PATHS_SUFFIXES = (".paths", ".paths.gz")
# Worth another try: the network or the server had a bad moment. A 4xx is the request's fault and is not.
RETRYABLE_STATUS = {408, 425, 429}

T = TypeVar("T")


class FetchError(Exception):
    """A source cannot be fetched (or planned), with what to do about it."""


class _Stopped(Exception):
    """The user interrupted the fetch; partial files stay to be resumed."""


@dataclass(frozen=True)
class FetchItem:
    """One file to fetch: where from, the name it gets in the destination, and where it was listed."""

    source: str
    name: str
    origin: str  # e.g. "line 7 of warc.paths.gz", for error messages


@dataclass
class FetchReport:
    """What a fetch did: files downloaded, files already complete, and failures with their reason."""

    dest: Path
    fetched: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)  # a subset of fetched
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes_downloaded: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed

    def describe(self) -> str:
        lines = [f"fetched {len(self.fetched)} files into {self.dest} ({self.bytes_downloaded:,} bytes downloaded, "
                 f"{len(self.resumed)} resumed); {len(self.skipped)} already complete; {len(self.failed)} failed"]
        lines += [f"  {name}: {reason}" for name, reason in sorted(self.failed.items())]
        if self.failed:
            lines.append("rerun the same command to retry the failed files (partial downloads resume)")
        return "\n".join(lines)


@dataclass
class _Body:
    """An open source: a byte stream that begins at `start`, and the source's whole size when known."""

    stream: io.BufferedIOBase  # has read1: an HTTP response, a file, or BytesIO
    start: int
    total: int | None
    version: str | None = None  # ETag or Last-Modified: what a later resume must still match


def fetch(sources: list[str], dest: Path, *, workers: int = 4, retries: int = 5, backoff: float = 1.0,
          prefix: str = DEFAULT_PREFIX, expected: dict[str, str] | None = None, progress: bool = True,
          timeout: float = 60.0) -> FetchReport:
    """Fetch every source into `dest`; `expected` maps file names to md5/sha1/sha256 hex digests.

    A source is an http(s) or file:// URL, a local path, or a `*.paths`/`*.paths.gz` list whose relative
    lines are joined to `prefix` (Common Crawl's layout). Failures are reported per file, not raised.
    """
    expected = {name: digest.lower() for name, digest in (expected or {}).items()}
    for name, digest in expected.items():
        _algorithm(digest, f"the checksum given for {name}")
    session = _Session(retries=retries, backoff=backoff, timeout=timeout)
    items = _plan(sources, prefix, session)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    report = FetchReport(dest)
    # In bytes, shown once the plan stands; its total grows as each file's size becomes known.
    session.bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc="fetch", disable=not progress)
    with session.bar, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(session.fetch_one, item, dest, expected.get(item.name)): item for item in items}
        try:
            for done, future in enumerate(as_completed(futures), 1):
                item = futures[future]
                try:
                    outcome, downloaded = future.result()
                except (FetchError, OSError, http.client.HTTPException) as err:
                    report.failed[item.name] = _explain(err, item)
                else:
                    report.bytes_downloaded += downloaded
                    (report.skipped if outcome == "skipped" else report.fetched).append(item.name)
                    if outcome == "resumed":
                        report.resumed.append(item.name)
                session.bar.set_postfix_str(f"{done}/{len(items)} files")
        except KeyboardInterrupt:
            session.stop.set()  # workers notice between chunks; their .part files stay for a rerun
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    for names in (report.fetched, report.resumed, report.skipped):
        names.sort()
    return report


def _plan(sources: list[str], prefix: str, session: _Session) -> list[FetchItem]:
    """Expand paths lists and name every file; two different sources with the same name are an error."""
    items: dict[str, FetchItem] = {}
    for source in sources:
        if source.endswith(PATHS_SUFFIXES):
            # Relative lines (Common Crawl's) go under the prefix; absolute URLs stay as they are.
            expanded = [(line if "://" in line else f"{prefix.rstrip('/')}/{line.lstrip('/')}",
                         f"line {number} of {source}") for number, line in session.read_list(source)]
        else:
            expanded = [(source, source)]
        for location, origin in expanded:
            item = FetchItem(location, _name_of(location), origin)
            seen = items.setdefault(item.name, item)
            if seen.source != item.source:
                raise FetchError(f"two sources would both be saved as '{item.name}': {seen.source} ({seen.origin}) "
                                 f"and {item.source} ({item.origin}); fetch them into different --dest folders")
    return list(items.values())


def read_checksums(source: str) -> dict[str, str]:
    """Parse a `<hex digest>  <file name>` list (sha1sum/md5sum output; Wikipedia's `*-sha1sums.txt`)."""
    checksums = {}
    for number, line in _Session().read_list(source):
        fields = line.split(None, 1)
        if len(fields) != 2:
            raise FetchError(f"{source}:{number}: expected '<hex digest>  <file name>', got {line!r}")
        digest, name = fields[0], fields[1].strip().lstrip("*")  # sha1sum marks binary mode with '*'
        _algorithm(digest, f"{source}:{number}")
        checksums[Path(name).name] = digest.lower()
    return checksums


class _Session:
    """Retry policy, progress bar and stop flag shared by the worker threads of one fetch."""

    def __init__(self, retries: int = 5, backoff: float = 1.0, timeout: float = 60.0):
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.stop = threading.Event()
        self.bar = tqdm(total=0, disable=True)  # fetch() puts up a visible one
        self._bar_lock = threading.Lock()

    def fetch_one(self, item: FetchItem, dest: Path, digest: str | None) -> tuple[str, int]:
        """Fetch one item; returns ('fetched' | 'resumed' | 'skipped', bytes downloaded)."""
        final, part = dest / item.name, dest / f"{item.name}.part"
        version = dest / f"{item.name}.part.version"
        if final.exists() and self._is_complete(final, item, digest):
            return "skipped", 0
        resumed, downloaded = self._download(item, part, version)
        if digest:
            actual = _file_digest(part, _algorithm(digest, item.name))
            if actual != digest:
                part.unlink()
                version.unlink(missing_ok=True)
                raise FetchError(f"checksum mismatch: expected {digest}, got {actual}; the download was deleted "
                                 "and not placed: rerun to download it again, or check the checksums file")
        commit(part, final)  # a resumable .part (cleanup must keep it), placed flushed: only verified files
        version.unlink(missing_ok=True)
        return ("resumed" if resumed else "fetched"), downloaded

    def _is_complete(self, final: Path, item: FetchItem, digest: str | None) -> bool:
        """An earlier run placed this file; keep it unless its checksum or the source's size disagree."""
        if digest:
            return _file_digest(final, _algorithm(digest, item.name)) == digest
        size = final.stat().st_size

        def source_size() -> int | None:  # asking for the bytes after ours costs no body when the sizes agree
            with self._open(item.source, size) as body:
                return body.total

        try:
            return self._retrying(source_size, item.source) in (None, size)
        except (FetchError, OSError, http.client.HTTPException):
            return True  # the source cannot say: the file was verified when it was placed

    def _download(self, item: FetchItem, part: Path, version: Path) -> tuple[bool, int]:
        """Stream the source into `part`, resuming what is there; returns (resumed, bytes downloaded).

        `version` keeps the server's ETag or Last-Modified of the bytes in `part`: sent as If-Range, it makes
        a server whose file changed since send it whole instead of appending new bytes to old ones.
        """
        resumed, downloaded, first_open = False, 0, True

        def attempt() -> None:
            nonlocal resumed, downloaded, first_open
            offset = part.stat().st_size if part.exists() else 0
            known_version = version.read_text() if offset and version.exists() else None
            with self._open(item.source, offset, known_version) as body:
                # The bar counts bytes to transfer in this run: what is left, plus anything we must redo.
                remaining = body.total - body.start if body.total is not None else 0
                self._advance(total=remaining if first_open else offset - body.start)
                first_open = False
                resumed = resumed or body.start > 0
                if body.start == 0:
                    version.unlink(missing_ok=True)
                    if body.version:
                        version.write_text(body.version)
                with open(part, "ab" if body.start else "wb") as out:
                    while chunk := body.stream.read1(CHUNK_BYTES):  # what has arrived: a stop loses nothing
                        if self.stop.is_set():
                            raise _Stopped()
                        out.write(chunk)
                        downloaded += len(chunk)
                        self._advance(done=len(chunk))
                    out.flush()
                    os.fsync(out.fileno())  # the bytes are on disk before the rename makes them final
            size = part.stat().st_size
            if body.total is not None and size != body.total:
                raise ConnectionError(f"the connection closed after {size:,} of {body.total:,} bytes")

        self._retrying(attempt, item.source, progress=lambda: part.stat().st_size if part.exists() else 0)
        return resumed, downloaded

    def read_list(self, source: str) -> list[tuple[int, str]]:
        """The non-blank, non-comment lines of a small (optionally gzipped) list, with line numbers."""

        def read() -> bytes:
            with self._open(source, 0) as body:
                return body.stream.read()

        try:
            data = self._retrying(read, source)
        except (OSError, http.client.HTTPException) as err:
            raise FetchError(f"cannot read the list: {_explain(err, FetchItem(source, source, source))}") from err
        if source.endswith(".gz"):
            data = gzip.decompress(data)
        lines = enumerate(data.decode("utf-8").splitlines(), 1)
        return [(number, line.strip()) for number, line in lines if line.strip() and not line.startswith("#")]

    def _retrying(self, action: Callable[[], T], what: str, progress: Callable[[], int] | None = None) -> T:
        """Run `action`, retrying transient failures with exponential backoff and jitter.

        An attempt that made progress (the partial file grew) resets the count, so a very large download
        over a flaky link is not abandoned while it keeps advancing.
        """
        failures, mark = 0, progress() if progress else 0
        while True:
            try:
                return action()
            except Exception as err:
                if not _is_transient(err):
                    raise
                now = progress() if progress else 0
                failures = 1 if now > mark else failures + 1
                mark = now
                if failures > self.retries:
                    reason = getattr(err, "reason", err)  # URLError wraps the socket error the user wants to see
                    raise FetchError(f"gave up after {failures} failed attempts on {what}: {reason}") from err
                delay = min(MAX_BACKOFF_SECONDS, self.backoff * 2 ** (failures - 1))
                if self.stop.wait(delay * random.uniform(0.5, 1.0)):  # jitter spreads out parallel retries
                    raise _Stopped() from err

    @contextmanager
    def _open(self, source: str, offset: int, version: str | None = None) -> Iterator[_Body]:
        """Open a source at byte `offset` (the body starts at 0 instead when the source cannot resume)."""
        path = _local_path(source)
        body = _open_file(path, offset) if path is not None else self._open_http(source, offset, version)
        with body.stream:
            yield body

    def _open_http(self, url: str, offset: int, version: str | None) -> _Body:
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if version:
                headers["If-Range"] = version
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as err:
            if err.code != 416 or not offset:
                raise
            with err:  # "Range Not Satisfiable": the partial file is already whole, or longer than the source
                whole = err.headers.get("Content-Range", "")
            if whole and _content_range(whole)[1] == offset:
                return _Body(io.BytesIO(), offset, offset, version)
            return self._open_http(url, 0, None)
        version = response.headers.get("ETag") or response.headers.get("Last-Modified")
        if version and version.startswith("W/"):
            version = response.headers.get("Last-Modified")  # If-Range accepts strong validators only
        if response.status != 206:  # 200: the server ignored Range (or the file changed) and sends it all
            length = response.headers.get("Content-Length", "")
            return _Body(response, 0, int(length) if length.isdigit() else None, version)
        start, total = _content_range(response.headers.get("Content-Range", ""))
        if start != offset:
            response.close()
            return self._open_http(url, 0, None)
        return _Body(response, start, total, version)

    def _advance(self, done: int = 0, total: int = 0) -> None:
        with self._bar_lock:
            self.bar.total += total
            self.bar.update(done)


def _open_file(path: Path, offset: int) -> _Body:
    stream = open(path, "rb")  # closed by _Session._open
    total = os.fstat(stream.fileno()).st_size
    start = offset if offset <= total else 0  # a partial file longer than the source is stale: start over
    stream.seek(start)
    return _Body(stream, start, total)


def _is_transient(err: BaseException) -> bool:
    if isinstance(err, urllib.error.HTTPError):
        return err.code >= 500 or err.code in RETRYABLE_STATUS
    return isinstance(err, (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException))


def _explain(err: BaseException, item: FetchItem) -> str:
    """A failure as the user should read it: what happened and what to do next."""
    listed = item.origin != item.source
    where = f" (from {item.origin})" if listed else ""
    check = "check the URL and --prefix" if listed else "check the URL"
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason} for {item.source}{where}: not retried, the server refuses it; {check}"
    if isinstance(err, FileNotFoundError):
        return f"{item.source} does not exist{where}"
    return f"{err}{where}" if isinstance(err, FetchError) else f"{type(err).__name__}: {err}{where}"


def _local_path(source: str) -> Path | None:
    """The file a local path or file:// URL names; None for an http(s) URL."""
    if "://" not in source:
        return Path(source)
    parts = urllib.parse.urlsplit(source)
    if parts.scheme in ("http", "https"):
        return None
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise FetchError(f"{source}: not supported; use an http(s):// URL, a file:///absolute/path URL or a local "
                         f"path (Common Crawl serves its files over HTTPS at {DEFAULT_PREFIX})")
    return Path(urllib.request.url2pathname(parts.path))


def _name_of(source: str) -> str:
    """The file name a source is saved under: the last part of its path."""
    path = _local_path(source)
    name = path.name if path is not None else urllib.parse.unquote(urllib.parse.urlsplit(source).path.split("/")[-1])
    if name in ("", ".", ".."):
        raise FetchError(f"{source}: cannot tell a file name from it; name a file, not a folder")
    return name


def _algorithm(digest: str, where: str) -> str:
    algorithm = DIGEST_BY_LENGTH.get(len(digest))
    if algorithm is None or any(c not in "0123456789abcdefABCDEF" for c in digest):
        raise FetchError(f"{where}: '{digest}' is not an md5, sha1 or sha256 hex digest (32, 40 or 64 hex digits)")
    return algorithm


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _content_range(header: str) -> tuple[int, int | None]:
    """(first byte, whole size) from `bytes 100-199/200`, `bytes 100-199/*` or `bytes */200`."""
    try:
        span, _, total = header.removeprefix("bytes ").partition("/")
        start = 0 if span == "*" else int(span.split("-")[0])
        return start, None if total == "*" else int(total)
    except ValueError as err:
        raise ConnectionError(f"the server sent a malformed Content-Range: {header!r}") from err

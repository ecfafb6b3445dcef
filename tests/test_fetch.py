"""`refinery fetch` against a local HTTP server on 127.0.0.1 that serves the real files in ../shared/data."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from refinery.corpora.fetch import FetchError, fetch, read_checksums
from refinery.pipelines.commands.fetch import add_fetch_arguments, run_fetch

SAMPLE = "cc-main-2020-34-sample.warc.gz"  # 135,896 bytes: half of it is a real partial download


class RangeHandler(BaseHTTPRequestHandler):
    """Serves files under the server's root with Range and If-Range, and plays the faults it is told to."""

    timeout = 5  # a stuck client cannot hold a handler thread for long

    def do_HEAD(self) -> None:
        self.serve(send_body=False)

    def do_GET(self) -> None:
        self.serve(send_body=True)

    def serve(self, send_body: bool) -> None:
        server: RangeServer = self.server  # type: ignore[assignment]
        server.requests.append((self.command, self.path, self.headers.get("Range"), self.headers.get("If-Range")))
        faults = server.faults.get(self.path, [])
        fault = faults.pop(0) if send_body and faults else None
        if fault == "503":
            self.send_error(503, "Slow Down")
            return
        path = server.root / urllib.parse.unquote(self.path.lstrip("/"))
        if not path.is_file():
            self.send_error(404)
            return
        data, stat = path.read_bytes(), path.stat()
        etag = f'"{stat.st_size}-{stat.st_mtime_ns}"'
        start = 0
        requested = self.headers.get("Range")
        if requested and not server.ignore_range and self.headers.get("If-Range", etag) == etag:
            start = int(requested.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", etag)
        self.end_headers()
        if send_body:
            body = data[start:]
            # "drop": announce the whole body, send half, hang up (HTTP/1.0 closes after the handler returns)
            self.wfile.write(body[: len(body) // 2] if fault == "drop" else body)

    def log_message(self, format: str, *args) -> None:
        pass


class RangeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, faults: dict[str, list[str]] | None = None, ignore_range: bool = False):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.root, self.faults, self.ignore_range = root, faults or {}, ignore_range
        self.requests: list[tuple[str, str, str | None, str | None]] = []  # method, path, Range, If-Range

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def gets(self, path: str) -> list[tuple[str, str, str | None, str | None]]:
        return [r for r in self.requests if r[0] == "GET" and r[1] == path]


@pytest.fixture
def serve():
    """Start RangeServers on 127.0.0.1 (port 0); all are shut down when the test ends."""
    servers = []

    def start(root: Path, **options) -> RangeServer:
        server = RangeServer(root, **options)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def quick(sources: list[str], dest: Path, **options):
    """fetch() with test-friendly defaults: no bar, no real waiting between retries."""
    return fetch(sources, dest, **{"progress": False, "backoff": 0.0, "retries": 0, **options})


def test_dropped_download_leaves_part_and_rerun_resumes_with_range(data_dir, serve, tmp_path):
    source = (data_dir / "warc" / SAMPLE).read_bytes()
    server = serve(data_dir / "warc", faults={f"/{SAMPLE}": ["drop"]})
    url, dest = f"{server.url}/{SAMPLE}", tmp_path / "dumps"

    broken = quick([url], dest)
    half = len(source) // 2
    assert "closed after 67,948 of 135,896 bytes" in broken.failed[SAMPLE]
    assert not (dest / SAMPLE).exists()  # nothing half-written under the final name
    assert (dest / f"{SAMPLE}.part").read_bytes() == source[:half]

    resumed = quick([url], dest)
    assert resumed.ok and resumed.resumed == [SAMPLE]
    assert (dest / SAMPLE).read_bytes() == source
    assert not (dest / f"{SAMPLE}.part").exists()
    assert resumed.bytes_downloaded == len(source) - half
    assert server.gets(f"/{SAMPLE}")[-1][2] == f"bytes={half}-"


def test_retries_resume_within_one_fetch_after_drop_and_503(data_dir, serve, tmp_path):
    source = (data_dir / "warc" / SAMPLE).read_bytes()
    server = serve(data_dir / "warc", faults={f"/{SAMPLE}": ["drop", "503"]})
    report = quick([f"{server.url}/{SAMPLE}"], tmp_path, retries=2)
    assert report.ok and report.resumed == [SAMPLE]
    assert (tmp_path / SAMPLE).read_bytes() == source
    half = f"bytes={len(source) // 2}-"
    assert [r[2] for r in server.gets(f"/{SAMPLE}")] == [None, half, half]


def test_retry_budget_counts_only_attempts_that_made_no_progress(data_dir, serve, tmp_path):
    # Three 503s use up two retries; three drops that each add bytes do not (a long download keeps going).
    server = serve(data_dir / "warc", faults={f"/{SAMPLE}": ["503"] * 3, "/example.warc.gz": ["drop"] * 3})
    report = quick([f"{server.url}/{SAMPLE}", f"{server.url}/example.warc.gz"], tmp_path, retries=2)
    assert "gave up after 3 failed attempts" in report.failed[SAMPLE]
    assert len(server.gets(f"/{SAMPLE}")) == 3
    assert report.fetched == ["example.warc.gz"] and len(server.gets("/example.warc.gz")) == 4
    assert (tmp_path / "example.warc.gz").read_bytes() == (data_dir / "warc" / "example.warc.gz").read_bytes()


def test_partial_file_already_whole_or_longer_than_the_source(data_dir, serve, tmp_path):
    whole, longer = (data_dir / "warc" / "example.warc.gz").read_bytes(), (data_dir / "warc" / "post-test.warc.gz")
    (tmp_path / "example.warc.gz.part").write_bytes(whole)  # a crash between the last byte and the rename
    (tmp_path / "post-test.warc.gz.part").write_bytes(longer.read_bytes() + b"stale tail")
    server = serve(data_dir / "warc")
    report = quick([f"{server.url}/example.warc.gz", f"{server.url}/post-test.warc.gz"], tmp_path)
    assert report.ok and report.bytes_downloaded == longer.stat().st_size  # the whole one cost no body
    assert server.gets("/example.warc.gz") == [("GET", "/example.warc.gz", f"bytes={len(whole)}-", None)]
    assert (tmp_path / "example.warc.gz").read_bytes() == whole
    assert (tmp_path / "post-test.warc.gz").read_bytes() == longer.read_bytes()


def test_server_that_ignores_range_gets_a_clean_restart(data_dir, serve, tmp_path):
    source = (data_dir / "warc" / SAMPLE).read_bytes()
    server = serve(data_dir / "warc", faults={f"/{SAMPLE}": ["drop"]}, ignore_range=True)
    report = quick([f"{server.url}/{SAMPLE}"], tmp_path, retries=1)
    assert report.ok and report.resumed == []
    assert (tmp_path / SAMPLE).read_bytes() == source  # the 200 body replaced the partial file, not appended


def test_source_changed_since_the_partial_download_is_fetched_whole(data_dir, serve, tmp_path):
    root, dest = tmp_path / "site", tmp_path / "dumps"
    root.mkdir()
    (root / "dump.warc.gz").symlink_to(data_dir / "warc" / "wget-crawl-0000.warc.gz")
    server = serve(root, faults={"/dump.warc.gz": ["drop"]})
    assert not quick([f"{server.url}/dump.warc.gz"], dest).ok
    (root / "dump.warc.gz").unlink()
    (root / "dump.warc.gz").symlink_to(data_dir / "warc" / "wget-crawl-0001.warc.gz")  # upstream replaced it

    report = quick([f"{server.url}/dump.warc.gz"], dest)
    assert report.ok and report.resumed == []
    assert (dest / "dump.warc.gz").read_bytes() == (data_dir / "warc" / "wget-crawl-0001.warc.gz").read_bytes()
    assert server.gets("/dump.warc.gz")[-1][3] is not None  # the resume asked "only if unchanged" (If-Range)


def test_404_is_a_clear_error_that_is_not_retried(data_dir, serve, tmp_path):
    server = serve(data_dir / "warc")
    report = quick([f"{server.url}/missing.warc.gz", f"{server.url}/example.warc.gz"], tmp_path, retries=5)
    assert report.fetched == ["example.warc.gz"]
    message = report.failed["missing.warc.gz"]
    assert "HTTP 404" in message and f"{server.url}/missing.warc.gz" in message and "check the URL" in message
    assert len(server.gets("/missing.warc.gz")) == 1
    assert "1 failed" in report.describe() and "rerun the same command" in report.describe()


def test_remote_common_crawl_paths_list_joined_to_prefix(data_dir, serve, tmp_path):
    root = tmp_path / "site"
    (root / "crawl-data").mkdir(parents=True)
    (root / "warc").symlink_to(data_dir / "warc")
    lines = ["warc/cc-main-2024-22-whirlwind.warc.gz", "warc/bad/clipped-record.warc.gz", "warc/nowhere.warc.gz"]
    (root / "crawl-data" / "warc.paths.gz").write_bytes(gzip.compress("\n".join(lines).encode() + b"\n"))
    server = serve(root)

    report = quick([f"{server.url}/crawl-data/warc.paths.gz"], tmp_path / "dumps", prefix=server.url + "/")
    assert report.fetched == ["cc-main-2024-22-whirlwind.warc.gz", "clipped-record.warc.gz"]
    for line in lines[:2]:
        assert (tmp_path / "dumps" / Path(line).name).read_bytes() == (root / line).read_bytes()
    assert "line 3 of" in report.failed["nowhere.warc.gz"] and "--prefix" in report.failed["nowhere.warc.gz"]


def test_local_paths_file_urls_and_local_paths_list(data_dir, tmp_path):
    warc = data_dir / "warc"
    listing = tmp_path / "local.paths"
    listing.write_text("# two WET files\ncc-main-2016-50-fragment3.wet.gz\n\nbad/fragment2_no_header.wet.gz\n")
    dest = tmp_path / "dumps"
    dest.mkdir()
    first = (warc / "example.warc.gz").read_bytes()
    (dest / "example.warc.gz.part").write_bytes(first[:1000])  # a copy interrupted earlier
    (dest / "post-test.warc.gz.part").write_bytes((warc / "post-test.warc.gz").read_bytes() + b"stale tail")

    sources = [str(warc / "example.warc.gz"), (warc / "post-test.warc.gz").as_uri(), str(listing)]
    report = quick(sources, dest, prefix=str(warc))
    assert report.ok and report.resumed == ["example.warc.gz"] and len(report.fetched) == 4
    assert (dest / "example.warc.gz").read_bytes() == first
    for name in ("post-test.warc.gz", "cc-main-2016-50-fragment3.wet.gz", "bad/fragment2_no_header.wet.gz"):
        assert (dest / Path(name).name).read_bytes() == (warc / name).read_bytes()


def test_checksums_by_length_and_a_mismatch_is_not_placed(data_dir, serve, tmp_path):
    wiki = data_dir / "wikipedia"
    names = ["testcorpus.xml.bz2", "enwiki-table-markup.xml.bz2", "bgwiki-latest-pages-articles-shortened.xml.bz2"]
    digests = [hashlib.new(algorithm, (wiki / name).read_bytes()).hexdigest()
               for algorithm, name in zip(["md5", "sha1", "sha256"], names)]
    sums = tmp_path / "sums.txt"
    sums.write_text("".join(f"{digest}  {name}\n" for digest, name in zip(digests, names[:2]))
                    + f"{'0' * 64} *{names[2]}\n")  # a wrong sha256, in sha1sum's binary-mode form
    server = serve(wiki)

    report = quick([f"{server.url}/{name}" for name in names], tmp_path / "dumps", expected=read_checksums(str(sums)))
    assert report.fetched == sorted(names[:2])
    assert "checksum mismatch" in report.failed[names[2]] and digests[2] in report.failed[names[2]]
    assert not (tmp_path / "dumps" / names[2]).exists() and not (tmp_path / "dumps" / f"{names[2]}.part").exists()


def test_rerun_skips_complete_files_and_refetches_a_changed_one(data_dir, serve, tmp_path):
    root, dest = tmp_path / "site", tmp_path / "dumps"
    root.mkdir()
    (root / "a.warc.gz").symlink_to(data_dir / "warc" / "example.warc.gz")
    (root / "b.warc.gz").symlink_to(data_dir / "warc" / "post-test.warc.gz")
    server = serve(root)
    urls = [f"{server.url}/a.warc.gz", f"{server.url}/b.warc.gz"]
    assert quick(urls, dest).fetched == ["a.warc.gz", "b.warc.gz"]
    (root / "b.warc.gz").unlink()
    (root / "b.warc.gz").symlink_to(data_dir / "warc" / "cc-single-record.warc.gz")
    server.requests.clear()

    report = quick(urls, dest)
    assert report.skipped == ["a.warc.gz"] and report.fetched == ["b.warc.gz"]
    size = (dest / "a.warc.gz").stat().st_size  # a probe for the bytes after ours: the server answers 416, no body
    assert [r[:3] for r in server.requests if r[1] == "/a.warc.gz"] == [("GET", "/a.warc.gz", f"bytes={size}-")]
    assert (dest / "b.warc.gz").read_bytes() == (data_dir / "warc" / "cc-single-record.warc.gz").read_bytes()

    server.requests.clear()
    digest = hashlib.sha1((dest / "a.warc.gz").read_bytes()).hexdigest()
    assert quick(urls[:1], dest, expected={"a.warc.gz": digest}).skipped == ["a.warc.gz"]
    assert server.requests == []  # a known checksum needs no network at all


def test_plan_errors_say_what_to_do(data_dir, tmp_path):
    sample = data_dir / "warc" / SAMPLE
    with pytest.raises(FetchError, match="both be saved as .* different --dest"):
        quick([str(sample), f"http://127.0.0.1:9/elsewhere/{SAMPLE}"], tmp_path)
    with pytest.raises(FetchError, match=r"s3://commoncrawl/crawl-data/x.warc.gz: not supported.*https://data.commoncrawl.org/"):
        quick(["s3://commoncrawl/crawl-data/x.warc.gz"], tmp_path)
    with pytest.raises(FetchError, match="does not exist"):
        quick([str(tmp_path / "warc.paths.gz")], tmp_path)
    bad_sums = tmp_path / "sums.txt"
    bad_sums.write_text("abc123  file.warc.gz\n")
    with pytest.raises(FetchError, match=r"sums.txt:1: 'abc123' is not an md5, sha1 or sha256"):
        read_checksums(str(bad_sums))


def test_cli_arguments_with_remote_checksums_file(data_dir, serve, tmp_path, capsys):
    root = tmp_path / "site"
    root.mkdir()
    name = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    (root / name).symlink_to(data_dir / "wikipedia" / name)
    (root / "sha1sums.txt").write_text(f"{hashlib.sha1((root / name).read_bytes()).hexdigest()}  {name}\n")
    server = serve(root)
    parser = argparse.ArgumentParser()
    add_fetch_arguments(parser)

    args = parser.parse_args([f"{server.url}/{name}", "--dest", str(tmp_path / "dumps"), "--workers", "2",
                              "--checksums", f"{server.url}/sha1sums.txt"])
    assert run_fetch(args) == 0
    assert (tmp_path / "dumps" / name).read_bytes() == (root / name).read_bytes()
    output = capsys.readouterr()
    assert "fetched 1 files" in output.out and "0 failed" in output.out
    assert "fetch" in output.err  # the progress bar, in bytes

    missing = parser.parse_args([f"{server.url}/gone.bz2", "-d", str(tmp_path / "dumps"), "-q", "--retries", "0"])
    assert run_fetch(missing) == 1
    assert "HTTP 404" in capsys.readouterr().out

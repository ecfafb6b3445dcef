"""A real S3 server for tests: moto's standalone server on a free loopback port, the environment pointing at it,
and real files from the shared data uploaded into a bucket. Test modules import the `s3` fixture from here."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from multiprocessing import forkserver
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

BUCKET = "refinery-inputs"
# Uploaded from the shared data under the same relative keys (the Parquet file is written from real records).
UPLOADS = ("warc/*.*", "warc/bad/*", "text/c4_demo.jsonl", "text/cc_en_head-*.jsonl.gz", "wikipedia/*.bz2",
           "instructions/alpaca_en_demo.json")
AWS_SETTINGS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def restart_workers() -> None:
    """Worker processes are forked from a fork server, which keeps the environment it was started with: stop it,
    so that the next run's workers see the endpoint and credentials set here (and later ones no longer do)."""
    stop = getattr(forkserver._forkserver, "_stop", None)
    if stop is not None:
        stop()


def forget_clients() -> None:
    """fsspec keeps one S3 filesystem (with its credentials) per process: make the next use build a new one."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


def serve(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[dict]:
    """The `s3` fixture of tests/conftest.py: a moto S3 server on a free loopback port, the environment pointing
    at it, and the shared data uploaded."""
    boto3 = pytest.importorskip("boto3")  # with s3fs and moto's server: `pip install -e ".[dev]"`
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_it_answers(server, endpoint, log)
        with pytest.MonkeyPatch.context() as env:
            for name in AWS_SETTINGS:
                env.delenv(name, raising=False)
            env.setenv("AWS_ENDPOINT_URL", endpoint)
            env.setenv("AWS_ACCESS_KEY_ID", "testing")
            env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            env.setenv("AWS_REGION", "us-east-1")  # botocore reads only AWS_DEFAULT_REGION: storage passes it on
            # Nothing from this machine's AWS configuration, and never the instance metadata service.
            env.setenv("AWS_CONFIG_FILE", str(log.parent / "no-config"))
            env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(log.parent / "no-credentials"))
            env.setenv("AWS_EC2_METADATA_DISABLED", "true")
            restart_workers()
            forget_clients()
            client = boto3.client("s3", region_name="us-east-1")
            client.create_bucket(Bucket=BUCKET)
            for pattern in UPLOADS:
                for path in sorted(data_dir.glob(pattern)):
                    if path.is_file():
                        client.upload_file(str(path), BUCKET, str(path.relative_to(data_dir)))
            tables = tmp_path_factory.mktemp("tables")
            write_parquet(data_dir / "text/c4_demo.jsonl", tables / "c4_rows.parquet")
            client.upload_file(str(tables / "c4_rows.parquet"), BUCKET, "tables/c4_rows.parquet")
            yield {"client": client, "endpoint": endpoint, "tables": tables}
    finally:
        server.terminate()
        server.wait(timeout=30)
        restart_workers()
        forget_clients()


def _wait_until_it_answers(server: subprocess.Popen, endpoint: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the moto S3 server exited with {server.returncode}:\n{log.read_text()}")
        try:
            urllib.request.urlopen(endpoint, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # an HTTP answer of any status: the server is up
        except OSError:
            time.sleep(0.2)
    server.terminate()
    pytest.fail(f"the moto S3 server did not answer at {endpoint} within 60 s:\n{log.read_text()}")


def write_parquet(jsonl: Path, target: Path) -> None:
    """Real records (C4 documents) as Parquet, in small row groups so that the file is planned as several tasks."""
    rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
    pq.write_table(pa.Table.from_pylist(rows), target, row_group_size=40)

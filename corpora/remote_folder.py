"""A folder on object storage (s3://, gs://, ...) that a run publishes to and that readers stage from.

Object stores have no rename, so a folder cannot be switched into place as a local one is. What they do have: an
object becomes visible only once its upload is complete, whole. So a published folder is complete when its *index*
(one object, written last) exists, and it holds exactly the files the index lists: readers read those, and ignore
anything else under the prefix (a part of an interrupted publication, a user's own object). The index is the run's
manifest.json, which gains a `files` list of {path, bytes} (see refinery.pipelines.engine.publish).

Errors of the store become InputError (refinery.corpora.storage.store_errors), naming the URL and what to check.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from refinery.corpora.atomic import commit, temp_name
from refinery.corpora.storage import filesystem, store_errors

TRANSFER_THREADS = 8  # object stores answer each request slowly and many at once well


class RemoteFolder:
    """The objects under one URL prefix, addressed by paths relative to it (`data/part-00000.parquet`)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.inner = filesystem(self.url)

    def __str__(self) -> str:
        return self.url

    def url_of(self, relative: str) -> str:
        return f"{self.url}/{relative}"

    def sizes(self) -> dict[str, int]:
        """Every object under the prefix, by relative path, with its size (an empty dict: nothing there)."""
        with store_errors(self.url):
            self.fs.invalidate_cache(self.inner)
            try:
                found = self.fs.find(self.inner, detail=True)
            except FileNotFoundError:
                return {}
        prefix = self.inner.rstrip("/") + "/"
        return {name[len(prefix):]: int(info.get("size") or 0) for name, info in found.items()
                if name.startswith(prefix) and info.get("type", "file") == "file"}

    def read_json(self, relative: str) -> Any | None:
        """The JSON object at `relative`; None where there is none."""
        with store_errors(self.url):
            try:
                with self.fs.open(f"{self.inner}/{relative}", "rb") as file:
                    return json.load(file)
            except FileNotFoundError:
                return None

    def write_json(self, relative: str, data: Any) -> None:
        """One object, complete or not at all (a PUT is atomic), so an index never shows half written."""
        payload = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
        with store_errors(self.url, doing="write"):
            self.fs.pipe_file(f"{self.inner}/{relative}", payload)

    def upload(self, local_root: Path, relatives: Iterable[str], on_file: Callable[[int], None] = lambda n: None,
               ) -> None:
        """Upload local_root/REL to REL for each one, several at once; on_file(bytes) after each."""
        def put(relative: str) -> None:
            source = local_root / relative
            self.fs.put_file(str(source), f"{self.inner}/{relative}")
            on_file(source.stat().st_size)

        with store_errors(self.url, doing="write"):
            _each(put, relatives)

    def download(self, relatives: Iterable[str], local_root: Path, on_file: Callable[[int], None] = lambda n: None,
                 ) -> None:
        """Download REL to local_root/REL for each one (under a temp name renamed into place when complete)."""
        def get(relative: str) -> None:
            target = local_root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_name(target)
            self.fs.get_file(f"{self.inner}/{relative}", str(tmp))
            commit(tmp, target)
            on_file(target.stat().st_size)

        with store_errors(self.url):
            _each(get, relatives)

    def remove(self, relatives: Iterable[str]) -> None:
        """Delete exactly these objects (never the prefix: a user's own objects beside them stay)."""
        paths = [f"{self.inner}/{relative}" for relative in relatives]
        if paths:
            with store_errors(self.url, doing="write"):
                self.fs.rm(paths)
                self.fs.invalidate_cache(self.inner)


def _each(action: Callable[[str], None], relatives: Iterable[str]) -> None:
    """Run action on each path in a few threads; the first error stops the rest and is raised."""
    with ThreadPoolExecutor(TRANSFER_THREADS) as pool:
        for future in [pool.submit(action, relative) for relative in relatives]:
            future.result()


def staging_root() -> Path:
    """Where runs with a remote output build their files before publishing, and remote runs are staged to be
    read: $REFINERY_STAGING, else the user's cache folder (a cluster's nodes need one they all see)."""
    configured = os.environ.get("REFINERY_STAGING")
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or ("~/Library/Caches" if sys.platform == "darwin" else "~/.cache")
    return Path(cache).expanduser() / "refinery" / "staging"


def staging_folder(url: str) -> Path:
    """The local folder for one remote URL: stable across runs (so a rerun resumes), one per URL, readable."""
    import hashlib

    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:12]
    name = url.rstrip("/").rsplit("/", 1)[-1] or "run"
    return staging_root() / f"{name}-{digest}"

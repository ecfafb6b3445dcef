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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from refinery.corpora.atomic import commit, temp_name
from refinery.corpora.storage import InputError, filesystem, is_remote, store_errors, user_cache

TRANSFER_THREADS = 8  # object stores answer each request slowly and many at once well
INDEX = "manifest.json"  # a published run's index: written last, it lists every file of the run


class RemoteFolder:
    """The objects under one URL prefix, addressed by paths relative to it (`data/part-00000.parquet`)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.inner = filesystem(self.url)

    def __str__(self) -> str:
        return self.url

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


def published_files(url: str) -> list[dict[str, Any]]:
    """The files of the run published at `url` ({path, bytes}), from its index; InputError where there is none."""
    index = RemoteFolder(url).read_json(INDEX)
    if index is None or "files" not in index:
        raise InputError(f"{url} is not a published Refinery run (no {INDEX} listing its files): check the URL, or "
                         "rerun `refinery run` to finish publishing it")
    return index["files"]


def stage_published(url: str, say: Callable[[str], None] = print, of_run: str = "") -> Path:
    """A local copy of the part of a published run that `url` names (the run, or a folder in it such as
    RUN/tokens): the run's index is found at `url` or the folders above it, the listed files under that folder
    (under `of_run`, e.g. "tokens", where `url` is the run itself) are downloaded into a staging folder (those
    already there, whole, are not) and the local path of `url` returned."""
    root, below = url.rstrip("/"), ""
    for _ in range(3):  # RUN, RUN/tokens, RUN/tokens/train
        index = RemoteFolder(root).read_json(INDEX) if root.count("/") >= 3 else None  # scheme://bucket/key
        if index is not None and "files" in index:
            break
        root, name = root.rsplit("/", 1)
        below = f"{name}/{below}".rstrip("/")
    else:
        raise InputError(f"{url} is not part of a published Refinery run (no {INDEX} listing its files there or in "
                         "the two folders above): check the URL, or rerun `refinery run` to finish publishing it")
    files = index["files"]
    local_root = staging_root() / "downloads" / staging_folder(root).name
    folder = below or of_run
    wanted = [f for f in files if f["path"].startswith(f"{folder}/" if folder else "")]
    missing = [f["path"] for f in wanted if not _whole(local_root / f["path"], f["bytes"])]
    if missing:
        total = sum(f["bytes"] for f in wanted if f["path"] in set(missing))
        say(f"downloading {len(missing)} files ({total / 1e6:,.1f} MB) of {url} to {local_root}")
        RemoteFolder(root).download(missing, local_root)
    return local_root / below if below else local_root


def local_or_staged(path: str, say: Callable[[str], None] = print, of_run: str = "") -> str:
    """`path` itself where it is local; a staged copy of it where it names part of a published remote run."""
    return str(stage_published(path, say, of_run)) if is_remote(path) else path


def _whole(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def _each(action: Callable[[str], None], relatives: Iterable[str]) -> None:
    """Run action on each path in a few threads; the first error stops the rest and is raised."""
    with ThreadPoolExecutor(TRANSFER_THREADS) as pool:
        for future in [pool.submit(action, relative) for relative in relatives]:
            future.result()


def staging_root() -> Path:
    """Where runs with a remote output build their files before publishing, and remote runs are staged to be
    read: $REFINERY_STAGING, else the user's cache folder (a cluster's nodes need one they all see)."""
    configured = os.environ.get("REFINERY_STAGING")
    return Path(configured).expanduser() if configured else user_cache("staging")


def staging_folder(url: str) -> Path:
    """The local folder for one remote URL: stable across runs (so a rerun resumes), one per URL, readable."""
    import hashlib

    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:12]
    name = url.rstrip("/").rsplit("/", 1)[-1] or "run"
    return staging_root() / f"{name}-{digest}"

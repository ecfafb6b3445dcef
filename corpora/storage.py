"""Opening a recipe input by path or URL: the one module that knows where input files can live.

A plain path (the hot path) goes straight to `open`, `os.stat` and `glob`, and so does a `file://` URL. Any other
URL (`s3://`, `gs://`, `hf://`, or any protocol fsspec knows) is read through fsspec, imported only then, so a
local run never pays for it. Credentials and endpoints come from each store's usual environment (for S3 botocore's:
AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_DEFAULT_REGION, and AWS_REGION, which
botocore itself does not read, is passed on), and fsspec's own configuration applies (`FSSPEC_S3_ANON=true` reads
public buckets without credentials). Every failure of a store becomes an InputError naming the URL and what to check.
"""

from __future__ import annotations

import glob
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

_URL = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*)://")
# Remote files are read through fsspec's read-ahead cache, one request per block: large enough that a 1 GB WARC
# streams in few requests, small enough that a byte-range task reads little past its end (at most one block).
_BLOCK_BYTES = 8 << 20
# The package each protocol needs, and the extra of ours that brings it (None: install the package itself).
_PACKAGES = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
             "hf": ("huggingface_hub", None)}
_BUCKETED = ("s3", "s3a", "gs", "gcs")  # stores whose first path component is a bucket
_SETTINGS = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE, AWS_ENDPOINT_URL for an S3-compatible "
          "store, AWS_REGION; FSSPEC_S3_ANON=true for a public bucket",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS (or `gcloud auth application-default login`); FSSPEC_GCS_TOKEN=anon "
          "for a public bucket",
    "hf": "HF_TOKEN for a private or gated repository, HF_ENDPOINT for a mirror",
}
_SETTINGS |= {"s3a": _SETTINGS["s3"], "gcs": _SETTINGS["gs"]}
# The environment variables those settings are made of: what a task on another machine needs to see the stores
# as this process does, and where Refinery stages and caches (the Ray executor passes those that are set on to
# its tasks).
SETTING_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                     "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "FSSPEC_S3_ANON",
                     "GOOGLE_APPLICATION_CREDENTIALS", "FSSPEC_GCS_TOKEN", "HF_TOKEN", "HF_ENDPOINT",
                     "REFINERY_STAGING", "REFINERY_CACHE")
# Where a store keeps an object's version, in order of preference (GCS's generation, S3's ETag, the Hub's
# blob id, then a modification time): a new upload changes it.
_VERSION_KEYS = ("generation", "ETag", "etag", "blob_id", "md5Hash", "LastModified", "last_modified", "updated",
                 "mtime")


def user_cache(name: str) -> Path:
    """A folder of Refinery's in the user's cache ($REFINERY_CACHE, else $XDG_CACHE_HOME/refinery, else
    ~/.cache/refinery; ~/Library/Caches/refinery on macOS): things worth keeping between runs, never a user's data."""
    configured = os.environ.get("REFINERY_CACHE")
    if configured:
        return Path(configured).expanduser() / name
    cache = os.environ.get("XDG_CACHE_HOME") or ("~/Library/Caches" if sys.platform == "darwin" else "~/.cache")
    return Path(cache).expanduser() / "refinery" / name


class InputError(ValueError):
    """An input cannot be read at all (not one bad record: the whole file, its configuration or its store)."""


def scheme(path: str | os.PathLike) -> str | None:
    """The URL scheme of `path` (`s3`, `file`, ...), lower case; None for a plain path."""
    match = _URL.match(os.fspath(path))
    return match.group(1).lower() if match else None


def local_path(path: str | os.PathLike) -> str | None:
    """The local file that a plain path or a `file://` URL names; None for a remote URL."""
    text = os.fspath(path)
    if "://" not in text:  # a plain path: the common case, decided without a regular expression
        return text
    kind = scheme(text)
    if kind is None:
        return text
    return text[len("file://"):] if kind == "file" else None


def is_remote(path: str | os.PathLike) -> bool:
    """True for a URL read through fsspec (any but `file://`)."""
    return local_path(path) is None


def open_input(path: str | os.PathLike) -> BinaryIO:
    """The file opened for binary reading, seekable (a remote one streams through a read-ahead cache)."""
    local = local_path(path)
    if local is not None:
        return open(local, "rb")  # no fsspec on the local hot path
    fs, inner = filesystem(path)
    with store_errors(path):
        return fs.open(inner, "rb", block_size=_BLOCK_BYTES, cache_type="readahead")


def read_prefix(path: str | os.PathLike, size: int) -> bytes:
    """The first `size` bytes of a file: for a remote one a request of those bytes only, not a read-ahead block."""
    local = local_path(path)
    if local is not None:
        with open(local, "rb") as file:
            return file.read(size)
    fs, inner = filesystem(path)
    with store_errors(path), fs.open(inner, "rb", cache_type="none") as file:
        return file.read(size)


def size(path: str | os.PathLike) -> int:
    """The file's size in bytes."""
    local = local_path(path)
    return os.path.getsize(local) if local is not None else int(_info(path)["size"])


def fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """What tells whether a file changed: size and mtime for a local file, size and the store's version of the
    object (S3's ETag, GCS's generation, the Hub's blob id, else its modification time) for a remote one."""
    local = local_path(path)
    if local is not None:
        stat = os.stat(local)
        return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    info = _info(path)
    key = next((k for k in _VERSION_KEYS if info.get(k) not in (None, "")), None)
    version = {key.lower(): str(info[key]).strip('"')} if key else {}
    return {"bytes": int(info["size"]), **version}


def expand(pattern: str, base_dir: Path, keep_folder: Callable[[str], bool] = lambda _: False) -> list[str]:
    """The files a path, URL or glob names, sorted so task order is stable. A plain path is relative to base_dir
    and comes back absolute; a URL comes back as a URL with the scheme it was written with. A local folder is kept
    where `keep_folder` says it is an input (a `datasets` folder); a remote glob keeps objects only."""
    if is_remote(pattern):
        return _expand_remote(pattern)
    local = local_path(pattern) or ""
    prefix = pattern[: len(pattern) - len(local)]  # "file://" or ""
    full = local if os.path.isabs(local) else str(base_dir / local)
    if glob.has_magic(full):
        matches = sorted(p for p in glob.glob(full, recursive=True) if os.path.isfile(p) or keep_folder(p))
        if not matches:
            raise InputError(f"no file matches '{pattern}' (looked in {base_dir})")
        return [prefix + p for p in matches]
    if not os.path.exists(full):
        raise InputError(f"input '{pattern}' does not exist (looked for {full})")
    return [prefix + full]


def _expand_remote(url: str) -> list[str]:
    fs, inner = filesystem(url)
    kind = scheme(url)
    with store_errors(url):
        if not glob.has_magic(inner):
            _forget(fs, inner)
            try:
                info = fs.info(inner)
            except FileNotFoundError:
                raise InputError(_missing(fs, url, _folder(inner), f"input {url} does not exist")) from None
            if info["type"] != "file":
                raise InputError(f"input {url} is a folder (a prefix), not a file: name its files with a glob, "
                                 f"e.g. {url.rstrip('/')}/* (or /**/* for its subfolders too)")
            return [url]
        root = _folder(inner[: re.search(r"[*?[]", inner).start()])
        # Listings are cached per filesystem: list afresh, so a rerun sees objects added or re-uploaded since.
        _forget(fs, root)
        found = fs.glob(inner, detail=True)
    matches = sorted(f"{kind}://{name}" for name, info in found.items() if info.get("type") == "file")
    if not matches:
        raise InputError(_missing(fs, url, root, f"no file matches '{url}'"))
    return matches


def _missing(fs: Any, url: str, where: str, what: str) -> str:
    """`what`, and why: no such bucket, nothing stored under the prefix `where` (the folder of the object or of the
    glob), or no object there of that name or pattern."""
    kind = scheme(url)
    bucket = where.split("/", 1)[0]
    check = f"check the URL and the store's settings ({_SETTINGS.get(kind, 'its credentials and endpoint')})"
    if kind in _BUCKETED and not _exists(fs, bucket):
        return f"{what}: there is no bucket '{bucket}' (or these credentials cannot see it); {check}"
    if where != bucket and not _exists(fs, where):
        return f"{what}: nothing is stored under {kind}://{where}/; {check}"
    return f"{what}: {kind}://{where}/ holds no object of that name; check the name or pattern (and its case)"


def _folder(inner: str) -> str:
    """The prefix that holds `inner` (the bucket itself for an object at its top)."""
    return inner.rpartition("/")[0] or inner


def _exists(fs: Any, inner: str) -> bool:
    try:
        return bool(fs.exists(inner))
    except Exception:  # a diagnosis only: a store that cannot answer is taken as saying no
        return False


def _forget(fs: Any, inner: str) -> None:
    """Drop what the filesystem cached about `inner`, its parents and everything under it."""
    fs.invalidate_cache(inner)
    for cached in [key for key in getattr(fs, "dircache", {}) if key.startswith(inner.rstrip("/") + "/")]:
        fs.dircache.pop(cached, None)


def _info(url: str | os.PathLike) -> dict[str, Any]:
    """The store's description of one object (after a glob, from the listing it made: no request per object)."""
    fs, inner = filesystem(url)
    with store_errors(url):
        try:
            return fs.info(inner)
        except FileNotFoundError:
            raise InputError(_missing(fs, os.fspath(url), _folder(inner), f"input {url} does not exist")
                             ) from None


def filesystem(url: str | os.PathLike) -> tuple[Any, str]:
    """The fsspec filesystem of a URL (fsspec caches one per protocol and options) and the path inside it."""
    text = os.fspath(url)
    kind = scheme(text)
    package, extra = _PACKAGES.get(kind, (None, None))
    try:
        import fsspec.core  # only a remote input needs it

        if package:  # imported here, so that a missing package is told by name, whatever fsspec has cached
            importlib.import_module(package)
        options = {}
        if kind in ("s3", "s3a") and os.environ.get("AWS_REGION") and not os.environ.get("AWS_DEFAULT_REGION"):
            options["client_kwargs"] = {"region_name": os.environ["AWS_REGION"]}
        return fsspec.core.url_to_fs(text, **options)
    except ImportError as err:
        if package is None:  # a protocol whose package fsspec knows: its message names the package
            raise InputError(f"cannot read {text}: {err}") from None
        install = f"pip install 'refinery[{extra}]'" if extra else f"pip install {package}"
        raise InputError(f"reading {text} needs the {package} package, which is not installed: {install}"
                         ) from None
    except ValueError as err:  # fsspec: "Protocol not known"
        raise InputError(f"cannot read {text}: {err}; use a plain path or an s3://, gs://, hf:// or file:// URL"
                         ) from None


@contextmanager
def store_errors(url: str | os.PathLike, doing: str = "read") -> Iterator[None]:
    """Turn what a store raises (each backend its own exceptions) into an InputError saying what to check;
    `doing` is the verb of the messages ("read", "write")."""
    kind = scheme(url)
    settings = _SETTINGS.get(kind, f"the credentials and endpoint of {kind}://")
    try:
        yield
    except InputError:
        raise
    except PermissionError as err:
        raise InputError(f"access to {url} is denied ({err}): the credentials in use may not {doing} it; check "
                         f"{settings}") from None
    except FileNotFoundError as err:
        raise InputError(f"{url} does not exist ({err}): it may have been removed since the run was planned"
                         ) from None
    except Exception as err:  # the store's own errors (botocore's, httpx's, ...), which name no URL
        if "credential" in type(err).__name__.lower():
            raise InputError(f"no credentials to {doing} {url} ({err}): set {settings}") from None
        raise InputError(f"cannot {doing} {url}: {type(err).__name__}: {err}; check the network and {settings}"
                         ) from None

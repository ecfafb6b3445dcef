"""The user's cache of evaluation indexes: an index is built once and every later worker process and run loads it
(~0.1 s against ~5 s to build the llm-foundry gauntlet and HellaSwag).

An entry is a folder named by a digest of the evaluation setup (the files' paths, sizes and modification times,
the n-gram parameters) and of the code that builds an index, so an edited file or a changed builder is a new
entry, never a stale one. The 8 most recently used entries are kept (~90 MB each for that gauntlet).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

from refinery.corpora import evalsets
from refinery.corpora.atomic import atomic_path, remove_path
from refinery.corpora.storage import user_cache
from refinery.pipelines.stages.text import ngram_index
from refinery.pipelines.stages.text.ngram_index import EvalIndex

KEEP = 8
# The code an index is made and read by, as this process loaded it (a file changed on disk since, by an upgrade
# during a run, is another process's code): a change to it makes every cached index stale.
_CODE = hashlib.sha256(b"".join(Path(module.__file__).read_bytes() for module in (ngram_index, evalsets))).digest()
_ENTRY = re.compile(r"[0-9a-f]{24}")


def entry_name(key: tuple) -> str:
    return hashlib.sha256(repr(key).encode() + _CODE).hexdigest()[:24]


def cached_index(key: tuple, build: Callable[[], EvalIndex]) -> EvalIndex:
    """The index of the evaluation setup `key` from the cache, else `build()` (then cached)."""
    root = user_cache("eval-index")
    folder = root / entry_name(key)
    damaged = False
    if (folder / "index.json").exists():
        try:
            index = EvalIndex.load(folder)
        except (OSError, ValueError, KeyError) as err:  # rebuilt below, and replaced
            warnings.warn(f"decontaminate: rebuilding the cached evaluation index {folder} ({err})", stacklevel=3)
            damaged = True
        else:
            with contextlib.suppress(OSError):  # a read-only cache still serves
                os.utime(folder / "index.json")  # used now: the last to be pruned
            return index
    index = build()
    _save(index, folder, replace=damaged)
    _prune(root)
    return index


def _save(index: EvalIndex, folder: Path, replace: bool) -> None:
    """Whole or not at all (another process may save the same entry at the same time: the first to finish wins).
    A read-only or full cache costs the next process a rebuild, no more."""
    try:
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            index.save(tmp)
            if replace:
                remove_path(folder)
    except OSError as err:
        if replace or not (folder / "index.json").exists():  # else another process cached it first
            warnings.warn(f"decontaminate: could not cache the evaluation index in {folder} ({err})", stacklevel=4)


def _prune(root: Path) -> None:
    """Remove all but the KEEP most recently used entries (only folders named as entries are: nothing else)."""
    with contextlib.suppress(OSError):
        entries = [p for p in root.iterdir() if _ENTRY.fullmatch(p.name) and (p / "index.json").is_file()]
        entries.sort(key=lambda p: (p / "index.json").stat().st_mtime, reverse=True)
        for old in entries[KEEP:]:
            remove_path(old)

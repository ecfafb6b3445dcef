"""Atomic writes: a file appears under its real name only when it is complete, or not at all.

Every writer in Refinery (Parquet parts, token shards and their index, the tokenizer, meta, manifests, stats,
checkpoints, logs) writes to a temp name beside its target, flushes it to disk, then renames it into place, so
a crash never leaves a half file that looks whole. There is one temp-name scheme, `.NAME.tmp-PID`, so cleanup
after a killed run knows exactly what to delete. Standard library only: every package may use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_MARK = ".tmp-"
TEMP_GLOB = f".*{TEMP_MARK}*"


def temp_name(path: str | Path) -> Path:
    """The temp name a write to `path` goes through (hidden, beside it, unique to this process)."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def is_temp_name(path: str | Path) -> bool:
    name = Path(path).name
    return name.startswith(".") and TEMP_MARK in name


def _fsync(path: Path) -> None:
    """Flush a written file (or a folder's entries) to disk; a platform that refuses (a folder on Windows) is fine."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(tmp: str | Path, target: str | Path) -> None:
    """Move a finished temp file or folder into place: flushed, then renamed (replacing an older version)."""
    tmp, target = Path(tmp), Path(target)
    if tmp.is_file():
        _fsync(tmp)
    os.replace(tmp, target)
    _fsync(target.parent)


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield the temp path to write `target` through; on success it is committed, on error (or a failed commit)
    removed.

        with atomic_path(out / "tokenizer.json") as tmp:
            tokenizer.save(str(tmp))
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    try:
        yield tmp
        commit(tmp, target)
    except BaseException:  # a failed rename (a folder onto a full one) leaves no temp behind either
        remove_path(tmp)
        raise


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | Path, data: Any) -> None:
    """JSON with sorted keys, so that equal content gives equal bytes."""
    write_text(target, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def remove_path(path: Path, ignore_errors: bool = True) -> None:
    """Remove a file or folder, never following a symbolic link out of it (a link is unlinked). Temp files are
    removed quietly; a caller that must know the path is gone passes ignore_errors=False."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=ignore_errors)
    elif path.is_dir():
        import shutil

        shutil.rmtree(path, ignore_errors=ignore_errors)


def remove_temp_files(root: str | Path) -> int:
    """Delete what killed writers left under `root` (only names of the one temp scheme); return how many."""
    root = Path(root)
    if not root.is_dir():
        return 0
    leftovers = sorted(root.rglob(TEMP_GLOB), key=lambda p: len(p.parts), reverse=True)
    for path in leftovers:
        remove_path(path)
    return len(leftovers)


# One Parquet compression everywhere: zstd is compact and quick to decode; DuckDB and `datasets` read it natively.
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 3}


class AtomicParquetWriter:
    """Streams tables into one Parquet file that appears under its real name only when complete."""

    def __init__(self, path: str | Path, schema: Any, **options: Any):
        import pyarrow.parquet as pq  # here, so that importing this module never needs pyarrow

        self.path = Path(path)
        self.schema = schema
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temp_name(self.path)
        self._writer = pq.ParquetWriter(self._tmp, schema, **{**PARQUET_OPTIONS, **options})

    def write(self, table: Any) -> None:
        if table.num_rows:
            self._writer.write_table(table.select(self.schema.names).cast(self.schema))

    def close(self) -> None:
        self._writer.close()
        commit(self._tmp, self.path)


def write_parquet(target: str | Path, table: Any, **options: Any) -> None:
    """One table as one Parquet file, atomically."""
    import pyarrow.parquet as pq

    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, **{**PARQUET_OPTIONS, **options})

"""The run folder: where every artifact lives, and writes that are atomic (temp name, then rename)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# One compression everywhere: zstd is compact and quick to decode; DuckDB and `datasets` read it natively.
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 3}


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically, keys sorted so that equal content gives equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    pq.write_table(table, tmp, **PARQUET_OPTIONS)
    os.replace(tmp, path)


class AtomicParquetWriter:
    """Streams tables into one Parquet file that appears under its real name only when complete."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.schema = schema
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temp_name(path)
        self._writer = pq.ParquetWriter(self._tmp, schema, **PARQUET_OPTIONS)

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table.select(self.schema.names).cast(self.schema))

    def close(self) -> None:
        self._writer.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)


def part_name(task_index: int) -> str:
    return f"part-{task_index:05d}.parquet"


class RunLayout:
    """Paths inside out/<run>/ (see ARCHITECTURE.md, 'A run on disk')."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def stats(self) -> Path:
        return self.root / "stats"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def removed(self, stage_key: str) -> Path:
        return self.root / "removed" / stage_key

    def segment(self, index: int) -> Path:
        return self.work / f"segment-{index}"

    def segment_done(self, index: int, task_index: int) -> Path:
        return self.segment(index) / "done" / f"task-{task_index:05d}.json"

    def stage_work(self, stage_key: str) -> Path:
        return self.work / stage_key

    def remove_temp_files(self) -> None:
        """Delete temp files a killed run left behind (they never carry a real name)."""
        if self.root.exists():
            for tmp in self.root.rglob(".*.tmp-*"):
                tmp.unlink(missing_ok=True)

"""The run folder: the one place that knows where every artifact of a run lives.

    out/<run>/manifest.json                 the recipe, inputs, fingerprint, completed phases, status
    out/<run>/data/part-NNNNN.parquet       kept documents (one part per read task)
    out/<run>/removed/<stage>/part-*.parquet   removed documents with `stage` and `reason`
    out/<run>/quarantine/part-*.parquet     unreadable input records with their raw bytes
    out/<run>/stats/<stage>.json            counts per stage
    out/<run>/tokens/                       tokenizer and token shards (refinery.tokenization.shards.TokenLayout)
    out/<run>/work/                         intermediate passes, done-markers, global stages' working files

Writes go through refinery.corpora.atomic (temp name, flush, rename), so cleanup knows the one temp scheme.
"""

from __future__ import annotations

from pathlib import Path

from refinery.corpora.atomic import read_json, remove_temp_files, temp_name, write_json
from refinery.tokenization.shards import TokenLayout

# Kept importable here until the classifier command moves to refinery.corpora.atomic.
__all__ = ["RunLayout", "part_name", "read_json", "temp_name", "write_json"]


def part_name(task_index: int) -> str:
    return f"part-{task_index:05d}.parquet"


class RunLayout:
    """Paths inside out/<run>/."""

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

    @property
    def tokens(self) -> TokenLayout:
        return TokenLayout.of_run(self.root)

    def removed(self, stage_key: str) -> Path:
        return self.root / "removed" / stage_key

    def segment(self, index: int) -> Path:
        return self.work / f"segment-{index}"

    def segment_done(self, index: int, task_index: int) -> Path:
        return self.segment(index) / "done" / f"task-{task_index:05d}.json"

    def stage_work(self, stage_key: str) -> Path:
        return self.work / stage_key

    def remove_temp_files(self) -> int:
        """Delete temp files a killed run left behind (they never carry a real name)."""
        return remove_temp_files(self.root)

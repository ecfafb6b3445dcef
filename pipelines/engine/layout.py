"""The run folder: the one place that knows where every artifact of a run lives.

    out/<run>/manifest.json                 the recipe, inputs, fingerprint, completed phases, status
    out/<run>/data/part-NNNNN.parquet       kept documents (one part per read task)
    out/<run>/removed/<stage>/part-*.parquet   removed documents with `stage` and `reason`
    out/<run>/quarantine/part-*.parquet     unreadable input records with their raw bytes
    out/<run>/stats/<stage>.json            counts per stage
    out/<run>/tokens/                       tokenizer and token shards (refinery.tokenization.shards.TokenLayout)
    out/<run>/work/                         intermediate passes, done-markers, global stages' working files
    out/<run>/embeddings/                   word vectors trained on the kept documents (refinery embeddings train)
    out/<run>/report.html, README.md        the run's report and dataset card (refinery report; written after a run)
    out/<run>/ablation.json                 a `refinery ablate`'s table and verdicts (the report shows them)

Writes go through refinery.corpora.atomic (temp name, flush, rename), so cleanup knows the one temp scheme.
"""

from __future__ import annotations

import os
from pathlib import Path

from refinery.corpora.atomic import remove_path, remove_temp_files
from refinery.tokenization.shards import TokenLayout


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

    @property
    def embeddings(self) -> Path:
        """Word vectors trained on data/ (`refinery embeddings train RUN`); --force deletes them with the data."""
        return self.root / "embeddings"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def ablation(self) -> Path:
        """The table and verdicts of the ablation this run is a recipe of (refinery ablate writes it; the run
        report shows it); --force deletes it with the data it was measured on."""
        return self.root / "ablation.json"

    @property
    def card(self) -> Path:
        """The dataset card: README.md, as the Hugging Face Hub and `datasets.load_dataset(RUN)` read it."""
        return self.root / "README.md"

    def removed(self, stage_key: str) -> Path:
        return self.root / "removed" / stage_key

    def segment(self, index: int) -> Path:
        return self.work / f"segment-{index}"

    def segment_done(self, index: int, task_index: int) -> Path:
        return self.segment(index) / "done" / f"task-{task_index:05d}.json"

    def stage_work(self, stage_key: str) -> Path:
        return self.work / stage_key

    @property
    def lock(self) -> Path:
        return self.root / LOCK_NAME

    def entries(self) -> list[Path]:
        """Everything a run writes at the top of its folder (a user's own files beside them are not ours). The
        dataset card is left out: a user may have edited it, and the next run rewrites only a card of ours."""
        return [self.manifest, self.data, self.root / "removed", self.quarantine, self.stats, self.tokens.root,
                self.work, self.report, self.embeddings, self.ablation]

    def is_run(self) -> bool:
        return self.manifest.is_file()

    def remove_run(self) -> None:
        """Delete what a run wrote here, and nothing else: only our entries, never through a symbolic link."""
        if not self.is_run():
            raise ValueError(f"{self.root} is not a Refinery run (no manifest.json): nothing to delete")
        for entry in self.entries():
            remove_path(entry, ignore_errors=False)

    def remove_temp_files(self) -> int:
        """Delete temp files a killed run left behind (they never carry a real name)."""
        return remove_temp_files(self.root)


LOCK_NAME = ".refinery.lock"


class RunLock:
    """An exclusive lock on a run folder for as long as a run writes to it. The operating system releases it
    when the process ends, however it ends (kill -9 included), so a stale lock can never block a rerun."""

    def __init__(self, layout: RunLayout):
        self.path = layout.lock
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLocked(f"another refinery run (process {holder}) is writing to {self.path.parent}; wait for "
                            "it to finish (or stop it), or set another `output:`") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock; the empty file stays, harmlessly
            self._fd = None


class RunLocked(RuntimeError):
    """Another process holds the run folder."""
